/*
 * test_connection.c - the shim's connection behaviour against a forked fake
 * dispatcher that is down, stopped with SIGSTOP, killed and restarted, or
 * misbehaving: every failing call returns -1 within the timeout, calls fail
 * at once during the retry interval and succeed again after it, a restarted
 * dispatcher is reconnected to at once, and no file descriptor leaks
 * (/proc/self/fd is counted before and after).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fake_dispatcher.h"
#include "mediaproxy-shim.h"

#define TIMEOUT_MS 300
#define RETRY_MS 700
#define SLACK_MS 150

#include "check.h"

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static const char sdp[] = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n";
static mpshim_message msg;

/* one use_media_proxy() call: rc, and its duration in *ms */
static int call(mpshim_client* c, long long* ms) {
  char* out = NULL;
  long long t0 = now_ms();
  int rc = mpshim_use_media_proxy(c, &msg, &out, NULL);
  *ms = now_ms() - t0;
  mpshim_free(out);
  return rc;
}

static mpshim_client* client(const char* sock) {
  mpshim_config cfg;
  mpshim_config_init(&cfg);
  cfg.socket_path = sock;
  cfg.timeout_ms = TIMEOUT_MS;
  cfg.retry_interval_ms = RETRY_MS;
  return mpshim_client_new(&cfg);
}

static void drain(fake_dispatcher* f) {
  char buf[16384];
  while (fake_next_request(f, buf, sizeof buf, 50) >= 0) {
  }
}

static void test_down(const char* sock) {
  long long ms;
  mpshim_client* c = client(sock);
  int rc = call(c, &ms);
  CHECK(rc == -1 && ms <= TIMEOUT_MS + SLACK_MS, "down: -1 within the timeout (%d, %lld ms)", rc,
        ms);
  CHECK(strstr(mpshim_client_last_error(c), "cannot connect") != NULL, "down: error '%s'",
        mpshim_client_last_error(c));
  rc = call(c, &ms);
  CHECK(rc == -1 && ms < 50 && strstr(mpshim_client_last_error(c), "next attempt"),
        "down: fails at once in the retry interval (%lld ms, '%s')", ms,
        mpshim_client_last_error(c));
  fake_dispatcher f;
  CHECK(fake_start(&f, sock, NULL, 0, 0, 0) == 0, "fake");
  rc = call(c, &ms);
  CHECK(rc == -1 && fake_next_request(&f, (char[64]){0}, 64, 0) < 0,
        "up again, but still inside the retry interval: no connect");
  sleep_ms(RETRY_MS + 50);
  rc = call(c, &ms);
  CHECK(rc == 1 && mpshim_client_connected(c), "recovers after the retry interval (%s)",
        mpshim_client_last_error(c));
  fake_stop(&f);
  mpshim_client_free(c);
}

static void test_stopped(const char* sock) {
  long long ms;
  fake_dispatcher f;
  CHECK(fake_start(&f, sock, NULL, 0, 0, 0) == 0, "fake");
  mpshim_client* c = client(sock);
  CHECK(call(c, &ms) == 1, "connected");
  kill(f.pid, SIGSTOP);
  int rc = call(c, &ms);
  CHECK(rc == -1 && ms >= TIMEOUT_MS - 20 && ms <= TIMEOUT_MS + SLACK_MS,
        "SIGSTOP: -1 after the timeout (%d, %lld ms)", rc, ms);
  CHECK(strstr(mpshim_client_last_error(c), "timeout") && !mpshim_client_connected(c),
        "SIGSTOP: timeout closes the connection ('%s')", mpshim_client_last_error(c));
  kill(f.pid, SIGCONT);
  rc = call(c, &ms);
  CHECK(rc == -1 && ms < 50, "after SIGCONT, inside the retry interval: -1 at once (%lld ms)", ms);
  sleep_ms(RETRY_MS + 50);
  CHECK(call(c, &ms) == 1, "recovers after the retry interval (%s)", mpshim_client_last_error(c));
  /* stopped before we connect: the kernel still accepts into the backlog */
  mpshim_client_free(c);
  c = client(sock);
  kill(f.pid, SIGSTOP);
  rc = call(c, &ms);
  CHECK(rc == -1 && ms <= TIMEOUT_MS + SLACK_MS,
        "stopped dispatcher, new connection: -1 within the timeout (%lld ms)", ms);
  kill(f.pid, SIGCONT);
  mpshim_client_free(c);
  drain(&f);
  fake_stop(&f);
}

