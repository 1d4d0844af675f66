/*
 * test_unit.c - unit tests of libmediaproxy-shim's internals and API edges
 * that the golden recordings do not reach: the module's text-scanning
 * quirks, SDP refusals, line separators, overlong values, reply tokens,
 * request building and validation, the NAT helpers, and the API's
 * no-body/ICE/multipart/error paths against the fake dispatcher.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake_dispatcher.h"
#include "sdp_valid.h"
#include "shim_internal.h"

#include "check.h"

static mps_str S(const char* s) {
  mps_str r = {s, strlen(s)};
  return r;
}

/* parse + rewrite in one go; returns rc, *out malloc()ed */
static int rewrite(const char* sdp, const char* reply, int is_request, int ice, char** out) {
  mps_session s;
  char err[MPS_ERR_MAX] = "";
  size_t len;
  *out = NULL;
  if (mps_parse_session(&s, S(sdp), err) < 0) return -2;
  return mps_rewrite(&s, sdp, strlen(sdp), reply, is_request, ice, out, &len, err);
}

static void test_text(void) {
  const char* b = "xa=";
  CHECK(mps_find_line(b, 3, "a=", 0) == b + 1, "end-of-block quirk returns a mid-line match");
  CHECK(mps_find_line("xa=1\n", 5, "a=", 0) == NULL, "mid-line match not at the end is skipped");
  CHECK(mps_find_line("q\r\na=1", 6, "a=", 0) != NULL, "match after CRLF");
  CHECK(mps_count_lines("v=0\nv=1\nxv=2", 12, "v=", 0) == 2, "count only line starts");
  CHECK(mps_find_line("Content-type: x", 15, "CONTENT-TYPE: ", 1) != NULL, "case-blind");
  mps_str t[4];
  CHECK(mps_tokens("a b\0c d", 7, t, 4) == 2, "tokens stop at NUL");
  CHECK(mps_tokens(" \t\r\n", 4, t, 4) == 0, "no tokens in white space");
  CHECK(mps_strtoint(S("40000")) == 40000, "strtoint");
  CHECK(mps_strtoint(S("99999999999999999999")) == -1, "strtol saturates, (int) keeps low bits");
  CHECK(mps_strtoint(S("-5x")) == -5, "sign and trailing junk");
  CHECK(mps_strtoint(S("abc")) == 0, "no digits");
}

static void test_parse_refusals(void) {
  mps_session s;
  char err[MPS_ERR_MAX];
  const char* bad[] = {
      "o=- 1 1 IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\n",         /* no v= */
      "v=0\r\nv=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\n", /* two v= */
      "v=0\r\nc=IN IP4 224.2.1.1/127\r\nm=audio 1 RTP/AVP 0\r\n",  /* multicast */
      "v=0\r\nc=IN IP4\r\nm=audio 1 RTP/AVP 0\r\n",                /* short c= */
      "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 1\r\n",                  /* short m= */
      "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 1/2 RTP/AVP 0\r\n",      /* 2 ports */
      "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 1/ RTP/AVP 0\r\n",       /* empty count */
      "v=0\r\nm=audio 1 RTP/AVP 0\r\n",                            /* no address */
      "v=0\r\nm=audio 1 RTP/AVP 0\r\nc=IN IP4 224.1.1.1/5\r\n",    /* stream multicast */
      "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\na=x xm=", /* m= quirk at end */
      "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\na=x xc=", /* c= quirk at end */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECK(mps_parse_session(&s, S(bad[i]), err) == -1, "refused SDP %zu", i);
  }
  /* an unsupported multicast stream is fine; so is a session with no m= */
  CHECK(mps_parse_session(&s,
                          S("v=0\r\nc=IN IP4 1.2.3.4\r\nm=x 1 TCP/MSRP *\r\n"
                            "c=IN IP4 224.1.1.1/5\r\nm=audio 2 RTP/AVP 0\r\n"),
                          err) == 2,
        "unsupported multicast stream accepted: %s", err);
  CHECK(mps_parse_session(&s, S("v=0\r\ns=-\r\n"), err) == 0, "no streams");
  char many[4096];
  size_t n = (size_t)snprintf(many, sizeof many, "v=0\r\nc=IN IP4 1.2.3.4\r\n");
  for (int i = 0; i < 32; i++)
    n += (size_t)snprintf(many + n, sizeof many - n, "m=audio %d RTP/AVP 0\r\n", 1000 + i);
  CHECK(mps_parse_session(&s, S(many), err) == 32, "32 streams accepted");
  snprintf(many + n, sizeof many - n, "m=audio 9 RTP/AVP 0\r\n");
  CHECK(mps_parse_session(&s, S(many), err) == -1, "33 streams refused");
}

