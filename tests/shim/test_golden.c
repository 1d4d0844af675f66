/*
 * test_golden.c - replays every recorded golden case (tests/shim/golden/NN-*,
 * recorded from Kamailio 5.6's stock mediaproxy.so by record.py) through the
 * shim's public API against the fake dispatcher giving the same replies, and
 * checks that the shim returns the same code, sends byte-identical `update`
 * and `remove` requests and produces the byte-identical body Kamailio
 * forwarded. Where Kamailio forwarded a broken body, the case has a
 * hand-written `M.shim` (the shim's rc, and "request: none" when it refuses
 * before asking the dispatcher) and `M.shim-out` (the valid body the shim
 * produces instead): the shim must give that, and never Kamailio's broken
 * bytes; where Kamailio's request is one the dispatcher cannot parse (an
 * IPv6 media address without brackets), `M.shim-request` is the request the
 * shim sends instead. Every forwarded SDP body must pass the validity
 * checker (sdp_valid.c) against its input.
 *   shim_golden GOLDEN_DIR [CASE...]
 * With MPSHIM_GOLDEN_WRITE=1 in the environment it (re)writes the
 * `M.shim-out` of every case with an `M.shim` from the shim's output, for
 * review before committing.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fake_dispatcher.h"
#include "mediaproxy-shim.h"
#include "sdp_valid.h"

static int failures;

#define FAIL(...)        \
  do {                   \
    printf("FAIL ");     \
    printf(__VA_ARGS__); \
    printf("\n");        \
    failures++;          \
  } while (0)

typedef struct blob {
  char* data;
  size_t len;
} blob;

static int read_file(const char* dir, const char* name, blob* b) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  b->data = NULL;
  b->len = 0;
  FILE* f = fopen(path, "rb");
  if (!f) return 0;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  b->data = malloc((size_t)n + 1);
  if (!b->data || fread(b->data, 1, (size_t)n, f) != (size_t)n) {
    fclose(f);
    free(b->data);
    b->data = NULL;
    return 0;
  }
  b->data[n] = '\0';
  b->len = (size_t)n;
  fclose(f);
  return 1;
}

/* "key: value" lines of a .msg file */
typedef struct fields {
  char key[32][32];
  char* val[32];
  int n;
  blob raw;
} fields;

static int read_fields(const char* dir, const char* name, fields* f) {
  f->n = 0;
  if (!read_file(dir, name, &f->raw)) return 0;
  char* save = NULL;
  for (char* line = strtok_r(f->raw.data, "\n", &save); line && f->n < 32;
       line = strtok_r(NULL, "\n", &save)) {
    char* colon = strstr(line, ": ");
    char* val;
    if (colon) {
      *colon = '\0';
      val = colon + 2;
    } else {
      size_t l = strlen(line);
      if (l && line[l - 1] == ':') line[l - 1] = '\0';
      val = line + l;
    }
    snprintf(f->key[f->n], sizeof f->key[0], "%s", line);
    f->val[f->n] = val;
    f->n++;
  }
  return 1;
}

static const char* field(const fields* f, const char* key) {
  for (int i = 0; i < f->n; i++) {
    if (strcmp(f->key[i], key) == 0) return f->val[i][0] ? f->val[i] : NULL;
  }
  return NULL;
}

static void chomp(blob* b) {
  while (b->len && (b->data[b->len - 1] == '\n' || b->data[b->len - 1] == '\r')) {
    b->data[--b->len] = '\0';
  }
}

static int ice_of(const char* v) {
  if (!v || strcmp(v, "default") == 0) return MPSHIM_ICE_DEFAULT;
  if (strcmp(v, "none") == 0) return MPSHIM_ICE_NONE;
  if (strcmp(v, "low-priority") == 0) return MPSHIM_ICE_LOW;
  if (strcmp(v, "high-priority") == 0) return MPSHIM_ICE_HIGH;
  return -100;
}