static void test_restart(const char* sock) {
  long long ms;
  fake_dispatcher f;
  CHECK(fake_start(&f, sock, NULL, 0, 0, 0) == 0, "fake");
  mpshim_client* c = client(sock);
  CHECK(call(c, &ms) == 1, "connected");
  fake_stop(&f);
  CHECK(fake_start(&f, sock, NULL, 0, 0, 0) == 0, "fake restarted");
  int rc = call(c, &ms);
  CHECK(rc == 1 && ms < TIMEOUT_MS, "restarted dispatcher: reconnect at once (%d: %s)", rc,
        mpshim_client_last_error(c));
  char req[16384];
  CHECK(fake_next_request(&f, req, sizeof req, 500) > 0 && strncmp(req, "update\r\n", 8) == 0,
        "the request was resent to the new dispatcher");
  /* killed and not restarted: the immediate reconnect fails, then the
   * retry interval applies */
  fake_stop(&f);
  rc = call(c, &ms);
  CHECK(rc == -1 && ms <= TIMEOUT_MS + SLACK_MS, "dispatcher gone: -1 (%lld ms, '%s')", ms,
        mpshim_client_last_error(c));
  rc = call(c, &ms);
  CHECK(rc == -1 && strstr(mpshim_client_last_error(c), "next attempt"), "then the retry interval");
  mpshim_client_free(c);
}

static void test_misbehaving(const char* sock) {
  long long ms;
  fake_dispatcher f;
  mpshim_client* c;

  CHECK(fake_start(&f, sock, NULL, 0, 0, FAKE_CLOSE) == 0, "fake close");
  c = client(sock);
  int rc = call(c, &ms);
  CHECK(rc == -1 && ms < TIMEOUT_MS && strstr(mpshim_client_last_error(c), "closed"),
        "closed without reply: -1 at once ('%s')", mpshim_client_last_error(c));
  mpshim_client_free(c);
  fake_stop(&f);

  CHECK(fake_start(&f, sock, NULL, 0, 0, FAKE_SILENT) == 0, "fake silent");
  c = client(sock);
  rc = call(c, &ms);
  CHECK(rc == -1 && ms <= TIMEOUT_MS + SLACK_MS, "no reply: -1 at the timeout (%lld ms)", ms);
  mpshim_client_free(c);
  fake_stop(&f);

  CHECK(fake_start(&f, sock, NULL, 0, TIMEOUT_MS + 300, 0) == 0, "fake slow");
  c = client(sock);
  rc = call(c, &ms);
  CHECK(rc == -1 && ms <= TIMEOUT_MS + SLACK_MS, "slow reply: -1 at the timeout (%lld ms)", ms);
  mpshim_client_free(c);
  fake_stop(&f);

  CHECK(fake_start(&f, sock, NULL, 0, 0, FAKE_SPLIT) == 0, "fake split");
  c = client(sock);
  char* out = NULL;
  rc = mpshim_use_media_proxy(c, &msg, &out, NULL);
  CHECK(rc == 1 && out && strstr(out, "m=audio 40000 "), "reply in pieces, CR and LF apart (%s)",
        mpshim_client_last_error(c));
  mpshim_free(out);
  mpshim_client_free(c);
  fake_stop(&f);

  static char huge[9000];
  memset(huge, '7', sizeof huge - 1);
  const char* replies[] = {huge};
  CHECK(fake_start(&f, sock, replies, 1, 0, 0) == 0, "fake huge");
  c = client(sock);
  rc = call(c, &ms);
  CHECK(rc == -1 && strstr(mpshim_client_last_error(c), "longer"),
        "reply over 8191 bytes: -1 ('%s')", mpshim_client_last_error(c));
  mpshim_client_free(c);
  fake_stop(&f);

  const char* err_reply[] = {"error"};
  CHECK(fake_start(&f, sock, err_reply, 1, 0, 0) == 0, "fake error");
  c = client(sock);
  mpshim_message rm = msg;
  CHECK(mpshim_end_media_session(c, &rm) == 1, "remove answered 'error' still returns 1");
  CHECK(call(c, &ms) == -1 && mpshim_client_connected(c), "update answered 'error': -1, kept");
  mpshim_client_free(c);
  fake_stop(&f);
}

