/*
 * test_opensips_golden.c - replays the OpenSIPS goldens (tests/shim/
 * golden-opensips/NN-*, recorded from OpenSIPS 3.4's stock mediaproxy module
 * in engage mode by golden-opensips/record.py) through the shim's engage
 * mode in the OpenSIPS dialect, against the fake dispatcher giving the
 * recorded replies: the INVITE, the 183 and the 200 are reported to a dialog
 * table with the dialog_id as h_entry:h_id (from the module's decimal db id),
 * then the BYE; the `update` and `remove`
 * requests the shim sends must be byte-identical to the module's, in the
 * same order, and each forwarded body must be what OpenSIPS forwarded, or
 * where the Kamailio golden of the case says the stock module breaks the
 * body (../golden/NN-name/M.shim), the shim's valid body (M.shim-out) or the
 * unchanged input. Cases where the OpenSIPS worker died (a `crash` file) are
 * replayed too: every body must be valid SDP and one `remove` must end them.
 *   shim_opensips_golden GOLDEN_OPENSIPS_DIR KAMAILIO_GOLDEN_DIR
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake_dispatcher.h"
#include "mediaproxy-shim.h"
#include "sdp_valid.h"

static int failures, compared, crashed;

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

static int read_file(const char* dir, const char* case_name, const char* name, blob* b) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s/%s", dir, case_name, name);
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

/* The value of "key: value" in a .msg text (NULL if absent or empty), in
 * a static slot of `slot`. */
static const char* field(const blob* msg, const char* key, char slot[][512], int* used) {
  char want[64];
  snprintf(want, sizeof want, "%s: ", key);
  for (const char* p = msg->data; p && *p;) {
    const char* end = strchr(p, '\n');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (strncmp(p, want, strlen(want)) == 0 && len > strlen(want)) {
      char* s = slot[(*used)++];
      snprintf(s, 512, "%.*s", (int)(len - strlen(want)), p + strlen(want));
      return s;
    }
    p = end ? end + 1 : NULL;
  }
  return NULL;
}

static int ice_of(const char* v) {
  if (!v || strcmp(v, "default") == 0) return MPSHIM_ICE_DEFAULT;
  if (strcmp(v, "none") == 0) return MPSHIM_ICE_NONE;
  if (strcmp(v, "low-priority") == 0) return MPSHIM_ICE_LOW;
  return MPSHIM_ICE_HIGH;
}

static const char* const kinds[] = {"invite", "early", "answer"};

