/*
 * request.c - builds the two requests the shim sends to the dispatcher,
 * `update` and `remove`, from an mpshim_message: the header values are
 * derived exactly as Kamailio's mediaproxy module derives them from a SIP
 * message (trimmed Call-ID, CSeq number, URIs without "sip:" and params,
 * "unknown"/"unknown agent" defaults, no To tag for 1xx replies) and the
 * headers are written in the module's order with empty values for unknown
 * fields (spec A.4). Also validates messages for the public API.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "shim_internal.h"

int mps_peer_family(const mpshim_message* m) {
  return m->struct_size >= sizeof(mpshim_message) ? m->peer_family : MPSHIM_FAMILY_SAME;
}

int mps_check_message(const mpshim_message* m, char* err) {
  if (!m) {
    mps_seterr(err, "no message");
    return -1;
  }
  /* a 1.0-1.2 program's message ends before peer_family */
  if (m->struct_size < offsetof(mpshim_message, peer_family)) {
    mps_seterr(err, "mpshim_message not initialised with mpshim_message_init()");
    return -1;
  }
  const int peer = mps_peer_family(m);
  if (peer != MPSHIM_FAMILY_SAME && peer != MPSHIM_FAMILY_IP4 && peer != MPSHIM_FAMILY_IP6) {
    mps_seterr(err, "invalid peer_family value %d", peer);
    return -1;
  }
  if (m->type != MPSHIM_REQUEST && m->type != MPSHIM_REPLY) {
    mps_seterr(err, "message type must be MPSHIM_REQUEST or MPSHIM_REPLY");
    return -1;
  }
  if (m->type == MPSHIM_REPLY && (m->status < 100 || m->status > 699)) {
    mps_seterr(err, "a reply needs a status code 100..699");
    return -1;
  }
  if (m->ice_candidate < MPSHIM_ICE_DEFAULT || m->ice_candidate > MPSHIM_ICE_HIGH) {
    mps_seterr(err, "invalid ice_candidate value %d", m->ice_candidate);
    return -1;
  }
  const char* fields[] = {m->method,       m->call_id,     m->cseq,     m->from_uri,
                          m->to_uri,       m->from_tag,    m->to_tag,   m->user_agent,
                          m->signaling_ip, m->media_relay, m->dialog_id};
  const char* names[] = {"method",       "call_id",     "cseq",     "from_uri",
                         "to_uri",       "from_tag",    "to_tag",   "user_agent",
                         "signaling_ip", "media_relay", "dialog_id"};
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    /* a trailing CRLF would be trimmed by a SIP parser; anything else would
     * break the line protocol */
    mps_str t = mps_trim(fields[i]);
    if (t.s && memchr(t.s, '\r', t.len)) goto bad;
    if (t.s && memchr(t.s, '\n', t.len)) goto bad;
    continue;
  bad:
    mps_seterr(err, "line break in %s", names[i]);
    return -1;
  }
  if (!m->call_id) {
    mps_seterr(err, "missing Call-ID");
    return -1;
  }
  return 1;
}

/* The module's get_from_uri()/get_to_uri() on the URI the caller passed. */
static mps_str uri_value(const char* raw) {
  static const char unknown[] = "unknown";
  mps_str u = mps_trim(raw);
  if (u.s) {
    const char* lt = memchr(u.s, '<', u.len);
    if (lt) {
      const char* end = u.s + u.len;
      const char* gt = memchr(lt, '>', (size_t)(end - lt));
      u.s = lt + 1;
      u.len = (size_t)((gt ? gt : end) - u.s);
    }
  }
  if (!u.s || u.len == 0) {
    mps_str r = {unknown, 7};
    return r;
  }
  if (u.len >= 4 && (u.s[0] == 's' || u.s[0] == 'S') && (u.s[1] == 'i' || u.s[1] == 'I') &&
      (u.s[2] == 'p' || u.s[2] == 'P') && u.s[3] == ':') {
    u.s += 4;
    u.len -= 4;
  }
  const char* semi = memchr(u.s, ';', u.len);
  if (semi) u.len = (size_t)(semi - u.s);
  return u;
}

static mps_str or_empty(const char* s) {
  mps_str r = mps_trim(s);
  if (!r.s) {
    r.s = "";
    r.len = 0;
  }
  return r;
}

static mps_str to_tag_value(const mpshim_message* m) {
  if (m->type == MPSHIM_REPLY && m->status < 200) {
    mps_str r = {"", 0}; /* the module ignores the To tag of provisional replies */
    return r;
  }
  return or_empty(m->to_tag);
}

static int dec_u32(const char* s, size_t len, unsigned long long* v) {
  *v = 0;
  if (len == 0 || len > 10) return 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return 0;
    *v = *v * 10 + (unsigned)(s[i] - '0');
  }
  return *v <= 0xffffffffull;
}

