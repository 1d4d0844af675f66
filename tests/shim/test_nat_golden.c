/*
 * test_nat_golden.c - checks the shim's NAT helpers against what Kamailio
 * 5.6's real nathelper module answered for the corpus of
 * tests/shim/nathelper/ (nathelper.golden, recorded by record.py there):
 * mpshim_client_nat_test() bit 1 must equal nat_uac_test(1), bit 4
 * nat_uac_test(4), bit 2 nat_uac_test(2) or nat_uac_test(16) (address or
 * port differ), and mpshim_fix_contact() must give fix_nated_contact()'s
 * return code and byte-identical Contact value, except for the documented
 * differences listed in differences.txt, where the shim's own value is
 * checked instead.
 *   shim_nat_golden NATHELPER_DIR
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mediaproxy-shim.h"

static int failures, cases;

typedef struct nat_case {
  char name[64], contact[512], via[256], src_ip[64], nat[64], fix[8], fixed[512];
  unsigned src_port;
  int have_fixed;
} nat_case;

static char* trim(char* s) {
  while (*s == ' ') s++;
  size_t n = strlen(s);
  while (n && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\r')) s[--n] = '\0';
  return s;
}

/* The shim's value for (case, field) from differences.txt, or NULL. */
static const char* difference(const char* dir, const char* name, const char* fld) {
  static char value[512];
  char path[4096], line[1024];
  snprintf(path, sizeof path, "%s/differences.txt", dir);
  FILE* f = fopen(path, "r");
  if (!f) return NULL;
  const char* found = NULL;
  while (!found && fgets(line, sizeof line, f)) {
    if (line[0] == '#' || line[0] == '\n') continue;
    char* parts[4] = {0};
    char* save = NULL;
    char* p = strtok_r(line, "|", &save);
    for (int i = 0; p && i < 4; i++, p = strtok_r(NULL, "|", &save)) parts[i] = trim(p);
    if (parts[2] && strcmp(parts[0], name) == 0 && strcmp(parts[1], fld) == 0) {
      snprintf(value, sizeof value, "%s", parts[2]);
      found = value;
    }
  }
  fclose(f);
  return found;
}

static int flag(const char* nat, const char* which) {
  const char* p = strstr(nat, which);
  return p ? p[strlen(which)] == '1' : -1;
}

static void check(const char* dir, const nat_case* c) {
  cases++;
  mpshim_nat_info info;
  mpshim_nat_info_init(&info);
  info.contact = c->contact;
  info.via = c->via;
  info.source_ip = c->src_ip;
  info.source_port = c->src_port;
  const char* nat = difference(dir, c->name, "nat");
  int want1 = nat && flag(nat, "1=") >= 0 ? flag(nat, "1=") : flag(c->nat, "1=");
  int want4 = flag(c->nat, "4=");
  int want2 = flag(c->nat, "2=") == 1 || flag(c->nat, "16=") == 1;
  int got = mpshim_client_nat_test(&info, 7);
  int ok = got >= 0 && !!(got & MPSHIM_NAT_PRIVATE_CONTACT) == want1 &&
           !!(got & MPSHIM_NAT_SOURCE_ADDRESS) == want2 &&
           !!(got & MPSHIM_NAT_PRIVATE_VIA) == want4;
  if (!ok) {
    printf("FAIL %s: client_nat_test = %d, nathelper %s%s\n", c->name, got, c->nat,
           nat ? " (with the documented difference)" : "");
    failures++;
  }
  char* out = NULL;
  size_t len = 0;
  int rc = mpshim_fix_contact(&info, &out, &len);
  const char* want = difference(dir, c->name, "fixed");
  if (!want) want = c->have_fixed ? c->fixed : NULL;
  if (rc != atoi(c->fix)) {
    printf("FAIL %s: fix_contact rc %d, nathelper %s\n", c->name, rc, c->fix);
    failures++;
  } else if (want && (!out || strcmp(out, want) != 0)) {
    printf("FAIL %s: fix_contact\n  got:       %s\n  nathelper: %s\n", c->name,
           out ? out : "(null)", want);
    failures++;
  } else {
    printf("ok   %s\n", c->name);
  }
  mpshim_free(out);
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s NATHELPER_DIR\n", argv[0]);
    return 2;
  }
  char path[4096], line[1024];
  snprintf(path, sizeof path, "%s/nathelper.golden", argv[1]);
  FILE* f = fopen(path, "r");
  if (!f) {
    perror(path);
    return 2;
  }
  nat_case c;
  int open_case = 0;
  while (fgets(line, sizeof line, f)) {
    if (line[0] == '#') continue;
    char* colon = strstr(line, ": ");
    if (!colon) continue;
    *colon = '\0';
    char* v = trim(colon + 2);
    if (strcmp(line, "case") == 0) {
      if (open_case) check(argv[1], &c);
      memset(&c, 0, sizeof c);
      open_case = 1;
      snprintf(c.name, sizeof c.name, "%s", v);
    } else if (strcmp(line, "contact") == 0) {
      snprintf(c.contact, sizeof c.contact, "%s", v);
    } else if (strcmp(line, "via") == 0) {
      snprintf(c.via, sizeof c.via, "%s", v);
    } else if (strcmp(line, "source") == 0) {
      if (sscanf(v, "%63s %u", c.src_ip, &c.src_port) != 2) c.src_port = 0;
    } else if (strcmp(line, "nat") == 0) {
      snprintf(c.nat, sizeof c.nat, "%s", v);
    } else if (strcmp(line, "fix") == 0) {
      snprintf(c.fix, sizeof c.fix, "%s", v);
    } else if (strcmp(line, "fixed") == 0) {
      snprintf(c.fixed, sizeof c.fixed, "%s", v);
      c.have_fixed = 1;
    }
  }
  if (open_case) check(argv[1], &c);
  fclose(f);
  printf("%d nathelper cases, %d mismatches\n", cases, failures);
  return cases == 0 || failures ? 1 : 0;
}