static void show_diff(const char* what, const char* want, size_t wlen, const char* got,
                      size_t glen) {
  size_t i = 0;
  while (i < wlen && i < glen && want[i] == got[i]) i++;
  printf("  %s differs at byte %zu (expected %zu bytes, got %zu)\n", what, i, wlen, glen);
  printf("  expected: %.*s\n  got:      %.*s\n", (int)(wlen - i < 80 ? wlen - i : 80), want + i,
         (int)(glen - i < 80 ? glen - i : 80), got + i);
}

static const char* const kinds[] = {"invite", "early", "answer"};

static void run_case(const char* golden, const char* name, const char* sock) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/%s", golden, name);
  int checks_before = failures;

  /* replies in the order the module sent requests, then the remove's */
  const char* replies[8];
  blob reply_blobs[4] = {{0}};
  int nreplies = 0;
  fields shims[3];
  int have_shim[3];
  for (int k = 0; k < 3; k++) {
    char fn[64];
    snprintf(fn, sizeof fn, "%s.shim", kinds[k]);
    have_shim[k] = read_fields(dir, fn, &shims[k]);
    const char* sent = have_shim[k] ? field(&shims[k], "request") : NULL;
    if (sent && strcmp(sent, "none") == 0) continue; /* the shim asks nothing */
    snprintf(fn, sizeof fn, "%s.reply", kinds[k]);
    if (read_file(dir, fn, &reply_blobs[k])) {
      chomp(&reply_blobs[k]);
      replies[nreplies++] = reply_blobs[k].data;
    }
  }
  replies[nreplies++] = "removed";

  fake_dispatcher fake;
  if (fake_start(&fake, sock, replies, nreplies, 0, 0) < 0) {
    FAIL("%s: cannot start the fake dispatcher", name);
    return;
  }
  mpshim_config cfg;
  mpshim_config_init(&cfg);
  cfg.socket_path = sock;
  cfg.timeout_ms = 2000;
  cfg.retry_interval_ms = 0;
  mpshim_client* c = mpshim_client_new(&cfg);
  fields answer_fields = {0};
  int have_answer = 0;

  for (int k = 0; k < 3; k++) {
    char fn[64];
    fields msgf = {0};
    snprintf(fn, sizeof fn, "%s.msg", kinds[k]);
    if (!read_fields(dir, fn, &msgf)) continue;
    blob body = {0}, rc_b = {0}, want_req = {0}, want_out = {0};
    snprintf(fn, sizeof fn, "%s.sdp", kinds[k]);
    read_file(dir, fn, &body);
    snprintf(fn, sizeof fn, "%s.rc", kinds[k]);
    read_file(dir, fn, &rc_b);
    snprintf(fn, sizeof fn, "%s.request", kinds[k]);
    int expect_req = read_file(dir, fn, &want_req);
    /* where the stock request cannot be parsed (an IPv6 media address
     * without brackets): the shim's request, declared next to it */
    blob kam_req = {0}, own_req = {0};
    snprintf(fn, sizeof fn, "%s.shim-request", kinds[k]);
    const int req_differs = read_file(dir, fn, &own_req);
    if (req_differs) {
      if (!have_shim[k]) FAIL("%s/%s: %s without %s.shim", name, kinds[k], fn, kinds[k]);
      kam_req = want_req;
      want_req = own_req;
    }
    snprintf(fn, sizeof fn, "%s.out", kinds[k]);
    int have_out = read_file(dir, fn, &want_out);
    int want_rc = rc_b.data ? atoi(rc_b.data) : 99;
    /* where Kamailio's body is broken: the shim's own expectation */
    blob kam_out = {0}, sane_out = {0};
    const int shim_differs = have_shim[k];
    if (shim_differs) {
      const char* v = field(&shims[k], "rc");
      want_rc = v ? atoi(v) : 99;
      v = field(&shims[k], "request");
      if (v && strcmp(v, "none") == 0) expect_req = 0;
      kam_out = want_out;
      snprintf(fn, sizeof fn, "%s.shim-out", kinds[k]);
      if (read_file(dir, fn, &sane_out)) {
        want_out = sane_out;
      } else {
        /* refused: the body is forwarded as it came */
        read_file(dir,
                  kinds[k][0] == 'i'   ? "invite.sdp"
                  : kinds[k][0] == 'e' ? "early.sdp"
                                       : "answer.sdp",
                  &want_out);
      }
    }

    mpshim_message m;
    mpshim_message_init(&m);
    const char* type = field(&msgf, "type");
    m.type = type && strcmp(type, "reply") == 0 ? MPSHIM_REPLY : MPSHIM_REQUEST;
    m.status = field(&msgf, "status") ? atoi(field(&msgf, "status")) : 0;
    m.method = field(&msgf, "method");
    m.call_id = field(&msgf, "call_id");
    m.cseq = field(&msgf, "cseq");
    m.from_uri = field(&msgf, "from_uri");
    m.to_uri = field(&msgf, "to_uri");
    m.from_tag = field(&msgf, "from_tag");
    m.to_tag = field(&msgf, "to_tag");
    m.user_agent = field(&msgf, "user_agent");
    m.signaling_ip = field(&msgf, "signaling_ip");
    m.media_relay = field(&msgf, "media_relay");
    m.ice_candidate = ice_of(field(&msgf, "ice"));
    m.content_type = field(&msgf, "content_type");
    m.body = body.data;
    m.body_len = body.len;

    char* out = NULL;
    size_t out_len = 0;
    int rc = mpshim_use_media_proxy(c, &m, &out, &out_len);
    if (rc != want_rc) {
      FAIL("%s/%s: rc %d, Kamailio returned %d (%s)", name, kinds[k], rc, want_rc,
           mpshim_client_last_error(c));
    }
    char got_req[16384];
    int glen = fake_next_request(&fake, got_req, sizeof got_req, expect_req ? 1000 : 0);
    if (expect_req) {
      if (glen < 0) {
        FAIL("%s/%s: no update sent, Kamailio sent one", name, kinds[k]);
      } else if ((size_t)glen != want_req.len || memcmp(got_req, want_req.data, want_req.len)) {
        FAIL("%s/%s: update request differs from Kamailio's", name, kinds[k]);
        show_diff("request", want_req.data, want_req.len, got_req, (size_t)glen);
      }
    } else if (glen >= 0) {
      FAIL("%s/%s: sent an update, Kamailio did not: %s", name, kinds[k], got_req);
    }
    if (req_differs && (!kam_req.data || (kam_req.len == own_req.len &&
                                          memcmp(kam_req.data, own_req.data, own_req.len) == 0))) {
      FAIL("%s/%s: .shim-request declares no difference from Kamailio's request", name, kinds[k]);
    }
    free(kam_req.data);
    /* the body that leaves the proxy: ours on success, else the original */
    const char* fwd = rc == MPSHIM_OK && out ? out : body.data;
    size_t fwd_len = rc == MPSHIM_OK && out ? out_len : body.len;
    if (rc == MPSHIM_OK && !out && body.data) FAIL("%s/%s: no body returned", name, kinds[k]);
    if (have_out != (body.data != NULL)) {
      FAIL("%s/%s: golden files inconsistent (body vs .out)", name, kinds[k]);
    } else if (have_out &&
               (fwd_len != want_out.len || memcmp(fwd, want_out.data, want_out.len) != 0)) {
      FAIL("%s/%s: body differs from the one %s", name, kinds[k],
           shim_differs ? "the shim must produce (.shim-out)" : "Kamailio forwarded");
      show_diff("body", want_out.data, want_out.len, fwd, fwd_len);
    }
    if (shim_differs && rc == MPSHIM_OK && kam_out.data && fwd_len == kam_out.len &&
        memcmp(fwd, kam_out.data, fwd_len) == 0) {
      FAIL("%s/%s: the shim forwards Kamailio's broken body", name, kinds[k]);
    }
    /* the forwarded SDP is valid, or only has the defects its input had */
    char why[256];
    if (fwd && body.data && !(m.content_type && strncmp(m.content_type, "multipart/", 10) == 0) &&
        !sdp_valid(fwd, fwd_len, body.data, body.len, why, sizeof why)) {
      FAIL("%s/%s: invalid SDP forwarded: %s", name, kinds[k], why);
    }
    if (shim_differs && rc == MPSHIM_OK && getenv("MPSHIM_GOLDEN_WRITE")) {
      /* maintainer aid: write the shim's body as M.shim-out (then review it) */
      char path[4200];
      snprintf(path, sizeof path, "%s/%s.shim-out", dir, kinds[k]);
      FILE* f = fopen(path, "wb");
      if (f) {
        fwrite(fwd, 1, fwd_len, f);
        fclose(f);
      }
    }
    /* an M.shim is only for a body Kamailio broke */
    if (shim_differs && kam_out.data && body.data &&
        sdp_valid(kam_out.data, kam_out.len, body.data, body.len, why, sizeof why)) {
      FAIL("%s/%s: has %s.shim but Kamailio's body is valid SDP", name, kinds[k], kinds[k]);
    }
    if (shim_differs) free(kam_out.data);
    mpshim_free(out);
    if (k == 2) {
      answer_fields = msgf;
      have_answer = 1;
    } else {
      free(msgf.raw.data);
    }
    free(body.data);
    free(rc_b.data);
    free(want_req.data);
    free(want_out.data);
  }

  /* BYE from the caller: end_media_session() with the dialog's tags */
  blob want_bye = {0};
  if (have_answer && read_file(dir, "bye.request", &want_bye)) {
    mpshim_message m;
    mpshim_message_init(&m);
    m.type = MPSHIM_REQUEST;
    m.method = "BYE";
    m.call_id = field(&answer_fields, "call_id");
    m.from_tag = field(&answer_fields, "from_tag");
    m.to_tag = field(&answer_fields, "to_tag");
    int rc = mpshim_end_media_session(c, &m);
    char got_req[4096];
    int glen = fake_next_request(&fake, got_req, sizeof got_req, 1000);
    if (rc != MPSHIM_OK) FAIL("%s/bye: rc %d (%s)", name, rc, mpshim_client_last_error(c));
    if (glen < 0 || (size_t)glen != want_bye.len || memcmp(got_req, want_bye.data, want_bye.len)) {
      FAIL("%s/bye: remove request differs from Kamailio's", name);
      if (glen >= 0) show_diff("remove", want_bye.data, want_bye.len, got_req, (size_t)glen);
    }
  }
  free(want_bye.data);
  if (have_answer) free(answer_fields.raw.data);
  for (int k = 0; k < 4; k++) free(reply_blobs[k].data);
  for (int k = 0; k < 3; k++) {
    if (have_shim[k]) free(shims[k].raw.data);
  }
  mpshim_client_free(c);
  fake_stop(&fake);
  printf("%s %s\n", failures == checks_before ? "ok  " : "FAIL", name);
}

