/*
 * engage.c - engage mode of mediaproxy-shim(3), the equivalent of the stock
 * module's engage_media_proxy(): a proxy-side program that reports the
 * events of two calls to a dialog table and lets the library send every
 * `update` and `remove`. The first call has a forked 183, a 200, a
 * re-INVITE and a BYE; the second is answered and then ends by expiry,
 * which a timer thread reports with its own client handle (one handle per
 * thread, one table for all).
 * Build: cc engage.c $(pkg-config --cflags --libs mediaproxy-shim) -pthread
 * Run:   ./a.out [/run/mediaproxy/dispatcher.sock]
 */
#include <mediaproxy-shim.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static const char offer[] =
    "v=0\r\n"
    "o=alice 2890844526 2890844526 IN IP4 192.168.1.10\r\n"
    "s=-\r\n"
    "c=IN IP4 192.168.1.10\r\n"
    "t=0 0\r\n"
    "m=audio 49170 RTP/AVP 0 8\r\n";
static const char answer[] =
    "v=0\r\n"
    "o=bob 2808844564 2808844564 IN IP4 198.51.100.20\r\n"
    "s=-\r\n"
    "c=IN IP4 198.51.100.20\r\n"
    "t=0 0\r\n"
    "m=audio 3456 RTP/AVP 0\r\n";

static const char* socket_path = "/run/mediaproxy/dispatcher.sock";
static mpshim_dialogs* dialogs;

static mpshim_client* new_client(void) {
  mpshim_config cfg;
  mpshim_config_init(&cfg);
  cfg.socket_path = socket_path;
  return mpshim_client_new(&cfg);
}

/* What a proxy knows about one message of a call. */
static mpshim_message message(const char* dialog_id, const char* call_id, int type, int status,
                              const char* method, const char* cseq, const char* to_tag,
                              const char* body) {
  mpshim_message m;
  mpshim_message_init(&m);
  m.type = type;
  m.status = status;
  m.method = method;
  m.cseq = cseq;
  m.call_id = call_id;
  m.from_uri = "sip:alice@example.com";
  m.to_uri = "sip:bob@example.net";
  m.from_tag = "9fxced76sl";
  m.to_tag = to_tag;
  m.user_agent = "Example UA 1.0";
  m.signaling_ip = type == MPSHIM_REQUEST ? "203.0.113.7" : "198.51.100.20";
  m.dialog_id = dialog_id; /* the proxy's own dialog id, e.g. h_entry:h_id */
  m.content_type = body ? "application/sdp" : NULL;
  m.body = body;
  m.body_len = body ? strlen(body) : 0;
  return m;
}

/* Report one message; print the result and the relayed body's m= line. */
static void report(mpshim_client* mp, const char* what, const mpshim_message* m) {
  char* body = NULL;
  int rc = m->type == MPSHIM_REQUEST ? mpshim_dialog_request(dialogs, mp, m, &body, NULL)
                                     : mpshim_dialog_reply(dialogs, mp, m, &body, NULL);
  printf("%-10s %2d", what, rc);
  if (body) {
    /* forward the message with this body instead of its own */
    const char* mline = strstr(body, "m=audio");
    printf("  %.*s", mline ? (int)strcspn(mline, "\r\n") : 0, mline ? mline : "");
    mpshim_free(body);
  } else if (rc != MPSHIM_OK) {
    printf("  (%s)", mpshim_client_last_error(mp));
  }
  printf("  dialog state %d\n", mpshim_dialog_state(dialogs, m->dialog_id));
}

/* The proxy's dialog timer: ends the dialogs that expired. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static const char* expired;

static void* timer_thread(void* arg) {
  (void)arg;
  mpshim_client* mp = new_client(); /* this thread's own handle */
  pthread_mutex_lock(&lock);
  while (!expired) pthread_cond_wait(&cond, &lock);
  pthread_mutex_unlock(&lock);
  int rc = mpshim_dialog_end(dialogs, mp, expired);
  printf("expired    %2d  dialog state %d\n", rc, mpshim_dialog_state(dialogs, expired));
  mpshim_client_free(mp);
  return NULL;
}

int main(int argc, char** argv) {
  if (argc > 1) socket_path = argv[1];
  dialogs = mpshim_dialogs_new(10000); /* shared by all threads */
  mpshim_client* mp = new_client();    /* this thread's handle */
  if (!dialogs || !mp) {
    perror("mediaproxy-shim");
    return 1;
  }
  pthread_t timer;
  pthread_create(&timer, NULL, timer_thread, NULL);

  /* call 1: forked early media, answer, re-INVITE, BYE */
  const char* d1 = "1234:5678";
  const char* c1 = "3c26700d2b0f@192.168.1.10";
  mpshim_message m = message(d1, c1, MPSHIM_REQUEST, 0, "INVITE", "101 INVITE", NULL, offer);
  report(mp, "INVITE", &m);
  m = message(d1, c1, MPSHIM_REPLY, 183, "INVITE", "101 INVITE", "fork-a", answer);
  report(mp, "183 a", &m);
  m = message(d1, c1, MPSHIM_REPLY, 183, "INVITE", "101 INVITE", "fork-b", answer);
  report(mp, "183 b", &m);
  m = message(d1, c1, MPSHIM_REPLY, 200, "INVITE", "101 INVITE", "fork-b", answer);
  report(mp, "200", &m);
  m = message(d1, c1, MPSHIM_REQUEST, 0, "ACK", "101 ACK", "fork-b", NULL);
  report(mp, "ACK", &m);
  m = message(d1, c1, MPSHIM_REQUEST, 0, "INVITE", "102 INVITE", "fork-b", offer);
  report(mp, "re-INVITE", &m);
  m = message(d1, c1, MPSHIM_REPLY, 200, "INVITE", "102 INVITE", "fork-b", answer);
  report(mp, "200", &m);
  m = message(d1, c1, MPSHIM_REQUEST, 0, "BYE", "103 BYE", "fork-b", NULL);
  report(mp, "BYE", &m); /* sends the remove */

  /* call 2: answered, then the timer thread reports its expiry */
  const char* d2 = "1234:5679";
  const char* c2 = "a84b4c76e66710@192.168.1.10";
  m = message(d2, c2, MPSHIM_REQUEST, 0, "INVITE", "1 INVITE", NULL, offer);
  report(mp, "INVITE", &m);
  m = message(d2, c2, MPSHIM_REPLY, 200, "INVITE", "1 INVITE", "b2", answer);
  report(mp, "200", &m);
  pthread_mutex_lock(&lock);
  expired = d2;
  pthread_cond_signal(&cond);
  pthread_mutex_unlock(&lock);
  pthread_join(timer, NULL);

  printf("dialogs held: %u\n", mpshim_dialogs_count(dialogs));
  mpshim_client_free(mp);
  mpshim_dialogs_free(dialogs);
  return 0;
}
