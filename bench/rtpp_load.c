// rtpp_load: control-plane load generator for the rtpproxy control protocol
// (bench/README.md, section "rtpproxy control plane").
//
// Speaks to a server the way Kamailio 5.6's rtpproxy.so does over UDP: every
// datagram is "<cookie> <command>", every reply "<cookie> <reply>\n"; cookies
// are "<pid>_<seq>" per worker; a command is resent with the same cookie after
// 1 s without a matching reply, 5 sends in all (rtpproxy_tout = 1,
// rtpproxy_retr = 5); replies with another cookie are dropped. Like Kamailio
// at start-up it asks "V" and "VF 20050322", "VF 20071116", "VF 20081102" and,
// as Kamailio does, adds the payload-type list ("c0,8,101") to U and L only
// when the server answered 1 to VF 20081102 (--codecs auto; always/never force
// it).
//
// Per call (a one-stream audio call, offer in the INVITE, answer in the 200):
//   U[c0,8,101] <callid> <caller ip> <caller port> <from tag>;1
//   L[c0,8,101] <callid> <callee ip> <callee port> <from tag>;1 <to tag>;1
//   D <callid> <from tag> <to tag>
// --clients concurrent clients (default 8), each its own connected UDP socket
// and cookie sequence with one command outstanding at a time (Kamailio's
// workers block on the reply), all driven by one epoll loop. A call whose U or
// L fails (error reply or 5 unanswered sends) is still deleted, as Kamailio's
// failure route would, and counts as failed.
//
// Checks every reply: U and L must be "<port> <ipv4 address>[ <more>]" with
// the port in --port-range (and the address --expect-ip if given); D must be
// "0". Prints one JSON object on stdout: calls, setups/s, latency of U, L, D
// (p50/p90/p99/max, µs, from first send to the matching reply, retransmissions
// included), retransmissions, timeouts, errors and the first bad replies
// verbatim.
//
//   rtpp_load --server 127.0.0.1:22222 [--clients 8] [--calls 20000]
//             [--max-time 60] [--port-range 20000:60000] [--expect-ip IP]
//             [--codecs auto|always|never] [--timeout-ms 1000] [--sends 5]
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 256
#define MAX_SAMPLES 12
#define CMD_LEN 512
#define REPLY_LEN 256  // Kamailio's reply buffer is 256 bytes

enum { OP_U, OP_L, OP_D, NOPS };
static const char* const op_name[NOPS] = {"U", "L", "D"};

struct client {
  int fd;
  int index;        // 0 .. clients-1
  unsigned id;      // this client's "pid" in the cookie
  unsigned seq;     // cookie sequence
  long call;        // call index, -1 when idle
  int op;           // command outstanding
  int failed;       // this call has failed (U or L)
  int u_port;       // port answered to U
  char cookie[32];  // without the trailing space
  size_t cookie_len;
  char msg[CMD_LEN];  // datagram being sent (cookie included)
  size_t msg_len;
  int sends;          // sends of this command so far
  double first_sent;  // monotonic seconds
  double deadline;
};

static struct {
  struct sockaddr_in server;
  int clients;
  long calls;
  double max_time;
  int port_min, port_max;
  char expect_ip[64];
  int codecs;  // -1 auto, 0 never, 1 always
  double timeout;
  int sends;
  unsigned run;  // run id, part of call-ids and tags
} opt = {.clients = 8,
         .calls = 20000,
         .max_time = 60,
         .port_min = 1024,
         .port_max = 65535,
         .codecs = -1,
         .timeout = 1.0,
         .sends = 5};

static struct {
  long started, done, ok, failed;
  long sent[NOPS], answered[NOPS], errors[NOPS], timeouts[NOPS], retrans[NOPS];
  long stale;        // replies whose cookie is not the one outstanding
  long no_newline;   // replies not ending in "\n" (accepted, as Kamailio does)
  long l_same_port;  // L answered the port U answered
  long send_errors;
  int nsamples;
  char samples[MAX_SAMPLES][2 * CMD_LEN + 64];
  char first_cmd[NOPS][CMD_LEN];
} st;

static double* lat[NOPS];  // µs per answered command, in completion order
static long nlat[NOPS];
static int use_codecs;
static char handshake[4][REPLY_LEN];

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "rtpp_load: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(2);
}

// JSON string body (no quotes) of s, escaped, into out.
static void json_str(FILE* f, const char* s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(f, "\\%c", c);
    else if (c == '\n')
      fputs("\\n", f);
    else if (c == '\r')
      fputs("\\r", f);
    else if (c < 0x20 || c >= 0x7f)
      fprintf(f, "\\u%04x", c);
    else
      fputc(c, f);
  }
  fputc('"', f);
}

