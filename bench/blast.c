// blast: bounded UDP load generator and sink for the mediaproxy forwarding benchmark.
//
// A benchmark tool, not part of the product. Build: cc -O2 -Wall -o blast blast.c
//
//   blast send  --targets FILE | --dst ADDR:PORT   --streams N  --bind ADDR [--sport-base P]
//               [--pps R] [--duration S] [--burst B] [--count K] [--pt PT] [--run-id X]
//               [--cpu-pids PID,PID,...] [--stamp]
//       One UDP socket per stream (bound to IP:P+i, connected to the stream's target), packets
//       of 172 bytes shaped like RTP/PCMU (12-byte header + 160 bytes), sent with sendmmsg in
//       per-socket batches of B, streams visited round-robin. Rate-controlled to R packets/s
//       (0 = as fast as possible) for S seconds, or exactly K packets per stream (--count, used
//       for priming). Stops by itself. Prints one JSON object with the count sent, the achieved
//       rate and, with --cpu-pids, CPU deltas over the sending window: whole machine from
//       /proc/stat and per process from /proc/PID/task/*/schedstat (exact run time, in seconds).
//       --stamp writes the send time (CLOCK_REALTIME, ns) into bytes 24..31 of each packet.
//
//   blast recv  --bind ADDR:PORT --streams N [--per-stream]  [--duration S] [--grace G]
//               [--wait-first W] [--late L] [--run-id X]
//               [--prime-targets FILE --prime K [--prime-pps R]]
//               [--prime-only] [--ready-file F] [--delay]
//       Receives with recvmmsg (polling: drain, sleep 0.5 ms) and counts packets per stream (stream
//       = SSRC field, checked against a magic and the run id, so stale packets of an earlier trial
//       are not counted). One shared socket by default; --per-stream binds N sockets at PORT+i and
//       uses epoll. Counts packets in the window [first packet, first packet + S], in total (until
//       S + G after the first packet) and late ones (after the window + L, default 0.05 s: a relay
//       that only keeps up by filling socket buffers is not keeping up); gives up W seconds after
//       start if nothing arrives. Optionally first sends K priming packets per stream from its
//       socket(s) to the relay ports listed in FILE (this is how the callee side gets latched).
//       Reports socket-queue drops (SO_RXQ_OVFL) so loss caused by the sink itself is visible.
//       Prints one JSON object.
//
//       --delay: each stamped packet's delay from its send time to its arrival at the receiving
//       socket (the kernel's SO_TIMESTAMPNS, so the sink's own polling pause does not count),
//       reported as percentiles in microseconds (1 us buckets up to 100 ms).
//
// Addresses are IPv4 or IPv6 literals; the sockets' family follows --bind, and every target
// must be of that family. ADDR:PORT is "10.0.0.1:9000" or "[fd00::1]:9000".
// Target files: one "ADDR PORT" per line (an IPv6 address without brackets), line i is stream i.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PKT_LEN 172
#define MAGIC 0x4d50424eu /* "MPBN" */
#define MAX_BURST 64
#define RX_BATCH 64
#define MAX_PIDS 32

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

static double now_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_until(double t) {
  struct timespec ts;
  ts.tv_sec = (time_t)t;
  ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !g_stop) {
  }
}

static void die(const char* what) {
  fprintf(stderr, "blast: %s: %s\n", what, strerror(errno));
  exit(2);
}

static void usage(void) {
  fprintf(
      stderr,
      "usage: blast send --targets FILE|--dst ADDR:PORT --streams N --bind ADDR [--sport-base P]\n"
      "                  [--pps R] [--duration S] [--burst B] [--count K] [--pt PT]\n"
      "                  [--run-id X] [--cpu-pids P,P,...] [--stamp]\n"
      "       blast recv --bind ADDR:PORT --streams N [--per-stream] [--duration S] [--grace G]\n"
      "                  [--wait-first W] [--late L] [--run-id X] [--prime-targets FILE --prime "
      "K]\n"
      "                  [--prime-pps R] [--prime-only] [--ready-file F] [--delay]\n");
  exit(2);
}