static void test_no_leaks(const char* sock, int fds_at_start) {
  long long ms;
  mpshim_config cfg;
  mpshim_config_init(&cfg);
  cfg.socket_path = sock;
  cfg.timeout_ms = TIMEOUT_MS;
  cfg.retry_interval_ms = 0;
  mpshim_client* c = mpshim_client_new(&cfg);
  for (int i = 0; i < 300; i++) call(c, &ms); /* dispatcher down */
  CHECK(count_open_fds() == fds_at_start, "300 failed connects leak nothing (%d fds, was %d)",
        count_open_fds(), fds_at_start);
  fake_dispatcher f;
  CHECK(fake_start(&f, sock, NULL, 0, 0, FAKE_NO_RECORD) == 0, "fake");
  long long t0 = now_ms();
  int ok = 0;
  for (int i = 0; i < 2000; i++) ok += call(c, &ms) == 1;
  long long took = now_ms() - t0;
  CHECK(ok == 2000, "2000 calls on one connection (%d ok)", ok);
  CHECK(count_open_fds() == fds_at_start + 2, "one connection (+ the fake's pipe), %d fds",
        count_open_fds());
  printf("  2000 update round trips on one connection: %lld ms\n", took);
  for (int i = 0; i < 20; i++) { /* restart churn */
    fake_stop(&f);
    fake_start(&f, sock, NULL, 0, 0, FAKE_NO_RECORD);
    CHECK(call(c, &ms) == 1, "restart %d", i);
  }
  fake_stop(&f);
  mpshim_client_free(c);
  CHECK(count_open_fds() == fds_at_start, "all closed (%d fds, was %d)", count_open_fds(),
        fds_at_start);
}

/* Independent handles in concurrent threads (the header's threading rule). */
typedef struct worker {
  const char* sock;
  int ok;
} worker;

static void* worker_main(void* arg) {
  worker* w = arg;
  mpshim_client* c = client(w->sock);
  mpshim_message m = msg;
  char cid[64];
  snprintf(cid, sizeof cid, "thread-%p", (void*)w);
  m.call_id = cid;
  for (int i = 0; i < 300; i++) {
    char* out = NULL;
    if (mpshim_use_media_proxy(c, &m, &out, NULL) == 1 && out && strstr(out, "m=audio 40000 ")) {
      w->ok++;
    }
    mpshim_free(out);
  }
  mpshim_client_free(c);
  return NULL;
}

static void test_threads(const char* sock, int fds_at_start) {
  fake_dispatcher f;
  CHECK(fake_start(&f, sock, NULL, 0, 0, FAKE_NO_RECORD) == 0, "fake");
  pthread_t t[4];
  worker w[4];
  for (int i = 0; i < 4; i++) {
    w[i].sock = sock;
    w[i].ok = 0;
    pthread_create(&t[i], NULL, worker_main, &w[i]);
  }
  int ok = 0;
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
    ok += w[i].ok;
  }
  CHECK(ok == 1200, "4 threads x 300 calls on their own handles (%d ok)", ok);
  fake_stop(&f);
  CHECK(count_open_fds() == fds_at_start, "threads leak nothing (%d fds, was %d)", count_open_fds(),
        fds_at_start);
}

int main(void) {
  signal(SIGPIPE, SIG_DFL); /* the shim must not raise it either way */
  char tmpl[] = "/tmp/mpshim-conn-XXXXXX";
  if (!mkdtemp(tmpl)) return 2;
  char sock[256];
  snprintf(sock, sizeof sock, "%s/d.sock", tmpl);
  mpshim_message_init(&msg);
  msg.type = MPSHIM_REQUEST;
  msg.method = "INVITE";
  msg.call_id = "conn-test";
  msg.cseq = "1";
  msg.from_tag = "f";
  msg.signaling_ip = "10.0.0.1";
  msg.body = sdp;
  msg.body_len = strlen(sdp);

  const int fds = count_open_fds();
  test_down(sock);
  test_stopped(sock);
  test_restart(sock);
  test_misbehaving(sock);
  CHECK(count_open_fds() == fds, "no descriptor leaked by the scenarios (%d, was %d)",
        count_open_fds(), fds);
  test_no_leaks(sock, fds);
  test_threads(sock, fds);
  unlink(sock);
  rmdir(tmpl);
  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures ? 1 : 0;
}