int mps_dialog_id(const char* given, int dialect, char* out, size_t cap, char* err) {
  mps_str d = or_empty(given);
  if (dialect != MPSHIM_DIALECT_OPENSIPS || d.len == 0) {
    if (d.len >= cap) {
      mps_seterr(err, "dialog_id too long");
      return -1;
    }
    memcpy(out, d.s, d.len);
    out[d.len] = '\0';
    return 1;
  }
  /* OpenSIPS: the dialog's db_id, (h_entry << 32) | h_id in decimal */
  size_t sep = 0;
  while (sep < d.len && d.s[sep] != ':' && d.s[sep] != '.') sep++;
  unsigned long long e, i;
  if (sep < d.len) {
    if (!dec_u32(d.s, sep, &e) || !dec_u32(d.s + sep + 1, d.len - sep - 1, &i)) {
      mps_seterr(err, "OpenSIPS dialog_id: not h_entry:h_id: %.40s", given);
      return -1;
    }
    snprintf(out, cap, "%llu", (e << 32) | i);
    return 1;
  }
  for (size_t k = 0; k < d.len; k++) {
    if (d.s[k] < '0' || d.s[k] > '9' || d.len > 20 || d.len >= cap) {
      mps_seterr(err, "OpenSIPS dialog_id: not a decimal number: %.40s", given);
      return -1;
    }
  }
  memcpy(out, d.s, d.len);
  out[d.len] = '\0';
  return 1;
}

int mps_build_update(const mpshim_message* m, const char* media_header, char* buf, size_t cap,
                     char* err) {
  return mps_build_update_dialect(m, media_header, MPSHIM_DIALECT_KAMAILIO, buf, cap, err);
}

int mps_build_update_dialect(const mpshim_message* m, const char* media_header, int dialect,
                             char* buf, size_t cap, char* err) {
  mps_str call_id = mps_trim(m->call_id);
  mps_str cseq_all = mps_trim(m->cseq);
  mps_str cseq;
  if (!cseq_all.s || mps_tokens(cseq_all.s, cseq_all.len, &cseq, 1) != 1) {
    mps_seterr(err, "missing CSeq number");
    return -1;
  }
  mps_str from_uri = uri_value(m->from_uri);
  mps_str to_uri = uri_value(m->to_uri);
  mps_str from_tag = or_empty(m->from_tag);
  mps_str to_tag = to_tag_value(m);
  mps_str ua = mps_trim(m->user_agent);
  if (!ua.s || ua.len == 0) {
    ua.s = "unknown agent";
    ua.len = 13;
  }
  mps_str sip = mps_trim(m->signaling_ip);
  if (!sip.s || sip.len == 0) {
    mps_seterr(err, "missing signaling_ip");
    return -1;
  }
  mps_str relay = or_empty(m->media_relay);
  char dialog_buf[MPS_REQUEST_MAX];
  if (mps_dialog_id(m->dialog_id, dialect, dialog_buf, sizeof dialog_buf, err) < 0) return -1;
  mps_str dialog = {dialog_buf, strlen(dialog_buf)};
  const char* type = m->type == MPSHIM_REQUEST ? "request" : "reply";

  int n = snprintf(buf, cap,
                   "update\r\n"
                   "type: %s\r\n"
                   "dialog_id: %.*s\r\n"
                   "call_id: %.*s\r\n"
                   "cseq: %.*s\r\n"
                   "from_uri: %.*s\r\n"
                   "to_uri: %.*s\r\n"
                   "from_tag: %.*s\r\n"
                   "to_tag: %.*s\r\n"
                   "user_agent: %.*s\r\n"
                   "signaling_ip: %.*s\r\n"
                   "media_relay: %.*s\r\n"
                   "%s"
                   "\r\n",
                   type, (int)dialog.len, dialog.s, (int)call_id.len, call_id.s, (int)cseq.len,
                   cseq.s, (int)from_uri.len, from_uri.s, (int)to_uri.len, to_uri.s,
                   (int)from_tag.len, from_tag.s, (int)to_tag.len, to_tag.s, (int)ua.len, ua.s,
                   (int)sip.len, sip.s, (int)relay.len, relay.s, media_header);
  if (n < 0 || (size_t)n >= cap) {
    mps_seterr(err, "mediaproxy request longer than %zu bytes", cap);
    return -1;
  }
  return n;
}

int mps_build_remove(const mpshim_message* m, char* buf, size_t cap, char* err) {
  mps_str call_id = mps_trim(m->call_id);
  mps_str from_tag = or_empty(m->from_tag);
  mps_str to_tag = to_tag_value(m);
  int n = snprintf(buf, cap,
                   "remove\r\n"
                   "call_id: %.*s\r\n"
                   "from_tag: %.*s\r\n"
                   "to_tag: %.*s\r\n"
                   "\r\n",
                   (int)call_id.len, call_id.s, (int)from_tag.len, from_tag.s, (int)to_tag.len,
                   to_tag.s);
  if (n < 0 || (size_t)n >= cap) {
    mps_seterr(err, "mediaproxy request longer than %zu bytes", cap);
    return -1;
  }
  return n;
}
