/*
 * fuzz_shim.c - libFuzzer-style target over the shim's pure code: SDP
 * location (plain and multipart), session analysis, the media header, the
 * rewriter with an arbitrary dispatcher reply, the request builders, and the
 * NAT helpers client_nat_test()/fix_contact(). Any input must give -1 or a
 * well-formed result; invariants are checked with abort().
 *
 * Input layout: byte 0 = flags (bit 0 request/reply, bits 1-2 ICE mode,
 * bits 3-4 content type, bit 5 asymmetric, bits 6-7 the receiver's family:
 * same, IPv4, IPv6, same), then the reply line up to the
 * first NUL (none: a default reply), then the body. The NAT helpers get the
 * first three lines of the body as Contact, Via and source address.
 *
 * Valid SDP always: every body the rewriter returns for an SDP the API would
 * rewrite (mps_check_sdp_text() passes) must pass the tests' validity checker
 * (sdp_valid.c) against its input, i.e. the shim never makes a line invalid,
 * glues lines together or leaves a stream without a c= line (nor writes an
 * address under the other family's IP4/IP6 token). Every relayed stream's
 * address is a literal IPv4 or IPv6 one, an IPv6 one bracketed in the
 * `media` header; the `families` header is empty or "families: a,b".
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdp_valid.h"
#include "shim_internal.h"

#define REQUIRE(c)                                                               \
  do {                                                                           \
    if (!(c)) {                                                                  \
      fprintf(stderr, "invariant failed: %s (%s:%d)\n", #c, __FILE__, __LINE__); \
      abort();                                                                   \
    }                                                                            \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

static char* dup_line(const char* s, size_t len, size_t* used) {
  size_t n = 0;
  while (n < len && s[n] != '\n' && s[n] != '\0') n++;
  char* r = malloc(n + 1);
  if (!r) abort();
  memcpy(r, s, n);
  r[n] = '\0';
  *used = n < len ? n + 1 : n;
  return r;
}

static void fuzz_nat(const char* body, size_t len, int asym) {
  size_t u1 = 0, u2 = 0, u3 = 0;
  char* contact = dup_line(body, len, &u1);
  char* via = dup_line(body + u1, len - u1, &u2);
  char* src = dup_line(body + u1 + u2, len - u1 - u2, &u3);
  mpshim_nat_info n;
  mpshim_nat_info_init(&n);
  n.contact = contact;
  n.via = via;
  n.source_ip = src;
  n.source_port = (unsigned)(len * 7919u) % 70000u;
  n.sip_asymmetric = asym;
  for (int t = 0; t <= 8; t++) {
    int r = mpshim_client_nat_test(&n, t);
    REQUIRE(r == -1 || (r >= 0 && (r & ~t) == 0));
  }
  char* out = NULL;
  size_t olen = 0;
  int r = mpshim_fix_contact(&n, &out, &olen);
  REQUIRE(r == MPSHIM_OK || r == MPSHIM_ERROR);
  if (r == MPSHIM_OK) {
    REQUIRE(out != NULL && strlen(out) == olen);
  } else {
    REQUIRE(out == NULL);
  }
  free(out);
  free(contact);
  free(via);
  free(src);
}

/* The address invariants of a parsed session with its media header. */
static void fuzz_families(const mps_session* s, const char* media, int peer) {
  for (unsigned i = 0; i < s->stream_count; i++) {
    const mps_stream* st = &s->streams[i];
    if (!st->supported) continue;
    REQUIRE(st->ip_family == 4 || st->ip_family == 6);
    REQUIRE(mps_addr_family(st->ip, NULL) == st->ip_family);
    if (st->ip_family == 6) {
      char item[80];
      snprintf(item, sizeof item, ":[%.*s]:", (int)st->ip.len, st->ip.s);
      REQUIRE(strstr(media, item) != NULL);
    }
  }
  char fam[64], err[MPS_ERR_MAX];
  int n = mps_families_header(s, peer, fam, sizeof fam, err);
  REQUIRE(n == 0 || n == 15);
  if (n == 15) {
    REQUIRE(strncmp(fam, "families: ", 10) == 0 && (fam[10] == '4' || fam[10] == '6') &&
            fam[11] == ',' && (fam[12] == '4' || fam[12] == '6') && !strcmp(fam + 13, "\r\n"));
    REQUIRE(fam[10] - '0' == mps_sdp_family(s));
  }
  /* the receiver's family is always what the dispatcher ends up with */
  const int a = mps_sdp_family(s);
  const int b = n ? fam[12] - '0' : a;
  REQUIRE(b == (peer == MPSHIM_FAMILY_SAME ? a : peer));
}