// Keeps the first bad replies verbatim, at most 2 of each kind.
static void sample(const char* what, const char* cmd, const char* reply, size_t reply_len) {
  if (st.nsamples >= MAX_SAMPLES) return;
  size_t wl = strlen(what);
  int same = 0;
  for (int k = 0; k < st.nsamples; k++)
    if (strncmp(st.samples[k], what, wl) == 0 && st.samples[k][wl] == ':') same++;
  if (same >= 2) return;
  char r[REPLY_LEN + 1];
  if (reply_len > REPLY_LEN) reply_len = REPLY_LEN;
  memcpy(r, reply, reply_len);
  r[reply_len] = 0;
  snprintf(st.samples[st.nsamples++], sizeof st.samples[0], "%s: sent [%s] got [%s]", what, cmd, r);
}

// ---------------------------------------------------------------- call data

// Caller and callee addresses: 10.x.y.z, a different one per call, as the SIP
// source address Kamailio puts into U/L without the 'r' flag.
static void call_addr(long i, int callee, int client, char* ip, size_t n, int* port) {
  unsigned a = (callee ? 128 : 1) + (unsigned)client % 120;
  snprintf(ip, n, "10.%u.%lu.%lu", a, (i / 250) % 250 + 1, i % 250 + 1);
  *port = 6000 + 2 * (int)(i % 25000) + (callee ? 10000 : 0);
  if (*port > 65534) *port -= 50000;
}

static void build_cmd(struct client* c) {
  long i = c->call;
  char callid[96], ftag[48], ttag[48], ip[32];
  int port;
  snprintf(callid, sizeof callid, "%x-%ld-%u@10.%u.0.1", opt.run, i, c->id, 1 + c->id % 250);
  snprintf(ftag, sizeof ftag, "%ldSIPpTag%02u%x", i, c->id % 100, opt.run);
  snprintf(ttag, sizeof ttag, "%ldUASTag%02u%x", i, c->id % 100, opt.run);
  c->seq++;
  c->cookie_len = (size_t)snprintf(c->cookie, sizeof c->cookie, "%u_%u", c->id, c->seq);
  const char* pt = use_codecs ? "c0,8,101" : "";
  int n;
  switch (c->op) {
    case OP_U:
      call_addr(i, 0, c->index, ip, sizeof ip, &port);
      n = snprintf(c->msg, sizeof c->msg, "%s U%s %s %s %d %s;1", c->cookie, pt, callid, ip, port,
                   ftag);
      break;
    case OP_L:
      call_addr(i, 1, c->index, ip, sizeof ip, &port);
      n = snprintf(c->msg, sizeof c->msg, "%s L%s %s %s %d %s;1 %s;1", c->cookie, pt, callid, ip,
                   port, ftag, ttag);
      break;
    default:
      n = snprintf(c->msg, sizeof c->msg, "%s D %s %s %s", c->cookie, callid, ftag, ttag);
      break;
  }
  if (n < 0 || (size_t)n >= sizeof c->msg) die("command too long");
  c->msg_len = (size_t)n;
  if (!st.first_cmd[c->op][0]) snprintf(st.first_cmd[c->op], CMD_LEN, "%s", c->msg);
}

static void send_cmd(struct client* c, double t) {
  if (send(c->fd, c->msg, c->msg_len, 0) < 0) st.send_errors++;
  c->sends++;
  c->deadline = t + opt.timeout;
}

static void start_op(struct client* c, int op, double t) {
  c->op = op;
  c->sends = 0;
  build_cmd(c);
  c->first_sent = t;
  st.sent[op]++;
  send_cmd(c, t);
}

static int stop_issuing;

static void next_call(struct client* c, double t) {
  if (stop_issuing || st.started >= opt.calls) {
    c->call = -1;
    return;
  }
  c->call = st.started++;
  c->failed = 0;
  c->u_port = 0;
  start_op(c, OP_U, t);
}

static void finish_call(struct client* c, int ok, double t) {
  st.done++;
  if (ok && !c->failed)
    st.ok++;
  else
    st.failed++;
  next_call(c, t);
}

// ------------------------------------------------------------------ replies

