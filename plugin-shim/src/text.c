/*
 * text.c - the byte-level text primitives of the shim: substring and
 * line-start search, tokenising, trimming and number parsing. Their results
 * reproduce those of the helpers in Kamailio's mediaproxy module (including
 * its quirks, documented at each function) so that the SDP analysis built on
 * them treats every input, however broken, the way the module does; unlike
 * the module they never read outside the given bounds.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shim_internal.h"

void mps_seterr(char* err, const char* fmt, ...) {
  if (!err) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, MPS_ERR_MAX, fmt, ap);
  va_end(ap);
}

static int lower(int c) {
  return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

const char* mps_memfind(const char* hs, size_t len, const char* needle, size_t nlen, int icase) {
  if (!hs || !needle || nlen == 0 || len < nlen) return NULL;
  for (size_t i = 0; i + nlen <= len; i++) {
    size_t k = 0;
    if (icase) {
      while (k < nlen && lower((unsigned char)hs[i + k]) == lower((unsigned char)needle[k])) k++;
    } else {
      while (k < nlen && hs[i + k] == needle[k]) k++;
    }
    if (k == nlen) return hs + i;
  }
  return NULL;
}

/*
 * Search successive occurrences; accept one that starts the block or follows
 * CR/LF. Quirk kept from the module: when an occurrence that is not at a line
 * start ends exactly at the end of the block, the search stops and that
 * occurrence is returned.
 */
const char* mps_find_line(const char* block, size_t blen, const char* start, int icase) {
  const size_t tlen = strlen(start);
  const char* end = block + blen;
  const char* zone = block;
  const char* ptr = NULL;
  if (!block) return NULL;
  while (zone < end) {
    ptr = mps_memfind(zone, (size_t)(end - zone), start, tlen, icase);
    if (!ptr || ptr == block || ptr[-1] == '\n' || ptr[-1] == '\r') break;
    zone = ptr + tlen;
  }
  return ptr;
}

unsigned mps_count_lines(const char* block, size_t blen, const char* start, int icase) {
  const size_t tlen = strlen(start);
  const char* end = block + blen;
  const char* zone = block;
  unsigned count = 0;
  if (!block) return 0;
  while (zone < end) {
    const char* ptr = mps_memfind(zone, (size_t)(end - zone), start, tlen, icase);
    if (!ptr) break;
    if (ptr == block || ptr[-1] == '\n' || ptr[-1] == '\r') count++;
    zone = ptr + tlen;
  }
  return count;
}

const char* mps_end_of_line(const char* s, size_t len) {
  const char* p = s;
  while ((size_t)(p - s) < len && *p != '\n' && *p != '\r') p++;
  return p;
}

static int is_sep(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int mps_tokens(const char* s, size_t len, mps_str* tokens, int limit) {
  int n = 0;
  if (!s) return 0;
  const char* nul = memchr(s, '\0', len);
  if (nul) len = (size_t)(nul - s);
  size_t i = 0;
  while (n < limit) {
    while (i < len && is_sep(s[i])) i++;
    if (i >= len) break;
    size_t b = i;
    while (i < len && !is_sep(s[i])) i++;
    tokens[n].s = s + b;
    tokens[n].len = i - b;
    n++;
  }
  return n;
}

mps_str mps_trim(const char* s) {
  mps_str r = {s, s ? strlen(s) : 0};
  if (!s) return r;
  while (r.len > 0 && is_sep(r.s[0])) {
    r.s++;
    r.len--;
  }
  while (r.len > 0 && is_sep(r.s[r.len - 1])) r.len--;
  return r;
}

int mps_str_eq(mps_str a, const char* lit) {
  size_t n = strlen(lit);
  return a.s && a.len == n && memcmp(a.s, lit, n) == 0;
}

int mps_str_ieq(mps_str a, const char* lit) {
  size_t n = strlen(lit);
  if (!a.s || a.len != n) return 0;
  for (size_t i = 0; i < n; i++) {
    if (lower((unsigned char)a.s[i]) != lower((unsigned char)lit[i])) return 0;
  }
  return 1;
}

int mps_strtoint(mps_str t) {
  /* strtol(s, NULL, 10) on the token: leading white space, a sign, digits;
   * overflow saturates at LONG_MIN/LONG_MAX. Then the module's (int) cast,
   * which keeps the low 32 bits with gcc and clang. */
  size_t i = 0;
  int neg = 0;
  unsigned long acc = 0;
  int overflow = 0;
  if (!t.s) return 0;
  while (i < t.len && (t.s[i] == ' ' || (t.s[i] >= '\t' && t.s[i] <= '\r'))) i++;
  if (i < t.len && (t.s[i] == '+' || t.s[i] == '-')) neg = t.s[i++] == '-';
  const unsigned long limit = neg ? (unsigned long)LONG_MAX + 1UL : (unsigned long)LONG_MAX;
  for (; i < t.len && t.s[i] >= '0' && t.s[i] <= '9'; i++) {
    unsigned d = (unsigned)(t.s[i] - '0');
    if (overflow || acc > (limit - d) / 10) {
      overflow = 1;
      continue;
    }
    acc = acc * 10 + d;
  }
  if (overflow) acc = limit;
  long v = neg ? (acc == (unsigned long)LONG_MAX + 1UL ? LONG_MIN : -(long)acc) : (long)acc;
  return (int)(unsigned)(unsigned long)v;
}

int mps_method_is(const char* method, const char* name) {
  mps_str t = mps_trim(method);
  mps_str tok;
  /* "INVITE", or a whole CSeq value "1 INVITE" */
  int n = t.s ? mps_tokens(t.s, t.len, &tok, 1) : 0;
  if (n == 1 && mps_str_eq(tok, name)) return 1;
  if (n == 1 && t.len > tok.len) {
    mps_str rest = mps_trim(tok.s + tok.len);
    return mps_str_eq(rest, name);
  }
  return 0;
}