// An IPv4 or IPv6 socket address (the family follows the address).
typedef union {
  struct sockaddr sa;
  struct sockaddr_in v4;
  struct sockaddr_in6 v6;
} addr_t;

static socklen_t addr_len(const addr_t* a) {
  return a->sa.sa_family == AF_INET6 ? sizeof a->v6 : sizeof a->v4;
}

// A literal address of either family ("10.0.0.1", "fd00::1"; no brackets) and a port.
static int parse_ip(const char* ip, int port, addr_t* a) {
  memset(a, 0, sizeof *a);
  if (inet_pton(AF_INET, ip, &a->v4.sin_addr) == 1) {
    a->v4.sin_family = AF_INET;
    a->v4.sin_port = htons((uint16_t)port);
    return 0;
  }
  if (inet_pton(AF_INET6, ip, &a->v6.sin6_addr) == 1) {
    a->v6.sin6_family = AF_INET6;
    a->v6.sin6_port = htons((uint16_t)port);
    return 0;
  }
  return -1;
}

// "IPv4:PORT" or "[IPv6]:PORT".
static int parse_ipport(const char* s, addr_t* a) {
  char buf[80];
  snprintf(buf, sizeof buf, "%s", s);
  char* colon = strrchr(buf, ':');
  if (!colon) return -1;
  *colon = 0;
  char* ip = buf;
  if (ip[0] == '[') {
    size_t n = strlen(ip);
    if (n < 2 || ip[n - 1] != ']') return -1;
    ip[n - 1] = 0;
    ip++;
  } else if (strchr(ip, ':')) {
    return -1;  // an IPv6 address needs its brackets here
  }
  return parse_ip(ip, atoi(colon + 1), a);
}

// Reads "IP PORT" lines (IPv4 or IPv6 address, no brackets); returns the number read (at most
// max).
static int read_targets(const char* path, addr_t* out, int max) {
  FILE* f = fopen(path, "r");
  if (!f) die(path);
  char ip[64];
  int port, n = 0;
  while (n < max && fscanf(f, "%63s %d", ip, &port) == 2) {
    if (parse_ip(ip, port, &out[n])) {
      fprintf(stderr, "blast: bad address %s in %s\n", ip, path);
      exit(2);
    }
    n++;
  }
  fclose(f);
  return n;
}

static void fill_packet(uint8_t* p, int pt, uint16_t seq, uint32_t ts, uint32_t ssrc,
                        uint32_t run_id) {
  p[0] = 0x80;
  p[1] = (uint8_t)pt;
  p[2] = (uint8_t)(seq >> 8);
  p[3] = (uint8_t)seq;
  uint32_t v[4] = {htonl(ts), htonl(ssrc), htonl(MAGIC), htonl(run_id)};
  memcpy(p + 4, v, sizeof v);
  memset(p + 20, 0xd5, PKT_LEN - 20);  // PCMU silence
}

static void set_bufsize(int fd, int opt_force, int opt, int bytes) {
  if (setsockopt(fd, SOL_SOCKET, opt_force, &bytes, sizeof bytes) != 0)
    setsockopt(fd, SOL_SOCKET, opt, &bytes, sizeof bytes);
}

// ---------------------------------------------------------------- CPU accounting

#define MAX_CPUS 64
struct cpu_snap {
  unsigned long long busy, softirq, total;  // USER_HZ ticks, whole machine
  // per CPU: user+nice, system, softirq+irq, steal, idle+iowait
  unsigned long long cpu[MAX_CPUS][5];
  int ncpu;
  double pid_s[MAX_PIDS];  // run time of each process (all threads)
};

static int g_npids;
static int g_pids[MAX_PIDS];

