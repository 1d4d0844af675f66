/*
 * test_bridge.c - IPv6 parties and IPv4<->IPv6 bridging through the public
 * API against the forked fake dispatcher: the exact `update` the shim sends
 * (IPv6 media addresses in brackets, the `families` header only when the
 * receiver's family differs or cannot be inferred) and the body it returns
 * for the dispatcher's IPv6 or IPv4 reply; a relay without the family asked
 * for (`error`); bad addresses refused before anything is sent; a 1.2
 * program's shorter mpshim_message and its mpshim_message_init (the 1.0
 * symbol version, which must not write past it); and engage mode, where the family named
 * on the initial INVITE is kept for the dialog and every later SDP (183,
 * 200, re-INVITEs either way, a late offer and its ACK) is sent with the
 * families of its direction.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake_dispatcher.h"
#include "mediaproxy-shim.h"

#include "check.h"

/* Fields of a message allocated shorter than the struct (an old program's)
 * are written through memcpy: a member access would be out of bounds. */
static void set_struct_size(mpshim_message* m, size_t size) {
  memcpy((char*)m + offsetof(mpshim_message, struct_size), &size, sizeof size);
}

static const char v4_offer[] =
    "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0\r\na=rtcp:4001 IN IP4 10.0.0.1\r\n";
static const char v6_answer[] =
    "v=0\r\no=b 1 1 IN IP6 2001:db8::b\r\ns=-\r\nc=IN IP6 2001:db8::b\r\nt=0 0\r\n"
    "m=audio 5000 RTP/AVP 0\r\n";
static const char v6_offer[] =
    "v=0\r\no=b 1 2 IN IP6 2001:db8::b\r\ns=-\r\nc=IN IP6 2001:db8::b\r\nt=0 0\r\n"
    "m=audio 5000 RTP/AVP 0\r\nm=video 5002 RTP/AVP 31\r\n";

/* What a program built against 1.0-1.2 calls: the 1.0 version of
 * mpshim_message_init, kept beside the 1.3 default. */
void mpshim_message_init_1_2(mpshim_message* msg);
__asm__(".symver mpshim_message_init_1_2, mpshim_message_init@MEDIAPROXY_SHIM_1.0");

static char sock[108];
static fake_dispatcher fake;
static mpshim_client* client;
static char body[4096];

/* A fresh fake answering with `replies` in turn, and a client for it. */
static void start(const char* const* replies, int n) {
  if (fake_start(&fake, sock, replies, n, 0, 0) < 0) {
    printf("FAIL cannot start the fake dispatcher\n");
    exit(1);
  }
  mpshim_config cfg;
  mpshim_config_init(&cfg);
  cfg.socket_path = sock;
  cfg.retry_interval_ms = 0;
  client = mpshim_client_new(&cfg);
}

static void stop(void) {
  mpshim_client_free(client);
  fake_stop(&fake);
}

static mpshim_message message(int type, int status, const char* method, const char* from_tag,
                              const char* to_tag, const char* sdp) {
  mpshim_message m;
  mpshim_message_init(&m);
  m.type = type;
  m.status = status;
  m.method = method;
  m.call_id = "bridge-1";
  m.cseq = "1";
  m.from_uri = "sip:alice@example.com";
  m.to_uri = "sip:bob@example.net";
  m.from_tag = from_tag;
  m.to_tag = to_tag;
  m.user_agent = "ua";
  m.signaling_ip = "203.0.113.7";
  m.dialog_id = "1:2";
  m.body = sdp;
  m.body_len = sdp ? strlen(sdp) : 0;
  return m;
}

/* The media/families part of the next request (from "media: " to the
 * blank line), or "none". */
static const char* sent_tail(char* buf, size_t cap) {
  int n = fake_next_request(&fake, buf, cap, 0);
  if (n < 0) return "none";
  const char* m = strstr(buf, "\r\nmedia: ");
  return m ? m + 2 : "no media header";
}

static int use(const mpshim_message* m) {
  char* out = NULL;
  size_t len = 0;
  int rc = mpshim_use_media_proxy(client, m, &out, &len);
  snprintf(body, sizeof body, "%s", out ? out : "(none)");
  mpshim_free(out);
  return rc;
}