static int cmp(const void* a, const void* b) {
  return strcmp(*(char* const*)a, *(char* const*)b);
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s GOLDEN_DIR [CASE...]\n", argv[0]);
    return 2;
  }
  char tmpl[] = "/tmp/mpshim-golden-XXXXXX";
  if (!mkdtemp(tmpl)) return 2;
  char sock[256];
  snprintf(sock, sizeof sock, "%s/d.sock", tmpl);

  char* names[256];
  int n = 0;
  if (argc > 2) {
    for (int i = 2; i < argc && n < 256; i++) names[n++] = strdup(argv[i]);
  } else {
    DIR* d = opendir(argv[1]);
    if (!d) {
      perror(argv[1]);
      return 2;
    }
    struct dirent* e;
    while ((e = readdir(d)) != NULL && n < 256) {
      char p[4096];
      struct stat st;
      snprintf(p, sizeof p, "%s/%s/params", argv[1], e->d_name);
      if (e->d_name[0] != '.' && stat(p, &st) == 0) names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], cmp);
  }
  for (int i = 0; i < n; i++) {
    run_case(argv[1], names[i], sock);
    free(names[i]);
  }
  rmdir(tmpl);
  printf("%d golden cases, %d mismatches\n", n, failures);
  if (n == 0) return 1;
  return failures ? 1 : 0;
}