static void test_media_header(void) {
  mps_session s;
  char err[MPS_ERR_MAX], buf[MPS_MEDIA_MAX];
  const char* sdp =
      "v=0\r\nc=IN IP4 0.0.0.0\r\na=sendonly\r\nm=audio 5000/1 RTP/AVP 0\r\n"
      "m=video 0 RTP/AVP 31\r\nc=IN IP4 10.0.0.1\r\na=InActive\r\n"
      "m=message 9 TCP/MSRP *\r\n";
  CHECK(mps_parse_session(&s, S(sdp), err) == 3, "parse");
  int n = mps_media_header(&s, buf, err);
  CHECK(n > 0 && strcmp(buf,
                        "media: audio:0.0.0.0:5000:sendonly:ice=no,"
                        "video:10.0.0.1:0:InActive:ice=no\r\n") == 0,
        "media header: %s", buf);
  /* overlong: the module's 4 KiB media buffer */
  static char big[8192];
  size_t l = (size_t)snprintf(big, sizeof big, "v=0\r\nc=IN IP4 1.2.3.4\r\nm=");
  memset(big + l, 'a', 4090);
  l += 4090;
  snprintf(big + l, sizeof big - l, " 1 RTP/AVP 0\r\n");
  CHECK(mps_parse_session(&s, S(big), err) == 1, "parse big");
  CHECK(mps_media_header(&s, buf, err) == -1, "media header over 4 KiB refused");
}

