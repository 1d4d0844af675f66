/*
 * fuzz_driver.c - deterministic stand-alone driver for fuzz_shim.c when
 * libFuzzer is not available (gcc, or -Dfuzz=false): it feeds the target the
 * seed bodies (every *.sdp and *.out file under --seed-dir, with their reply
 * lines), then inputs made by a fixed-seed xorshift PRNG: seeds mutated with
 * byte edits and SDP/reply tokens, seeds with every line ending redrawn
 * (CRLF, LF, rarely a lone CR or none) and then cut at a random byte, spliced
 * seeds, and random bytes. The run
 * is bounded by --runs and --max-seconds, so it suits CI; under the
 * ASan/UBSan build (meson -Db_sanitize=address,undefined) any memory or UB
 * error aborts it.
 *   shim_fuzz [--seed-dir DIR] [--runs N] [--max-seconds S] [FILE...]
 * With FILE arguments it only replays those inputs (crash reproducers).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

typedef struct buf {
  uint8_t* p;
  size_t n;
} buf;

static buf seeds[2048];
static size_t nseeds;
static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static size_t below(size_t n) {
  return n ? (size_t)(next() % n) : 0;
}

static int read_all(const char* path, buf* b) {
  FILE* f = fopen(path, "rb");
  if (!f) return 0;
  b->p = NULL;
  b->n = 0;
  size_t cap = 0;
  uint8_t chunk[4096];
  size_t got;
  while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
    if (b->n + got > cap) {
      cap = (b->n + got) * 2;
      uint8_t* np = realloc(b->p, cap);
      if (!np) abort();
      b->p = np;
    }
    memcpy(b->p + b->n, chunk, got);
    b->n += got;
  }
  fclose(f);
  return 1;
}

static void run(const uint8_t* p, size_t n) {
  /* exactly-sized heap copy so that ASan catches overreads */
  uint8_t* c = malloc(n ? n : 1);
  if (!c) abort();
  memcpy(c, p, n);
  LLVMFuzzerTestOneInput(c, n);
  free(c);
}

/* seed input: flags byte, reply line, NUL, body */
static void add_seed(const uint8_t* body, size_t blen, const char* reply, uint8_t flags) {
  if (nseeds >= sizeof seeds / sizeof seeds[0]) return;
  size_t rl = strlen(reply);
  buf* s = &seeds[nseeds++];
  s->n = 1 + rl + 1 + blen;
  s->p = malloc(s->n);
  if (!s->p) abort();
  s->p[0] = flags;
  memcpy(s->p + 1, reply, rl);
  s->p[1 + rl] = 0;
  memcpy(s->p + 2 + rl, body, blen);
}

static void load_dir(const char* dir, int depth) {
  DIR* d = opendir(dir);
  if (!d) return;
  struct dirent* e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    struct stat st;
    if (stat(path, &st) != 0) continue;
    if (S_ISDIR(st.st_mode) && depth < 2) {
      load_dir(path, depth + 1);
      continue;
    }
    size_t l = strlen(e->d_name);
    if (!(l > 4 &&
          (strcmp(e->d_name + l - 4, ".sdp") == 0 || strcmp(e->d_name + l - 4, ".out") == 0))) {
      continue;
    }
    buf b;
    if (!read_all(path, &b)) continue;
    static const char* const replies[] = {"192.0.2.5 40000 40002 40004",
                                          "error",
                                          "None",
                                          "10.0.0.1 0 0 0 0 0",
                                          "1.2.3.4 65535",
                                          "",
                                          "2001:db8::7 40000 40002 40004",
                                          "[2001:db8::7] 40000"};
    for (size_t i = 0; i < sizeof replies / sizeof replies[0]; i++) {
      add_seed(b.p, b.n, replies[i], (uint8_t)(i * 11));
    }
    free(b.p);
  }
  closedir(d);
}

static const char* const dict[] = {
    "\r\n",
    "\n",
    "\r",
    "m=",
    "c=",
    "v=0",
    "a=",
    "m=audio 0 RTP/AVP 0\r\n",
    "m=message 1 TCP/MSRP *\r\n",
    "c=IN IP4 0.0.0.0\r\n",
    "c=IN IP4 224.0.0.1/3\r\n",
    "a=rtcp:",
    "a=rtcp:5 IN IP4 1.2.3.4",
    "a=candidate:1 2 UDP 1 1.1.1.1 1 typ host\r\n",
    "a=ice-ufrag:x\r\n",
    "a=ice-pwd:y\r\n",
    "a=remote-candidates",
    "a=sendonly",
    "/1",
    "/2",
    "RTP/AVP",
    "udptl",
    " ",
    "\t",
    "0",
    "65535",
    "-1",
    "99999999999999999999",
    "\0",
    "--b\r\nContent-Type: application/sdp\r\n\r\n",
    "\r\n--b",
    "Content-Type: ",
    "<sip:",
    "sip:a@10.0.0.1:5060",
    ";transport=udp",
    "SIP/2.0/UDP ",
    "[::1]",
    "c=IN IP6 ::\r\n",
    "c=IN IP6 2001:db8::1\r\n",
    "a=rtcp:5 IN IP6 2001:db8::1",
    "IP6",
    "::",
    "host.example.com",
    "2001:db8::7 ",
    "error",
    "None",
};

