/*
 * nat.c - the NAT helpers of the old SER/OpenSER mediaproxy module (seeds 001
 * and 002): client_nat_test() with its three tests (RFC 1918 address in the
 * Contact URI, source address different from the top Via - IP, and port
 * unless the client is SIP-asymmetric -, RFC 1918 address in the top Via),
 * and fix_contact(), which puts the source address into the Contact URI.
 * Where the old module and Kamailio's nathelper disagree, nathelper's
 * answers (recorded in tests/shim/nathelper/) win: sips: is handled like
 * sip:, any transport is rewritten, and maddr is dropped.
 * Includes the small Contact/Via/URI parsers they need; they never read past
 * the NUL-terminated inputs.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "shim_internal.h"

static int is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int mps_rfc1918(mps_str host) {
  char buf[64];
  struct in_addr a;
  if (!host.s || host.len == 0 || host.len >= sizeof buf) return -1;
  memcpy(buf, host.s, host.len);
  buf[host.len] = '\0';
  if (!inet_aton(buf, &a)) return -1;
  uint32_t ip = ntohl(a.s_addr);
  if ((ip & 0xff000000u) == 0x0a000000u) return 1;
  if ((ip & 0xfff00000u) == 0xac100000u) return 1;
  if ((ip & 0xffff0000u) == 0xc0a80000u) return 1;
  return 0;
}

/* host and port of a SIP URI, and where they are */
typedef struct uri_parts {
  mps_str uri;   /* the whole URI */
  mps_str host;  /* including [] for IPv6 references */
  mps_str port;  /* digits, or {host end, 0} */
  mps_str maddr; /* ";maddr=..." parameter with its ';', or {NULL, 0} */
} uri_parts;

static int parse_sip_uri(mps_str uri, uri_parts* u) {
  const char* p = uri.s;
  const char* end = uri.s + uri.len;
  memset(u, 0, sizeof *u);
  u->uri = uri;
  /* sip: and sips: alike, as Kamailio's nathelper (tel: ... are refused) */
  if (uri.len >= 4 && strncasecmp(p, "sip:", 4) == 0) {
    p += 4;
  } else if (uri.len >= 5 && strncasecmp(p, "sips:", 5) == 0) {
    p += 5;
  } else {
    return -1;
  }
  const char* at = memchr(p, '@', (size_t)(end - p));
  if (at) p = at + 1;
  const char* h = p;
  if (p < end && *p == '[') {
    const char* rb = memchr(p, ']', (size_t)(end - p));
    if (!rb) return -1;
    p = rb + 1;
  } else {
    while (p < end && *p != ':' && *p != ';' && *p != '?') p++;
  }
  u->host.s = h;
  u->host.len = (size_t)(p - h);
  if (u->host.len == 0) return -1;
  u->port.s = p;
  u->port.len = 0;
  if (p < end && *p == ':') {
    p++;
    const char* d = p;
    while (p < end && *p >= '0' && *p <= '9') p++;
    if (p == d || p - d > 5 || (p < end && *p != ';' && *p != '?')) return -1;
    u->port.s = d;
    u->port.len = (size_t)(p - d);
  } else if (p < end && *p != ';' && *p != '?') {
    return -1;
  }
  while (p < end && *p == ';') {
    const char* semi = p;
    p++;
    const char* name = p;
    while (p < end && *p != '=' && *p != ';' && *p != '?') p++;
    mps_str n = {name, (size_t)(p - name)};
    mps_str v = {p, 0};
    if (p < end && *p == '=') {
      v.s = ++p;
      while (p < end && *p != ';' && *p != '?') p++;
      v.len = (size_t)(p - v.s);
    }
    if (mps_str_ieq(n, "maddr") && !u->maddr.s) {
      u->maddr.s = semi;
      u->maddr.len = (size_t)(p - semi);
    }
  }
  return 0;
}

