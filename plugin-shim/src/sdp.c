/*
 * sdp.c - the analysing half of use_media_proxy(): locating the SDP in a
 * body (plain or multipart/mixed), analysing it into a session with up to 32
 * streams and building the `media` header, following Kamailio's mediaproxy
 * module (spec A.5-A.7) so that the dispatcher gets the same request. Beyond
 * the module it records what a valid rewrite needs (each m= line's own line
 * ending, the address type tokens), refuses SDP text no valid body can be
 * made from and, for the streams it relays, any c=/a=rtcp: address that is
 * not a literal of its IP4/IP6 family (family.c); an IPv6 address goes into
 * the `media` header in brackets (the protocol's IPv6 extension). rewrite.c
 * applies the edits. Where the module would overflow a buffer or read
 * uninitialised memory, this file fails with -1 instead.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shim_internal.h"

/* ---- locating the SDP ---------------------------------------------------- */

static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int prefix_ieq(mps_str s, const char* lit) {
  size_t n = strlen(lit);
  if (s.len < n) return 0;
  mps_str head = {s.s, n};
  return mps_str_ieq(head, lit);
}

/* The boundary parameter of a multipart Content-Type, quotes removed. */
static int multipart_boundary(mps_str type, mps_str* boundary) {
  const char* p = memchr(type.s, ';', type.len);
  const char* end = type.s + type.len;
  while (p && p < end) {
    p++; /* after ';' */
    const char* next = memchr(p, ';', (size_t)(end - p));
    const char* pend = next ? next : end;
    const char* eq = memchr(p, '=', (size_t)(pend - p));
    if (eq) {
      mps_str name = {p, (size_t)(eq - p)};
      while (name.len && is_space(name.s[0])) name.s++, name.len--;
      while (name.len && is_space(name.s[name.len - 1])) name.len--;
      mps_str val = {eq + 1, (size_t)(pend - eq - 1)};
      while (val.len && is_space(val.s[0])) val.s++, val.len--;
      while (val.len && is_space(val.s[val.len - 1])) val.len--;
      if (val.len >= 2 && val.s[0] == '"' && val.s[val.len - 1] == '"') {
        /* quoted: a ';' inside quotes was taken as a separator above; good
         * enough for boundaries, which may not contain ';' unquoted anyway */
        val.s++;
        val.len -= 2;
      }
      if (mps_str_ieq(name, "boundary") && val.len > 0) {
        *boundary = val;
        return 1;
      }
    }
    p = next;
  }
  return 0;
}

