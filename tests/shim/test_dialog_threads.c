/*
 * test_dialog_threads.c - engage mode under concurrency, against a forked
 * fake dispatcher whose recorded requests a reader thread counts: several
 * threads, each with its own client, run whole calls on their own dialogs
 * (every event must succeed, every call ends with exactly one `remove`);
 * then several threads fire random events at one and the same dialog id
 * (the table never holds more than that dialog, and the number of `remove`
 * requests the dispatcher saw equals the number of ends the library
 * reported as sent). Run it under ASan/UBSan or TSan for races and leaks.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake_dispatcher.h"
#include "mediaproxy-shim.h"

#define THREADS 4
#define CALLS_PER_THREAD 150
#define SAME_THREADS 4
#define SAME_EVENTS 400

static const char sdp[] =
    "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0\r\n";

static char sock[108];
static fake_dispatcher fake;
static mpshim_dialogs* table;
static atomic_int failures, removes_sent, updates_seen, removes_seen, max_count;

static void fail(const char* what, int rc, mpshim_client* c) {
  atomic_fetch_add(&failures, 1);
  printf("FAIL %s: rc %d (%s)\n", what, rc, mpshim_client_last_error(c));
}

static mpshim_client* new_client(void) {
  mpshim_config cfg;
  mpshim_config_init(&cfg);
  cfg.socket_path = sock;
  cfg.timeout_ms = 5000;
  return mpshim_client_new(&cfg);
}

static mpshim_message message(const char* id, const char* call_id, int type, int status,
                              const char* method, const char* to_tag, const char* body) {
  mpshim_message m;
  mpshim_message_init(&m);
  m.type = type;
  m.status = status;
  m.method = method;
  m.call_id = call_id;
  m.cseq = "1";
  m.from_tag = "ft";
  m.to_tag = to_tag;
  m.signaling_ip = "203.0.113.7";
  m.dialog_id = id;
  m.body = body;
  m.body_len = body ? strlen(body) : 0;
  return m;
}

static void* own_dialogs(void* arg) {
  const int t = (int)(long)arg;
  mpshim_client* c = new_client();
  for (int i = 0; i < CALLS_PER_THREAD; i++) {
    char id[32], call_id[64];
    snprintf(id, sizeof id, "%d:%d", t, i);
    snprintf(call_id, sizeof call_id, "stress-%d-%d", t, i);
    mpshim_message inv = message(id, call_id, MPSHIM_REQUEST, 0, "INVITE", NULL, sdp);
    mpshim_message r183 = message(id, call_id, MPSHIM_REPLY, 183, "INVITE", "tt", sdp);
    mpshim_message r200 = message(id, call_id, MPSHIM_REPLY, 200, "INVITE", "tt", sdp);
    mpshim_message reinv = message(id, call_id, MPSHIM_REQUEST, 0, "INVITE", "tt", sdp);
    mpshim_message bye = message(id, call_id, MPSHIM_REQUEST, 0, "BYE", "tt", NULL);
    char* out = NULL;
    int rc;
    if ((rc = mpshim_dialog_request(table, c, &inv, &out, NULL)) != MPSHIM_OK)
      fail("INVITE", rc, c);
    mpshim_free(out);
    if ((rc = mpshim_dialog_reply(table, c, &r183, NULL, NULL)) != MPSHIM_OK) fail("183", rc, c);
    if ((rc = mpshim_dialog_reply(table, c, &r200, NULL, NULL)) != MPSHIM_OK) fail("200", rc, c);
    if ((rc = mpshim_dialog_request(table, c, &reinv, NULL, NULL)) != MPSHIM_OK)
      fail("re-INVITE", rc, c);
    if (mpshim_dialog_state(table, id) != MPSHIM_DIALOG_CONFIRMED) fail("state", 0, c);
    if ((rc = mpshim_dialog_request(table, c, &bye, NULL, NULL)) != MPSHIM_OK)
      fail("BYE", rc, c);
    else
      atomic_fetch_add(&removes_sent, 1);
    if ((rc = mpshim_dialog_end(table, c, id)) != MPSHIM_NOTHING) fail("end after BYE", rc, c);
  }
  mpshim_client_free(c);
  return NULL;
}

static void* same_dialog(void* arg) {
  unsigned seed = (unsigned)(long)arg * 7919u + 1;
  mpshim_client* c = new_client();
  for (int i = 0; i < SAME_EVENTS; i++) {
    mpshim_message m;
    int rc;
    switch (rand_r(&seed) % 6) {
      case 0:
        m = message("same", "same-call", MPSHIM_REQUEST, 0, "INVITE", NULL, sdp);
        rc = mpshim_dialog_request(table, c, &m, NULL, NULL);
        /* NOTHING: found the dialog just before another thread ended it */
        if (rc != MPSHIM_OK && rc != MPSHIM_NOTHING) fail("same INVITE", rc, c);
        break;
      case 1:
        m = message("same", "same-call", MPSHIM_REPLY, 183, "INVITE", "x", sdp);
        rc = mpshim_dialog_reply(table, c, &m, NULL, NULL);
        if (rc != MPSHIM_OK && rc != MPSHIM_NOTHING) fail("same 183", rc, c);
        break;
      case 2:
        m = message("same", "same-call", MPSHIM_REPLY, 200, "INVITE", "x", sdp);
        rc = mpshim_dialog_reply(table, c, &m, NULL, NULL);
        if (rc != MPSHIM_OK && rc != MPSHIM_NOTHING) fail("same 200", rc, c);
        break;
      case 3:
        m = message("same", "same-call", MPSHIM_REPLY, 486, "INVITE", "x", NULL);
        rc = mpshim_dialog_reply(table, c, &m, NULL, NULL);
        if (rc == MPSHIM_OK)
          atomic_fetch_add(&removes_sent, 1);
        else if (rc != MPSHIM_NOTHING)
          fail("same 486", rc, c);
        break;
      case 4:
        m = message("same", "same-call", MPSHIM_REQUEST, 0, "BYE", "x", NULL);
        rc = mpshim_dialog_request(table, c, &m, NULL, NULL);
        if (rc == MPSHIM_OK)
          atomic_fetch_add(&removes_sent, 1);
        else if (rc != MPSHIM_NOTHING)
          fail("same BYE", rc, c);
        break;
      default:
        rc = mpshim_dialog_end(table, c, "same");
        if (rc == MPSHIM_OK)
          atomic_fetch_add(&removes_sent, 1);
        else if (rc != MPSHIM_NOTHING)
          fail("same end", rc, c);
        break;
    }
    int n = (int)mpshim_dialogs_count(table);
    if (n > atomic_load(&max_count)) atomic_store(&max_count, n);
  }
  mpshim_client_free(c);
  return NULL;
}

