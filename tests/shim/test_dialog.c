/*
 * test_dialog.c - the engage-mode state machine (mpshim_dialog_*) against a
 * forked fake dispatcher that records every request: for each event order
 * SIP allows (plain call, late offer, forked 183s, failure after 183, CANCEL
 * racing the 200 and CANCEL winning, BYE before ACK, re-INVITE glare,
 * expiry, ICE negotiation end) it checks what a user observes: the return
 * codes, the exact sequence of `update`/`remove` requests with their
 * dialog_id and tags, the rewritten bodies, the dialog's state and the
 * table's count, the bound of max_dialogs and a `remove` never sent twice.
 * Leaks are left to the ASan build.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake_dispatcher.h"
#include "mediaproxy-shim.h"

#include "check.h"

static const char offer[] =
    "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0\r\n";
static const char answer[] =
    "v=0\r\no=b 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n"
    "m=audio 5000 RTP/AVP 0\r\n";
static const char ice_offer[] =
    "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\n"
    "m=audio 4000 RTP/AVP 0\r\n"
    "a=candidate:1 1 UDP 2130706431 10.0.0.1 4000 typ host\r\n";
static const char remote_cands[] =
    "v=0\r\no=a 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0\r\na=remote-candidates:1 10.0.0.2 5000\r\n";

static fake_dispatcher fake;
static mpshim_client* client;
static mpshim_dialogs* table;

#define CALLER_TAG "caller-tag"

/* A message of the call `id` (Call-ID "call-<id>"). */
static mpshim_message msg(const char* id, int type, int status, const char* method,
                          const char* cseq, const char* from_tag, const char* to_tag,
                          const char* body) {
  static char call_ids[8][64];
  static int next;
  char* call_id = call_ids[next++ % 8];
  snprintf(call_id, 64, "call-%s", id);
  mpshim_message m;
  mpshim_message_init(&m);
  m.type = type;
  m.status = status;
  m.method = method;
  m.call_id = call_id;
  m.cseq = cseq;
  m.from_uri = "sip:alice@example.com";
  m.to_uri = "sip:bob@example.net";
  m.from_tag = from_tag;
  m.to_tag = to_tag;
  m.signaling_ip = type == MPSHIM_REQUEST ? "203.0.113.7" : "198.51.100.20";
  m.dialog_id = id;
  m.body = body;
  m.body_len = body ? strlen(body) : 0;
  return m;
}

/* Events; each returns the library's return code and frees any body. */
static char last_body[4096];

static int req(const char* id, const char* method, const char* cseq, const char* from_tag,
               const char* to_tag, const char* body) {
  mpshim_message m = msg(id, MPSHIM_REQUEST, 0, method, cseq, from_tag, to_tag, body);
  char* out = NULL;
  size_t len = 0;
  int rc = mpshim_dialog_request(table, client, &m, &out, &len);
  snprintf(last_body, sizeof last_body, "%s", out ? out : "");
  mpshim_free(out);
  return rc;
}

static int invite(const char* id, const char* body) {
  return req(id, "INVITE", "1 INVITE", CALLER_TAG, NULL, body);
}

static int reply(const char* id, int status, const char* method, const char* cseq,
                 const char* to_tag, const char* body) {
  mpshim_message m = msg(id, MPSHIM_REPLY, status, method, cseq, CALLER_TAG, to_tag, body);
  char* out = NULL;
  size_t len = 0;
  int rc = mpshim_dialog_reply(table, client, &m, &out, &len);
  snprintf(last_body, sizeof last_body, "%s", out ? out : "");
  mpshim_free(out);
  return rc;
}

/* The next recorded request must be `command` with these header lines
 * (each "name: value"); NULL entries end the list. */