int mps_find_sdp(const char* content_type, const char* body, size_t body_len, mps_str* sdp,
                 char* err) {
  sdp->s = body;
  sdp->len = body_len;
  if (!content_type) return 1; /* the module assumes a missing type is fine */

  mps_str type = mps_trim(content_type);
  int multipart;
  if (prefix_ieq(type, "application/sdp")) {
    multipart = 0;
  } else if (prefix_ieq(type, "multipart/mixed")) {
    multipart = 1;
  } else {
    mps_seterr(err, "invalid Content-Type for SDP: %.*s", (int)type.len, type.s);
    return -1;
  }
  if (type.len > 15 && !(is_space(type.s[15]) || type.s[15] == ';')) {
    mps_seterr(err, "invalid character after Content-Type: '%c'", type.s[15]);
    return -1;
  }
  if (!multipart) return 1;

  mps_str b;
  if (!multipart_boundary(type, &b)) {
    mps_seterr(err, "multipart Content-Type without a boundary parameter");
    return -1;
  }
  if (b.len > 1024) {
    mps_seterr(err, "multipart boundary too long");
    return -1;
  }
  char boundary[1030];
  boundary[0] = '-';
  boundary[1] = '-';
  memcpy(boundary + 2, b.s, b.len);
  boundary[b.len + 2] = '\0';

  /* Find a part whose header line is exactly "Content-Type: application/sdp"
   * followed by CRLF; it runs to the CRLF before the next boundary line. (The
   * module loops forever when the first such header names another type; we
   * go on with the next one.) */
  const char* zone = body;
  const char* end = body + body_len;
  while (zone < end) {
    const char* s = mps_find_line(zone, (size_t)(end - zone), "Content-Type: ", 1);
    if (!s) break;
    const char* start = s + 14;
    size_t len = (size_t)(end - start);
    mps_str rest = {start, len};
    if (len > 15 + 2 && prefix_ieq(rest, "application/sdp")) {
      start += 15;
      if (start[0] != '\r' || start[1] != '\n') {
        mps_seterr(err, "no CRLF after the multipart part's Content-Type");
        return -1;
      }
      start += 2;
      while (start < end && (*start == '\r' || *start == '\n')) start++;
      const char* bl = mps_find_line(start, (size_t)(end - start), boundary, 0);
      if (!bl) {
        mps_seterr(err, "multipart boundary not found after the SDP part");
        return -1;
      }
      if (bl - start < 2) {
        mps_seterr(err, "empty SDP part in multipart body");
        return -1;
      }
      sdp->s = start;
      sdp->len = (size_t)(bl - start) - 2;
      return 1;
    }
    zone = mps_end_of_line(s, (size_t)(end - s));
  }
  mps_seterr(err, "no application/sdp part in the multipart body");
  return -1;
}

int mps_has_remote_candidates(mps_str sdp) {
  return mps_find_line(sdp.s, sdp.len, "a=remote-candidates", 0) != NULL;
}

/* ---- analysis (the module's get_session_info) ---------------------------- */

static mps_str block_before_first_m(mps_str sdp) {
  const char* m = mps_find_line(sdp.s, sdp.len, "m=", 0);
  mps_str b = sdp;
  if (m) b.len = (size_t)(m - sdp.s);
  return b;
}

/* Rest of the line after `ptr + skip`, bounded by the block end. */
static mps_str line_after(const char* ptr, size_t skip, const char* block_end) {
  mps_str z;
  z.s = ptr + skip;
  z.len = (size_t)(mps_end_of_line(z.s, (size_t)(block_end - z.s)) - z.s);
  return z;
}

/* c= address (and its address type token) of a block: 1 found, 0 none,
 * -1 malformed line. */
static int block_ip(mps_str block, mps_str* ip, mps_str* type, const char* text) {
  const char* p = mps_find_line(block.s, block.len, "c=", 0);
  ip->s = NULL;
  ip->len = 0;
  type->s = NULL;
  type->len = 0;
  if (!p) return 0;
  /* a stream's block starts inside its m= line: a "c=" there is no line */
  if (p != text && p[-1] != '\n' && p[-1] != '\r') return -1;
  mps_str z = line_after(p, 2, block.s + block.len);
  mps_str tok[4];
  /* (the module takes the first 3 tokens of any c= line; the shim wants the
   * whole line to be "IN <type> <address>", as it rewrites it) */
  if (mps_tokens(z.s, z.len, tok, 4) != 3 || !mps_str_eq(tok[0], "IN")) return -1;
  *ip = tok[2];
  *type = tok[1];
  return 1;
}

/* The line ending that starts at p: CRLF, LF, a lone CR, or "" at the end. */
static mps_str eol_at(const char* p, const char* end) {
  mps_str e = {p, 0};
  if (p < end && *p == '\r')
    e.len = (p + 1 < end && p[1] == '\n') ? 2 : 1;
  else if (p < end && *p == '\n')
    e.len = 1;
  return e;
}

static int at_line_start(const char* p, const char* start) {
  return p == start || p[-1] == '\n' || p[-1] == '\r';
}