static void test_rewrite(void) {
  char* out;
  /* LF-only, session c= removed because of the unsupported stream */
  int rc = rewrite("v=0\nc=IN IP4 10.0.0.1\nm=audio 1000 RTP/AVP 0\nm=x 9 TCP/MSRP *\n",
                   "192.0.2.1 40000", 1, MPSHIM_ICE_NONE, &out);
  CHECK(rc == 1 && strcmp(out,
                          "v=0\nm=audio 40000 RTP/AVP 0\nc=IN IP4 192.0.2.1\n"
                          "m=x 9 TCP/MSRP *\nc=IN IP4 10.0.0.1\n") == 0,
        "LF rewrite: %s", out ? out : "(null)");
  free(out);
  /* v= line last: empty separator (the module glues the inserted lines onto
   * the m= lines); the shim inserts whole lines after each m= line's own
   * ending */
  rc = rewrite("c=IN IP4 10.0.0.1\r\nm=audio 1000 RTP/AVP 0\r\nm=x 9 TCP/MSRP *\r\nv=0",
               "192.0.2.1 40000", 1, MPSHIM_ICE_NONE, &out);
  CHECK(rc == 1 && strcmp(out,
                          "m=audio 40000 RTP/AVP 0\r\nc=IN IP4 192.0.2.1\r\n"
                          "m=x 9 TCP/MSRP *\r\nc=IN IP4 10.0.0.1\r\nv=0") == 0,
        "empty separator: %s", out ? out : "(null)");
  free(out);
  /* mixed endings: each inserted line ends like the m= line it follows */
  rc = rewrite("v=0\r\nc=IN IP4 10.0.0.1\nm=audio 1000 RTP/AVP 0\nm=x 9 TCP/MSRP *\r\n",
               "192.0.2.1 40000", 1, MPSHIM_ICE_NONE, &out);
  CHECK(rc == 1 && strcmp(out,
                          "v=0\r\nm=audio 40000 RTP/AVP 0\nc=IN IP4 192.0.2.1\n"
                          "m=x 9 TCP/MSRP *\r\nc=IN IP4 10.0.0.1\r\n") == 0,
        "mixed endings: %s", out ? out : "(null)");
  free(out);
  /* last m= line without an ending: it gets one, the c= line is last */
  rc = rewrite("v=0\nc=IN IP4 10.0.0.1\nm=x 9 TCP/MSRP *\nm=audio 1000 RTP/AVP 0",
               "192.0.2.1 40000", 1, MPSHIM_ICE_NONE, &out);
  CHECK(rc == 1 && strcmp(out,
                          "v=0\nm=x 9 TCP/MSRP *\nc=IN IP4 10.0.0.1\n"
                          "m=audio 40000 RTP/AVP 0\nc=IN IP4 192.0.2.1") == 0,
        "no final ending: %s", out ? out : "(null)");
  free(out);
  /* IN IP6 lines get an IPv4 relay: the type token follows the address;
   * an IPv6 relay gets IN IP6 lines, inserted ones too */
  rc = rewrite(
      "v=0\r\nc=IN IP6 2001:db8::1\r\nm=audio 1000 RTP/AVP 0\r\n"
      "a=rtcp:1001 IN IP6 2001:db8::1\r\nm=video 2000 RTP/AVP 31\r\n"
      "c=IN ip6 2001:db8::2\r\n",
      "192.0.2.1 40000 40002", 1, MPSHIM_ICE_NONE, &out);
  CHECK(rc == 1 && strcmp(out,
                          "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 40000 RTP/AVP 0\r\n"
                          "a=rtcp:40001 IN IP4 192.0.2.1\r\nm=video 40002 RTP/AVP 31\r\n"
                          "c=IN IP4 192.0.2.1\r\n") == 0,
        "IP6 lines, IPv4 relay: %s", out ? out : "(null)");
  free(out);
  rc = rewrite("v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 1000 RTP/AVP 0\r\nm=x 9 TCP/MSRP *\r\n",
               "2001:db8::5 40000", 1, MPSHIM_ICE_NONE, &out);
  CHECK(rc == 1 && strcmp(out,
                          "v=0\r\nm=audio 40000 RTP/AVP 0\r\nc=IN IP6 2001:db8::5\r\n"
                          "m=x 9 TCP/MSRP *\r\nc=IN IP4 10.0.0.1\r\n") == 0,
        "IPv6 relay: %s", out ? out : "(null)");
  free(out);
  /* a candidate found inside a line (the module's end-of-block quirk) gets
   * no relay candidate inserted before it */
  rc = rewrite(
      "v=0\r\nc=IN IP4 10.0.0.1\r\na=ice-ufrag:a\r\na=ice-pwd:b\r\n"
      "m=audio 1000 RTP/AVP 0\r\nx=a=candidate:",
      "192.0.2.1 40000", 1, MPSHIM_ICE_LOW, &out);
  CHECK(rc == 1 && out && !strstr(out, "typ relay"), "no candidate inside a line: %s",
        out ? out : "(null)");
  free(out);
  /* a reply token that is no address (the module writes it into the SDP):
   * refused, however long */
  char reply[512];
  memset(reply, 'x', 130);
  snprintf(reply + 130, sizeof reply - 130, " 40000");
  rc = rewrite("v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 1000 RTP/AVP 0\r\nm=x 9 TCP/MSRP *\r\n", reply,
               1, MPSHIM_ICE_NONE, &out);
  CHECK(rc == -1 && out == NULL, "overlong non-address reply refused");
  /* the longest IPv6 text fits every inserted line whole */
  rc = rewrite(
      "v=0\r\nc=IN IP4 10.0.0.1\r\na=ice-ufrag:a\r\na=ice-pwd:b\r\n"
      "m=audio 1000 RTP/AVP 0\r\na=candidate:1 1 UDP 1 10.0.0.1 1000 typ host\r\n",
      "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 40000", 1, MPSHIM_ICE_LOW, &out);
  CHECK(rc == 1 && out &&
            strstr(out,
                   "a=candidate:R0 1 UDP 16777215 "
                   "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 40000 typ "
                   "relay\r\na=candidate:1 1"),
        "IPv6 relay candidate whole: %s", out ? out : "(null)");
  free(out);
  /* reply tokens */
  CHECK(rewrite("v=0\r\nc=IN IP4 1.1.1.1\r\nm=audio 1 RTP/AVP 0\r\n", "error", 1, 1, &out) == -1,
        "error reply");
  CHECK(rewrite("v=0\r\nc=IN IP4 1.1.1.1\r\nm=audio 1 RTP/AVP 0\r\n", " \r\n", 1, 1, &out) == -1,
        "empty reply");
  CHECK(rewrite("v=0\r\nc=IN IP4 1.1.1.1\r\nm=audio 1 RTP/AVP 0\r\n", "None\r\n", 1, 1, &out) == -1,
        "None to a request: too few ports");
  /* the module writes "c=IN IP4 None" into a reply's SDP: an error here */
  rc = rewrite("v=0\r\nc=IN IP4 1.1.1.1\r\nm=audio 1 RTP/AVP 0\r\n", "None\r\n", 0, 1, &out);
  CHECK(rc == -1 && out == NULL, "None to a reply: an error");
  CHECK(rewrite("v=0\r\nc=IN IP4 1.1.1.1\r\nm=audio 1 RTP/AVP 0\r\n", "example.com 5", 0, 1,
                &out) == -1,
        "a host name is no relay address");
  /* ports that are no port: refused (the module writes them, or their
   * int2str(unsigned long) + 1 into a=rtcp) */
  CHECK(rewrite("v=0\r\nc=IN IP4 1.1.1.1\r\nm=audio 1 RTP/AVP 0\r\na=rtcp:2\r\n", "1.2.3.4 -5", 1,
                1, &out) == -1,
        "negative port refused");
  CHECK(rewrite("v=0\r\nc=IN IP4 1.1.1.1\r\nm=audio 1 RTP/AVP 0\r\na=rtcp:2\r\n",
                "1.2.3.4 99999999999999999999", 1, 1, &out) == -1,
        "overlong port refused");
  CHECK(rewrite("v=0\r\nc=IN IP4 1.1.1.1\r\nm=audio 1 RTP/AVP 0\r\na=rtcp:2\r\n", "1.2.3.4 65535",
                1, 1, &out) == -1,
        "port 65535 leaves no RTCP port");
  rc = rewrite("v=0\r\nc=IN IP4 1.1.1.1\r\nm=audio 1 RTP/AVP 0\r\n", "1.2.3.4 65535", 1, 1, &out);
  CHECK(rc == 1 && strstr(out, "m=audio 65535 RTP"), "port 65535 without RTCP");
  free(out);
  /* unchanged values produce no edit: "same" address and port */
  rc = rewrite("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 40000 RTP/AVP 0\r\n", "1.2.3.4 40000", 1, 1,
               &out);
  CHECK(rc == 1 && strcmp(out, "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 40000 RTP/AVP 0\r\n") == 0,
        "no-op rewrite");
  free(out);
  /* blank lines after the session c= go with it */
  rc = rewrite("v=0\r\nc=IN IP4 1.1.1.1\r\n\r\n\r\nm=audio 1 RTP/AVP 0\r\nm=x 2 TCP/X *\r\n",
               "9.9.9.9 5", 1, 1, &out);
  CHECK(rc == 1 && strncmp(out, "v=0\r\nm=audio 5 ", 15) == 0, "ip line with blank lines: %s",
        out ? out : "");
  free(out);
}

