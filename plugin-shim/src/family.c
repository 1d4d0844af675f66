/*
 * family.c - IP address families in the shim (issue 17): the strict check
 * of every address the shim reads from an SDP it relays (c= lines and the
 * long a=rtcp: form must hold a literal address of the family their IP4/IP6
 * token names, so a hostname or garbage is refused before the dispatcher is
 * asked), the family of the party whose SDP it is, and the `families: a,b`
 * header of the protocol extension that asks the relay for an address of
 * the receiving party's family (IPv4<->IPv6 bridging). The header is only
 * sent when it says something the dispatcher would not infer from the
 * `media` items itself, so IPv4 requests stay the stock module's bytes.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "shim_internal.h"

int mps_addr_family(mps_str a, int* zero) {
  char buf[64];
  unsigned char bin[16];
  int family = 0;
  if (zero) *zero = 0;
  if (!a.s || a.len == 0 || a.len >= sizeof buf) return 0;
  memcpy(buf, a.s, a.len);
  buf[a.len] = '\0';
  /* inet_pton: dotted quad only (no "1.2.3" or leading zeros), IPv6 text
   * without brackets or a zone */
  size_t n = 0;
  if (inet_pton(AF_INET, buf, bin) == 1) {
    family = 4;
    n = 4;
  } else if (inet_pton(AF_INET6, buf, bin) == 1) {
    family = 6;
    n = 16;
  }
  if (zero && family) {
    *zero = 1;
    for (size_t i = 0; i < n; i++) {
      if (bin[i]) *zero = 0;
    }
  }
  return family;
}

int mps_type_family(mps_str type) {
  if (mps_str_ieq(type, "IP4")) return 4;
  if (mps_str_ieq(type, "IP6")) return 6;
  return 0;
}

const char* mps_esc(mps_str s, char* buf, size_t cap) {
  static const char hex[] = "0123456789abcdef";
  size_t w = 0;
  if (cap == 0) return "";
  for (size_t i = 0; s.s && i < s.len; i++) {
    const unsigned char c = (unsigned char)s.s[i];
    const int plain = c >= 0x20 && c < 0x7f && c != '\\';
    if (w + (plain ? 1 : 4) + 4 > cap) { /* room for "..." and the NUL */
      memcpy(buf + w, "...", 3);
      w += 3;
      break;
    }
    if (plain) {
      buf[w++] = (char)c;
    } else {
      buf[w++] = '\\';
      buf[w++] = 'x';
      buf[w++] = hex[c >> 4];
      buf[w++] = hex[c & 15];
    }
  }
  buf[w] = '\0';
  return buf;
}

/* The address after an IP4/IP6 token: its family, or -1 with err. */
static int check_address(mps_str type, mps_str ip, int* zero, const char* what, char* err) {
  const int want = mps_type_family(type);
  const int got = mps_addr_family(ip, zero);
  if (want && got == want) return got;
  char t[48], a[80];
  mps_seterr(err, "%s is not IN IP4 <IPv4 address> or IN IP6 <IPv6 address>: %s %s", what,
             mps_esc(type, t, sizeof t), mps_esc(ip, a, sizeof a));
  return -1;
}

int mps_check_addresses(mps_session* s, char* err) {
  if (s->supported_count == 0) return 1; /* nothing is relayed or rewritten */
  if (s->ip.s) {
    s->ip_family = check_address(s->ip_type, s->ip, &s->ip_zero, "the session c= line", err);
    if (s->ip_family < 0) return -1;
  }
  for (unsigned i = 0; i < s->stream_count; i++) {
    mps_stream* st = &s->streams[i];
    if (!st->supported) continue;
    if (st->local_ip) {
      char what[48];
      snprintf(what, sizeof what, "the c= line of media stream %u", i + 1);
      st->ip_family = check_address(st->ip_type, st->ip, &st->ip_zero, what, err);
      if (st->ip_family < 0) return -1;
    } else {
      st->ip_family = s->ip_family;
      st->ip_zero = s->ip_zero;
    }
    if (st->rtcp_ip.s) {
      char what[48];
      int zero;
      snprintf(what, sizeof what, "the a=rtcp: line of media stream %u", i + 1);
      if (check_address(st->rtcp_type, st->rtcp_ip, &zero, what, err) < 0) return -1;
    }
  }
  return 1;
}

int mps_sdp_family(const mps_session* s) {
  int first = 0;
  for (unsigned i = 0; i < s->stream_count; i++) {
    const mps_stream* st = &s->streams[i];
    if (!st->supported || st->ip_family <= 0) continue;
    if (!st->ip_zero) return st->ip_family;
    if (!first) first = st->ip_family;
  }
  return first ? first : 4;
}

/* What the dispatcher assumes without the header: the family of the first
 * non-zero media address, IPv4 when there is none. */
static int inferred_family(const mps_session* s) {
  for (unsigned i = 0; i < s->stream_count; i++) {
    const mps_stream* st = &s->streams[i];
    if (st->supported && st->ip_family > 0 && !st->ip_zero) return st->ip_family;
  }
  return 4;
}

int mps_families_header(const mps_session* s, int peer_family, char* buf, size_t cap, char* err) {
  const int a = mps_sdp_family(s);
  const int b = peer_family == MPSHIM_FAMILY_SAME ? a : peer_family;
  buf[0] = '\0';
  if (a == inferred_family(s) && b == a) return 0;
  int n = snprintf(buf, cap, "families: %d,%d\r\n", a, b);
  if (n < 0 || (size_t)n >= cap) {
    mps_seterr(err, "no room for the families header");
    return -1;
  }
  return n;
}

mps_str mps_hold_address(int family) {
  static const char v4[] = "0.0.0.0", v6[] = "::";
  mps_str r = {family == 6 ? v6 : v4, family == 6 ? 2u : 7u};
  return r;
}
