/*
 * test_ipv6.c - unit tests of the shim's IPv6 SDP handling (issue 17): the
 * strict address check of c= and a=rtcp: lines (hostnames, garbage, a
 * family the IP4/IP6 token does not name: refused with a readable error),
 * the bracketed IPv6 items of the `media` header, the `families` header
 * and when it is left out, the rewrite with an IPv6 or IPv4 relay address
 * (the token always follows the address: never an IPv4 address in an
 * IN IP6 line or the reverse), hold addresses (0.0.0.0 and ::) in either
 * family, and a table of mixed and broken inputs whose results must be
 * valid SDP (sdp_valid.c) or a refusal.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdp_valid.h"
#include "shim_internal.h"

#include "check.h"

static mps_str S(const char* s) {
  mps_str r = {s, strlen(s)};
  return r;
}

/* parse + rewrite; -2 when the parse refuses (err says why) */
static int rewrite(const char* sdp, const char* reply, int is_request, int ice, char** out,
                   char* err) {
  mps_session s;
  size_t len;
  *out = NULL;
  if (mps_parse_session(&s, S(sdp), err) < 0) return -2;
  return mps_rewrite(&s, sdp, strlen(sdp), reply, is_request, ice, out, &len, err);
}

/* media + families headers of an SDP for a receiver's family */
static const char* headers(const char* sdp, int peer, char* buf, size_t cap) {
  static mps_session s;
  char err[MPS_ERR_MAX] = "";
  if (mps_parse_session(&s, S(sdp), err) < 0) {
    snprintf(buf, cap, "refused: %s", err);
    return buf;
  }
  char media[MPS_MEDIA_MAX], fam[64];
  if (mps_media_header(&s, media, err) < 0 ||
      mps_families_header(&s, peer, fam, sizeof fam, err) < 0) {
    snprintf(buf, cap, "error: %s", err);
    return buf;
  }
  const int n = snprintf(buf, cap, "%s%s", media, fam);
  if (n < 0 || (size_t)n >= cap) snprintf(buf, cap, "truncated");
  return buf;
}

static void test_addresses(void) {
  int zero;
  CHECK(mps_addr_family(S("192.0.2.1"), &zero) == 4 && !zero, "dotted quad");
  CHECK(mps_addr_family(S("2001:db8::1"), &zero) == 6 && !zero, "IPv6");
  CHECK(mps_addr_family(S("0.0.0.0"), &zero) == 4 && zero, "IPv4 hold");
  CHECK(mps_addr_family(S("::"), &zero) == 6 && zero, ":: hold");
  CHECK(mps_addr_family(S("0:0::0"), &zero) == 6 && zero, "another spelling of ::");
  const char* bad[] = {"host.example.com", "1.2.3", "010.0.0.1", "[2001:db8::1]", "fe80::1%eth0",
                       "2001:db8::1/64",   "None",  "",          "1.2.3.4.5",     "2001:db8:::1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECK(mps_addr_family(S(bad[i]), NULL) == 0, "no literal address: %s", bad[i]);
  }
  char buf[32];
  CHECK(strcmp(mps_esc(S("a\x01\\b\xff"), buf, sizeof buf), "a\\x01\\x5cb\\xff") == 0,
        "escaped: %s", buf);
  static char longv[200];
  memset(longv, 'x', sizeof longv - 1);
  CHECK(strlen(mps_esc(S(longv), buf, sizeof buf)) < sizeof buf && strstr(buf, "...") != NULL,
        "cut: %s", buf);
}