static void test_use_mode(void) {
  char buf[8192];
  const char* replies[] = {"2001:db8::7 30000", "192.0.2.5 40000", "error"};
  start(replies, 3);
  /* an IPv4 caller's offer to an IPv6 callee */
  mpshim_message m = message(MPSHIM_REQUEST, 0, "INVITE", "ftag", NULL, v4_offer);
  m.peer_family = MPSHIM_FAMILY_IP6;
  CHECK(use(&m) == MPSHIM_OK, "offer: %s", mpshim_client_last_error(client));
  int n = fake_next_request(&fake, buf, sizeof buf, 0);
  CHECK(n > 0 && strcmp(buf,
                        "update\r\ntype: request\r\ndialog_id: 1:2\r\ncall_id: bridge-1\r\n"
                        "cseq: 1\r\nfrom_uri: alice@example.com\r\nto_uri: bob@example.net\r\n"
                        "from_tag: ftag\r\nto_tag: \r\nuser_agent: ua\r\n"
                        "signaling_ip: 203.0.113.7\r\nmedia_relay: \r\n"
                        "media: audio:10.0.0.1:4000:sendrecv:ice=no\r\n"
                        "families: 4,6\r\n\r\n") == 0,
        "the offer's request:\n%s", n > 0 ? buf : "none");
  CHECK(strcmp(body,
               "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP6 2001:db8::7\r\nt=0 0\r\n"
               "m=audio 30000 RTP/AVP 0\r\na=rtcp:30001 IN IP6 2001:db8::7\r\n") == 0,
        "the offer the IPv6 callee gets:\n%s", body);
  /* its answer, back to the IPv4 caller */
  m = message(MPSHIM_REPLY, 200, "INVITE", "ftag", "ttag", v6_answer);
  m.peer_family = MPSHIM_FAMILY_IP4;
  CHECK(use(&m) == MPSHIM_OK, "answer: %s", mpshim_client_last_error(client));
  CHECK(strcmp(sent_tail(buf, sizeof buf),
               "media: audio:[2001:db8::b]:5000:sendrecv:ice=no\r\nfamilies: 6,4\r\n\r\n") == 0,
        "the answer's request: %s", buf);
  CHECK(strstr(body, "\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n") != NULL &&
            !strstr(body, "IN IP6 192"),
        "the answer the IPv4 caller gets:\n%s", body);
  /* no relay with an IPv6 address: `error`, the body is forwarded as it is */
  m = message(MPSHIM_REQUEST, 0, "INVITE", "ftag", NULL, v4_offer);
  m.peer_family = MPSHIM_FAMILY_IP6;
  CHECK(use(&m) == MPSHIM_ERROR && strcmp(body, "(none)") == 0 &&
            strstr(mpshim_client_last_error(client), "error"),
        "error reply: %s", mpshim_client_last_error(client));
  CHECK(strstr(sent_tail(buf, sizeof buf), "families: 4,6\r\n") != NULL, "asked: %s", buf);
  stop();
}