static mps_str block_direction(mps_str block, mps_str dflt) {
  mps_str zone = block;
  const char* bend = block.s + block.len;
  for (;;) {
    const char* p = mps_find_line(zone.s, zone.len, "a=", 0);
    if (!p) return dflt;
    mps_str line = line_after(p, 2, zone.s + zone.len);
    if (mps_str_ieq(line, "sendrecv") || mps_str_ieq(line, "sendonly") ||
        mps_str_ieq(line, "recvonly") || mps_str_ieq(line, "inactive")) {
      return line;
    }
    zone.s = line.s + line.len;
    zone.len = (size_t)(bend - zone.s);
  }
}

static int block_has(mps_str block, const char* start) {
  return mps_find_line(block.s, block.len, start, 0) != NULL;
}

static int block_has_ice_attrs(mps_str block) {
  return block_has(block, "a=ice-pwd:") && block_has(block, "a=ice-ufrag:");
}

static int block_has_candidate_component(mps_str block, int id) {
  const char* bend = block.s + block.len;
  unsigned n = mps_count_lines(block.s, block.len, "a=candidate:", 0);
  mps_str chunk = block;
  for (unsigned i = 0; i < n; i++) {
    const char* p = mps_find_line(chunk.s, chunk.len, "a=candidate:", 0);
    if (!p) break;
    mps_str z = line_after(p, 12, bend);
    mps_str tok[2];
    if (mps_tokens(z.s, z.len, tok, 2) == 2 && mps_strtoint(tok[1]) == id) return 1;
    chunk.s = z.s + z.len;
    chunk.len = (size_t)(bend - chunk.s);
  }
  return 0;
}

static mps_str line_separator(mps_str sdp) {
  mps_str sep = {NULL, 0};
  const char* end = sdp.s + sdp.len;
  const char* p = mps_find_line(sdp.s, sdp.len, "v=", 0);
  if (!p) return sep;
  const char* e = mps_end_of_line(p, (size_t)(end - p));
  sep.s = e;
  while (e < end && (*e == '\n' || *e == '\r')) e++;
  sep.len = (size_t)(e - sep.s);
  if (sep.len > 2) sep.len = 2;
  return sep;
}

/* The ending of lines the shim inserts where no neighbour line gives one. */
static mps_str default_eol(mps_str sep) {
  static const char crlf[] = "\r\n";
  mps_str e = {crlf, 2};
  if (sep.len >= 1 && sep.s[0] == '\n') e.s = crlf + 1, e.len = 1;
  return e;
}

int mps_check_sdp_text(mps_str sdp, char* err) {
  for (size_t i = 0; i < sdp.len; i++) {
    if (sdp.s[i] == '\0') {
      mps_seterr(err, "NUL byte in the SDP at offset %zu", i);
      return -1;
    }
    if (sdp.s[i] == '\r' && (i + 1 >= sdp.len || sdp.s[i + 1] != '\n')) {
      mps_seterr(err, "SDP line ending in a CR without LF at offset %zu", i);
      return -1;
    }
  }
  return 1;
}