static void test_refusals(void) {
  mps_session s;
  char err[MPS_ERR_MAX];
  const char* bad[] = {
      "v=0\r\nc=IN IP4 media.example.com\r\nm=audio 1 RTP/AVP 0\r\n",
      "v=0\r\nc=IN IP6 media.example.com\r\nm=audio 1 RTP/AVP 0\r\n",
      "v=0\r\nc=IN IP6 192.0.2.1\r\nm=audio 1 RTP/AVP 0\r\n",
      "v=0\r\nc=IN IP4 2001:db8::1\r\nm=audio 1 RTP/AVP 0\r\n",
      "v=0\r\nc=IN IP7 2001:db8::1\r\nm=audio 1 RTP/AVP 0\r\n",
      "v=0\r\nc=IN IP6 [2001:db8::1]\r\nm=audio 1 RTP/AVP 0\r\n",
      "v=0\r\nc=IN IP6 fe80::1%eth0\r\nm=audio 1 RTP/AVP 0\r\n",
      "v=0\r\nm=audio 1 RTP/AVP 0\r\nc=IN IP6 2001:db8::zz\r\n",
      "v=0\r\nc=IN IP6 2001:db8::1\r\nm=audio 1 RTP/AVP 0\r\na=rtcp:2 IN IP6 rtcp.example\r\n",
      "v=0\r\nc=IN IP6 2001:db8::1\r\nm=audio 1 RTP/AVP 0\r\na=rtcp:2 IN IP4 2001:db8::1\r\n",
      /* a relayed stream inherits a bad session address */
      "v=0\r\nc=IN IP4 x\r\nm=audio 1 RTP/AVP 0\r\nm=video 2 RTP/AVP 31\r\nc=IN IP4 1.2.3.4\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    CHECK(mps_parse_session(&s, S(bad[i]), err) == -1 && strstr(err, "is not IN IP4"),
          "refused %zu: %s", i, err);
  }
  /* the error names the line and shows the bytes escaped */
  mps_parse_session(&s, S("v=0\r\nm=audio 1 RTP/AVP 0\r\nc=IN IP6 a\x01\x7f\r\n"), err);
  CHECK(strcmp(err,
               "the c= line of media stream 1 is not IN IP4 <IPv4 address> or IN IP6 "
               "<IPv6 address>: IP6 a\\x01\\x7f") == 0,
        "error text: %s", err);
  /* what the relay never sees is not checked: an unsupported stream's own
   * c= line, and a session c= when nothing is relayed */
  CHECK(mps_parse_session(&s,
                          S("v=0\r\nc=IN IP6 2001:db8::1\r\nm=audio 1 RTP/AVP 0\r\n"
                            "m=x 9 TCP/MSRP *\r\nc=IN IP4 msrp.example.com\r\n"),
                          err) == 2,
        "unsupported stream's hostname left alone: %s", err);
  CHECK(mps_parse_session(&s, S("v=0\r\nc=IN IP4 host\r\nm=x 9 TCP/MSRP *\r\n"), err) == 1,
        "nothing relayed: %s", err);
}