static void mutate(buf* b, size_t cap) {
  int edits = 1 + (int)below(8);
  for (int i = 0; i < edits; i++) {
    size_t pos = below(b->n + 1);
    switch (below(6)) {
      case 0: /* flip */
        if (b->n) b->p[below(b->n)] ^= (uint8_t)(1u << below(8));
        break;
      case 1: { /* insert a token */
        const char* t = dict[below(sizeof dict / sizeof dict[0])];
        size_t tl = t[0] ? strlen(t) : 1;
        if (b->n + tl > cap) break;
        memmove(b->p + pos + tl, b->p + pos, b->n - pos);
        memcpy(b->p + pos, t, tl);
        b->n += tl;
        break;
      }
      case 2: { /* delete a run */
        size_t l = below(16) + 1;
        if (pos + l > b->n) l = b->n - pos;
        memmove(b->p + pos, b->p + pos + l, b->n - pos - l);
        b->n -= l;
        break;
      }
      case 3: /* truncate */
        b->n = pos;
        break;
      case 4: { /* duplicate a chunk */
        if (!b->n) break;
        size_t from = below(b->n), l = below(64) + 1;
        if (from + l > b->n) l = b->n - from;
        if (b->n + l > cap) break;
        uint8_t chunk[64];
        memcpy(chunk, b->p + from, l);
        memmove(b->p + pos + l, b->p + pos, b->n - pos);
        memcpy(b->p + pos, chunk, l);
        b->n += l;
        break;
      }
      default: /* random byte */
        if (b->n < cap) {
          memmove(b->p + pos + 1, b->p + pos, b->n - pos);
          b->p[pos] = (uint8_t)next();
          b->n++;
        }
        break;
    }
  }
}

/* The seed's body with each line ending redrawn as CRLF or LF (1 in 16: a
 * lone CR, 1 in 32: none, joining two lines) and, half of the time, cut at
 * a random byte; the flags and reply line are kept. */
static void redraw_endings(buf* b, const buf* s, size_t cap) {
  const uint8_t* nul = memchr(s->p, 0, s->n);
  size_t head = nul ? (size_t)(nul - s->p) + 1 : (s->n ? 1 : 0);
  if (head > cap) head = cap;
  memcpy(b->p, s->p, head);
  b->n = head;
  for (size_t i = head; i < s->n && b->n + 2 <= cap; i++) {
    uint8_t c = s->p[i];
    if (c == '\r' && i + 1 < s->n && s->p[i + 1] == '\n') continue; /* the LF decides */
    if (c != '\n' && c != '\r') {
      b->p[b->n++] = c;
      continue;
    }
    size_t r = below(32);
    if (r == 0) continue; /* no ending */
    if (r < 3) {
      b->p[b->n++] = '\r';
    } else if (r < 17) {
      b->p[b->n++] = '\n';
    } else {
      b->p[b->n++] = '\r';
      b->p[b->n++] = '\n';
    }
  }
  if (below(2) && b->n > head) b->n = head + below(b->n - head + 1);
}

int main(int argc, char** argv) {
  const char* seed_dir = NULL;
  long runs = 20000;
  double max_seconds = 30;
  int files = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--seed-dir") == 0 && i + 1 < argc) {
      seed_dir = argv[++i];
    } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
      runs = atol(argv[++i]);
    } else if (strcmp(argv[i], "--max-seconds") == 0 && i + 1 < argc) {
      max_seconds = atof(argv[++i]);
    } else {
      buf b;
      if (!read_all(argv[i], &b)) {
        fprintf(stderr, "cannot read %s\n", argv[i]);
        return 2;
      }
      run(b.p, b.n);
      free(b.p);
      files++;
    }
  }
  if (files) {
    printf("replayed %d input(s)\n", files);
    return 0;
  }
  if (seed_dir) load_dir(seed_dir, 0);
  static const char minimal[] = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n";
  add_seed((const uint8_t*)minimal, strlen(minimal), "192.0.2.5 40000", 0);

  for (size_t i = 0; i < nseeds; i++) run(seeds[i].p, seeds[i].n);
  const size_t cap = 16384;
  uint8_t* work = malloc(cap);
  if (!work) abort();
  clock_t start = clock();
  long done = 0;
  for (; done < runs; done++) {
    if ((done & 255) == 0 && (double)(clock() - start) / CLOCKS_PER_SEC > max_seconds) break;
    buf b = {work, 0};
    size_t kind = below(10);
    if (kind < 3) { /* line endings redrawn, truncated */
      redraw_endings(&b, &seeds[below(nseeds)], cap);
    } else if (kind < 7) { /* mutated seed */
      const buf* s = &seeds[below(nseeds)];
      b.n = s->n < cap ? s->n : cap;
      memcpy(work, s->p, b.n);
      mutate(&b, cap);
    } else if (kind < 9) { /* splice two seeds */
      const buf* s1 = &seeds[below(nseeds)];
      const buf* s2 = &seeds[below(nseeds)];
      size_t a = below(s1->n + 1), c = below(s2->n + 1);
      if (a + (s2->n - c) > cap) c = s2->n - (cap - a);
      memcpy(work, s1->p, a);
      memcpy(work + a, s2->p + c, s2->n - c);
      b.n = a + (s2->n - c);
    } else { /* random bytes */
      b.n = below(512);
      for (size_t k = 0; k < b.n; k++) work[k] = (uint8_t)next();
    }
    run(b.p, b.n);
  }
  free(work);
  for (size_t i = 0; i < nseeds; i++) free(seeds[i].p);
  printf("fuzz: %zu seeds and %ld generated inputs in %.1f s, no failure\n", nseeds, done,
         (double)(clock() - start) / CLOCKS_PER_SEC);
  return 0;
}