static void expect(int line, const char* command, const char* h1, const char* h2, const char* h3) {
  char buf[16384];
  /* the library waits for the reply, and the fake records before it
   * answers: a request sent is already in the pipe */
  int n = fake_next_request(&fake, buf, sizeof buf, 0);
  checks++;
  if (n < 0) {
    failures++;
    printf("FAIL line %d: no request, expected %s\n", line, command);
    return;
  }
  char first[32];
  snprintf(first, sizeof first, "%s\r\n", command);
  CHECK(strncmp(buf, first, strlen(first)) == 0, "line %d: expected %s, got:\n%s", line, command,
        buf);
  const char* hs[] = {h1, h2, h3};
  for (int i = 0; i < 3 && hs[i]; i++) {
    char want[512];
    snprintf(want, sizeof want, "\r\n%s\r\n", hs[i]);
    CHECK(strstr(buf, want) != NULL, "line %d: no '%s' in:\n%s", line, hs[i], buf);
  }
}
#define EXPECT(cmd, ...) expect(__LINE__, cmd, __VA_ARGS__)

static void expect_none(int line) {
  char buf[16384];
  int n = fake_next_request(&fake, buf, sizeof buf, 0);
  CHECK(n < 0, "line %d: unexpected request:\n%s", line, buf);
}
#define EXPECT_NONE() expect_none(__LINE__)

static void expect_state(int line, const char* id, int state, unsigned count) {
  CHECK(mpshim_dialog_state(table, id) == state, "line %d: state %d, expected %d", line,
        mpshim_dialog_state(table, id), state);
  CHECK(mpshim_dialogs_count(table) == count, "line %d: count %u, expected %u", line,
        mpshim_dialogs_count(table), count);
}
#define STATE(id, state, count) expect_state(__LINE__, id, state, count)

static void test_plain_call(void) {
  CHECK(invite("1:1", offer) == MPSHIM_OK, "INVITE: %s", mpshim_client_last_error(client));
  EXPECT("update", "type: request", "dialog_id: 1:1", "to_tag: ");
  CHECK(strstr(last_body, "c=IN IP4 192.0.2.5\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n") != NULL,
        "INVITE body not rewritten: %s", last_body);
  STATE("1:1", MPSHIM_DIALOG_EARLY, 1);
  CHECK(reply("1:1", 100, "INVITE", "1", NULL, NULL) == MPSHIM_NOTHING, "100");
  CHECK(reply("1:1", 180, "INVITE", "1", "b", NULL) == MPSHIM_NO_SDP, "180 without SDP");
  EXPECT_NONE();
  CHECK(reply("1:1", 200, "INVITE", "1", "b", answer) == MPSHIM_OK, "200");
  EXPECT("update", "type: reply", "dialog_id: 1:1", "to_tag: b");
  CHECK(strstr(last_body, "c=IN IP4 192.0.2.5") != NULL, "200 body: %s", last_body);
  STATE("1:1", MPSHIM_DIALOG_CONFIRMED, 1);
  CHECK(req("1:1", "ACK", "1 ACK", CALLER_TAG, "b", NULL) == MPSHIM_NO_SDP, "ACK");
  EXPECT_NONE();
  /* re-INVITE from the caller and its 200 */
  CHECK(req("1:1", "INVITE", "2 INVITE", CALLER_TAG, "b", offer) == MPSHIM_OK, "re-INVITE");
  EXPECT("update", "type: request", "cseq: 2", "to_tag: b");
  CHECK(reply("1:1", 200, "INVITE", "2", "b", answer) == MPSHIM_OK, "200 re-INVITE");
  EXPECT("update", "type: reply", "cseq: 2", NULL);
  CHECK(req("1:1", "BYE", "3 BYE", CALLER_TAG, "b", NULL) == MPSHIM_OK, "BYE");
  EXPECT("remove", "call_id: call-1:1", "from_tag: " CALLER_TAG, "to_tag: b");
  STATE("1:1", MPSHIM_DIALOG_UNKNOWN, 0);
  /* the dialog module's later DESTROY, a late ACK: nothing more is sent */
  CHECK(mpshim_dialog_end(table, client, "1:1") == MPSHIM_NOTHING, "end after BYE");
  CHECK(req("1:1", "ACK", "2 ACK", CALLER_TAG, "b", NULL) == MPSHIM_NOTHING, "late ACK");
  CHECK(reply("1:1", 200, "BYE", "3", "b", NULL) == MPSHIM_NOTHING, "200 to BYE");
  EXPECT_NONE();
}