static void test_ipv6_party(void) {
  char buf[8192];
  const char* replies[] = {"2001:db8::7 30000 30002"};
  start(replies, 1);
  /* no bridging: no families header, the items in brackets */
  mpshim_message m = message(MPSHIM_REQUEST, 0, "INVITE", "ftag", NULL, v6_offer);
  CHECK(use(&m) == MPSHIM_OK, "IPv6 offer: %s", mpshim_client_last_error(client));
  CHECK(strcmp(sent_tail(buf, sizeof buf),
               "media: audio:[2001:db8::b]:5000:sendrecv:ice=no,"
               "video:[2001:db8::b]:5002:sendrecv:ice=no\r\n\r\n") == 0,
        "IPv6 request: %s", buf);
  CHECK(strcmp(body,
               "v=0\r\no=b 1 2 IN IP6 2001:db8::b\r\ns=-\r\nc=IN IP6 2001:db8::7\r\nt=0 0\r\n"
               "m=audio 30000 RTP/AVP 0\r\nm=video 30002 RTP/AVP 31\r\n") == 0,
        "IPv6 body:\n%s", body);
  /* a hostname where an address belongs: refused, nothing sent */
  m = message(MPSHIM_REQUEST, 0, "INVITE", "ftag", NULL,
              "v=0\r\nc=IN IP6 media.example.com\r\nm=audio 5000 RTP/AVP 0\r\n");
  CHECK(use(&m) == MPSHIM_ERROR &&
            strstr(mpshim_client_last_error(client), "media.example.com") != NULL,
        "hostname refused: %s", mpshim_client_last_error(client));
  CHECK(strcmp(sent_tail(buf, sizeof buf), "none") == 0, "nothing sent: %s", buf);
  /* peer_family out of range */
  m = message(MPSHIM_REQUEST, 0, "INVITE", "ftag", NULL, v6_offer);
  m.peer_family = 5;
  CHECK(use(&m) == MPSHIM_ERROR && strstr(mpshim_client_last_error(client), "peer_family"),
        "peer_family 5: %s", mpshim_client_last_error(client));
  CHECK(strcmp(sent_tail(buf, sizeof buf), "none") == 0, "nothing sent: %s", buf);
  /* a 1.2 program's message ends before peer_family: no bridging, and the
   * bytes after it are never read (an exact-size copy for ASan) */
  m = message(MPSHIM_REQUEST, 0, "INVITE", "ftag", NULL, v4_offer);
  m.peer_family = MPSHIM_FAMILY_IP6;
  const size_t old_size = offsetof(mpshim_message, peer_family);
  mpshim_message* old = malloc(old_size);
  memcpy(old, &m, old_size);
  set_struct_size(old, old_size);
  CHECK(use(old) == MPSHIM_OK, "1.2 message: %s", mpshim_client_last_error(client));
  CHECK(
      strcmp(sent_tail(buf, sizeof buf), "media: audio:10.0.0.1:4000:sendrecv:ice=no\r\n\r\n") == 0,
      "1.2 message, no families: %s", buf);
  free(old);
  stop();
}

/* The struct grew in 1.3: an old program's mpshim_message_init() must not
 * write past the message it knows, a new program's initialises it all. */
static void test_init_versions(void) {
  const size_t old_size = offsetof(mpshim_message, peer_family);
  unsigned char raw[sizeof(mpshim_message)];
  memset(raw, 0xa5, sizeof raw);
  mpshim_message_init_1_2((mpshim_message*)(void*)raw);
  size_t kept = 0;
  for (size_t i = old_size; i < sizeof raw; i++) kept += raw[i] == 0xa5;
  mpshim_message old;
  memcpy(&old, raw, sizeof old);
  CHECK(old.struct_size == old_size && kept == sizeof raw - old_size && old.body == NULL,
        "1.2 init: struct_size %zu, %zu of %zu bytes after it untouched", old.struct_size, kept,
        sizeof raw - old_size);
  mpshim_message m;
  memset(&m, 0xa5, sizeof m);
  mpshim_message_init(&m);
  CHECK(m.struct_size == sizeof m && m.peer_family == MPSHIM_FAMILY_SAME, "1.3 init: %zu %d",
        m.struct_size, m.peer_family);
}

/* Engage mode: one dialog, its events in order. */
static mpshim_dialogs* table;

static int event(mpshim_message m, const char* id) {
  char* out = NULL;
  size_t len = 0;
  m.dialog_id = id;
  int rc = m.type == MPSHIM_REQUEST ? mpshim_dialog_request(table, client, &m, &out, &len)
                                    : mpshim_dialog_reply(table, client, &m, &out, &len);
  snprintf(body, sizeof body, "%s", out ? out : "(none)");
  mpshim_free(out);
  return rc;
}

static void families_sent(int line, const char* want) {
  char buf[8192];
  const char* tail = sent_tail(buf, sizeof buf);
  const char* f = strstr(tail, "families: ");
  char got[32] = "none";
  if (f) snprintf(got, sizeof got, "%.13s", f);
  if (strcmp(tail, "none") == 0) snprintf(got, sizeof got, "no request");
  CHECK(strcmp(got, want) == 0, "line %d: families %s, expected %s (%s)", line, got, want, tail);
}
#define FAMILIES(want) families_sent(__LINE__, want)