static double pid_runtime(int pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", pid);
  DIR* d = opendir(path);
  if (!d) return -1;
  double sum = 0;
  struct dirent* e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char p2[320];
    snprintf(p2, sizeof p2, "/proc/%d/task/%s/schedstat", pid, e->d_name);
    FILE* f = fopen(p2, "r");
    if (!f) continue;
    unsigned long long ns = 0;
    if (fscanf(f, "%llu", &ns) == 1) sum += (double)ns * 1e-9;
    fclose(f);
  }
  closedir(d);
  return sum;
}

static void cpu_snapshot(struct cpu_snap* s) {
  FILE* f = fopen("/proc/stat", "r");
  char line[512];
  s->ncpu = 0;
  s->busy = s->softirq = s->total = 0;
  while (f && fgets(line, sizeof line, f)) {
    if (strncmp(line, "cpu", 3)) break;
    unsigned long long v[10] = {0};
    int id = -1;
    if (line[3] == ' ') {
      sscanf(line + 4, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
             &v[5], &v[6], &v[7]);
      // user nice system idle iowait irq softirq steal (guest is inside user)
      s->busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
      s->softirq = v[6];
      s->total = s->busy + v[3] + v[4];
    } else if (sscanf(line + 3, "%d %llu %llu %llu %llu %llu %llu %llu %llu", &id, &v[0], &v[1],
                      &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) >= 8 &&
               id >= 0 && id < MAX_CPUS) {
      unsigned long long* c = s->cpu[id];
      c[0] = v[0] + v[1];
      c[1] = v[2];
      c[2] = v[5] + v[6];
      c[3] = v[7];
      c[4] = v[3] + v[4];
      if (id + 1 > s->ncpu) s->ncpu = id + 1;
    }
  }
  if (f) fclose(f);
  for (int i = 0; i < g_npids; i++) s->pid_s[i] = pid_runtime(g_pids[i]);
}

static void print_cpu(const struct cpu_snap* a, const struct cpu_snap* b, double wall) {
  double hz = (double)sysconf(_SC_CLK_TCK);
  printf(
      ",\"cpu\":{\"wall_s\":%.4f,\"ncpu\":%ld,\"machine_busy_s\":%.3f,\"machine_softirq_s\":%.3f,"
      "\"machine_total_s\":%.3f,\"per_cpu\":[",
      wall, sysconf(_SC_NPROCESSORS_ONLN), (double)(b->busy - a->busy) / hz,
      (double)(b->softirq - a->softirq) / hz, (double)(b->total - a->total) / hz);
  for (int c = 0; c < b->ncpu; c++) {
    printf("%s{\"user\":%.2f,\"sys\":%.2f,\"irq\":%.2f,\"steal\":%.2f,\"idle\":%.2f}", c ? "," : "",
           (double)(b->cpu[c][0] - a->cpu[c][0]) / hz, (double)(b->cpu[c][1] - a->cpu[c][1]) / hz,
           (double)(b->cpu[c][2] - a->cpu[c][2]) / hz, (double)(b->cpu[c][3] - a->cpu[c][3]) / hz,
           (double)(b->cpu[c][4] - a->cpu[c][4]) / hz);
  }
  printf("],\"pids\":{");
  for (int i = 0; i < g_npids; i++) {
    double d = (a->pid_s[i] < 0 || b->pid_s[i] < 0) ? -1 : b->pid_s[i] - a->pid_s[i];
    printf("%s\"%d\":%.6f", i ? "," : "", g_pids[i], d);
  }
  printf("}}");
}

// ---------------------------------------------------------------- sender