static void test_requests(void) {
  char buf[MPS_REQUEST_MAX], err[MPS_ERR_MAX];
  mpshim_message m;
  mpshim_message_init(&m);
  m.type = MPSHIM_REPLY;
  m.status = 180;
  m.call_id = "  abc@host \t";
  m.cseq = "7 INVITE";
  m.from_uri = "\"A\" <SiP:alice@example.com;user=phone>";
  m.to_uri = "sips:bob@example.net";
  m.from_tag = "ft";
  m.to_tag = "tt";
  m.user_agent = "  ";
  m.signaling_ip = "10.0.0.1";
  m.dialog_id = "1:2";
  CHECK(mps_check_message(&m, err) == 1, "valid message: %s", err);
  int n = mps_build_update(&m, "media: audio:1.1.1.1:1:sendrecv:ice=no\r\n", buf, sizeof buf, err);
  CHECK(n > 0 && strcmp(buf,
                        "update\r\ntype: reply\r\ndialog_id: 1:2\r\ncall_id: abc@host\r\n"
                        "cseq: 7\r\nfrom_uri: alice@example.com\r\nto_uri: sips:bob@example.net\r\n"
                        "from_tag: ft\r\nto_tag: \r\nuser_agent: unknown agent\r\n"
                        "signaling_ip: 10.0.0.1\r\nmedia_relay: \r\n"
                        "media: audio:1.1.1.1:1:sendrecv:ice=no\r\n\r\n") == 0,
        "update: %s", buf);
  n = mps_build_remove(&m, buf, sizeof buf, err);
  CHECK(
      n > 0 && strcmp(buf, "remove\r\ncall_id: abc@host\r\nfrom_tag: ft\r\nto_tag: \r\n\r\n") == 0,
      "remove of a 1xx: %s", buf);
  m.from_uri = NULL;
  m.to_uri = "";
  m.status = 200;
  n = mps_build_update(&m, "", buf, sizeof buf, err);
  CHECK(n > 0 && strstr(buf, "from_uri: unknown\r\nto_uri: unknown\r\n") &&
            strstr(buf, "to_tag: tt\r\n"),
        "unknown URIs: %s", buf);
  m.signaling_ip = NULL;
  CHECK(mps_build_update(&m, "", buf, sizeof buf, err) == -1, "no signaling ip");
  m.signaling_ip = "10.0.0.1";
  m.cseq = " ";
  CHECK(mps_build_update(&m, "", buf, sizeof buf, err) == -1, "no cseq");
  m.cseq = "1";
  static char longv[9000];
  memset(longv, 'u', sizeof longv - 1);
  m.user_agent = longv;
  CHECK(mps_build_update(&m, "", buf, sizeof buf, err) == -1, "8 KiB request limit");
  m.user_agent = "a\r\nb: c";
  CHECK(mps_check_message(&m, err) == -1, "line break refused");
  m.user_agent = "ua\r\n";
  CHECK(mps_check_message(&m, err) == 1, "trailing CRLF trimmed");
  m.status = 0;
  CHECK(mps_check_message(&m, err) == -1, "reply without status");
  m.struct_size = 8;
  CHECK(mps_check_message(&m, err) == -1, "uninitialised struct");
}