static void test_engage(void) {
  /* the relay answers in the family the families header asks for */
  const char* replies[] = {
      "2001:db8::7 30000", "192.0.2.5 40000",   "192.0.2.5 40000", "192.0.2.5 40002 40004",
      "2001:db8::7 30002", "2001:db8::7 30004", "192.0.2.5 40004", "removed"};
  start(replies, 8);
  table = mpshim_dialogs_new(10);
  /* IPv4 caller, IPv6 callee: named once, on the initial INVITE */
  mpshim_message m = message(MPSHIM_REQUEST, 0, "INVITE", "ctag", NULL, v4_offer);
  m.peer_family = MPSHIM_FAMILY_IP6;
  CHECK(event(m, "b1") == MPSHIM_OK, "INVITE: %s", mpshim_client_last_error(client));
  FAMILIES("families: 4,6");
  CHECK(strstr(body, "c=IN IP6 2001:db8::7\r\n") != NULL, "INVITE body:\n%s", body);
  /* the callee's 183 and 200: reversed, without being told */
  CHECK(event(message(MPSHIM_REPLY, 183, "INVITE", "ctag", "btag", v6_answer), "b1") == MPSHIM_OK,
        "183: %s", mpshim_client_last_error(client));
  FAMILIES("families: 6,4");
  CHECK(event(message(MPSHIM_REPLY, 200, "INVITE", "ctag", "btag", v6_answer), "b1") == MPSHIM_OK,
        "200: %s", mpshim_client_last_error(client));
  FAMILIES("families: 6,4");
  CHECK(strstr(body, "c=IN IP4 192.0.2.5\r\n") != NULL, "200 body:\n%s", body);
  /* a re-INVITE from the callee (its From tag), the caller's 200 to it */
  CHECK(event(message(MPSHIM_REQUEST, 0, "INVITE", "btag", "ctag", v6_offer), "b1") == MPSHIM_OK,
        "callee's re-INVITE: %s", mpshim_client_last_error(client));
  FAMILIES("families: 6,4");
  CHECK(event(message(MPSHIM_REPLY, 200, "INVITE", "btag", "ctag", v4_offer), "b1") == MPSHIM_OK,
        "caller's 200: %s", mpshim_client_last_error(client));
  FAMILIES("families: 4,6");
  CHECK(strstr(body, "c=IN IP6 2001:db8::7\r\n") && strstr(body, "a=rtcp:30003 IN IP6 2001:db8::7"),
        "caller's 200 body:\n%s", body);
  /* a re-INVITE from the caller */
  CHECK(event(message(MPSHIM_REQUEST, 0, "INVITE", "ctag", "btag", v4_offer), "b1") == MPSHIM_OK,
        "caller's re-INVITE: %s", mpshim_client_last_error(client));
  FAMILIES("families: 4,6");
  CHECK(event(message(MPSHIM_REPLY, 200, "INVITE", "ctag", "btag", v6_answer), "b1") == MPSHIM_OK,
        "callee's 200: %s", mpshim_client_last_error(client));
  FAMILIES("families: 6,4");
  CHECK(event(message(MPSHIM_REQUEST, 0, "BYE", "ctag", "btag", NULL), "b1") == MPSHIM_OK, "BYE");
  char buf[8192];
  CHECK(fake_next_request(&fake, buf, sizeof buf, 0) > 0 && strncmp(buf, "remove\r\n", 8) == 0,
        "remove: %s", buf);
  stop();

  /* a late offer: the callee's offer in the 200 goes to the caller's
   * family, known from the INVITE's signaling address; the ACK's answer
   * goes to the callee's */
  const char* late[] = {"192.0.2.5 40000 40002", "2001:db8::7 30000", "removed"};
  start(late, 3);
  m = message(MPSHIM_REQUEST, 0, "INVITE", "ctag", NULL, NULL);
  m.peer_family = MPSHIM_FAMILY_IP6;
  CHECK(event(m, "b2") == MPSHIM_NO_SDP, "late-offer INVITE");
  FAMILIES("no request");
  CHECK(event(message(MPSHIM_REPLY, 200, "INVITE", "ctag", "btag", v6_offer), "b2") == MPSHIM_OK,
        "200 offer: %s", mpshim_client_last_error(client));
  FAMILIES("families: 6,4");
  CHECK(event(message(MPSHIM_REQUEST, 0, "ACK", "ctag", "btag", v4_offer), "b2") == MPSHIM_OK,
        "ACK answer: %s", mpshim_client_last_error(client));
  FAMILIES("families: 4,6");
  CHECK(mpshim_dialog_end(table, client, "b2") == MPSHIM_OK, "end");
  CHECK(fake_next_request(&fake, buf, sizeof buf, 0) > 0, "remove");
  stop();

  /* not bridged: an IPv6 call without the header; a 1.2 program's
   * shorter message in engage mode */
  const char* plain[] = {"192.0.2.5 40000", "192.0.2.5 40002", "removed"};
  start(plain, 3);
  mpshim_message* old = malloc(offsetof(mpshim_message, peer_family));
  m = message(MPSHIM_REQUEST, 0, "INVITE", "ctag", NULL, v6_answer);
  memcpy(old, &m, offsetof(mpshim_message, peer_family));
  set_struct_size(old, offsetof(mpshim_message, peer_family));
  const char* dialog_id = "b3";
  memcpy((char*)old + offsetof(mpshim_message, dialog_id), &dialog_id, sizeof dialog_id);
  char* out = NULL;
  CHECK(mpshim_dialog_request(table, client, old, &out, NULL) == MPSHIM_OK, "IPv6 INVITE: %s",
        mpshim_client_last_error(client));
  CHECK(out && strstr(out, "c=IN IP4 192.0.2.5\r\n"), "IPv4 reply, IN IP4 line:\n%s",
        out ? out : "(none)");
  mpshim_free(out);
  free(old);
  FAMILIES("none");
  CHECK(event(message(MPSHIM_REPLY, 200, "INVITE", "ctag", "btag", v4_offer), "b3") == MPSHIM_OK,
        "200: %s", mpshim_client_last_error(client));
  FAMILIES("none");
  CHECK(mpshim_dialog_end(table, client, "b3") == MPSHIM_OK, "end b3");
  CHECK(mpshim_dialogs_count(table) == 0, "dialogs left: %u", mpshim_dialogs_count(table));
  mpshim_dialogs_free(table);
  stop();
}