int mps_parse_session(mps_session* s, mps_str sdp, char* err) {
  memset(s, 0, sizeof *s);
  s->sdp = sdp.s;
  s->sdp_len = sdp.len;
  if (mps_count_lines(sdp.s, sdp.len, "v=", 0) != 1) {
    mps_seterr(err, "the SDP must have exactly one v= line");
    return -1;
  }
  unsigned count = mps_count_lines(sdp.s, sdp.len, "m=", 0);
  if (count > MPS_MAX_STREAMS) {
    mps_seterr(err, "more than %d media streams in the SDP", MPS_MAX_STREAMS);
    return -1;
  }
  if (count == 0) return 0;

  mps_str session_block = block_before_first_m(sdp);
  mps_str ip, ip_type;
  if (block_ip(session_block, &ip, &ip_type, sdp.s) < 0) {
    mps_seterr(err, "invalid session-level c= line in the SDP");
    return -1;
  }
  if (ip.s) {
    const char* p = mps_find_line(session_block.s, session_block.len, "c=", 0);
    const char* e = mps_end_of_line(p, (size_t)(session_block.s + session_block.len - p));
    const char* send = sdp.s + sdp.len;
    while (e < send && (*e == '\n' || *e == '\r')) e++;
    s->ip_line.s = p;
    s->ip_line.len = (size_t)(e - p);
    if (memchr(ip.s, '/', ip.len)) {
      mps_seterr(err, "multicast session address in the SDP: %.*s", (int)ip.len, ip.s);
      return -1;
    }
  }
  s->ip = ip;
  s->ip_type = ip_type;
  static const char sendrecv[] = "sendrecv";
  mps_str dflt = {sendrecv, 8};
  s->direction = block_direction(session_block, dflt);
  s->separator = line_separator(sdp);
  s->eol = default_eol(s->separator);
  s->stream_count = count;

  const char* send = sdp.s + sdp.len;
  mps_str block = sdp;
  unsigned i;
  for (i = 0; i < MPS_MAX_STREAMS; i++) {
    const char* p = mps_find_line(block.s, block.len, "m=", 0);
    if (!p) break;
    if (i >= count) {
      /* only the module's end-of-block quirk can find more m= than counted */
      mps_seterr(err, "invalid m= line in the SDP");
      return -1;
    }
    mps_str z = line_after(p, 2, send);
    mps_str tok[4];
    const int ntok = mps_tokens(z.s, z.len, tok, 4);
    if (ntok < 3) {
      mps_seterr(err, "invalid m= line in the SDP");
      return -1;
    }
    mps_stream* st = &s->streams[i];
    st->m_eol = eol_at(z.s + z.len, send);
    st->next_line = z.s + z.len + st->m_eol.len;
    st->type = tok[0];
    st->port = tok[1];
    mps_str transport = tok[2];
    if (prefix_ieq(transport, "RTP") || prefix_ieq(transport, "udp")) {
      const char* slash = memchr(tok[1].s, '/', tok[1].len);
      if (slash) {
        size_t nlen = (size_t)(tok[1].s + tok[1].len - slash - 1);
        if (nlen == 0) {
          mps_seterr(err, "invalid port in m= line: %.*s", (int)tok[1].len, tok[1].s);
          return -1;
        }
        if (!(nlen == 1 && slash[1] == '1')) {
          mps_seterr(err, "unsupported number of ports in m= line: %.*s", (int)tok[1].len,
                     tok[1].s);
          return -1;
        }
        st->port.len = (size_t)(slash - tok[1].s);
      }
      /* the module also rewrites an m= line without formats, or with another
       * line glued onto it; the shim does not make such a line look valid */
      if (ntok < 4 || memchr(z.s, '=', z.len)) {
        mps_seterr(err, "invalid m= line in the SDP: %.*s", (int)(z.len < 80 ? z.len : 80), z.s);
        return -1;
      }
      st->supported = 1;
      s->supported_count++;
    }
    block.s = z.s + z.len;
    block.len = (size_t)(send - block.s);
  }
  if (i != count) {
    /* cannot happen: every counted line start is found by the scan */
    mps_seterr(err, "inconsistent m= lines in the SDP");
    return -1;
  }

  const int session_ice = block_has_ice_attrs(session_block);
  for (i = 0; i < count; i++) {
    mps_stream* st = &s->streams[i];
    mps_str b;
    b.s = st->port.s;
    b.len = (size_t)((i + 1 < count ? s->streams[i + 1].port.s : send) - b.s);
    int r = block_ip(b, &ip, &ip_type, sdp.s);
    if (r < 0) {
      mps_seterr(err, "invalid c= line in media stream %u", i + 1);
      return -1;
    } else if (r == 0) {
      if (!s->ip.s) {
        mps_seterr(err, "media stream %u has no c= line and there is no session-level one", i + 1);
        return -1;
      }
      st->ip = s->ip;
      st->local_ip = 0;
    } else {
      if (st->supported && memchr(ip.s, '/', ip.len)) {
        mps_seterr(err, "multicast address in media stream %u: %.*s", i + 1, (int)ip.len, ip.s);
        return -1;
      }
      st->ip = ip;
      st->ip_type = ip_type;
      st->local_ip = 1;
    }
    const char* rtcp = mps_find_line(b.s, b.len, "a=rtcp:", 0);
    if (rtcp) {
      mps_str z = line_after(rtcp, 7, b.s + b.len);
      mps_str tok[5];
      int n = mps_tokens(z.s, z.len, tok, 5);
      if (st->supported && n > 1 && (n != 4 || !mps_str_eq(tok[1], "IN"))) {
        /* the module rewrites the port and any 4th token */
        mps_seterr(err, "invalid a=rtcp: line in media stream %u", i + 1);
        return -1;
      }
      if (n >= 1) st->rtcp_port = tok[0]; /* module: exactly one of a 1-token split */
      if (n == 4) {
        st->rtcp_type = tok[2];
        st->rtcp_ip = tok[3];
      }
    }
    st->direction = block_direction(b, s->direction);
    st->has_ice = (block_has_ice_attrs(b) || session_ice) && block_has(b, "a=candidate:");
    st->has_rtcp_ice = block_has_candidate_component(b, 2);
    /* (the module's end-of-block quirk can find one inside a line: no
     * line can be inserted before that one) */
    const char* cand = mps_find_line(b.s, b.len, "a=candidate:", 0);
    if (cand && at_line_start(cand, sdp.s)) {
      st->first_ice_candidate = cand;
      st->candidate_eol = eol_at(mps_end_of_line(cand, (size_t)(send - cand)), send);
    }
  }
  if (mps_check_addresses(s, err) < 0) return -1;
  return (int)count;
}