static void run_case(const char* dir, const char* kdir, const char* name, const char* sock) {
  blob crash, msgs[3], sdps[3], outs[3], reqs[4], replies[3];
  char slots[64][512];
  int used = 0;
  const int is_crash = read_file(dir, name, "crash", &crash);
  free(crash.data);
  const char* reply_lines[5];
  int nreplies = 0;
  static const char* const sdp_names[] = {"invite.sdp", "early.sdp", "answer.sdp"};
  for (int k = 0; k < 3; k++) {
    char fn[64];
    snprintf(fn, sizeof fn, "%s.msg", kinds[k]);
    read_file(dir, name, fn, &msgs[k]);
    snprintf(fn, sizeof fn, "%s.out", kinds[k]);
    read_file(dir, name, fn, &outs[k]);
    snprintf(fn, sizeof fn, "%s.request", kinds[k]);
    read_file(dir, name, fn, &reqs[k]);
    snprintf(fn, sizeof fn, "%s.reply", kinds[k]);
    if (read_file(dir, name, fn, &replies[k])) {
      replies[k].data[strcspn(replies[k].data, "\r\n")] = '\0';
      reply_lines[nreplies++] = replies[k].data;
    }
    read_file(kdir, name, sdp_names[k], &sdps[k]);
  }
  read_file(dir, name, "bye.request", &reqs[3]);
  reply_lines[nreplies++] = "removed";
  /* a crashed case has no .msg: the inputs are the Kamailio case's */
  if (is_crash) {
    for (int k = 0; k < 3; k++) {
      char fn[64];
      snprintf(fn, sizeof fn, "%s.msg", kinds[k]);
      free(msgs[k].data);
      read_file(kdir, name, fn, &msgs[k]);
    }
  }

  fake_dispatcher fake;
  if (fake_start(&fake, sock, reply_lines, is_crash ? 0 : nreplies, 0, 0) < 0) {
    FAIL("%s: cannot start the fake dispatcher", name);
    return;
  }
  mpshim_config cfg;
  mpshim_config_init(&cfg);
  cfg.socket_path = sock;
  cfg.timeout_ms = 2000;
  cfg.dialect = MPSHIM_DIALECT_OPENSIPS;
  mpshim_client* c = mpshim_client_new(&cfg);
  mpshim_dialogs* t = mpshim_dialogs_new(4);
  /* the proxy's h_entry:h_id of the module's db id (h_entry << 32 | h_id):
   * the dialect must turn it back into the module's number */
  const char* db_id = field(&msgs[0], "dialog_id", slots, &used);
  const unsigned long long id = db_id ? strtoull(db_id, NULL, 10) : 1234ull << 32 | 5678;
  char dialog_id[48];
  snprintf(dialog_id, sizeof dialog_id, "%llu:%llu", id >> 32, id & 0xffffffffull);
  const char* to_tag = NULL;

  for (int k = 0; k < 3; k++) {
    if (!msgs[k].data) continue;
    mpshim_message m;
    mpshim_message_init(&m);
    const char* type = field(&msgs[k], "type", slots, &used);
    m.type = type && strcmp(type, "reply") == 0 ? MPSHIM_REPLY : MPSHIM_REQUEST;
    const char* status = field(&msgs[k], "status", slots, &used);
    m.status = status ? atoi(status) : 0;
    m.method = field(&msgs[k], "method", slots, &used);
    m.call_id = field(&msgs[k], "call_id", slots, &used);
    m.cseq = field(&msgs[k], "cseq", slots, &used);
    m.from_uri = field(&msgs[k], "from_uri", slots, &used);
    m.to_uri = field(&msgs[k], "to_uri", slots, &used);
    m.from_tag = field(&msgs[k], "from_tag", slots, &used);
    m.to_tag = field(&msgs[k], "to_tag", slots, &used);
    m.user_agent = field(&msgs[k], "user_agent", slots, &used);
    m.signaling_ip = field(&msgs[k], "signaling_ip", slots, &used);
    m.media_relay = field(&msgs[k], "media_relay", slots, &used);
    m.ice_candidate = ice_of(field(&msgs[k], "ice", slots, &used));
    m.content_type = field(&msgs[k], "content_type", slots, &used);
    m.dialog_id = dialog_id;
    m.body = sdps[k].data;
    m.body_len = sdps[k].len;
    if (k == 2) to_tag = m.to_tag;
    char* out = NULL;
    size_t olen = 0;
    int rc = m.type == MPSHIM_REQUEST ? mpshim_dialog_request(t, c, &m, &out, &olen)
                                      : mpshim_dialog_reply(t, c, &m, &out, &olen);
    /* the body forwarded: the shim's, or the input unchanged */
    const char* fwd = out ? out : sdps[k].data;
    size_t flen = out ? olen : sdps[k].len;
    char why[256];
    if (fwd && !sdp_valid(fwd, flen, sdps[k].data, sdps[k].len, why, sizeof why)) {
      FAIL("%s/%s: forwarded body is not valid SDP: %s", name, kinds[k], why);
    }
    if (!is_crash) {
      char fn[64];
      blob shim, want;
      snprintf(fn, sizeof fn, "%s.shim", kinds[k]);
      const int differs = read_file(kdir, name, fn, &shim);
      free(shim.data);
      snprintf(fn, sizeof fn, "%s.shim-out", kinds[k]);
      if (!differs) {
        want = outs[k];
      } else if (!read_file(kdir, name, fn, &want)) {
        want = sdps[k]; /* the shim refuses: the body goes on unchanged */
      }
      if ((want.data == NULL) != (fwd == NULL) ||
          (fwd && (want.len != flen || memcmp(want.data, fwd, flen) != 0))) {
        FAIL("%s/%s: body differs from %s (rc %d, %s)", name, kinds[k],
             differs ? "the shim's valid body" : "OpenSIPS's", rc, mpshim_client_last_error(c));
      }
      if (differs && want.data != sdps[k].data) free(want.data);
    }
    mpshim_free(out);
  }
  mpshim_message bye;
  mpshim_message_init(&bye);
  bye.method = "BYE";
  bye.cseq = "2";
  bye.call_id = msgs[0].data ? field(&msgs[0], "call_id", slots, &used) : NULL;
  bye.from_tag = msgs[0].data ? field(&msgs[0], "from_tag", slots, &used) : NULL;
  bye.to_tag = to_tag;
  bye.signaling_ip = "127.0.0.1";
  bye.dialog_id = dialog_id;
  int rc = mpshim_dialog_request(t, c, &bye, NULL, NULL);
  if (rc != MPSHIM_OK) FAIL("%s: BYE did not end the dialog: %d", name, rc);
  if (mpshim_dialogs_count(t) != 0) FAIL("%s: a dialog is left", name);

  /* the requests, in order */
  char got[16384];
  int n, removes = 0;
  for (int k = 0; (n = fake_next_request(&fake, got, sizeof got, 0)) >= 0; k++) {
    removes += strncmp(got, "remove\r\n", 8) == 0;
    if (is_crash) continue;
    while (k < 4 && !reqs[k].data) k++;
    if (k >= 4) {
      FAIL("%s: the shim sent a request the module did not:\n%s", name, got);
      break;
    }
    if ((size_t)n != reqs[k].len || memcmp(got, reqs[k].data, reqs[k].len) != 0) {
      FAIL("%s: %s request differs from OpenSIPS's:\n--- OpenSIPS\n%s--- shim\n%s", name,
           k < 3 ? kinds[k] : "bye", reqs[k].data, got);
    }
    free(reqs[k].data);
    reqs[k].data = NULL;
  }
  for (int k = 0; k < 4 && !is_crash; k++) {
    if (reqs[k].data) FAIL("%s: the shim did not send OpenSIPS's %s request", name, kinds[k % 3]);
  }
  if (removes != 1) FAIL("%s: %d remove requests", name, removes);
  if (is_crash) {
    crashed++;
  } else {
    compared++;
  }
  for (int k = 0; k < 3; k++) {
    free(msgs[k].data);
    free(sdps[k].data);
    free(outs[k].data);
    free(reqs[k].data);
    free(replies[k].data);
  }
  free(reqs[3].data);
  mpshim_dialogs_free(t);
  mpshim_client_free(c);
  fake_stop(&fake);
}

static int cmp(const void* a, const void* b) {
  return strcmp(*(char* const*)a, *(char* const*)b);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s GOLDEN_OPENSIPS_DIR KAMAILIO_GOLDEN_DIR\n", argv[0]);
    return 2;
  }
  char sock[108];
  snprintf(sock, sizeof sock, "/tmp/mpshim-osgolden-%d.sock", (int)getpid());
  DIR* d = opendir(argv[1]);
  if (!d) {
    printf("FAIL cannot open %s\n", argv[1]);
    return 1;
  }
  char* names[256];
  int n = 0;
  struct dirent* e;
  while ((e = readdir(d)) != NULL && n < 256) {
    if (e->d_name[0] >= '0' && e->d_name[0] <= '9') names[n++] = strdup(e->d_name);
  }
  closedir(d);
  qsort(names, (size_t)n, sizeof names[0], cmp);
  for (int i = 0; i < n; i++) {
    run_case(argv[1], argv[2], names[i], sock);
    free(names[i]);
  }
  printf("%d OpenSIPS golden cases compared, %d where OpenSIPS crashed replayed, %d failures\n",
         compared, crashed, failures);
  return failures || compared == 0 ? 1 : 0;
}