static void test_late_offer(void) {
  CHECK(invite("2:1", NULL) == MPSHIM_NO_SDP, "INVITE without SDP");
  EXPECT_NONE();
  STATE("2:1", MPSHIM_DIALOG_EARLY, 1);
  CHECK(reply("2:1", 200, "INVITE", "1", "b", offer) == MPSHIM_OK, "200 with the offer");
  EXPECT("update", "type: reply", "dialog_id: 2:1", "to_tag: b");
  CHECK(req("2:1", "ACK", "1 ACK", CALLER_TAG, "b", answer) == MPSHIM_OK, "ACK with the answer");
  EXPECT("update", "type: request", "cseq: 1", "to_tag: b");
  CHECK(strstr(last_body, "c=IN IP4 192.0.2.5") != NULL, "ACK body: %s", last_body);
  CHECK(req("2:1", "BYE", "2 BYE", "b", CALLER_TAG, NULL) == MPSHIM_OK, "BYE from callee");
  EXPECT("remove", "from_tag: " CALLER_TAG, "to_tag: b", NULL);
  STATE("2:1", MPSHIM_DIALOG_UNKNOWN, 0);
}

static void test_forked_183(void) {
  CHECK(invite("3:1", offer) == MPSHIM_OK, "INVITE");
  EXPECT("update", "type: request", NULL, NULL);
  CHECK(reply("3:1", 183, "INVITE", "1", "fork-a", answer) == MPSHIM_OK, "183 a");
  EXPECT("update", "type: reply", "to_tag: ", "dialog_id: 3:1");
  CHECK(reply("3:1", 183, "INVITE", "1", "fork-b", answer) == MPSHIM_OK, "183 b");
  EXPECT("update", "type: reply", "to_tag: ", NULL);
  STATE("3:1", MPSHIM_DIALOG_EARLY, 1);
  CHECK(reply("3:1", 200, "INVITE", "1", "fork-b", answer) == MPSHIM_OK, "200 b");
  EXPECT("update", "type: reply", "to_tag: fork-b", NULL);
  /* a 2xx of the other fork too: relayed, the dialog keeps fork-b */
  CHECK(reply("3:1", 200, "INVITE", "1", "fork-a", answer) == MPSHIM_OK, "200 a");
  EXPECT("update", "to_tag: fork-a", NULL, NULL);
  CHECK(mpshim_dialog_end(table, client, "3:1") == MPSHIM_OK, "end");
  EXPECT("remove", "from_tag: " CALLER_TAG, "to_tag: fork-b", NULL);
  STATE("3:1", MPSHIM_DIALOG_UNKNOWN, 0);
}

static void test_failure_after_183(void) {
  CHECK(invite("4:1", offer) == MPSHIM_OK, "INVITE");
  EXPECT("update", NULL, NULL, NULL);
  CHECK(reply("4:1", 183, "INVITE", "1", "x", answer) == MPSHIM_OK, "183");
  EXPECT("update", "type: reply", NULL, NULL);
  CHECK(reply("4:1", 486, "INVITE", "1", "x", NULL) == MPSHIM_OK, "486");
  EXPECT("remove", "call_id: call-4:1", "from_tag: " CALLER_TAG, "to_tag: ");
  STATE("4:1", MPSHIM_DIALOG_UNKNOWN, 0);
  CHECK(reply("4:1", 200, "INVITE", "1", "x", answer) == MPSHIM_NOTHING, "late 200");
  EXPECT_NONE();
}

