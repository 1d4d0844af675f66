/*
 * rewrite.c - the editing half of use_media_proxy(): applies a dispatcher
 * reply (relay address and ports) to the body the session was parsed from.
 * The edits are those of Kamailio's mediaproxy module (spec A.8), applied
 * the way Kamailio applies its body "lumps", so that a well-formed body comes
 * out byte-identical to what the stock module makes Kamailio forward. Where
 * the module's output is broken the shim writes a valid body instead or
 * fails: an inserted line is always a whole line after (c=) or before
 * (a=candidate) its neighbour and ends like it; a relay address of the other
 * family than a c=/a=rtcp line also rewrites its IP4/IP6 token (so an IPv6
 * relay address is written "IN IP6", an IPv4 one "IN IP4", whatever the
 * party wrote) and a hold address (0.0.0.0, ::) becomes the relay family's;
 * a reply that is no address and numeric ports is an error on replies as on
 * requests.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shim_internal.h"

/*
 * One body edit, as a Kamailio lump: at `off` delete `del` bytes (0 for an
 * insertion anchor) and emit `text`. Edits are kept sorted by offset, a new
 * one going after all existing ones with the same or a lower offset; when
 * applying, an edit that starts inside text already consumed by an earlier
 * deletion is dropped entirely (Kamailio's "overlapped lumps").
 */
typedef struct edit {
  size_t off;
  size_t del;
  const char* text;
  size_t text_len;
  char own[MPS_LINE_BUF];
} edit;

#define MAX_EDITS (1 + MPS_MAX_STREAMS * 6)

typedef struct edits {
  edit e[MAX_EDITS];
  size_t n;
} edits;

static edit* add_edit(edits* es, size_t off, size_t del) {
  size_t pos = es->n;
  while (pos > 0 && es->e[pos - 1].off > off) pos--;
  memmove(&es->e[pos + 1], &es->e[pos], (es->n - pos) * sizeof(edit));
  es->n++;
  edit* e = &es->e[pos];
  e->off = off;
  e->del = del;
  e->text = NULL;
  e->text_len = 0;
  e->own[0] = '\0';
  return e;
}

/* replace_element(): no edit at all when the new text equals the old. */
static void replace(edits* es, const char* body, mps_str old, mps_str neu) {
  if (old.len == neu.len && memcmp(old.s, neu.s, old.len) == 0) return;
  edit* e = add_edit(es, (size_t)(old.s - body), old.len);
  e->text = neu.s;
  e->text_len = neu.len;
}

/* insert_element() of a line the module builds in char buf[128] (del 0),
 * or replace_element() with such a generated text. */
static void put_own(edits* es, const char* body, const char* at, size_t del, const char* text,
                    size_t len) {
  edit* e = add_edit(es, (size_t)(at - body), del);
  memcpy(e->own, text, len);
  e->own[len] = '\0';
  e->text = NULL; /* resolved to e->own when applying (the array moves) */
  e->text_len = len;
}

static const char* edit_text(const edit* e) {
  return e->text ? e->text : e->own;
}

/* "<pre>c=IN <type> <ip><post>" into a char[MPS_LINE_BUF] (the module
 * strcat()s "c=IN IP4 <ip><separator>" into char buf[128]). `pre` is a line
 * ending for an m= line that has none (the end of the SDP), `post` the
 * ending of the inserted line. */
static int c_line(char* out, mps_str type, mps_str ip, mps_str pre, mps_str post, size_t* len,
                  char* err) {
  size_t n = pre.len + 5 + type.len + 1 + ip.len + post.len;
  if (n > MPS_LINE_BUF - 1) {
    mps_seterr(err, "address too long for an inserted c= line: %.40s...", ip.s);
    return -1;
  }
  size_t w = 0;
  memcpy(out + w, pre.s, pre.len), w += pre.len;
  memcpy(out + w, "c=IN ", 5), w += 5;
  memcpy(out + w, type.s, type.len), w += type.len;
  out[w++] = ' ';
  memcpy(out + w, ip.s, ip.len), w += ip.len;
  memcpy(out + w, post.s, post.len), w += post.len;
  *len = w;
  return 0;
}