static int parse_port_ip(const char* body, int* port, char ip[64]) {
  char tok[64];
  int n = 0;
  const char* p = body;
  char* end;
  long v = strtol(p, &end, 10);
  if (end == p || (*end != ' ' && *end != '\n' && *end != 0)) return 0;
  *port = (int)v;
  p = end;
  while (*p == ' ') p++;
  while (*p && *p != ' ' && *p != '\n' && n < (int)sizeof tok - 1) tok[n++] = *p++;
  tok[n] = 0;
  if (n == 0) return 0;  // Kamailio would accept a bare port; the brief asks for the address
  struct in_addr a;
  if (inet_pton(AF_INET, tok, &a) != 1) return 0;
  memcpy(ip, tok, (size_t)n + 1);
  return 1;
}

static void on_reply(struct client* c, const char* buf, size_t len, double t) {
  if (c->call < 0 || len < c->cookie_len + 1 || memcmp(buf, c->cookie, c->cookie_len) != 0 ||
      buf[c->cookie_len] != ' ') {
    st.stale++;  // a late answer to an earlier send, or garbage: Kamailio drops it too
    return;
  }
  char body[REPLY_LEN + 1];
  size_t bl = len - c->cookie_len - 1;
  if (bl > REPLY_LEN) bl = REPLY_LEN;
  memcpy(body, buf + c->cookie_len + 1, bl);
  body[bl] = 0;
  if (bl == 0 || body[bl - 1] != '\n') st.no_newline++;
  int op = c->op;
  st.answered[op]++;
  if (nlat[op] < opt.calls) lat[op][nlat[op]++] = (t - c->first_sent) * 1e6;
  char cmd[CMD_LEN];
  snprintf(cmd, sizeof cmd, "%.*s", (int)c->msg_len, c->msg);
  if (op == OP_D) {
    int good = strcmp(body, "0\n") == 0 || strcmp(body, "0") == 0;
    if (!good) {
      st.errors[op]++;
      sample("D reply not 0", cmd, buf, len);
    }
    finish_call(c, good, t);
    return;
  }
  int port = 0;
  char ip[64] = "";
  const char* why = NULL;
  if (body[0] == 'E')
    why = "error reply";
  else if (!parse_port_ip(body, &port, ip))
    why = "not <port> <ipv4>";
  else if (port < opt.port_min || port > opt.port_max)
    why = "port out of range";
  else if (opt.expect_ip[0] && strcmp(ip, opt.expect_ip) != 0)
    why = "unexpected address";
  if (why) {
    st.errors[op]++;
    char what[64];
    snprintf(what, sizeof what, "%s %s", op_name[op], why);
    sample(what, cmd, buf, len);
    c->failed = 1;
    start_op(c, OP_D, t);  // clean up, as a failure route would
    return;
  }
  if (op == OP_U) {
    c->u_port = port;
    start_op(c, OP_L, t);
  } else {
    if (port == c->u_port) st.l_same_port++;
    start_op(c, OP_D, t);
  }
}

static void on_timeout(struct client* c, double t) {
  if (c->sends < opt.sends) {
    st.retrans[c->op]++;
    send_cmd(c, t);
    return;
  }
  st.timeouts[c->op]++;
  char cmd[CMD_LEN];
  snprintf(cmd, sizeof cmd, "%.*s", (int)c->msg_len, c->msg);
  sample("timeout", cmd, "", 0);
  if (c->op == OP_D) {
    finish_call(c, 0, t);
  } else {
    c->failed = 1;
    start_op(c, OP_D, t);
  }
}

// -------------------------------------------------------------- handshake

// One synchronous command on client 0's socket, as rtpp_test() does at start-up.
static int query(struct client* c, const char* cmd, char* out, size_t outn) {
  c->seq++;
  c->cookie_len = (size_t)snprintf(c->cookie, sizeof c->cookie, "%u_%u", c->id, c->seq);
  int n = snprintf(c->msg, sizeof c->msg, "%s %s", c->cookie, cmd);
  for (int s = 0; s < opt.sends; s++) {
    if (send(c->fd, c->msg, (size_t)n, 0) < 0) return -1;
    double deadline = now() + opt.timeout;
    for (;;) {
      double left = deadline - now();
      if (left <= 0) break;
      struct timeval tv = {(time_t)left, (suseconds_t)((left - (time_t)left) * 1e6)};
      setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      char buf[REPLY_LEN];
      ssize_t r = recv(c->fd, buf, sizeof buf - 1, 0);
      if (r < 0) break;
      buf[r] = 0;
      if ((size_t)r > c->cookie_len && memcmp(buf, c->cookie, c->cookie_len) == 0 &&
          buf[c->cookie_len] == ' ') {
        snprintf(out, outn, "%s", buf + c->cookie_len + 1);
        size_t l = strlen(out);
        if (l && out[l - 1] == '\n') out[l - 1] = 0;
        struct timeval zero = {0, 0};
        setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &zero, sizeof zero);
        return 0;
      }
    }
  }
  return -1;
}