static void test_nat(void) {
  mpshim_nat_info n;
  mpshim_nat_info_init(&n);
  n.contact = "<sip:alice@192.168.0.5:5062;transport=UDP>;expires=60";
  n.via = "SIP/2.0/UDP 192.168.0.5:5062;branch=z9hG4bK1;rport";
  n.source_ip = "203.0.113.7";
  n.source_port = 5062;
  CHECK(mpshim_client_nat_test(&n, 7) == 7, "all three tests");
  CHECK(mpshim_client_nat_test(&n, 1) == 1, "contact only");
  CHECK(mpshim_client_nat_test(&n, 0) == -1 && mpshim_client_nat_test(&n, 8) == -1, "bad mask");
  CHECK(mpshim_client_nat_test(NULL, 1) == -1, "NULL");
  n.contact = "sip:alice@172.31.255.1";
  CHECK(mpshim_client_nat_test(&n, 1) == 1, "172.31/12 private");
  n.contact = "sip:alice@172.32.0.1";
  CHECK(mpshim_client_nat_test(&n, 1) == 0, "172.32 public");
  n.contact = "\"Bob, the <boss>\" <sip:bob@10.1.2.3>";
  CHECK(mpshim_client_nat_test(&n, 1) == 1, "quoted display name");
  n.contact = "*";
  CHECK(mpshim_client_nat_test(&n, 1) == 0, "star contact");
  n.contact = "<sip:alice@example.com>";
  CHECK(mpshim_client_nat_test(&n, 1) == 0, "host name");
  n.via = "SIP/2.0/UDP 203.0.113.7:5062;branch=x";
  CHECK(mpshim_client_nat_test(&n, 2) == 0, "same address and port");
  n.source_port = 1024;
  CHECK(mpshim_client_nat_test(&n, 2) == 2, "same address, other port");
  n.sip_asymmetric = 1;
  CHECK(mpshim_client_nat_test(&n, 2) == 0, "asymmetric: port ignored");
  n.sip_asymmetric = 0;
  n.via = "SIP / 2.0 / UDP 203.0.113.7 ;branch=x";
  n.source_port = 5060;
  CHECK(mpshim_client_nat_test(&n, 6) == 0, "no port = 5060, LWS in Via");
  n.via = "SIP/2.0/UDP [2001:db8::1]:5060;branch=x";
  n.source_ip = "2001:db8:0::1";
  CHECK(mpshim_client_nat_test(&n, 2) == 0, "IPv6 compared as addresses");
  n.source_ip = NULL;
  CHECK(mpshim_client_nat_test(&n, 2) == -1, "source ip required for test 2");

  char* out;
  size_t len;
  mpshim_nat_info_init(&n);
  n.contact = "\"Alice\" <sip:alice@192.168.0.5:5062;transport=udp>;expires=60, <sip:x@y>";
  n.source_ip = "203.0.113.7";
  n.source_port = 40123;
  CHECK(mpshim_fix_contact(&n, &out, &len) == 1 &&
            strcmp(out,
                   "\"Alice\" <sip:alice@203.0.113.7:40123;transport=udp>;expires=60, <sip:x@y>") ==
                0 &&
            len == strlen(out),
        "fix_contact: %s", out);
  mpshim_free(out);
  n.sip_asymmetric = 1;
  CHECK(
      mpshim_fix_contact(&n, &out, &len) == 1 &&
          strcmp(out,
                 "\"Alice\" <sip:alice@203.0.113.7:5062;transport=udp>;expires=60, <sip:x@y>") == 0,
      "asymmetric keeps the port: %s", out);
  mpshim_free(out);
  n.contact = "sip:alice@192.168.0.5;expires=3600";
  CHECK(mpshim_fix_contact(&n, &out, &len) == 1 &&
            strcmp(out, "sip:alice@203.0.113.7;expires=3600") == 0,
        "asymmetric, no port: %s", out);
  mpshim_free(out);
  n.sip_asymmetric = 0;
  CHECK(mpshim_fix_contact(&n, &out, &len) == 1 &&
            strcmp(out, "sip:alice@203.0.113.7:40123;expires=3600") == 0,
        "addr-spec: %s", out);
  mpshim_free(out);
  n.source_ip = "2001:db8::7";
  CHECK(mpshim_fix_contact(&n, &out, &len) == 1 &&
            strcmp(out, "sip:alice@[2001:db8::7]:40123;expires=3600") == 0,
        "IPv6 source: %s", out);
  mpshim_free(out);
  n.source_ip = "203.0.113.7";
  /* as nathelper (tests/shim/nathelper): any transport is rewritten, sips:
   * like sip:, and the maddr parameter is dropped */
  n.contact = "<sip:alice@10.0.0.1;transport=tcp>";
  CHECK(mpshim_fix_contact(&n, &out, &len) == 1 &&
            strcmp(out, "<sip:alice@203.0.113.7:40123;transport=tcp>") == 0,
        "TCP contact rewritten: %s", out ? out : "(null)");
  mpshim_free(out);
  n.contact = "<sips:alice@10.0.0.1:5061;maddr=10.0.0.9;ob>;expires=5";
  CHECK(mpshim_fix_contact(&n, &out, &len) == 1 &&
            strcmp(out, "<sips:alice@203.0.113.7:40123;ob>;expires=5") == 0,
        "sips contact, maddr dropped: %s", out ? out : "(null)");
  mpshim_free(out);
  CHECK(mpshim_client_nat_test(&n, MPSHIM_NAT_PRIVATE_CONTACT) == MPSHIM_NAT_PRIVATE_CONTACT,
        "private sips contact found");
  n.contact = "*";
  CHECK(mpshim_fix_contact(&n, &out, &len) == -1, "star refused");
  n.contact = "<tel:+123>";
  CHECK(mpshim_fix_contact(&n, &out, &len) == -1, "tel refused");
  n.contact = "<sip:a@10.0.0.1:50x60>";
  CHECK(mpshim_fix_contact(&n, &out, &len) == -1, "bad port refused");
  n.contact = "<sip:a@10.0.0.1>";
  n.source_ip = "not-an-ip";
  CHECK(mpshim_fix_contact(&n, &out, &len) == -1, "bad source refused");
}