static void test_cancel(void) {
  /* CANCEL racing the 200: the 200 wins, the call goes on */
  CHECK(invite("5:1", offer) == MPSHIM_OK, "INVITE");
  EXPECT("update", NULL, NULL, NULL);
  CHECK(reply("5:1", 180, "INVITE", "1", "b", NULL) == MPSHIM_NO_SDP, "180");
  CHECK(req("5:1", "CANCEL", "1 CANCEL", CALLER_TAG, NULL, NULL) == MPSHIM_NO_SDP, "CANCEL");
  CHECK(reply("5:1", 200, "CANCEL", "1", "b", NULL) == MPSHIM_NO_SDP, "200 to CANCEL");
  EXPECT_NONE();
  STATE("5:1", MPSHIM_DIALOG_EARLY, 1);
  CHECK(reply("5:1", 200, "INVITE", "1", "b", answer) == MPSHIM_OK, "200 to INVITE");
  EXPECT("update", "to_tag: b", NULL, NULL);
  STATE("5:1", MPSHIM_DIALOG_CONFIRMED, 1);
  CHECK(req("5:1", "ACK", "1 ACK", CALLER_TAG, "b", NULL) == MPSHIM_NO_SDP, "ACK");
  CHECK(req("5:1", "BYE", "2 BYE", CALLER_TAG, "b", NULL) == MPSHIM_OK, "BYE");
  EXPECT("remove", "to_tag: b", NULL, NULL);
  STATE("5:1", MPSHIM_DIALOG_UNKNOWN, 0);

  /* CANCEL winning: the 487 ends the dialog */
  CHECK(invite("5:2", offer) == MPSHIM_OK, "INVITE");
  EXPECT("update", NULL, NULL, NULL);
  CHECK(req("5:2", "CANCEL", "1 CANCEL", CALLER_TAG, NULL, NULL) == MPSHIM_NO_SDP, "CANCEL");
  CHECK(reply("5:2", 487, "INVITE", "1", "b", NULL) == MPSHIM_OK, "487");
  EXPECT("remove", "call_id: call-5:2", "to_tag: ", NULL);
  STATE("5:2", MPSHIM_DIALOG_UNKNOWN, 0);
  EXPECT_NONE();
}

static void test_bye_before_ack(void) {
  CHECK(invite("6:1", offer) == MPSHIM_OK, "INVITE");
  EXPECT("update", NULL, NULL, NULL);
  CHECK(reply("6:1", 200, "INVITE", "1", "b", NULL) == MPSHIM_OK, "200 without SDP (late offer)");
  EXPECT("update", "type: reply", "to_tag: b", NULL);
  CHECK(req("6:1", "BYE", "2 BYE", CALLER_TAG, "b", NULL) == MPSHIM_OK, "BYE");
  EXPECT("remove", "to_tag: b", NULL, NULL);
  CHECK(req("6:1", "ACK", "1 ACK", CALLER_TAG, "b", answer) == MPSHIM_NOTHING, "ACK after BYE");
  EXPECT_NONE();
  STATE("6:1", MPSHIM_DIALOG_UNKNOWN, 0);
}

static void test_glare(void) {
  CHECK(invite("7:1", offer) == MPSHIM_OK, "INVITE");
  CHECK(reply("7:1", 200, "INVITE", "1", "b", answer) == MPSHIM_OK, "200");
  EXPECT("update", NULL, NULL, NULL);
  EXPECT("update", NULL, NULL, NULL);
  /* both ends re-INVITE at once; the callee's gets 491, the caller's 200 */
  CHECK(req("7:1", "INVITE", "2 INVITE", CALLER_TAG, "b", offer) == MPSHIM_OK, "re-INVITE A");
  EXPECT("update", "type: request", "cseq: 2", NULL);
  CHECK(req("7:1", "INVITE", "7 INVITE", "b", CALLER_TAG, answer) == MPSHIM_OK, "re-INVITE B");
  EXPECT("update", "type: request", "cseq: 7", NULL);
  CHECK(reply("7:1", 491, "INVITE", "7", CALLER_TAG, NULL) == MPSHIM_NOTHING, "491");
  EXPECT_NONE();
  STATE("7:1", MPSHIM_DIALOG_CONFIRMED, 1);
  CHECK(reply("7:1", 200, "INVITE", "2", "b", answer) == MPSHIM_OK, "200 to A");
  EXPECT("update", "type: reply", "cseq: 2", NULL);
  /* UPDATE and a failure to it */
  CHECK(req("7:1", "UPDATE", "3 UPDATE", CALLER_TAG, "b", offer) == MPSHIM_OK, "UPDATE");
  EXPECT("update", "cseq: 3", NULL, NULL);
  CHECK(reply("7:1", 488, "UPDATE", "3", "b", NULL) == MPSHIM_NOTHING, "488");
  STATE("7:1", MPSHIM_DIALOG_CONFIRMED, 1);
  /* expiry ends it */
  CHECK(mpshim_dialog_end(table, client, "7:1") == MPSHIM_OK, "expired");
  EXPECT("remove", "to_tag: b", NULL, NULL);
  CHECK(mpshim_dialog_end(table, client, "7:1") == MPSHIM_NOTHING, "destroyed");
  EXPECT_NONE();
}