/* The first contact's URI inside a Contact header value. */
static int contact_uri(const char* value, mps_str* uri) {
  if (!value) return -1;
  const char* p = value;
  const char* end = value + strlen(value);
  while (p < end && is_ws(*p)) p++;
  if (p >= end || *p == '*') return -1;
  const char* q = p;
  if (*q == '"') { /* quoted display name */
    for (q++; q < end && *q != '"'; q++) {
      if (*q == '\\' && q + 1 < end) q++;
    }
    if (q >= end) return -1;
    q++;
    while (q < end && is_ws(*q)) q++;
    if (q >= end || *q != '<') return -1;
  } else {
    while (q < end && *q != '<' && *q != ';' && *q != ',') q++;
  }
  if (q < end && *q == '<') {
    const char* gt = memchr(q, '>', (size_t)(end - q));
    if (!gt) return -1;
    uri->s = q + 1;
    uri->len = (size_t)(gt - q - 1);
  } else {
    const char* e = p;
    while (e < end && *e != ';' && *e != ',' && !is_ws(*e)) e++;
    uri->s = p;
    uri->len = (size_t)(e - p);
  }
  while (uri->len && is_ws(uri->s[0])) uri->s++, uri->len--;
  while (uri->len && is_ws(uri->s[uri->len - 1])) uri->len--;
  return uri->len ? 0 : -1;
}

/* sent-by host and port of the first via-parm of a Via header value:
 * "SIP / 2.0 / UDP host[:port][;params]". port 0 when absent. */
static int parse_via(const char* value, mps_str* host, unsigned* port) {
  if (!value) return -1;
  const char* p = value;
  const char* end = value + strlen(value);
  for (int part = 0; part < 3; part++) { /* protocol / version / transport */
    while (p < end && is_ws(*p)) p++;
    const char* s = p;
    while (p < end && !is_ws(*p) && *p != '/') p++;
    if (p == s) return -1;
    while (p < end && is_ws(*p)) p++;
    if (part < 2) {
      if (p >= end || *p != '/') return -1;
      p++;
    }
  }
  while (p < end && is_ws(*p)) p++;
  const char* h = p;
  if (p < end && *p == '[') {
    const char* rb = memchr(p, ']', (size_t)(end - p));
    if (!rb) return -1;
    p = rb + 1;
  } else {
    while (p < end && !is_ws(*p) && *p != ':' && *p != ';' && *p != ',') p++;
  }
  host->s = h;
  host->len = (size_t)(p - h);
  if (host->len == 0) return -1;
  while (p < end && is_ws(*p)) p++;
  *port = 0;
  if (p < end && *p == ':') {
    p++;
    while (p < end && is_ws(*p)) p++;
    unsigned v = 0;
    const char* d = p;
    while (p < end && *p >= '0' && *p <= '9' && p - d < 6) v = v * 10 + (unsigned)(*p++ - '0');
    if (p == d || v > 65535) return -1;
    *port = v;
  }
  return 0;
}

/* Does the Via host name the source address? Binary comparison when both
 * are addresses, else the text comparison the module's check_address() does. */
static int same_address(mps_str via_host, const char* src) {
  char a[64], b[64];
  mps_str h = via_host;
  if (h.len >= 2 && h.s[0] == '[' && h.s[h.len - 1] == ']') h.s++, h.len -= 2;
  mps_str sv = mps_trim(src);
  if (sv.len >= 2 && sv.s[0] == '[' && sv.s[sv.len - 1] == ']') sv.s++, sv.len -= 2;
  if (h.len >= sizeof a || sv.len >= sizeof b)
    return h.len == sv.len && !strncasecmp(h.s, sv.s, h.len);
  memcpy(a, h.s, h.len);
  a[h.len] = '\0';
  memcpy(b, sv.s, sv.len);
  b[sv.len] = '\0';
  unsigned char x[16], y[16];
  if (inet_pton(AF_INET, a, x) == 1 && inet_pton(AF_INET, b, y) == 1) return !memcmp(x, y, 4);
  if (inet_pton(AF_INET6, a, x) == 1 && inet_pton(AF_INET6, b, y) == 1) return !memcmp(x, y, 16);
  return strcasecmp(a, b) == 0;
}