/* The fake's default replies follow the families asked for, as a relay. */
static void test_default_replies(void) {
  start(NULL, 0);
  mpshim_message m = message(MPSHIM_REQUEST, 0, "INVITE", "ftag", NULL, v4_offer);
  m.peer_family = MPSHIM_FAMILY_IP6;
  CHECK(use(&m) == MPSHIM_OK && strstr(body, "\r\nc=IN IP6 2001:db8::5\r\n") &&
            strstr(body, "a=rtcp:40001 IN IP6 2001:db8::5\r\n"),
        "bridged to IPv6:\n%s", body);
  m = message(MPSHIM_REQUEST, 0, "INVITE", "ftag", NULL, v6_offer);
  CHECK(use(&m) == MPSHIM_OK && strstr(body, "\r\nc=IN IP6 2001:db8::5\r\n"), "IPv6:\n%s", body);
  m.peer_family = MPSHIM_FAMILY_IP4;
  CHECK(use(&m) == MPSHIM_OK && strstr(body, "\r\nc=IN IP4 192.0.2.5\r\n") &&
            !strstr(body, "2001:db8::5"),
        "bridged to IPv4:\n%s", body);
  stop();
}

int main(void) {
  snprintf(sock, sizeof sock, "/tmp/mpshim-bridge-%d.sock", (int)getpid());
  test_init_versions();
  test_use_mode();
  test_ipv6_party();
  test_default_replies();
  test_engage();
  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures ? 1 : 0;
}