/* Counts the requests the fake dispatcher recorded until told to stop by
 * a final marker request. */
static void* reader(void* arg) {
  (void)arg;
  char buf[16384];
  for (;;) {
    int n = fake_next_request(&fake, buf, sizeof buf, 20000);
    if (n < 0) break;
    if (strstr(buf, "call_id: reader-stop\r\n")) break;
    if (strncmp(buf, "remove\r\n", 8) == 0) atomic_fetch_add(&removes_seen, 1);
    if (strncmp(buf, "update\r\n", 8) == 0) atomic_fetch_add(&updates_seen, 1);
  }
  return NULL;
}

static void stop_reader(pthread_t r) {
  mpshim_client* c = new_client();
  mpshim_message m = message("stop", "reader-stop", MPSHIM_REQUEST, 0, "BYE", NULL, NULL);
  mpshim_end_media_session(c, &m);
  mpshim_client_free(c);
  pthread_join(r, NULL);
}

int main(void) {
  snprintf(sock, sizeof sock, "/tmp/mpshim-dthreads-%d.sock", (int)getpid());
  if (fake_start(&fake, sock, NULL, 0, 0, 0) < 0) {
    printf("FAIL cannot start the fake dispatcher\n");
    return 1;
  }
  int checks = 0, failed = 0;
  table = mpshim_dialogs_new(THREADS * CALLS_PER_THREAD);

  pthread_t r, th[THREADS];
  pthread_create(&r, NULL, reader, NULL);
  for (long t = 0; t < THREADS; t++) pthread_create(&th[t], NULL, own_dialogs, (void*)t);
  for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
  stop_reader(r);
  checks++;
  if (atomic_load(&removes_seen) != THREADS * CALLS_PER_THREAD ||
      atomic_load(&updates_seen) != 4 * THREADS * CALLS_PER_THREAD) {
    failed++;
    printf("FAIL own dialogs: %d updates, %d removes seen\n", atomic_load(&updates_seen),
           atomic_load(&removes_seen));
  }
  checks++;
  if (mpshim_dialogs_count(table) != 0) {
    failed++;
    printf("FAIL %u dialogs left\n", mpshim_dialogs_count(table));
  }

  atomic_store(&removes_sent, 0);
  atomic_store(&removes_seen, 0);
  pthread_create(&r, NULL, reader, NULL);
  for (long t = 0; t < SAME_THREADS; t++) pthread_create(&th[t], NULL, same_dialog, (void*)t);
  for (int t = 0; t < SAME_THREADS; t++) pthread_join(th[t], NULL);
  mpshim_client* c = new_client();
  if (mpshim_dialog_end(table, c, "same") == MPSHIM_OK) atomic_fetch_add(&removes_sent, 1);
  mpshim_client_free(c);
  stop_reader(r);
  checks++;
  if (atomic_load(&removes_seen) != atomic_load(&removes_sent) || atomic_load(&max_count) > 1 ||
      mpshim_dialogs_count(table) != 0) {
    failed++;
    printf("FAIL same dialog: %d removes sent, %d seen, at most %d dialogs, %u left\n",
           atomic_load(&removes_sent), atomic_load(&removes_seen), atomic_load(&max_count),
           mpshim_dialogs_count(table));
  }
  printf("same dialog: %d removes, at most %d dialog\n", atomic_load(&removes_sent),
         atomic_load(&max_count));
  mpshim_dialogs_free(table);
  fake_stop(&fake);
  failed += atomic_load(&failures);
  printf("%d checks, %d failed\n", checks + THREADS * CALLS_PER_THREAD * 7, failed);
  return failed ? 1 : 0;
}