static void test_ice(void) {
  /* the ICE setting of the INVITE holds for the dialog */
  mpshim_message m = msg("8:1", MPSHIM_REQUEST, 0, "INVITE", "1", CALLER_TAG, NULL, ice_offer);
  m.ice_candidate = MPSHIM_ICE_HIGH;
  char* out = NULL;
  CHECK(mpshim_dialog_request(table, client, &m, &out, NULL) == MPSHIM_OK, "INVITE");
  CHECK(out && strstr(out, "a=candidate:R50200c0 1 UDP 2197815295 192.0.2.5 40000 typ relay"),
        "no high-priority relay candidate: %s", out ? out : "");
  mpshim_free(out);
  EXPECT("update", "media: audio:10.0.0.1:4000:sendrecv:ice=yes", NULL, NULL);
  CHECK(reply("8:1", 200, "INVITE", "1", "b", ice_offer) == MPSHIM_OK, "200");
  CHECK(strstr(last_body, "2197815295") != NULL, "200: no relay candidate: %s", last_body);
  EXPECT("update", NULL, NULL, NULL);
  /* a=remote-candidates: not relayed, and neither is the next reply */
  CHECK(req("8:1", "INVITE", "2", CALLER_TAG, "b", remote_cands) == MPSHIM_ERROR, "re-INVITE");
  CHECK(reply("8:1", 200, "INVITE", "2", "b", answer) == MPSHIM_NOTHING, "its 200");
  EXPECT_NONE();
  CHECK(req("8:1", "INVITE", "3", CALLER_TAG, "b", offer) == MPSHIM_OK, "next re-INVITE");
  CHECK(reply("8:1", 200, "INVITE", "3", "b", answer) == MPSHIM_OK, "its 200");
  EXPECT("update", "cseq: 3", "type: request", NULL);
  EXPECT("update", "cseq: 3", "type: reply", NULL);
  CHECK(req("8:1", "BYE", "4", CALLER_TAG, "b", NULL) == MPSHIM_OK, "BYE");
  EXPECT("remove", NULL, NULL, NULL);
}

static void test_refusals(void) {
  CHECK(req("9:1", "ACK", "1", CALLER_TAG, "b", offer) == MPSHIM_NOTHING, "unknown dialog ACK");
  CHECK(req("9:1", "INVITE", "2", CALLER_TAG, "b", offer) == MPSHIM_NOTHING, "INVITE with To tag");
  CHECK(reply("9:1", 200, "INVITE", "1", "b", answer) == MPSHIM_NOTHING, "unknown dialog reply");
  EXPECT_NONE();
  CHECK(invite("", offer) == MPSHIM_ERROR, "empty dialog_id");
  CHECK(strstr(mpshim_client_last_error(client), "dialog_id") != NULL, "error: %s",
        mpshim_client_last_error(client));
  CHECK(invite("9:2", offer) == MPSHIM_OK, "INVITE");
  EXPECT("update", NULL, NULL, NULL);
  mpshim_message m = msg("9:2", MPSHIM_REPLY, 200, "INVITE", "1", CALLER_TAG, "b", answer);
  m.call_id = "another-call";
  CHECK(mpshim_dialog_reply(table, client, &m, NULL, NULL) == MPSHIM_ERROR, "other Call-ID");
  CHECK(mpshim_dialog_request(table, client, &m, NULL, NULL) == MPSHIM_ERROR, "reply as request");
  CHECK(mpshim_dialog_reply(NULL, client, &m, NULL, NULL) == MPSHIM_ERROR, "no table");
  CHECK(mpshim_dialog_end(table, NULL, "9:2") == MPSHIM_ERROR, "no client");
  EXPECT_NONE();
  STATE("9:2", MPSHIM_DIALOG_EARLY, 1);
  CHECK(mpshim_dialog_end(table, client, "9:2") == MPSHIM_OK, "end");
  EXPECT("remove", NULL, NULL, NULL);
  CHECK(mpshim_dialogs_new(0) == NULL && mpshim_dialogs_new(1000001) == NULL, "bad max");
}