static void test_api(const char* sock) {
  mpshim_config cfg;
  mpshim_config_init(&cfg);
  CHECK(cfg.timeout_ms == 500 && cfg.retry_interval_ms == 10000 &&
            cfg.ice_candidate == MPSHIM_ICE_NONE &&
            strcmp(cfg.socket_path, "/run/mediaproxy/dispatcher.sock") == 0,
        "defaults");
  CHECK(strcmp(mpshim_version(), "1.3.0") == 0, "version");
  cfg.timeout_ms = 0;
  errno = 0;
  CHECK(mpshim_client_new(&cfg) == NULL && errno == EINVAL, "timeout 0 refused");
  cfg.timeout_ms = 500;
  char longpath[200];
  memset(longpath, 'p', sizeof longpath - 1);
  longpath[sizeof longpath - 1] = '\0';
  cfg.socket_path = longpath;
  CHECK(mpshim_client_new(&cfg) == NULL, "socket path too long");
  cfg.socket_path = sock;
  cfg.timeout_ms = 1000;
  cfg.retry_interval_ms = 0;

  fake_dispatcher f;
  const char* replies[] = {"192.0.2.9 40000", "192.0.2.9 40000", "error", "192.0.2.9 40000 40002"};
  CHECK(fake_start(&f, sock, replies, 4, 0, 0) == 0, "fake");
  mpshim_client* c = mpshim_client_new(&cfg);
  CHECK(c && !mpshim_client_connected(c), "lazy connect");
  char req[16384];
  char* out = (char*)1;
  size_t len = 7;

  mpshim_message m;
  mpshim_message_init(&m);
  m.type = MPSHIM_REQUEST;
  m.method = "INVITE";
  m.call_id = "api@test";
  m.cseq = "1 INVITE";
  m.from_tag = "a";
  m.signaling_ip = "10.0.0.1";
  CHECK(mpshim_use_media_proxy(c, &m, &out, &len) == MPSHIM_NO_SDP && out == NULL && len == 0,
        "request without body: -2");
  CHECK(fake_next_request(&f, req, sizeof req, 0) < 0 && !mpshim_client_connected(c), "not sent");
  m.type = MPSHIM_REPLY;
  m.status = 180;
  CHECK(mpshim_use_media_proxy(c, &m, &out, &len) == MPSHIM_NO_SDP, "180 without body: -2");
  m.status = 200;
  m.method = "BYE";
  CHECK(mpshim_use_media_proxy(c, &m, &out, &len) == MPSHIM_NO_SDP, "200 to BYE: -2");
  m.method = "1 INVITE";
  m.to_tag = "b";
  CHECK(mpshim_use_media_proxy(c, &m, &out, &len) == MPSHIM_OK && out == NULL,
        "200 to INVITE without body: sent, 1: %s", mpshim_client_last_error(c));
  CHECK(fake_next_request(&f, req, sizeof req, 1000) > 0 && strstr(req, "media:") == NULL &&
            strstr(req, "type: reply\r\n") && strstr(req, "to_tag: b\r\n"),
        "update without media: %s", req);

  /* a=remote-candidates in a request: not processed */
  static const char rc_sdp[] =
      "v=0\r\nc=IN IP4 10.0.0.1\r\na=ice-ufrag:a\r\na=ice-pwd:b\r\nm=audio 1 RTP/AVP 0\r\n"
      "a=candidate:1 1 UDP 1 10.0.0.1 1 typ host\r\na=remote-candidates:1 10.0.0.2 2\r\n";
  m.type = MPSHIM_REQUEST;
  m.body = rc_sdp;
  m.body_len = strlen(rc_sdp);
  CHECK(mpshim_use_media_proxy(c, &m, &out, &len) == MPSHIM_ERROR && out == NULL,
        "remote-candidates: -1");
  CHECK(fake_next_request(&f, req, sizeof req, 0) < 0, "remote-candidates: not sent");

  /* nothing supported: 1, unchanged copy, not sent */
  static const char msrp[] = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=message 9 TCP/MSRP *\r\n";
  m.body = msrp;
  m.body_len = strlen(msrp);
  CHECK(mpshim_use_media_proxy(c, &m, &out, &len) == MPSHIM_OK && out && len == strlen(msrp) &&
            memcmp(out, msrp, len) == 0,
        "unsupported only: unchanged");
  mpshim_free(out);
  CHECK(fake_next_request(&f, req, sizeof req, 0) < 0, "unsupported only: not sent");

  /* content types */
  m.content_type = "text/plain";
  CHECK(mpshim_use_media_proxy(c, &m, &out, &len) == MPSHIM_ERROR, "text/plain refused");
  m.content_type = "application/sdpx";
  CHECK(mpshim_use_media_proxy(c, &m, &out, &len) == MPSHIM_ERROR, "application/sdpx refused");
  m.content_type = "multipart/mixed;boundary=zz";
  CHECK(mpshim_use_media_proxy(c, &m, &out, &len) == MPSHIM_ERROR, "multipart without SDP part");
  m.content_type = "multipart/mixed";
  CHECK(mpshim_use_media_proxy(c, &m, &out, &len) == MPSHIM_ERROR, "multipart without boundary");
  static const char mp[] =
      "--zz\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
      "--zz\r\nContent-Type: application/sdp\r\n\r\n"
      "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 7 RTP/AVP 0\r\n\r\n--zz--\r\n";
  m.content_type = "Multipart/Mixed ; boundary=\"zz\"";
  m.body = mp;
  m.body_len = strlen(mp);
  CHECK(mpshim_use_media_proxy(c, &m, &out, &len) == MPSHIM_OK && out &&
            strcmp(out,
                   "--zz\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
                   "--zz\r\nContent-Type: application/sdp\r\n\r\n"
                   "v=0\r\nc=IN IP4 192.0.2.9\r\nm=audio 40000 RTP/AVP 0\r\n\r\n--zz--\r\n") == 0,
        "multipart with the SDP in the second part (the module would loop): %s",
        out ? out : mpshim_client_last_error(c));
  mpshim_free(out);
  fake_next_request(&f, req, sizeof req, 1000);

  /* error reply: -1, but the connection is kept (not a connection failure) */
  static const char sdp[] =
      "v=0\r\nc=IN IP4 10.0.0.1\r\na=ice-ufrag:a\r\na=ice-pwd:b\r\nm=audio 1 RTP/AVP 0\r\n"
      "a=candidate:1 1 UDP 1 10.0.0.1 1 typ host\r\nm=audio 3 RTP/AVP 0\r\n"
      "a=candidate:1 1 UDP 1 10.0.0.1 3 typ host\r\n";
  m.content_type = NULL;
  m.body = sdp;
  m.body_len = strlen(sdp);
  CHECK(mpshim_use_media_proxy(c, &m, &out, &len) == MPSHIM_ERROR && out == NULL &&
            strstr(mpshim_client_last_error(c), "error") && mpshim_client_connected(c),
        "error reply: %s", mpshim_client_last_error(c));
  fake_next_request(&f, req, sizeof req, 1000);
  /* ICE: client default none, message override high */
  m.ice_candidate = MPSHIM_ICE_HIGH;
  CHECK(mpshim_use_media_proxy(c, &m, &out, &len) == MPSHIM_OK && out &&
            strstr(out,
                   "a=candidate:R90200c0 1 UDP 2197815295 192.0.2.9 40000 typ relay\r\n"
                   "a=candidate:1 1") &&
            strstr(out, "a=candidate:R90200c0 1 UDP 2197815295 192.0.2.9 40002 typ relay\r\n"),
        "ICE high override: %s", out ? out : mpshim_client_last_error(c));
  CHECK(strcmp(mpshim_client_last_error(c), "") == 0, "error cleared after success");
  mpshim_free(out);
  m.ice_candidate = 9;
  CHECK(mpshim_use_media_proxy(c, &m, &out, &len) == MPSHIM_ERROR, "bad ICE value");
  m.ice_candidate = MPSHIM_ICE_DEFAULT;
  CHECK(mpshim_use_media_proxy(c, &m, NULL, NULL) == MPSHIM_OK, "no output wanted");
  CHECK(mpshim_use_media_proxy(NULL, &m, &out, &len) == MPSHIM_ERROR, "NULL client");
  CHECK(mpshim_use_media_proxy(c, NULL, &out, &len) == MPSHIM_ERROR, "NULL message");
  m.call_id = NULL;
  CHECK(mpshim_use_media_proxy(c, &m, &out, &len) == MPSHIM_ERROR, "no Call-ID");
  CHECK(mpshim_end_media_session(c, &m) == MPSHIM_ERROR, "remove without Call-ID");

  mpshim_client_free(c);
  mpshim_client_free(NULL);
  mpshim_free(NULL);
  fake_stop(&f);
}