int mpshim_client_nat_test(const mpshim_nat_info* info, int tests) {
  if (!info || info->struct_size < sizeof(mpshim_nat_info) || tests < 1 || tests > 7) {
    return MPSHIM_ERROR;
  }
  int found = 0;
  if (tests & MPSHIM_NAT_PRIVATE_CONTACT) {
    mps_str uri;
    uri_parts u;
    if (contact_uri(info->contact, &uri) == 0 && parse_sip_uri(uri, &u) == 0 &&
        mps_rfc1918(u.host) == 1) {
      found |= MPSHIM_NAT_PRIVATE_CONTACT;
    }
  }
  if (tests & (MPSHIM_NAT_SOURCE_ADDRESS | MPSHIM_NAT_PRIVATE_VIA)) {
    mps_str host;
    unsigned port;
    if (parse_via(info->via, &host, &port) == 0) {
      if (tests & MPSHIM_NAT_SOURCE_ADDRESS) {
        if (!info->source_ip || !*info->source_ip) return MPSHIM_ERROR;
        int differs = !same_address(host, info->source_ip);
        /* seed 001: "Both IP and port are checked, except for asymmetric
         * clients for which the port is ignored"; a Via without port means
         * 5060 (SIP_PORT) */
        if (!info->sip_asymmetric && (port ? port : 5060u) != info->source_port) differs = 1;
        if (differs) found |= MPSHIM_NAT_SOURCE_ADDRESS;
      }
      if ((tests & MPSHIM_NAT_PRIVATE_VIA) && mps_rfc1918(host) == 1) {
        found |= MPSHIM_NAT_PRIVATE_VIA;
      }
    }
  }
  return found;
}

int mpshim_fix_contact(const mpshim_nat_info* info, char** out_value, size_t* out_len) {
  if (out_value) *out_value = NULL;
  if (out_len) *out_len = 0;
  if (!info || info->struct_size < sizeof(mpshim_nat_info) || !out_value) return MPSHIM_ERROR;
  mps_str uri;
  uri_parts u;
  /* any transport is rewritten, as nathelper's fix_nated_contact() does
   * (the old module refused all but UDP) */
  if (contact_uri(info->contact, &uri) < 0 || parse_sip_uri(uri, &u) < 0) return MPSHIM_ERROR;

  mps_str src = mps_trim(info->source_ip);
  if (!src.s || src.len == 0 || src.len > 45) return MPSHIM_ERROR;
  char ip[64];
  memcpy(ip, src.s, src.len);
  ip[src.len] = '\0';
  unsigned char bin[16];
  char host[72];
  if (inet_pton(AF_INET, ip, bin) == 1) {
    snprintf(host, sizeof host, "%s", ip);
  } else if (inet_pton(AF_INET6, ip, bin) == 1) {
    snprintf(host, sizeof host, "[%s]", ip); /* the module (IPv4 era) left them out */
  } else {
    return MPSHIM_ERROR;
  }
  char port[16] = "";
  const char* after; /* the rest of the URI after host[:port] */
  if (info->sip_asymmetric) {
    /* keep the URI's own port (and no port if it had none) */
    after = u.host.s + u.host.len;
  } else {
    if (info->source_port == 0 || info->source_port > 65535) return MPSHIM_ERROR;
    snprintf(port, sizeof port, ":%u", info->source_port);
    after = u.port.s + u.port.len;
  }
  const char* value = info->contact;
  size_t vlen = strlen(value);
  size_t pre = (size_t)(u.host.s - value);
  /* the rest of the value, without the URI's maddr parameter (nathelper
   * drops it: it would send the request elsewhere than the source) */
  const char* cut = u.maddr.s ? u.maddr.s : value + vlen;
  const char* resume = u.maddr.s ? u.maddr.s + u.maddr.len : value + vlen;
  size_t post1 = (size_t)(cut - after);
  size_t post2 = (size_t)(value + vlen - resume);
  size_t n = pre + strlen(host) + strlen(port) + post1 + post2;
  char* res = malloc(n + 1);
  if (!res) return MPSHIM_ERROR;
  memcpy(res, value, pre);
  size_t w = pre;
  memcpy(res + w, host, strlen(host));
  w += strlen(host);
  memcpy(res + w, port, strlen(port));
  w += strlen(port);
  memcpy(res + w, after, post1);
  w += post1;
  memcpy(res + w, resume, post2);
  w += post2;
  res[w] = '\0';
  *out_value = res;
  if (out_len) *out_len = w;
  return MPSHIM_OK;
}
