/*
 * test_dialog_shared.c - engage mode with a table shared by processes
 * (mpshim_dialogs_new_shared), as a proxy whose workers are forked
 * processes uses it, against a forked fake dispatcher: a dialog created in
 * one process is confirmed in a second and ended by a third, and every
 * process sees the same state; four processes run whole calls on their own
 * dialogs while four more fire random events at one dialog in a table of
 * one (the dispatcher sees exactly the removes the processes report, and no
 * event fails as if a second dialog of that id were made); a process killed (SIGKILL) while it
 * holds a dialog's lock, waiting for a slow dispatcher, does not block the others: the dialog can
 * still be ended. Each process uses its own client handle.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fake_dispatcher.h"
#include "mediaproxy-shim.h"

#include "check.h"

#define PROCS 4
#define CALLS 60
#define SAME_EVENTS 150

static const char sdp[] =
    "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0\r\n";

static char sock[108];
static fake_dispatcher fake;
static mpshim_dialogs* table;
static mpshim_dialogs* one; /* max_dialogs 1: the shared dialog's table */

static mpshim_client* new_client(const char* path, int timeout_ms) {
  mpshim_config cfg;
  mpshim_config_init(&cfg);
  cfg.socket_path = path;
  cfg.timeout_ms = timeout_ms;
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

/* Run fn(arg) in a child process with its own client; its exit status. */
static pid_t spawn(int (*fn)(mpshim_client*, long), long arg) {
  pid_t pid = fork();
  if (pid == 0) {
    mpshim_client* c = new_client(sock, 5000);
    int rc = fn(c, arg);
    mpshim_client_free(c);
    _exit(rc);
  }
  return pid;
}

static int wait_status(pid_t pid) {
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int confirm(mpshim_client* c, long arg) {
  (void)arg;
  mpshim_message m = message("x:1", "cross", MPSHIM_REPLY, 200, "INVITE", "b", sdp);
  return mpshim_dialog_reply(table, c, &m, NULL, NULL) == MPSHIM_OK ? 0 : 1;
}

static int bye(mpshim_client* c, long arg) {
  (void)arg;
  mpshim_message m = message("x:1", "cross", MPSHIM_REQUEST, 0, "BYE", "b", NULL);
  return mpshim_dialog_request(table, c, &m, NULL, NULL) == MPSHIM_OK ? 0 : 1;
}

static void test_cross_process(void) {
  mpshim_client* c = new_client(sock, 5000);
  mpshim_message m = message("x:1", "cross", MPSHIM_REQUEST, 0, "INVITE", NULL, sdp);
  CHECK(mpshim_dialog_request(table, c, &m, NULL, NULL) == MPSHIM_OK, "INVITE in the parent");
  CHECK(wait_status(spawn(confirm, 0)) == 0, "200 in a child");
  CHECK(mpshim_dialog_state(table, "x:1") == MPSHIM_DIALOG_CONFIRMED, "parent sees CONFIRMED");
  CHECK(wait_status(spawn(bye, 0)) == 0, "BYE in another child");
  CHECK(mpshim_dialog_state(table, "x:1") == MPSHIM_DIALOG_UNKNOWN, "parent sees it ended");
  CHECK(mpshim_dialogs_count(table) == 0, "count 0");
  CHECK(mpshim_dialog_end(table, c, "x:1") == MPSHIM_NOTHING, "no second remove");
  char buf[16384];
  const char* want[] = {"update\r\ntype: request\r\n", "update\r\ntype: reply\r\n", "remove\r\n"};
  for (int i = 0; i < 3; i++) {
    int n = fake_next_request(&fake, buf, sizeof buf, 2000);
    CHECK(n > 0 && strncmp(buf, want[i], strlen(want[i])) == 0, "request %d: %s", i,
          n > 0 ? buf : "none");
    if (i == 2) CHECK(strstr(buf, "\r\nto_tag: b\r\n") != NULL, "remove with the 200's tag");
  }
  CHECK(fake_next_request(&fake, buf, sizeof buf, 0) < 0, "nothing more");
  mpshim_client_free(c);
}

/* Own dialogs: whole calls; exit 0 when every event succeeded. */
static int own_calls(mpshim_client* c, long p) {
  int bad = 0;
  for (int i = 0; i < CALLS; i++) {
    char id[32], call_id[32];
    snprintf(id, sizeof id, "%ld:%d", p, i);
    snprintf(call_id, sizeof call_id, "own-%ld-%d", p, i);
    mpshim_message inv = message(id, call_id, MPSHIM_REQUEST, 0, "INVITE", NULL, sdp);
    mpshim_message ok = message(id, call_id, MPSHIM_REPLY, 200, "INVITE", "t", sdp);
    mpshim_message by = message(id, call_id, MPSHIM_REQUEST, 0, "BYE", "t", NULL);
    bad += mpshim_dialog_request(table, c, &inv, NULL, NULL) != MPSHIM_OK;
    bad += mpshim_dialog_reply(table, c, &ok, NULL, NULL) != MPSHIM_OK;
    bad += mpshim_dialog_request(table, c, &by, NULL, NULL) != MPSHIM_OK;
  }
  return bad ? 1 : 0;
}

/* One shared dialog: random events; exit status = removes sent (< 256),
 * 255 on an unexpected return code or more than one dialog held. */
static int same_dialog(mpshim_client* c, long p) {
  unsigned seed = (unsigned)p * 7919u + 3;
  int removes = 0;
  for (int i = 0; i < SAME_EVENTS; i++) {
    mpshim_message m;
    int rc;
    switch (rand_r(&seed) % 4) {
      case 0:
        m = message("same", "same-call", MPSHIM_REQUEST, 0, "INVITE", NULL, sdp);
        rc = mpshim_dialog_request(one, c, &m, NULL, NULL);
        if (rc != MPSHIM_OK && rc != MPSHIM_NOTHING) return 255;
        break;
      case 1:
        m = message("same", "same-call", MPSHIM_REPLY, 200, "INVITE", "x", sdp);
        rc = mpshim_dialog_reply(one, c, &m, NULL, NULL);
        if (rc != MPSHIM_OK && rc != MPSHIM_NOTHING) return 255;
        break;
      case 2:
        m = message("same", "same-call", MPSHIM_REQUEST, 0, "BYE", "x", NULL);
        rc = mpshim_dialog_request(one, c, &m, NULL, NULL);
        if (rc == MPSHIM_OK)
          removes++;
        else if (rc != MPSHIM_NOTHING)
          return 255;
        break;
      default:
        rc = mpshim_dialog_end(one, c, "same");
        if (rc == MPSHIM_OK)
          removes++;
        else if (rc != MPSHIM_NOTHING)
          return 255;
        break;
    }
  }
  return removes < 255 ? removes : 254;
}

static int removes_seen, updates_seen;

static void* reader(void* arg) {
  (void)arg;
  char buf[16384];
  for (;;) {
    if (fake_next_request(&fake, buf, sizeof buf, 20000) < 0) break;
    if (strstr(buf, "call_id: reader-stop\r\n")) break;
    if (strncmp(buf, "remove\r\n", 8) == 0) removes_seen++;
    if (strncmp(buf, "update\r\n", 8) == 0) updates_seen++;
  }
  return NULL;
}

static void test_processes(void) {
  pthread_t r;
  pthread_create(&r, NULL, reader, NULL);
  pid_t own[PROCS], same[PROCS];
  for (long p = 0; p < PROCS; p++) own[p] = spawn(own_calls, p);
  for (long p = 0; p < PROCS; p++) same[p] = spawn(same_dialog, p);
  int own_bad = 0, removes = 0, same_bad = 0;
  for (int p = 0; p < PROCS; p++) own_bad += wait_status(own[p]) != 0;
  for (int p = 0; p < PROCS; p++) {
    int st = wait_status(same[p]);
    if (st >= 255)
      same_bad++;
    else
      removes += st;
  }
  mpshim_client* c = new_client(sock, 5000);
  if (mpshim_dialog_end(one, c, "same") == MPSHIM_OK) removes++;
  mpshim_message stop = message("stop", "reader-stop", MPSHIM_REQUEST, 0, "BYE", NULL, NULL);
  mpshim_end_media_session(c, &stop);
  mpshim_client_free(c);
  pthread_join(r, NULL);
  CHECK(own_bad == 0, "%d processes had a failing event on their own dialogs", own_bad);
  CHECK(same_bad == 0, "%d processes saw an unexpected return code", same_bad);
  CHECK(removes_seen == PROCS * CALLS + removes, "removes seen %d, reported %d + %d", removes_seen,
        PROCS * CALLS, removes);
  CHECK(mpshim_dialogs_count(table) == 0 && mpshim_dialogs_count(one) == 0, "dialogs left");
  printf("processes: %d updates, %d removes (%d on the shared dialog)\n", updates_seen,
         removes_seen, removes);
}

/* The child holds the dialog's lock while the slow dispatcher answers. */
static const char* slow_sock;
static int slow_invite(mpshim_client* c, long arg) {
  (void)c;
  (void)arg;
  mpshim_client* slow = new_client(slow_sock, 30000);
  mpshim_message m = message("k:1", "killed", MPSHIM_REQUEST, 0, "INVITE", NULL, sdp);
  mpshim_dialog_request(table, slow, &m, NULL, NULL);
  return 0;
}

static void test_killed_process(void) {
  char path[108];
  snprintf(path, sizeof path, "/tmp/mpshim-dshared-slow-%d.sock", (int)getpid());
  slow_sock = path;
  fake_dispatcher slow;
  CHECK(fake_start(&slow, path, NULL, 0, 1500, 0) == 0, "slow fake");
  pid_t child = spawn(slow_invite, 0);
  char buf[16384];
  /* the INVITE's update reached the dispatcher: the child is inside the lock */
  CHECK(fake_next_request(&slow, buf, sizeof buf, 5000) > 0, "the child's update arrived");
  kill(child, SIGKILL);
  CHECK(wait_status(child) == 128 + SIGKILL, "child killed");
  mpshim_client* c = new_client(sock, 5000);
  CHECK(mpshim_dialog_state(table, "k:1") == MPSHIM_DIALOG_EARLY, "the dialog survived");
  CHECK(mpshim_dialog_end(table, c, "k:1") == MPSHIM_OK, "and can be ended: %s",
        mpshim_client_last_error(c));
  CHECK(mpshim_dialogs_count(table) == 0, "count 0");
  mpshim_client_free(c);
  fake_stop(&slow);
}

int main(void) {
  snprintf(sock, sizeof sock, "/tmp/mpshim-dshared-%d.sock", (int)getpid());
  if (fake_start(&fake, sock, NULL, 0, 0, 0) < 0) {
    printf("FAIL cannot start the fake dispatcher\n");
    return 1;
  }
  CHECK(mpshim_dialogs_new_shared(0) == NULL && mpshim_dialogs_new_shared(100001) == NULL,
        "bad max_dialogs");
  table = mpshim_dialogs_new_shared(PROCS * CALLS);
  one = mpshim_dialogs_new_shared(1);
  CHECK(table != NULL && one != NULL, "shared tables");
  if (table && one) {
    test_cross_process();
    test_processes();
    test_killed_process();
  }
  mpshim_dialogs_free(table);
  mpshim_dialogs_free(one);
  fake_stop(&fake);
  printf("%d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