/* The SDP text the shim refuses to edit, and the tests' validity checker
 * (which must reject each broken body Kamailio forwarded in the goldens). */
static void test_sdp_text_and_checker(void) {
  char err[MPS_ERR_MAX], why[256];
  CHECK(mps_check_sdp_text(S("v=0\r\nm=audio 1 RTP/AVP 0\n"), err) == 1, "CRLF and LF accepted");
  CHECK(mps_check_sdp_text(S("v=0\r\r\nm=audio 1 RTP/AVP 0\r\n"), err) == -1, "lone CR refused");
  CHECK(mps_check_sdp_text(S("v=0\r\nm=audio 1 RTP/AVP 0\r"), err) == -1, "final lone CR refused");
  mps_str nul = {"v=0\r\n\0\r\n", 7};
  CHECK(mps_check_sdp_text(nul, err) == -1, "NUL refused");

  static const struct {
    const char* body;
    int valid;
  } cases[] = {
      {"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5 RTP/AVP 0\r\n", 1},
      {"v=0\nc=IN IP6 2001:db8::1\nm=audio 5/1 RTP/AVP 0\na=rtcp:6 IN IP6 ::1", 1},
      {"v=0\r\nc=IN IP4 None\r\nm=audio 5 RTP/AVP 0\r\n", 0},
      {"v=0\r\nc=IN IP6 192.0.2.5\r\nm=audio 5 RTP/AVP 0\r\n", 0},
      {"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5 RTP/AVP 0c=IN IP4 1.2.3.4\r\n", 0},
      {"v=0\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP 0\nmc=IN IP4 1.2.3.4\n", 0},
      {"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5 RTP/AVP 0\rc=IN IP4 1.2.3.4\n", 0},
      {"v=0\r\nm=audio 5 RTP/AVP 0\r\n", 0},
      {"v=0\r\n\r\nc=IN IP4 1.2.3.4\r\nm=audio 5 RTP/AVP 0\r\n", 0},
      {"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\na=rtcp:1\r\n", 0},
      {"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5 RTP/AVP 0\r\na=rtcp:99999\r\n", 0},
      {"o=x\r\nv=0\r\n", 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int v = sdp_valid(cases[i].body, strlen(cases[i].body), NULL, 0, why, sizeof why);
    CHECK(v == cases[i].valid, "checker case %zu: %d (%s)", i, v, v ? "" : why);
  }
  /* the input's own defects are tolerated, new ones are not */
  const char* in = "v=0\r\n\r\nc=IN IP4 1.2.3.4\r\nm=audio 5 RTP/AVP 0\r\nx\r\n";
  const char* same = "v=0\r\n\r\nc=IN IP4 9.9.9.9\r\nm=audio 7 RTP/AVP 0\r\nx\r\n";
  const char* worse = "v=0\r\n\r\nc=IN IP4 None\r\nm=audio 7 RTP/AVP 0\r\nx\r\n";
  CHECK(sdp_valid(same, strlen(same), in, strlen(in), why, sizeof why) == 1,
        "input defects tolerated: %s", why);
  CHECK(sdp_valid(worse, strlen(worse), in, strlen(in), why, sizeof why) == 0, "new defect found");
}

/* The OpenSIPS dialect: its dialog_id (the dialog's db_id, h_entry << 32 |
 * h_id in decimal, modules/mediaproxy get_dialog_id()) and its relay ICE
 * candidate with raddr/rport. */
static void test_opensips_dialect(void) {
  char id[32], err[MPS_ERR_MAX];
  CHECK(mps_dialog_id("2736:1234", MPSHIM_DIALECT_OPENSIPS, id, sizeof id, err) == 1 &&
            strcmp(id, "11751030523090") == 0,
        "h_entry:h_id -> db_id: %s", id);
  CHECK(mps_dialog_id("2736.1234", MPSHIM_DIALECT_OPENSIPS, id, sizeof id, err) == 1 &&
            strcmp(id, "11751030523090") == 0,
        "h_entry.h_id -> db_id: %s", id);
  CHECK(mps_dialog_id("11751030523090", MPSHIM_DIALECT_OPENSIPS, id, sizeof id, err) == 1 &&
            strcmp(id, "11751030523090") == 0,
        "a db_id is sent as it is: %s", id);
  CHECK(mps_dialog_id("2736:1234", MPSHIM_DIALECT_KAMAILIO, id, sizeof id, err) == 1 &&
            strcmp(id, "2736:1234") == 0,
        "Kamailio keeps h_entry:h_id: %s", id);
  CHECK(mps_dialog_id("1:4294967296", MPSHIM_DIALECT_OPENSIPS, id, sizeof id, err) == -1,
        "h_id over 32 bits refused");
  CHECK(mps_dialog_id("abc", MPSHIM_DIALECT_OPENSIPS, id, sizeof id, err) == -1,
        "not a number refused");
  CHECK(mps_dialog_id(NULL, MPSHIM_DIALECT_OPENSIPS, id, sizeof id, err) == 1 && id[0] == 0,
        "no dialog_id stays empty");

  const char* sdp =
      "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
      "m=audio 4000 RTP/AVP 0\r\na=ice-ufrag:u\r\na=ice-pwd:pppppppppppppppppppppp\r\n"
      "a=candidate:1 1 UDP 2130706431 10.0.0.1 4000 typ host\r\n";
  mps_session s;
  char* out = NULL;
  size_t len = 0;
  CHECK(mps_parse_session(&s, S(sdp), err) == 1, "parse: %s", err);
  CHECK(mps_rewrite_dialect(&s, sdp, strlen(sdp), "192.0.2.5 30000", 1, MPSHIM_ICE_LOW,
                            MPSHIM_DIALECT_OPENSIPS, &out, &len, err) == 1 &&
            strstr(out,
                   "a=candidate:R50200c0 1 UDP 16777215 192.0.2.5 30000 typ relay raddr "
                   "192.0.2.5 rport 30000\r\na=candidate:1 1 UDP") != NULL,
        "OpenSIPS relay candidate: %s", out ? out : err);
  free(out);
}

int main(void) {
  char tmpl[] = "/tmp/mpshim-unit-XXXXXX";
  if (!mkdtemp(tmpl)) return 2;
  char sock[256];
  snprintf(sock, sizeof sock, "%s/d.sock", tmpl);
  test_text();
  test_parse_refusals();
  test_media_header();
  test_rewrite();
  test_sdp_text_and_checker();
  test_requests();
  test_opensips_dialect();
  test_nat();
  test_api(sock);
  rmdir(tmpl);
  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures ? 1 : 0;
}