/* A port of the reply: decimal digits, 0..65535; else -1. */
static long reply_port(mps_str t) {
  long v = 0;
  if (t.len == 0 || t.len > 5) return -1;
  for (size_t i = 0; i < t.len; i++) {
    if (t.s[i] < '0' || t.s[i] > '9') return -1;
    v = v * 10 + (t.s[i] - '0');
  }
  return v <= 65535 ? v : -1;
}

/* The address type token a relay address needs in a c= or a=rtcp: line. */
static mps_str type_of(int family) {
  static const char ip4[] = "IP4", ip6[] = "IP6";
  mps_str t = {family == 6 ? ip6 : ip4, 3};
  return t;
}

/* When an address of `family` replaces the one after `type`, make the type
 * token agree (the module keeps "IP6" before an IPv4 relay address). */
static void fix_type(edits* es, const char* body, mps_str type, int family) {
  if (!type.s) return;
  mps_str want = type_of(family);
  if (mps_str_eq(type, want.s)) return; /* (SDP tokens are case-sensitive) */
  replace(es, body, type, want);
}

/* A hold address (0.0.0.0, ::) stays, in the receiver's family: the other
 * family's hold address and type token when the relay's family differs. */
static void hold_for(edits* es, const char* body, mps_str ip, mps_str type, int ip_family,
                     int family) {
  if (ip_family == family) return;
  replace(es, body, ip, mps_hold_address(family));
  fix_type(es, body, type, family);
}

/* Ending of an inserted line next to a line ending in `own` ("" = none). */
static mps_str eol_or(mps_str own, mps_str dflt) {
  return own.len ? own : dflt;
}

int mps_rewrite(const mps_session* s, const char* body, size_t body_len, const char* reply,
                int is_request, int ice_mode, char** out, size_t* out_len, char* err) {
  return mps_rewrite_dialect(s, body, body_len, reply, is_request, ice_mode,
                             MPSHIM_DIALECT_KAMAILIO, out, out_len, err);
}