static void test_headers(void) {
  char buf[512];
  const char* v6 =
      "v=0\r\nc=IN IP6 2001:db8::1\r\nm=audio 4000 RTP/AVP 0\r\n"
      "a=rtcp:4001 IN IP6 2001:db8::1\r\nm=video 0 RTP/AVP 31\r\nc=IN IP6 ::\r\n"
      "m=x 9 TCP/MSRP *\r\n";
  CHECK(strcmp(headers(v6, MPSHIM_FAMILY_SAME, buf, sizeof buf),
               "media: audio:[2001:db8::1]:4000:sendrecv:ice=no,"
               "video:[::]:0:sendrecv:ice=no\r\n") == 0,
        "IPv6 items bracketed, no families header: %s", buf);
  CHECK(strcmp(headers(v6, MPSHIM_FAMILY_IP6, buf, sizeof buf),
               "media: audio:[2001:db8::1]:4000:sendrecv:ice=no,"
               "video:[::]:0:sendrecv:ice=no\r\n") == 0,
        "IPv6 to IPv6 is no bridge: %s", buf);
  CHECK(strstr(headers(v6, MPSHIM_FAMILY_IP4, buf, sizeof buf), "\r\nfamilies: 6,4\r\n") != NULL,
        "IPv6 party to IPv4: %s", buf);
  const char* v4 = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n";
  CHECK(strcmp(headers(v4, MPSHIM_FAMILY_SAME, buf, sizeof buf),
               "media: audio:10.0.0.1:4000:sendrecv:ice=no\r\n") == 0,
        "IPv4 as the stock module: %s", buf);
  CHECK(strcmp(headers(v4, MPSHIM_FAMILY_IP4, buf, sizeof buf),
               "media: audio:10.0.0.1:4000:sendrecv:ice=no\r\n") == 0,
        "IPv4 to IPv4: %s", buf);
  CHECK(strcmp(headers(v4, MPSHIM_FAMILY_IP6, buf, sizeof buf),
               "media: audio:10.0.0.1:4000:sendrecv:ice=no\r\nfamilies: 4,6\r\n") == 0,
        "IPv4 party to IPv6: %s", buf);
  /* only hold addresses: the dispatcher would assume IPv4 */
  const char* hold6 = "v=0\r\nc=IN IP6 ::\r\nm=audio 4000 RTP/AVP 0\r\n";
  CHECK(strcmp(headers(hold6, MPSHIM_FAMILY_SAME, buf, sizeof buf),
               "media: audio:[::]:4000:sendrecv:ice=no\r\nfamilies: 6,6\r\n") == 0,
        "IPv6 hold says its family: %s", buf);
  const char* hold4 = "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n";
  CHECK(strcmp(headers(hold4, MPSHIM_FAMILY_SAME, buf, sizeof buf),
               "media: audio:0.0.0.0:4000:sendrecv:ice=no\r\n") == 0,
        "IPv4 hold as the stock module: %s", buf);
  /* the party's family is its first non-zero address's */
  const char* mixed =
      "v=0\r\nm=audio 0 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\nm=audio 5 RTP/AVP 0\r\n"
      "c=IN IP6 2001:db8::2\r\nm=video 6 RTP/AVP 31\r\nc=IN IP4 10.0.0.3\r\n";
  CHECK(strcmp(headers(mixed, MPSHIM_FAMILY_IP4, buf, sizeof buf),
               "media: audio:0.0.0.0:0:sendrecv:ice=no,audio:[2001:db8::2]:5:sendrecv:ice=no,"
               "video:10.0.0.3:6:sendrecv:ice=no\r\nfamilies: 6,4\r\n") == 0,
        "mixed families: %s", buf);
}