// --------------------------------------------------------------------- main

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

static double pct(const double* v, long n, double p) {
  if (n == 0) return 0;
  long i = (long)(p / 100.0 * (double)(n - 1) + 0.5);
  return v[i];
}

static void print_lat(FILE* f, int op) {
  long n = nlat[op];
  double sum = 0;
  for (long i = 0; i < n; i++) sum += lat[op][i];
  qsort(lat[op], (size_t)n, sizeof(double), cmp_double);
  fprintf(f,
          "\"%s\": {\"sent\": %ld, \"answered\": %ld, \"errors\": %ld, \"timeouts\": %ld, "
          "\"retransmissions\": %ld, \"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, "
          "\"max_us\": %.1f, \"mean_us\": %.1f}",
          op_name[op], st.sent[op], st.answered[op], st.errors[op], st.timeouts[op], st.retrans[op],
          pct(lat[op], n, 50), pct(lat[op], n, 90), pct(lat[op], n, 99), n ? lat[op][n - 1] : 0,
          n ? sum / (double)n : 0);
}

static void usage(void) {
  fprintf(stderr,
          "usage: rtpp_load --server IP:PORT [--clients 8] [--calls 20000] [--max-time 60]\n"
          "                 [--port-range MIN:MAX] [--expect-ip IP] [--codecs auto|always|never]\n"
          "                 [--timeout-ms 1000] [--sends 5] [--run-id N]\n");
  exit(2);
}