int mps_media_header(const mps_session* s, char* buf, char* err) {
  /* The module formats into char media_str[4096] after "media: ", keeping 2
   * bytes for the final CRLF; its per-stream length check ignores the
   * ":ice=..." part, and a stream that then does not fit would overflow its
   * buffer: both are errors here. */
  size_t len = (size_t)snprintf(buf, MPS_MEDIA_MAX, "media: ");
  size_t room = MPS_MEDIA_MAX - len - 2;
  int first = 1;
  for (unsigned i = 0; i < s->stream_count; i++) {
    const mps_stream* st = &s->streams[i];
    if (!st->supported) continue;
    /* the protocol extension's IPv6 form: in brackets, the item being
     * colon separated */
    const int v6 = st->ip_family == 6;
    const size_t ip_len = st->ip.len + (v6 ? 2 : 0);
    if (st->type.len + ip_len + st->port.len + st->direction.len + 4 > room) {
      mps_seterr(err, "media stream description longer than %d bytes", MPS_MEDIA_MAX);
      return -1;
    }
    const char* ice = st->has_ice ? "ice=yes" : "ice=no";
    size_t item = st->type.len + ip_len + st->port.len + st->direction.len + 4 + strlen(ice) +
                  1; /* 4 colons and the trailing comma */
    if (item >= room) {
      mps_seterr(err, "media stream description longer than %d bytes", MPS_MEDIA_MAX);
      return -1;
    }
    if (!first) buf[len++] = ',';
    first = 0;
    len += (size_t)snprintf(buf + len, MPS_MEDIA_MAX - len, "%.*s:%s%.*s%s:%.*s:%.*s:%s",
                            (int)st->type.len, st->type.s, v6 ? "[" : "", (int)st->ip.len, st->ip.s,
                            v6 ? "]" : "", (int)st->port.len, st->port.s, (int)st->direction.len,
                            st->direction.s, ice);
    room -= item;
  }
  memcpy(buf + len, "\r\n", 3);
  return (int)(len + 2);
}