static void test_bounded(void) {
  mpshim_dialogs* saved = table;
  table = mpshim_dialogs_new(3);
  const char* ids[] = {"10:1", "10:2", "10:3"};
  for (int i = 0; i < 3; i++) CHECK(invite(ids[i], offer) == MPSHIM_OK, "INVITE %d", i);
  for (int i = 0; i < 3; i++) EXPECT("update", NULL, NULL, NULL);
  CHECK(invite("10:4", offer) == MPSHIM_ERROR, "INVITE beyond max_dialogs");
  CHECK(strstr(mpshim_client_last_error(client), "dialog table full: 3") != NULL, "error: %s",
        mpshim_client_last_error(client));
  EXPECT_NONE();
  CHECK(mpshim_dialogs_count(table) == 3, "count");
  CHECK(invite("10:2", offer) == MPSHIM_OK, "retransmitted INVITE of a held dialog");
  EXPECT("update", "dialog_id: 10:2", NULL, NULL);
  CHECK(reply("10:1", 603, "INVITE", "1", "b", NULL) == MPSHIM_OK, "603");
  EXPECT("remove", NULL, NULL, NULL);
  CHECK(invite("10:4", offer) == MPSHIM_OK, "INVITE after one ended");
  EXPECT("update", "dialog_id: 10:4", NULL, NULL);
  /* freeing a table with dialogs in it sends nothing and leaks nothing */
  mpshim_dialogs_free(table);
  EXPECT_NONE();
  table = saved;
}

static void test_opensips_and_down(const char* sock) {
  mpshim_config cfg;
  mpshim_config_init(&cfg);
  cfg.socket_path = sock;
  cfg.dialect = MPSHIM_DIALECT_OPENSIPS;
  mpshim_client* saved = client;
  client = mpshim_client_new(&cfg);
  CHECK(invite("1234:5678", offer) == MPSHIM_OK, "INVITE");
  EXPECT("update", "dialog_id: 5299989648942", NULL, NULL);
  mpshim_client_free(client);
  /* dispatcher gone: the remove fails, the dialog is forgotten anyway */
  cfg.socket_path = "/nonexistent/dispatcher.sock";
  client = mpshim_client_new(&cfg);
  CHECK(mpshim_dialog_end(table, client, "1234:5678") == MPSHIM_ERROR, "end, dispatcher down");
  STATE("1234:5678", MPSHIM_DIALOG_UNKNOWN, 0);
  mpshim_client_free(client);
  client = saved;
}

int main(void) {
  char sock[108];
  snprintf(sock, sizeof sock, "/tmp/mpshim-dialog-%d.sock", (int)getpid());
  if (fake_start(&fake, sock, NULL, 0, 0, 0) < 0) {
    printf("FAIL cannot start the fake dispatcher\n");
    return 1;
  }
  mpshim_config cfg;
  mpshim_config_init(&cfg);
  cfg.socket_path = sock;
  client = mpshim_client_new(&cfg);
  table = mpshim_dialogs_new(100);
  test_plain_call();
  test_late_offer();
  test_forked_183();
  test_failure_after_183();
  test_cancel();
  test_bye_before_ack();
  test_glare();
  test_ice();
  test_refusals();
  test_bounded();
  test_opensips_and_down(sock);
  CHECK(mpshim_dialogs_count(table) == 0, "dialogs left: %u", mpshim_dialogs_count(table));
  mpshim_dialogs_free(table);
  mpshim_client_free(client);
  fake_stop(&fake);
  printf("%d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