static int cmd_send(int argc, char** argv) {
  const char *targets = NULL, *dst = NULL, *bind_ip = "0.0.0.0", *cpu_pids = NULL;
  int streams = 0, sport_base = 0, burst = 8, pt = 0;
  double pps = 0, duration = 1.0;
  long count = 0;
  uint32_t run_id = 0;
  int stamp = 0;
  for (int i = 0; i < argc; i++) {
    const char* a = argv[i];
    if (!strcmp(a, "--stamp")) {
      stamp = 1;
      continue;
    }
    const char* v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) usage();
    if (!strcmp(a, "--targets"))
      targets = v;
    else if (!strcmp(a, "--dst"))
      dst = v;
    else if (!strcmp(a, "--streams"))
      streams = atoi(v);
    else if (!strcmp(a, "--bind"))
      bind_ip = v;
    else if (!strcmp(a, "--sport-base"))
      sport_base = atoi(v);
    else if (!strcmp(a, "--pps"))
      pps = atof(v);
    else if (!strcmp(a, "--duration"))
      duration = atof(v);
    else if (!strcmp(a, "--burst"))
      burst = atoi(v);
    else if (!strcmp(a, "--count"))
      count = atol(v);
    else if (!strcmp(a, "--pt"))
      pt = atoi(v);
    else if (!strcmp(a, "--run-id"))
      run_id = (uint32_t)strtoul(v, NULL, 0);
    else if (!strcmp(a, "--cpu-pids"))
      cpu_pids = v;
    else
      usage();
    i++;
  }
  if (streams <= 0 || (!targets && !dst)) usage();
  if (burst < 1) burst = 1;
  if (burst > MAX_BURST) burst = MAX_BURST;
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

  addr_t* tgt = calloc((size_t)streams, sizeof *tgt);
  if (targets) {
    int n = read_targets(targets, tgt, streams);
    if (n < streams) {
      fprintf(stderr, "blast: %s has %d targets, %d streams requested\n", targets, n, streams);
      return 2;
    }
  } else {
    addr_t sa;
    if (parse_ipport(dst, &sa)) usage();
    for (int i = 0; i < streams; i++) tgt[i] = sa;
  }
  if (cpu_pids) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", cpu_pids);
    for (char* t = strtok(buf, ","); t && g_npids < MAX_PIDS; t = strtok(NULL, ","))
      if (atoi(t) > 0) g_pids[g_npids++] = atoi(t);
  }
  if (g_npids < MAX_PIDS) g_pids[g_npids++] = getpid();

  int* fds = malloc(sizeof(int) * (size_t)streams);
  addr_t bind_addr;
  if (parse_ip(bind_ip, 0, &bind_addr)) usage();
  for (int i = 0; i < streams; i++) {
    if (tgt[i].sa.sa_family != bind_addr.sa.sa_family) {
      fprintf(stderr, "blast: target %d is not of the family of --bind %s\n", i, bind_ip);
      return 2;
    }
    int fd = socket(bind_addr.sa.sa_family, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    set_bufsize(fd, SO_SNDBUFFORCE, SO_SNDBUF, 1 << 20);
    addr_t sa = bind_addr;
    uint16_t port = htons((uint16_t)(sport_base ? sport_base + i : 0));
    if (sa.sa.sa_family == AF_INET6)
      sa.v6.sin6_port = port;
    else
      sa.v4.sin_port = port;
    if (bind(fd, &sa.sa, addr_len(&sa))) die("bind");
    if (connect(fd, &tgt[i].sa, addr_len(&tgt[i]))) die("connect");
    fds[i] = fd;
  }

  uint16_t* seq = calloc((size_t)streams, sizeof *seq);
  static uint8_t bufs[MAX_BURST][PKT_LEN];
  struct mmsghdr msgs[MAX_BURST];
  struct iovec iov[MAX_BURST];
  memset(msgs, 0, sizeof msgs);
  for (int k = 0; k < MAX_BURST; k++) {
    fill_packet(bufs[k], pt, 0, 0, 0, run_id);
    iov[k].iov_base = bufs[k];
    iov[k].iov_len = PKT_LEN;
    msgs[k].msg_hdr.msg_iov = &iov[k];
    msgs[k].msg_hdr.msg_iovlen = 1;
  }

  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);

  long long sent = 0, attempted = 0, errors = 0, would_block = 0;
  long long target_total = count > 0 ? count * (long long)streams : -1;
  if (count > 0 && pps <= 0) pps = 50000;  // priming: gentle default pace
  if (count > 0) burst = 1;                // priming: one packet per stream per round
  struct cpu_snap c0, c1;
  cpu_snapshot(&c0);
  double t0 = now_mono();
  double t_end = count > 0 ? 1e300 : t0 + duration;
  int cur = 0;
  for (;;) {
    if (g_stop) break;
    double now = now_mono();
    if (now >= t_end) break;
    long long due = pps > 0 ? (long long)((now - t0) * pps) + 1 : attempted + 1024LL * burst;
    if (target_total >= 0 && due > target_total) due = target_total;
    if (target_total >= 0 && attempted >= target_total) break;
    long long deficit = due - attempted;
    if (deficit <= 0) {
      // Wait until a full batch is due (bounded so the end time is honoured).
      double next = t0 + (double)(attempted + burst) / pps;
      if (next > now + 0.001) next = now + 0.001;
      if (next > t_end) next = t_end;
      sleep_until(next);
      continue;
    }
    // Send the deficit in per-socket batches, checking the clock every 64 batches.
    for (int rounds = 0; deficit > 0 && rounds < 64; rounds++) {
      int n = deficit < burst ? (int)deficit : burst;
      uint32_t ssrc = (uint32_t)cur;
      uint64_t sent_ns = 0;
      if (stamp) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        sent_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
      }
      for (int k = 0; k < n; k++) {
        if (stamp) memcpy(bufs[k] + 24, &sent_ns, 8);
        uint16_t s = seq[cur]++;
        bufs[k][2] = (uint8_t)(s >> 8);
        bufs[k][3] = (uint8_t)s;
        uint32_t ts = htonl((uint32_t)s * 160u), ss = htonl(ssrc);
        memcpy(bufs[k] + 4, &ts, 4);
        memcpy(bufs[k] + 8, &ss, 4);
      }
      int r = sendmmsg(fds[cur], msgs, (unsigned)n, 0);
      attempted += n;
      deficit -= n;
      if (r > 0) sent += r;
      if (r < n) {
        if (r < 0 && (errno == EAGAIN || errno == ENOBUFS))
          would_block += n;
        else
          errors += n - (r > 0 ? r : 0);
      }
      if (++cur == streams) cur = 0;
    }
  }
  double t1 = now_mono();
  cpu_snapshot(&c1);
  double wall = t1 - t0;
  printf(
      "{\"role\":\"send\",\"streams\":%d,\"burst\":%d,\"pt\":%d,\"run_id\":%u,"
      "\"target_pps\":%.0f,\"duration_s\":%.4f,\"attempted\":%lld,\"sent\":%lld,"
      "\"send_errors\":%lld,\"send_wouldblock\":%lld,\"offered_pps\":%.1f",
      streams, burst, pt, run_id, pps, wall, attempted, sent, errors, would_block,
      wall > 0 ? (double)sent / wall : 0.0);
  print_cpu(&c0, &c1, wall);
  printf("}\n");
  fflush(stdout);
  return 0;
}