static void test_rewrites(void) {
  char* out;
  char err[MPS_ERR_MAX] = "";
  const char* v6 =
      "v=0\r\no=a 1 1 IN IP6 2001:db8::1\r\nc=IN IP6 2001:db8::1\r\nm=audio 4000 RTP/AVP 0\r\n"
      "a=rtcp:4001 IN IP6 2001:db8::1\r\nm=video 5000 RTP/AVP 31\r\nc=IN IP6 2001:db8::2\r\n";
  /* IPv6 party, IPv6 relay (RFC 5952 text from the dispatcher) */
  int rc = rewrite(v6, "2001:db8::7 30000 30002", 1, MPSHIM_ICE_NONE, &out, err);
  CHECK(rc == 1 && strcmp(out,
                          "v=0\r\no=a 1 1 IN IP6 2001:db8::1\r\nc=IN IP6 2001:db8::7\r\n"
                          "m=audio 30000 RTP/AVP 0\r\na=rtcp:30001 IN IP6 2001:db8::7\r\n"
                          "m=video 30002 RTP/AVP 31\r\nc=IN IP6 2001:db8::7\r\n") == 0,
        "IPv6 to IPv6 (o= untouched): %s", out ? out : err);
  free(out);
  /* bridged: the IPv6 party's SDP for an IPv4 receiver */
  rc = rewrite(v6, "192.0.2.5 30000 30002", 0, MPSHIM_ICE_NONE, &out, err);
  CHECK(rc == 1 && strcmp(out,
                          "v=0\r\no=a 1 1 IN IP6 2001:db8::1\r\nc=IN IP4 192.0.2.5\r\n"
                          "m=audio 30000 RTP/AVP 0\r\na=rtcp:30001 IN IP4 192.0.2.5\r\n"
                          "m=video 30002 RTP/AVP 31\r\nc=IN IP4 192.0.2.5\r\n") == 0,
        "IPv6 to IPv4: %s", out ? out : err);
  free(out);
  /* bridged the other way, with a session c= moved below an unsupported
   * stream (keeping its own family) and a lower-case token */
  const char* v4 =
      "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:4001 IN ip4 10.0.0.1\r\n"
      "m=x 9 TCP/MSRP *\r\n";
  rc = rewrite(v4, "2001:db8::7 30000", 1, MPSHIM_ICE_NONE, &out, err);
  CHECK(rc == 1 && strcmp(out,
                          "v=0\r\nm=audio 30000 RTP/AVP 0\r\nc=IN IP6 2001:db8::7\r\n"
                          "a=rtcp:30001 IN IP6 2001:db8::7\r\n"
                          "m=x 9 TCP/MSRP *\r\nc=IN IP4 10.0.0.1\r\n") == 0,
        "IPv4 to IPv6: %s", out ? out : err);
  free(out);
  /* ICE: an IPv6 relay candidate, with a foundation of its own */
  const char* ice =
      "v=0\r\nc=IN IP6 2001:db8::1\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\nm=audio 4000 RTP/AVP 0\r\n"
      "a=candidate:1 1 UDP 2130706431 2001:db8::1 4000 typ host\r\n";
  rc = rewrite(ice, "2001:db8::7 30000", 1, MPSHIM_ICE_LOW, &out, err);
  CHECK(rc == 1 && strstr(out, " 1 UDP 16777215 2001:db8::7 30000 typ relay\r\n") &&
            !strstr(out, "a=candidate:R0 "),
        "IPv6 relay candidate: %s", out ? out : err);
  free(out);
}

static void test_hold(void) {
  char* out;
  char err[MPS_ERR_MAX] = "";
  /* :: is left alone for an IPv6 receiver, as 0.0.0.0 for an IPv4 one */
  const char* h6 =
      "v=0\r\nc=IN IP6 ::\r\nm=audio 4000 RTP/AVP 0\r\nm=video 5000 RTP/AVP 31\r\n"
      "c=IN IP6 0::0\r\n";
  int rc = rewrite(h6, "2001:db8::7 30000 30002", 1, MPSHIM_ICE_NONE, &out, err);
  CHECK(rc == 1 && strcmp(out,
                          "v=0\r\nc=IN IP6 ::\r\nm=audio 30000 RTP/AVP 0\r\n"
                          "m=video 30002 RTP/AVP 31\r\nc=IN IP6 0::0\r\n") == 0,
        "IPv6 hold kept: %s", out ? out : err);
  free(out);
  /* for a receiver of the other family: that family's hold address */
  rc = rewrite(h6, "192.0.2.5 30000 30002", 1, MPSHIM_ICE_NONE, &out, err);
  CHECK(rc == 1 && strcmp(out,
                          "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 30000 RTP/AVP 0\r\n"
                          "m=video 30002 RTP/AVP 31\r\nc=IN IP4 0.0.0.0\r\n") == 0,
        "IPv6 hold to IPv4: %s", out ? out : err);
  free(out);
  rc = rewrite("v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n", "2001:db8::7 30000", 1,
               MPSHIM_ICE_NONE, &out, err);
  CHECK(rc == 1 && strcmp(out, "v=0\r\nc=IN IP6 ::\r\nm=audio 30000 RTP/AVP 0\r\n") == 0,
        "IPv4 hold to IPv6: %s", out ? out : err);
  free(out);
  rc = rewrite("v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n", "192.0.2.5 30000", 1,
               MPSHIM_ICE_NONE, &out, err);
  CHECK(rc == 1 && strcmp(out, "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 30000 RTP/AVP 0\r\n") == 0,
        "IPv4 hold unchanged: %s", out ? out : err);
  free(out);
}