int mps_rewrite_dialect(const mps_session* s, const char* body, size_t body_len, const char* reply,
                        int is_request, int ice_mode, int dialect, char** out, size_t* out_len,
                        char* err) {
  mps_str tok[MPS_MAX_STREAMS + 1];
  int ntok = mps_tokens(reply, strlen(reply), tok, MPS_MAX_STREAMS + 1);
  *out = NULL;
  *out_len = 0;
  if (ntok == 0) {
    mps_seterr(err, "empty reply from the dispatcher");
    return -1;
  }
  if (ntok == 1 && mps_str_eq(tok[0], "error")) {
    mps_seterr(err, "the dispatcher replied error");
    return -1;
  }
  const int family = mps_addr_family(tok[0], NULL);
  if (family == 0) {
    /* the module writes such a token ("None") into a reply's SDP */
    mps_seterr(err, "the dispatcher's reply is not an address: %.*s", (int)tok[0].len, tok[0].s);
    return -1;
  }
  for (int k = 1; k < ntok; k++) {
    if (reply_port(tok[k]) < 0) {
      mps_seterr(err, "invalid port in the dispatcher's reply: %.*s", (int)tok[k].len, tok[k].s);
      return -1;
    }
  }
  if ((unsigned)ntok < s->supported_count + 1 && is_request) {
    mps_seterr(err, "insufficient ports from the dispatcher: got %d, expected %u", ntok - 1,
               s->supported_count);
    return -1;
  }
  /* (for a reply with fewer ports the module only warns: "called UA added
   * extra media streams", and rewrites the streams it has ports for) */

  edits* es = malloc(sizeof *es);
  if (!es) {
    mps_seterr(err, "out of memory");
    return -1;
  }
  es->n = 0;
  char line[MPS_LINE_BUF];
  size_t line_len;
  int removed_session_ip = 0;
  const mps_str relay_ip = tok[0];
  const mps_str relay_type = type_of(family);
  const mps_str no_eol = {"", 0};

  if (s->ip.s && !s->ip_zero) {
    if (s->stream_count == s->supported_count) {
      replace(es, body, s->ip, relay_ip);
      fix_type(es, body, s->ip_type, family);
    } else {
      add_edit(es, (size_t)(s->ip_line.s - body), s->ip_line.len);
      removed_session_ip = 1;
    }
  } else if (s->ip.s) {
    hold_for(es, body, s->ip, s->ip_type, s->ip_family, family);
  }

  /* candidate foundation: the relay IPv4 address as a host-order read of
   * the network-order bytes (the module prints in_addr.s_addr with %x); the
   * module leaves it uninitialised when the token is no address: 0 here */
  uint32_t hexip = 0;
  {
    char ipbuf[64];
    struct in_addr a;
    unsigned char v6[16];
    size_t n = relay_ip.len < sizeof ipbuf - 1 ? relay_ip.len : sizeof ipbuf - 1;
    memcpy(ipbuf, relay_ip.s, n);
    ipbuf[n] = '\0';
    if (relay_ip.len < sizeof ipbuf && inet_aton(ipbuf, &a)) {
      memcpy(&hexip, &a.s_addr, 4);
    } else if (family == 6 && inet_pton(AF_INET6, ipbuf, v6) == 1) {
      /* (not the module's: it has no IPv6) the four words folded */
      for (int k = 0; k < 4; k++) {
        uint32_t w;
        memcpy(&w, v6 + 4 * k, 4);
        hexip ^= w;
      }
    }
  }
  const unsigned priority =
      ice_mode == MPSHIM_ICE_HIGH ? (130u << 24) + 16777215u : 16777215u; /* low */

  int j = 1;
  for (unsigned i = 0; i < s->stream_count; i++) {
    const mps_stream* st = &s->streams[i];
    /* a stream without a port in the reply is left as it is (the module
     * stops there, leaving it without c= once the session c= is gone) */
    if (!st->supported || j >= ntok) {
      if (!st->local_ip && removed_session_ip) {
        /* the session's own c= line, moved below this m= line with its
         * bytes (the module rebuilds it as "c=IN IP4 <address>") */
        mps_str pre = st->m_eol.len ? no_eol : s->eol;
        mps_str post = eol_or(st->m_eol, no_eol);
        size_t text = (size_t)(mps_end_of_line(s->ip_line.s, s->ip_line.len) - s->ip_line.s);
        if (pre.len + text + post.len > MPS_LINE_BUF - 1) {
          mps_seterr(err, "session c= line too long to move");
          goto fail;
        }
        memcpy(line, pre.s, pre.len);
        memcpy(line + pre.len, s->ip_line.s, text);
        memcpy(line + pre.len + text, post.s, post.len);
        line_len = pre.len + text + post.len;
        put_own(es, body, st->next_line, 0, line, line_len);
      }
      continue;
    }
    const int port = mps_strtoint(tok[j]);
    const int writes_rtcp =
        (st->rtcp_port.len > 0 && !mps_str_eq(st->rtcp_port, "0")) ||
        (ice_mode != MPSHIM_ICE_NONE && st->has_ice && st->first_ice_candidate && st->has_rtcp_ice);
    if (writes_rtcp && port >= 65535) {
      mps_seterr(err, "the dispatcher's port %d leaves no RTCP port", port);
      goto fail;
    }
    if (!mps_str_eq(st->port, "0")) replace(es, body, st->port, tok[j]);
    if (st->rtcp_port.len > 0 && !mps_str_eq(st->rtcp_port, "0")) {
      /* int2str(port + 1): an unsigned long of the int sum */
      char num[32];
      int n = snprintf(num, sizeof num, "%lu", (unsigned long)(long)(int)((unsigned)port + 1u));
      mps_str neu = {num, (size_t)n};
      if (!(st->rtcp_port.len == neu.len && memcmp(st->rtcp_port.s, num, neu.len) == 0)) {
        put_own(es, body, st->rtcp_port.s, st->rtcp_port.len, num, neu.len);
      }
    }
    if (st->rtcp_ip.len > 0) {
      replace(es, body, st->rtcp_ip, relay_ip);
      fix_type(es, body, st->rtcp_type, family);
    }
    if (st->local_ip && !st->ip_zero) {
      replace(es, body, st->ip, relay_ip);
      fix_type(es, body, st->ip_type, family);
    } else if (st->local_ip) {
      hold_for(es, body, st->ip, st->ip_type, st->ip_family, family);
    } else if (!st->local_ip && removed_session_ip) {
      mps_str pre = st->m_eol.len ? no_eol : s->eol;
      if (c_line(line, relay_type, relay_ip, pre, st->m_eol, &line_len, err) < 0) goto fail;
      put_own(es, body, st->next_line, 0, line, line_len);
    }
    if (ice_mode != MPSHIM_ICE_NONE && st->has_ice && st->first_ice_candidate) {
      for (int comp = 1; comp <= (st->has_rtcp_ice ? 2 : 1); comp++) {
        /* (the module cuts the line at its char buf[128]; with a valid
         * relay address no line reaches MPS_LINE_BUF) */
        const mps_str eol = eol_or(st->candidate_eol, s->eol);
        const int cport = (int)((unsigned)port + (unsigned)(comp - 1));
        int n;
        if (dialect == MPSHIM_DIALECT_OPENSIPS) {
          /* OpenSIPS's module: "... typ relay raddr <ip> rport <port>" */
          n = snprintf(line, sizeof line,
                       "a=candidate:R%x %d UDP %u %.*s %d typ relay raddr %.*s rport %d%.*s", hexip,
                       comp, priority - (unsigned)(comp - 1), (int)relay_ip.len, relay_ip.s, cport,
                       (int)relay_ip.len, relay_ip.s, cport, (int)eol.len, eol.s);
        } else {
          n = snprintf(line, sizeof line, "a=candidate:R%x %d UDP %u %.*s %d typ relay%.*s", hexip,
                       comp, priority - (unsigned)(comp - 1), (int)relay_ip.len, relay_ip.s, cport,
                       (int)eol.len, eol.s);
        }
        if (n < 0 || (size_t)n > sizeof line - 1) {
          mps_seterr(err, "relay candidate line too long");
          goto fail;
        }
        size_t len = (size_t)n;
        put_own(es, body, st->first_ice_candidate, 0, line, len);
      }
    }
    j++;
  }

  /* apply */
  size_t total = 0, pos = 0;
  for (size_t k = 0; k < es->n; k++) {
    const edit* e = &es->e[k];
    if (e->off < pos) continue;
    total += (e->off - pos) + e->text_len;
    pos = e->off + e->del;
  }
  total += body_len - pos;
  char* res = malloc(total + 1);
  if (!res) {
    mps_seterr(err, "out of memory");
    goto fail;
  }
  size_t w = 0;
  pos = 0;
  for (size_t k = 0; k < es->n; k++) {
    const edit* e = &es->e[k];
    if (e->off < pos) continue;
    memcpy(res + w, body + pos, e->off - pos);
    w += e->off - pos;
    memcpy(res + w, edit_text(e), e->text_len);
    w += e->text_len;
    pos = e->off + e->del;
  }
  memcpy(res + w, body + pos, body_len - pos);
  w += body_len - pos;
  res[w] = '\0';
  free(es);
  *out = res;
  *out_len = w;
  return 1;

fail:
  free(es);
  return -1;
}