// ---------------------------------------------------------------- receiver

struct rx_state {
  int streams;
  uint32_t run_id;
  long long* per_stream;
  long long total, in_window, late, foreign, prime_rx;
  double late_s;
  double t_first, window_end;
  int started;
  double duration;
  long long bins[1000];  // 100 ms bins from the first packet
  int nbins;
  long long* delay_us;  // --delay: packets per microsecond of delay, DELAY_BUCKETS of them
  long long delayed;
};

#define DELAY_BUCKETS 100000

// One packet's delay: its kernel arrival time minus the send time stamped in it.
static void rx_delay(struct rx_state* st, const uint8_t* p, int len, const struct timespec* at) {
  if (len < 32 || p[0] != 0x80 || (p[1] & 0x7f) != 0) return;
  uint64_t sent_ns;
  memcpy(&sent_ns, p + 24, 8);
  if (!sent_ns) return;
  int64_t d = ((int64_t)at->tv_sec * 1000000000ll + at->tv_nsec - (int64_t)sent_ns) / 1000;
  if (d < 0) d = 0;
  if (d >= DELAY_BUCKETS) d = DELAY_BUCKETS - 1;
  st->delay_us[d]++;
  st->delayed++;
}

static long long delay_percentile(const struct rx_state* st, double q) {
  if (q >= 1.0) {  // the largest delay seen
    for (int i = DELAY_BUCKETS - 1; i > 0; i--)
      if (st->delay_us[i]) return i;
    return 0;
  }
  long long want = (long long)(q * (double)st->delayed), seen = 0;
  for (int i = 0; i < DELAY_BUCKETS; i++) {
    seen += st->delay_us[i];
    if (seen > want) return i;
  }
  return DELAY_BUCKETS - 1;
}