/* Mixed and broken inputs, each with an IPv4 and an IPv6 reply: a refusal
 * or a valid body, and never an address under the other family's token
 * (sdp_valid() checks that on every c= and a=rtcp: line). */
static void test_garbage(void) {
  const char* inputs[] = {
      "v=0\nc=IN IP6 2001:db8::1\nm=audio 1 RTP/AVP 0\nm=x 2 TCP/MSRP *\nm=video 3 RTP/AVP 31\n",
      "v=0\r\nm=audio 1 RTP/AVP 0\r\nc=IN IP6 2001:db8::1\r\nm=audio 2 RTP/AVP 0\r\n"
      "c=IN IP4 10.0.0.1\r\na=rtcp:3 IN IP4 10.0.0.1\r\n",
      "v=0\r\nc=IN IP6 ::\r\nm=audio 1 RTP/AVP 0\r\na=rtcp:2 IN IP6 ::\r\nm=x 2 TCP/MSRP *\r\n",
      "v=0\r\nc=IN IP6 2001:db8::1 extra\r\nm=audio 1 RTP/AVP 0\r\n",
      "v=0\r\nc=IN IP6\r\nm=audio 1 RTP/AVP 0\r\n",
      "v=0\r\nc=IN IP6 2001:db8::1/64\r\nm=audio 1 RTP/AVP 0\r\n",
      "v=0\r\nc=IN IP6 2001:db8::1\r\nm=audio 1 RTP/AVP 0\r\na=rtcp:2 IN IP6\r\n",
      "v=0\r\nc=IN IP6 2001:db8::1\r\nm=audio 1 RTP/AVP 0\r\na=rtcp:2 IN IP6 :: x\r\n",
      "v=0\r\nc=IN IP6 ::ffff:192.0.2.1\r\nm=audio 1 RTP/AVP 0\r\n",
      "v=0\r\nc=IN IP6 2001:DB8::A\r\nm=audio 1 RTP/AVP 0\r\nm=x 2 TCP/MSRP *\r\n"
      "c=IN IP6 garbage\r\n",
      "v=0\r\nc=IN IP6 2001:db8::1\r\nm=audio 1 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\n"
      "m=audio 2 RTP/AVP 0",
  };
  const char* replies[] = {"192.0.2.5 30000 30002 30004", "2001:db8::7 30000 30002 30004",
                           "::ffff:192.0.2.5 30000 30002", "[2001:db8::7] 30000 30002",
                           "2001:db8::7%eth0 30000 30002"};
  int refused = 0, rewritten = 0;
  for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
    for (size_t r = 0; r < sizeof replies / sizeof replies[0]; r++) {
      char* out;
      char err[MPS_ERR_MAX] = "", why[256] = "";
      int rc = rewrite(inputs[i], replies[r], 1, MPSHIM_ICE_LOW, &out, err);
      if (rc == 1) {
        rewritten++;
        CHECK(sdp_valid(out, strlen(out), inputs[i], strlen(inputs[i]), why, sizeof why),
              "input %zu reply %zu: invalid SDP (%s): %s", i, r, why, out);
        free(out);
      } else {
        refused++;
        CHECK(out == NULL && err[0], "input %zu reply %zu: refused without a reason", i, r);
      }
    }
  }
  /* bracketed or zoned relay addresses are no addresses */
  CHECK(refused >= 2 * 11 && rewritten > 0, "refused %d, rewritten %d", refused, rewritten);
}

int main(void) {
  test_addresses();
  test_refusals();
  test_headers();
  test_rewrites();
  test_hold();
  test_garbage();
  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures ? 1 : 0;
}