int main(int argc, char** argv) {
  const char* server = NULL;
  opt.run = (unsigned)getpid() ^ (unsigned)time(NULL);
  for (int i = 1; i < argc; i++) {
    const char* a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (i++, 1))
    if (ARG("--server"))
      server = v;
    else if (ARG("--clients"))
      opt.clients = atoi(v);
    else if (ARG("--calls"))
      opt.calls = atol(v);
    else if (ARG("--max-time"))
      opt.max_time = atof(v);
    else if (ARG("--port-range")) {
      if (sscanf(v, "%d:%d", &opt.port_min, &opt.port_max) != 2) usage();
    } else if (ARG("--expect-ip"))
      snprintf(opt.expect_ip, sizeof opt.expect_ip, "%s", v);
    else if (ARG("--codecs"))
      opt.codecs = strcmp(v, "always") == 0 ? 1 : strcmp(v, "never") == 0 ? 0 : -1;
    else if (ARG("--timeout-ms"))
      opt.timeout = atof(v) / 1000.0;
    else if (ARG("--sends"))
      opt.sends = atoi(v);
    else if (ARG("--run-id"))
      opt.run = (unsigned)strtoul(v, NULL, 0);
    else
      usage();
#undef ARG
  }
  if (!server || opt.clients < 1 || opt.clients > MAX_CLIENTS || opt.calls < 1 || opt.sends < 1)
    usage();
  char host[64];
  int sport;
  if (sscanf(server, "%63[^:]:%d", host, &sport) != 2) usage();
  opt.server.sin_family = AF_INET;
  opt.server.sin_port = htons((uint16_t)sport);
  if (inet_pton(AF_INET, host, &opt.server.sin_addr) != 1) die("bad server address %s", host);

  for (int k = 0; k < NOPS; k++) {
    lat[k] = malloc(sizeof(double) * (size_t)opt.calls);
    if (!lat[k]) die("out of memory");
  }

  // Kamailio's cookie is "<pid>_<seq>", one pid per worker process.
  unsigned base = (unsigned)getpid() * 16u;
  struct client* cl = calloc((size_t)opt.clients, sizeof *cl);
  int ep = epoll_create1(0);
  for (int k = 0; k < opt.clients; k++) {
    struct client* c = &cl[k];
    c->index = k;
    c->id = base + (unsigned)k;
    c->call = -1;
    c->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) die("socket: %s", strerror(errno));
    if (connect(c->fd, (struct sockaddr*)&opt.server, sizeof opt.server) < 0)
      die("connect: %s", strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
  }

  // Start-up handshake (blocking socket for it).
  {
    struct client* c = &cl[0];
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (connect(fd, (struct sockaddr*)&opt.server, sizeof opt.server) < 0)
      die("connect: %s", strerror(errno));
    int saved = c->fd;
    c->fd = fd;
    static const char* const q[4] = {"V", "VF 20050322", "VF 20071116", "VF 20081102"};
    for (int k = 0; k < 4; k++) {
      if (query(c, q[k], handshake[k], sizeof handshake[k]) < 0) {
        if (k == 0) die("no answer to V from %s", server);
        snprintf(handshake[k], sizeof handshake[k], "(no answer)");
      }
    }
    close(fd);
    c->fd = saved;
    use_codecs = opt.codecs >= 0 ? opt.codecs : atoi(handshake[3]) == 1;
  }

  struct rusage ru0, ru1;
  getrusage(RUSAGE_SELF, &ru0);
  double t0 = now(), t_end = t0, t_cap = t0 + opt.max_time;
  for (int k = 0; k < opt.clients; k++) next_call(&cl[k], t0);

  struct epoll_event evs[MAX_CLIENTS];
  char buf[2048];
  int capped = 0;
  for (;;) {
    int active = 0;
    double t = now(), next = t + 1.0;
    for (int k = 0; k < opt.clients; k++) {
      if (cl[k].call < 0) continue;
      active++;
      if (cl[k].deadline < next) next = cl[k].deadline;
    }
    if (!active) break;
    if (t >= t_cap && !stop_issuing) {
      stop_issuing = 1;  // let the calls under way finish
      capped = 1;
    }
    if (t >= t_cap + opt.timeout * opt.sends + 1) break;
    int ms = (int)((next - t) * 1000.0 + 0.999);
    if (ms < 0) ms = 0;
    int n = epoll_wait(ep, evs, MAX_CLIENTS, ms);
    t = now();
    for (int e = 0; e < n; e++) {
      // One datagram per wake-up (level-triggered: a second one wakes us again), so the
      // generator spends no EAGAIN recv per reply.
      struct client* c = evs[e].data.ptr;
      ssize_t r = recv(c->fd, buf, sizeof buf, 0);
      if (r >= 0) on_reply(c, buf, (size_t)r, t);
    }
    for (int k = 0; k < opt.clients; k++)
      if (cl[k].call >= 0 && cl[k].deadline <= t) on_timeout(&cl[k], t);
    t_end = t;
  }
  getrusage(RUSAGE_SELF, &ru1);
  double elapsed = t_end - t0;
  double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
               (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
               (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) * 1e-6 +
               (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) * 1e-6;

  FILE* f = stdout;
  fprintf(f, "{\"server\": \"%s\", \"clients\": %d, \"calls_requested\": %ld, ", server,
          opt.clients, opt.calls);
  fprintf(f, "\"calls_done\": %ld, \"calls_ok\": %ld, \"calls_failed\": %ld, \"capped\": %s, ",
          st.done, st.ok, st.failed, capped ? "true" : "false");
  fprintf(f, "\"elapsed_s\": %.4f, \"setups_per_s\": %.1f, \"loadgen_cpu_s\": %.3f, ", elapsed,
          elapsed > 0 ? (double)st.ok / elapsed : 0, cpu);
  fprintf(f, "\"timeout_s\": %.3f, \"sends_max\": %d, \"codecs\": %s, ", opt.timeout, opt.sends,
          use_codecs ? "true" : "false");
  fprintf(f, "\"handshake\": {\"V\": ");
  json_str(f, handshake[0]);
  fprintf(f, ", \"VF 20050322\": ");
  json_str(f, handshake[1]);
  fprintf(f, ", \"VF 20071116\": ");
  json_str(f, handshake[2]);
  fprintf(f, ", \"VF 20081102\": ");
  json_str(f, handshake[3]);
  fprintf(f, "}, ");
  for (int k = 0; k < NOPS; k++) {
    print_lat(f, k);
    fprintf(f, ", ");
  }
  long retrans = st.retrans[0] + st.retrans[1] + st.retrans[2];
  long timeouts = st.timeouts[0] + st.timeouts[1] + st.timeouts[2];
  long errors = st.errors[0] + st.errors[1] + st.errors[2];
  fprintf(f,
          "\"retransmissions\": %ld, \"timeouts\": %ld, \"errors\": %ld, \"stale_replies\": %ld, "
          "\"replies_without_newline\": %ld, \"l_port_equals_u_port\": %ld, "
          "\"send_errors\": %ld, ",
          retrans, timeouts, errors, st.stale, st.no_newline, st.l_same_port, st.send_errors);
  fprintf(f, "\"first_commands\": [");
  for (int k = 0; k < NOPS; k++) {
    if (k) fprintf(f, ", ");
    json_str(f, st.first_cmd[k]);
  }
  fprintf(f, "], \"bad_replies\": [");
  for (int k = 0; k < st.nsamples; k++) {
    if (k) fprintf(f, ", ");
    json_str(f, st.samples[k]);
  }
  fprintf(f, "]}\n");
  return st.done > 0 ? 0 : 1;
}