static void fuzz_request(const char* body, size_t len, int is_request, const char* media) {
  /* message fields from slices of the input */
  char f[6][64];
  for (int i = 0; i < 6; i++) {
    size_t off = len ? (size_t)(i * 37) % len : 0;
    size_t n = len - off < 63 ? len - off : 63;
    memcpy(f[i], body + off, n);
    f[i][n] = '\0';
  }
  mpshim_message m;
  mpshim_message_init(&m);
  m.type = is_request ? MPSHIM_REQUEST : MPSHIM_REPLY;
  m.status = is_request ? 0 : 100 + (int)(len % 600);
  m.call_id = f[0];
  m.cseq = f[1];
  m.from_uri = f[2];
  m.to_uri = f[3];
  m.from_tag = f[4];
  m.user_agent = f[5];
  m.signaling_ip = "10.0.0.1";
  char err[MPS_ERR_MAX];
  char buf[MPS_REQUEST_MAX];
  if (mps_check_message(&m, err) < 0) return;
  int n = mps_build_update(&m, media, buf, sizeof buf, err);
  if (n >= 0) {
    REQUIRE((size_t)n < sizeof buf && strncmp(buf, "update\r\ntype: ", 14) == 0);
    REQUIRE(n >= 4 && memcmp(buf + n - 4, "\r\n\r\n", 4) == 0);
  }
  n = mps_build_remove(&m, buf, MPS_REMOVE_MAX, err);
  if (n >= 0) REQUIRE(memcmp(buf + n - 4, "\r\n\r\n", 4) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int flags = data[0];
  const int is_request = !(flags & 1);
  static const int ice_modes[4] = {MPSHIM_ICE_NONE, MPSHIM_ICE_LOW, MPSHIM_ICE_HIGH,
                                   MPSHIM_ICE_LOW};
  const int ice = ice_modes[(flags >> 1) & 3];
  static const char* const ctypes[4] = {NULL, "application/sdp", "multipart/mixed;boundary=b",
                                        "multipart/mixed; boundary=\"b\""};
  const char* ctype = ctypes[(flags >> 3) & 3];
  static const int peers[4] = {MPSHIM_FAMILY_SAME, MPSHIM_FAMILY_IP4, MPSHIM_FAMILY_IP6,
                               MPSHIM_FAMILY_SAME};
  const int peer = peers[(flags >> 6) & 3];
  const char* rest = (const char*)data + 1;
  size_t rlen = size - 1;

  /* reply line: up to the first NUL, NUL-terminated copy */
  char* reply;
  const char* nul = memchr(rest, '\0', rlen);
  const char* body;
  size_t blen;
  if (nul) {
    size_t n = (size_t)(nul - rest);
    if (n > MPS_REPLY_MAX - 1) n = MPS_REPLY_MAX - 1;
    reply = malloc(n + 1);
    if (!reply) abort();
    memcpy(reply, rest, n);
    reply[n] = '\0';
    body = nul + 1;
    blen = rlen - (size_t)(nul - rest) - 1;
  } else {
    reply = strdup("192.0.2.5 40000 40002 40004 40006");
    if (!reply) abort();
    body = rest;
    blen = rlen;
  }
  /* an exactly-sized copy of the body so that ASan sees overreads */
  char* b = malloc(blen ? blen : 1);
  if (!b) abort();
  memcpy(b, body, blen);

  char err[MPS_ERR_MAX];
  char media[MPS_MEDIA_MAX] = "";
  mps_str sdp;
  if (mps_find_sdp(ctype, b, blen, &sdp, err) == 1) {
    REQUIRE(sdp.s >= b && sdp.s + sdp.len <= b + blen);
    (void)mps_has_remote_candidates(sdp);
    mps_session* s = malloc(sizeof *s);
    if (!s) abort();
    int count = mps_parse_session(s, sdp, err);
    REQUIRE(count >= -1 && count <= MPS_MAX_STREAMS);
    if (count > 0) {
      REQUIRE(s->supported_count <= s->stream_count && s->stream_count == (unsigned)count);
      int hl = mps_media_header(s, media, err);
      if (hl >= 0) {
        REQUIRE((size_t)hl == strlen(media) && hl < MPS_MEDIA_MAX);
        REQUIRE(strncmp(media, "media: ", 7) == 0 && memcmp(media + hl - 2, "\r\n", 2) == 0);
        fuzz_families(s, media, peer);
      } else {
        media[0] = '\0';
      }
      char* out = NULL;
      size_t olen = 0;
      int r = mps_rewrite(s, b, blen, reply, is_request, ice, &out, &olen, err);
      REQUIRE(r == 1 || r == -1);
      if (r == 1) {
        REQUIRE(out != NULL && out[olen] == '\0' && olen > 0);
        char why[256];
        if ((flags >> 3 & 3) < 2 && mps_check_sdp_text(sdp, err) == 1 &&
            !sdp_valid(out, olen, b, blen, why, sizeof why)) {
          fprintf(stderr,
                  "invalid SDP from the rewriter: %s\nreply: %s\ninput:\n%.*s\noutput:\n%s\n", why,
                  reply, (int)blen, b, out);
          REQUIRE(!"the rewriter produced invalid SDP");
        }
      } else {
        REQUIRE(out == NULL);
      }
      free(out);
    }
    free(s);
  }
  fuzz_request(b, blen, is_request, media);
  fuzz_nat(b, blen, (flags >> 5) & 1);
  free(b);
  free(reply);
  return 0;
}