static void rx_account(struct rx_state* st, const uint8_t* p, int len, double now) {
  if (len < 20 || p[0] != 0x80) {
    st->foreign++;
    return;
  }
  uint32_t v[3];
  memcpy(v, p + 8, sizeof v);
  uint32_t ssrc = ntohl(v[0]), magic = ntohl(v[1]), run = ntohl(v[2]);
  if (magic != MAGIC || run != st->run_id || ssrc >= (uint32_t)st->streams) {
    st->foreign++;
    return;
  }
  if ((p[1] & 0x7f) != 0) {
    st->prime_rx++;
    return;
  }
  if (!st->started) {
    st->started = 1;
    st->t_first = now;
    st->window_end = now + st->duration;
  }
  st->total++;
  st->per_stream[ssrc]++;
  if (now <= st->window_end) st->in_window++;
  if (now > st->window_end + st->late_s) st->late++;
  int b = (int)((now - st->t_first) * 10.0);
  if (b >= 0 && b < st->nbins) st->bins[b]++;
}

static int cmd_recv(int argc, char** argv) {
  const char *bind_s = NULL, *prime_targets = NULL, *ready_file = NULL;
  int streams = 0, per_stream = 0, prime = 0, prime_only = 0;
  double duration = 1.0, grace = 0.5, wait_first = 5.0, prime_pps = 50000, late_s = 0.05;
  uint32_t run_id = 0;
  int delay = 0;
  for (int i = 0; i < argc; i++) {
    const char* a = argv[i];
    if (!strcmp(a, "--per-stream")) {
      per_stream = 1;
      continue;
    }
    if (!strcmp(a, "--prime-only")) {
      prime_only = 1;
      continue;
    }
    if (!strcmp(a, "--delay")) {
      delay = 1;
      continue;
    }
    const char* v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) usage();
    if (!strcmp(a, "--bind"))
      bind_s = v;
    else if (!strcmp(a, "--streams"))
      streams = atoi(v);
    else if (!strcmp(a, "--duration"))
      duration = atof(v);
    else if (!strcmp(a, "--grace"))
      grace = atof(v);
    else if (!strcmp(a, "--late"))
      late_s = atof(v);
    else if (!strcmp(a, "--wait-first"))
      wait_first = atof(v);
    else if (!strcmp(a, "--run-id"))
      run_id = (uint32_t)strtoul(v, NULL, 0);
    else if (!strcmp(a, "--prime-targets"))
      prime_targets = v;
    else if (!strcmp(a, "--prime"))
      prime = atoi(v);
    else if (!strcmp(a, "--prime-pps"))
      prime_pps = atof(v);
    else if (!strcmp(a, "--ready-file"))
      ready_file = v;
    else
      usage();
    i++;
  }
  if (!bind_s || streams <= 0) usage();
  addr_t base;
  if (parse_ipport(bind_s, &base)) usage();
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

  int nfd = per_stream ? streams : 1;
  int* fds = malloc(sizeof(int) * (size_t)nfd);
  uint32_t* ovfl = calloc((size_t)nfd, sizeof *ovfl);
  int ep = -1;
  if (per_stream) {
    ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
  }
  for (int i = 0; i < nfd; i++) {
    int fd = socket(base.sa.sa_family, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one);
    if (delay) setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    set_bufsize(fd, SO_RCVBUFFORCE, SO_RCVBUF, per_stream ? (1 << 20) : (32 << 20));
    addr_t sa = base;
    uint16_t* port = sa.sa.sa_family == AF_INET6 ? &sa.v6.sin6_port : &sa.v4.sin_port;
    *port = htons((uint16_t)(ntohs(*port) + (per_stream ? i : 0)));
    if (bind(fd, &sa.sa, addr_len(&sa))) die("bind");
    if (per_stream) {
      struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
      if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)) die("epoll_ctl");
    }
    fds[i] = fd;
  }

  // Priming: K rounds of one packet per stream, sent from the stream's socket to its target.
  long long prime_sent = 0;
  if (prime_targets && prime > 0) {
    addr_t* tgt = calloc((size_t)streams, sizeof *tgt);
    int n = read_targets(prime_targets, tgt, streams);
    if (n < streams) {
      fprintf(stderr, "blast: %s has %d targets, %d streams\n", prime_targets, n, streams);
      return 2;
    }
    for (int i = 0; i < streams; i++)
      if (tgt[i].sa.sa_family != base.sa.sa_family) {
        fprintf(stderr, "blast: prime target %d is not of the family of --bind %s\n", i, bind_s);
        return 2;
      }
    uint8_t pkt[PKT_LEN];
    double t0 = now_mono();
    for (int r = 0; r < prime; r++) {
      for (int i = 0; i < streams; i++) {
        fill_packet(pkt, 13, (uint16_t)r, (uint32_t)r * 160u, (uint32_t)i, run_id);
        int fd = fds[per_stream ? i : 0];
        if (sendto(fd, pkt, PKT_LEN, 0, &tgt[i].sa, addr_len(&tgt[i])) == PKT_LEN) prime_sent++;
        double due = t0 + (double)(prime_sent + 1) / prime_pps;
        if (due > now_mono() + 0.0005) sleep_until(due);
      }
    }
    free(tgt);
  }
  if (ready_file) {
    int f = open(ready_file, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (f >= 0) close(f);
  }

  struct rx_state st;
  memset(&st, 0, sizeof st);
  st.streams = streams;
  st.run_id = run_id;
  st.duration = duration;
  st.late_s = late_s;
  st.per_stream = calloc((size_t)streams, sizeof(long long));
  st.nbins = (int)(duration * 10.0) + 1;
  if (delay) st.delay_us = calloc(DELAY_BUCKETS, sizeof(long long));
  if (st.nbins > 1000) st.nbins = 1000;

  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);

  static uint8_t rbuf[RX_BATCH][2048];
  static char cbuf[RX_BATCH][64];
  struct mmsghdr msgs[RX_BATCH];
  struct iovec iov[RX_BATCH];
  // Polling sink: drain every socket without blocking, then sleep 0.5 ms. Much cheaper per
  // packet than waking up for each datagram, so the sink takes little CPU from a relay that
  // shares its core (at 300k pps one pause is ~150 packets; the socket buffer holds far more).
  double t_start = now_mono();
  while (!prime_only && !g_stop) {
    double now = now_mono();
    if (st.started && now > st.window_end + grace) break;
    if (!st.started && now > t_start + wait_first) break;
    int ready[1024];
    int nready = 0;
    if (per_stream) {
      struct epoll_event evs[1024];
      int n = epoll_wait(ep, evs, 1024, 0);
      for (int i = 0; i < n; i++) ready[nready++] = (int)evs[i].data.u32;
    } else {
      ready[nready++] = 0;
    }
    int got = 0;
    for (int r = 0; r < nready; r++) {
      int idx = ready[r];
      for (;;) {
        for (int k = 0; k < RX_BATCH; k++) {
          iov[k].iov_base = rbuf[k];
          iov[k].iov_len = sizeof rbuf[k];
          memset(&msgs[k].msg_hdr, 0, sizeof msgs[k].msg_hdr);
          msgs[k].msg_hdr.msg_iov = &iov[k];
          msgs[k].msg_hdr.msg_iovlen = 1;
          msgs[k].msg_hdr.msg_control = cbuf[k];
          msgs[k].msg_hdr.msg_controllen = sizeof cbuf[k];
        }
        int n = recvmmsg(fds[idx], msgs, RX_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) break;
        got += n;
        double t = now_mono();
        for (int k = 0; k < n; k++) {
          rx_account(&st, rbuf[k], (int)msgs[k].msg_len, t);
          for (struct cmsghdr* c = CMSG_FIRSTHDR(&msgs[k].msg_hdr); c;
               c = CMSG_NXTHDR(&msgs[k].msg_hdr, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
              uint32_t d;
              memcpy(&d, CMSG_DATA(c), sizeof d);
              if (d > ovfl[idx]) ovfl[idx] = d;
            } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS &&
                       st.delay_us && st.started && t <= st.window_end) {
              struct timespec at;
              memcpy(&at, CMSG_DATA(c), sizeof at);
              rx_delay(&st, rbuf[k], (int)msgs[k].msg_len, &at);
            }
        }
        if (n < RX_BATCH) break;
      }
    }
    if (nready < 1024 && got < 4 * RX_BATCH) sleep_until(now_mono() + 0.0005);
  }
  long long drops = 0;
  for (int i = 0; i < nfd; i++) drops += ovfl[i];
  long long mn = -1, mx = 0, hit = 0;
  for (int i = 0; i < streams; i++) {
    long long c = st.per_stream[i];
    if (c > 0) hit++;
    if (mn < 0 || c < mn) mn = c;
    if (c > mx) mx = c;
  }
  printf(
      "{\"role\":\"recv\",\"streams\":%d,\"per_stream_sockets\":%s,\"run_id\":%u,"
      "\"received\":%lld,\"in_window\":%lld,\"late\":%lld,\"window_s\":%.3f,\"streams_hit\":%lld,"
      "\"per_stream_min\":%lld,\"per_stream_max\":%lld,\"rx_socket_drops\":%lld,"
      "\"foreign\":%lld,\"prime_rx\":%lld,\"prime_sent\":%lld,\"got_first\":%s,"
      "\"bins_100ms\":[",
      streams, per_stream ? "true" : "false", run_id, st.total, st.in_window, st.late, duration,
      hit, mn < 0 ? 0 : mn, mx, drops, st.foreign, st.prime_rx, prime_sent,
      st.started ? "true" : "false");
  for (int b = 0; b < st.nbins; b++) printf("%s%lld", b ? "," : "", st.bins[b]);
  printf("]");
  if (st.delay_us && st.delayed)
    printf(
        ",\"delay_us\":{\"packets\":%lld,\"p50\":%lld,\"p90\":%lld,\"p99\":%lld,"
        "\"p999\":%lld,\"max\":%lld}",
        st.delayed, delay_percentile(&st, 0.5), delay_percentile(&st, 0.9),
        delay_percentile(&st, 0.99), delay_percentile(&st, 0.999), delay_percentile(&st, 1.0));
  printf("}\n");
  fflush(stdout);
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 2) usage();
  if (!strcmp(argv[1], "send")) return cmd_send(argc - 2, argv + 2);
  if (!strcmp(argv[1], "recv")) return cmd_recv(argc - 2, argv + 2);
  usage();
  return 2;
}
