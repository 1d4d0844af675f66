/*
 * fuzz_dialog.c - libFuzzer-style target over engage mode: each input is a
 * random sequence of dialog events (requests, replies, ends) on a few
 * dialogs of a small table, sent through the public API to a forked fake
 * dispatcher (started once, answering every request). A shadow model of
 * which dialogs exist and in which state is kept beside the library and
 * compared after every event; the table's count must equal the model's and
 * never exceed max_dialogs; every body returned must be valid SDP; the table
 * is freed after each input (leaks show under ASan).
 *
 * Input layout: byte 0 = max_dialogs - 1 (mod 4) and, bit 7, a table in
 * shared memory (mpshim_dialogs_new_shared) instead of the heap; then 3 bytes per event
 * (at most 24): operation, dialog index (mod 6), variant (bits 0-1 body:
 * none, offer, a=remote-candidates, the input's tail; bits 2-3 To tag: none,
 * "a", "b", 300 bytes; bits 4-6 == 7: another Call-ID).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake_dispatcher.h"
#include "mediaproxy-shim.h"
#include "sdp_valid.h"

#define REQUIRE(c)                                                               \
  do {                                                                           \
    if (!(c)) {                                                                  \
      fprintf(stderr, "invariant failed: %s (%s:%d)\n", #c, __FILE__, __LINE__); \
      abort();                                                                   \
    }                                                                            \
  } while (0)

#define DIALOGS 6
#define MAX_EVENTS 24

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

static const char offer[] =
    "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0\r\n";
static const char remote_cands[] =
    "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\na=remote-candidates:1 10.0.0.2 5\r\n";

static fake_dispatcher fake;
static mpshim_client* client;

static void cleanup(void) {
  mpshim_client_free(client);
  fake_stop(&fake);
}

static void setup(void) {
  if (client) return;
  char sock[108];
  snprintf(sock, sizeof sock, "/tmp/mpshim-fuzz-dialog-%d.sock", (int)getpid());
  REQUIRE(fake_start(&fake, sock, NULL, 0, 0, FAKE_NO_RECORD) == 0);
  mpshim_config cfg;
  mpshim_config_init(&cfg);
  cfg.socket_path = sock;
  cfg.timeout_ms = 5000;
  client = mpshim_client_new(&cfg);
  REQUIRE(client != NULL);
  atexit(cleanup);
}

enum {
  OP_INVITE,
  OP_REINVITE,
  OP_ACK,
  OP_BYE,
  OP_CANCEL,
  OP_UPDATE,
  OP_1XX,
  OP_2XX_INVITE,
  OP_FAIL_INVITE,
  OP_2XX_UPDATE,
  OP_FAIL_UPDATE,
  OP_END,
  OP_COUNT
};

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  setup();
  const unsigned max = (unsigned)(data[0] % 4) + 1;
  /* bit 7: the shared-memory table (its record pool and free list) */
  mpshim_dialogs* t = data[0] & 0x80 ? mpshim_dialogs_new_shared(max) : mpshim_dialogs_new(max);
  REQUIRE(t != NULL);
  int state[DIALOGS] = {0}; /* the model: MPSHIM_DIALOG_* */
  char ids[DIALOGS][16], call_ids[DIALOGS][32];
  for (int i = 0; i < DIALOGS; i++) {
    snprintf(ids[i], sizeof ids[i], "%d:%d", i, i * 7);
    snprintf(call_ids[i], sizeof call_ids[i], "fuzz-call-%d", i);
  }
  char long_tag[301];
  memset(long_tag, 't', 300);
  long_tag[300] = '\0';
  /* the input's tail, exactly sized so that ASan sees overreads */
  size_t tail_len = size > 1 + 3 * MAX_EVENTS ? size - 1 - 3 * MAX_EVENTS : 0;
  char* tail = malloc(tail_len + 1);
  REQUIRE(tail != NULL);
  if (tail_len) memcpy(tail, data + 1 + 3 * MAX_EVENTS, tail_len);

  for (size_t e = 0; e < MAX_EVENTS && 1 + 3 * e + 2 < size; e++) {
    const uint8_t* ev = data + 1 + 3 * e;
    const int op = ev[0] % OP_COUNT, i = ev[1] % DIALOGS, var = ev[2];
    static const char* const tags[4] = {NULL, "a", "b", NULL};
    const char* to_tag = (var >> 2 & 3) == 3 ? long_tag : tags[var >> 2 & 3];
    const int other_call = (var >> 4 & 7) == 7 && op != OP_INVITE;
    const char* body = NULL;
    size_t blen = 0;
    switch (var & 3) {
      case 1:
        body = offer, blen = strlen(offer);
        break;
      case 2:
        body = remote_cands, blen = strlen(remote_cands);
        break;
      case 3:
        body = tail, blen = tail_len;
        break;
      default:
        break;
    }
    static const int statuses[] = {100, 180, 183, 199};
    mpshim_message m;
    mpshim_message_init(&m);
    m.call_id = other_call ? "another-call" : call_ids[i];
    m.cseq = "1";
    m.from_tag = "caller";
    m.to_tag = to_tag;
    m.signaling_ip = "203.0.113.7";
    m.dialog_id = ids[i];
    m.body = body;
    m.body_len = blen;
    const int is_reply = op >= OP_1XX && op <= OP_FAIL_UPDATE;
    m.type = is_reply ? MPSHIM_REPLY : MPSHIM_REQUEST;
    m.method = (op == OP_2XX_UPDATE || op == OP_FAIL_UPDATE) ? "UPDATE"
               : is_reply                                    ? "INVITE"
               : op == OP_ACK                                ? "ACK"
               : op == OP_BYE                                ? "BYE"
               : op == OP_CANCEL                             ? "CANCEL"
               : op == OP_UPDATE                             ? "UPDATE"
                                                             : "INVITE";
    if (op == OP_INVITE) m.to_tag = NULL;
    if (op == OP_REINVITE && !to_tag) m.to_tag = "a";
    m.status = op == OP_1XX                                     ? statuses[var & 3]
               : (op == OP_2XX_INVITE || op == OP_2XX_UPDATE)   ? 200 + var % 100
               : (op == OP_FAIL_INVITE || op == OP_FAIL_UPDATE) ? 300 + var % 400
                                                                : 0;
    unsigned held = 0;
    for (int k = 0; k < DIALOGS; k++) held += state[k] != 0;

    char* out = NULL;
    size_t olen = 0;
    int rc;
    if (op == OP_END) {
      rc = mpshim_dialog_end(t, client, ids[i]);
    } else if (is_reply) {
      rc = mpshim_dialog_reply(t, client, &m, &out, &olen);
    } else {
      rc = mpshim_dialog_request(t, client, &m, &out, &olen);
    }
    REQUIRE(rc >= MPSHIM_NO_SDP && rc <= MPSHIM_OK);
    if (out) {
      char why[256];
      REQUIRE(rc == MPSHIM_OK && out[olen] == '\0');
      if (!sdp_valid(out, olen, body, blen, why, sizeof why)) {
        fprintf(stderr, "invalid SDP: %s\n", why);
        REQUIRE(!"a dialog event returned invalid SDP");
      }
      mpshim_free(out);
    }

    /* the model */
    const int exists = state[i] != MPSHIM_DIALOG_UNKNOWN;
    if (!exists) {
      if (op == OP_INVITE && held < max) {
        state[i] = MPSHIM_DIALOG_EARLY;
      } else if (op == OP_INVITE) {
        REQUIRE(rc == MPSHIM_ERROR); /* table full */
      } else {
        REQUIRE(rc == MPSHIM_NOTHING);
      }
    } else if (other_call && op != OP_END) {
      REQUIRE(rc == MPSHIM_ERROR);
    } else if (op == OP_BYE || op == OP_END) {
      REQUIRE(rc == MPSHIM_OK);
      state[i] = MPSHIM_DIALOG_UNKNOWN;
    } else if (op == OP_FAIL_INVITE && state[i] == MPSHIM_DIALOG_EARLY) {
      REQUIRE(rc == MPSHIM_OK);
      state[i] = MPSHIM_DIALOG_UNKNOWN;
    } else if (op == OP_2XX_INVITE && state[i] == MPSHIM_DIALOG_EARLY) {
      if (to_tag != long_tag)
        state[i] = MPSHIM_DIALOG_CONFIRMED;
      else
        REQUIRE(rc == MPSHIM_ERROR);
    }
    held = 0;
    for (int k = 0; k < DIALOGS; k++) {
      REQUIRE(mpshim_dialog_state(t, ids[k]) == state[k]);
      held += state[k] != 0;
    }
    REQUIRE(mpshim_dialogs_count(t) == held && held <= max);
  }
  mpshim_dialogs_free(t);
  free(tail);
  return 0;
}
