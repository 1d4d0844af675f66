/*
 * sdp_valid.c - a small, strict SDP validity checker for the tests. A body
 * is valid when: its lines end in CRLF or LF (the last line may have no
 * ending), no line holds a CR or NUL, is empty, or lacks the "x=" form; the
 * first line is v=; every c= line is "IN IP4 <IPv4>" or "IN IP6 <IPv6>" with
 * a literal address of that family; every m= line has a numeric port
 * (optionally "/n"), at least a protocol and a format, and no "=" (no
 * token character, so no line glued onto it); every a=rtcp: line
 * has a numeric port and, in its long form, "IN IP4|IP6 <address>" that
 * agree; every a=candidate: line has 8 tokens with a numeric port; and every
 * media section has a c= line of its own or a session-level one. Compared
 * with an input body, the input's own defects are tolerated (see the
 * header), so the check says "the shim made nothing invalid".
 */
#include "sdp_valid.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct line {
  const char* s;
  size_t len;
} line;

static void why_set(char* why, size_t n, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void why_set(char* why, size_t n, const char* fmt, ...) {
  if (!why || !n) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, n, fmt, ap);
  va_end(ap);
}

/* Lines of a body, ending stripped; *bad_end set when an ending is a lone CR
 * (such a CR stays inside the line and fails the line check). */
static size_t split(const char* b, size_t n, line* lines, size_t cap) {
  size_t k = 0, start = 0;
  for (size_t i = 0; i <= n && k < cap; i++) {
    if (i == n || b[i] == '\n') {
      if (i == n && start == n) break; /* ended with a line ending */
      size_t e = i;
      if (i < n && e > start && b[e - 1] == '\r') e--;
      lines[k].s = b + start;
      lines[k].len = e - start;
      k++;
      start = i + 1;
    }
  }
  return k;
}

static int tokens(line l, line* t, int cap) {
  int n = 0;
  size_t i = 0;
  while (n < cap) {
    while (i < l.len && (l.s[i] == ' ' || l.s[i] == '\t')) i++;
    if (i >= l.len) break;
    size_t b = i;
    while (i < l.len && l.s[i] != ' ' && l.s[i] != '\t') i++;
    t[n].s = l.s + b;
    t[n].len = i - b;
    n++;
  }
  return n;
}

static int tok_is(line t, const char* lit) {
  return t.len == strlen(lit) && memcmp(t.s, lit, t.len) == 0;
}

static int is_port(line t, int allow_count) {
  size_t i = 0;
  long v = 0;
  while (i < t.len && t.s[i] >= '0' && t.s[i] <= '9' && i < 6) v = v * 10 + (t.s[i++] - '0');
  if (i == 0 || v > 65535) return 0;
  if (i == t.len) return 1;
  if (!allow_count || t.s[i] != '/' || i + 1 == t.len) return 0;
  for (i++; i < t.len; i++) {
    if (t.s[i] < '0' || t.s[i] > '9') return 0;
  }
  return 1;
}

static int is_addr(line type, line a) {
  char buf[64];
  unsigned char bin[16];
  if (a.len == 0 || a.len >= sizeof buf) return 0;
  memcpy(buf, a.s, a.len);
  buf[a.len] = '\0';
  if (tok_is(type, "IP4")) return inet_pton(AF_INET, buf, bin) == 1;
  if (tok_is(type, "IP6")) return inet_pton(AF_INET6, buf, bin) == 1;
  return 0;
}

static int starts(line l, const char* p) {
  size_t n = strlen(p);
  return l.len >= n && memcmp(l.s, p, n) == 0;
}

/* NULL if the line is valid, else what is wrong with it. */
static const char* line_defect(line l) {
  line t[10];
  for (size_t i = 0; i < l.len; i++) {
    if (l.s[i] == '\r') return "CR inside a line (an ending other than CRLF/LF)";
    if (l.s[i] == '\0') return "NUL in a line";
  }
  if (l.len == 0) return "empty line";
  if (l.len < 2 || l.s[0] < 'a' || l.s[0] > 'z' || l.s[1] != '=') return "not a type=value line";
  line v = {l.s + 2, l.len - 2};
  if (l.s[0] == 'c') {
    if (tokens(v, t, 4) != 3 || !tok_is(t[0], "IN") || !is_addr(t[1], t[2])) {
      return "c= line is not IN IP4/IP6 with an address of that family";
    }
  } else if (l.s[0] == 'm') {
    if (tokens(v, t, 4) < 4 || !is_port(t[1], 1)) return "m= line without a numeric port";
    if (memchr(v.s, '=', v.len)) return "m= line with '=' (not a token character)";
  } else if (starts(l, "a=rtcp:")) {
    line r = {l.s + 7, l.len - 7};
    int n = tokens(r, t, 5);
    if (n < 1 || !is_port(t[0], 0)) return "a=rtcp: without a numeric port";
    if (n != 1 && (n != 4 || !tok_is(t[1], "IN") || !is_addr(t[2], t[3]))) {
      return "a=rtcp: address is not IN IP4/IP6 with an address of that family";
    }
  } else if (starts(l, "a=candidate:")) {
    line r = {l.s + 12, l.len - 12};
    if (tokens(r, t, 10) < 8 || !is_port(t[5], 0)) return "a=candidate: line malformed";
  }
  return NULL;
}

/* 1 when every media section has a c= (own or session-level). */
static int connection_complete(const line* ls, size_t n) {
  int session_c = 0, in_media = 0, media_c = 0;
  for (size_t i = 0; i < n; i++) {
    if (starts(ls[i], "m=")) {
      if (in_media && !media_c && !session_c) return 0;
      in_media = 1;
      media_c = 0;
    } else if (starts(ls[i], "c=")) {
      if (in_media)
        media_c = 1;
      else
        session_c = 1;
    }
  }
  return !(in_media && !media_c && !session_c);
}

#define MAX_LINES 4096
static line out_lines[MAX_LINES], in_lines[MAX_LINES];

int sdp_valid(const char* out, size_t out_len, const char* in, size_t in_len, char* why,
              size_t whylen) {
  size_t n = split(out, out_len, out_lines, MAX_LINES);
  size_t m = in ? split(in, in_len, in_lines, MAX_LINES) : 0;
  if (n == 0) {
    why_set(why, whylen, "empty body");
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    const char* d = line_defect(out_lines[i]);
    if (!d) continue;
    int tolerated = 0;
    for (size_t k = 0; k < m && !tolerated; k++) {
      tolerated = in_lines[k].len == out_lines[i].len &&
                  memcmp(in_lines[k].s, out_lines[i].s, out_lines[i].len) == 0;
    }
    if (!tolerated) {
      why_set(why, whylen, "line %zu: %s: \"%.*s\"", i + 1, d,
              (int)(out_lines[i].len < 80 ? out_lines[i].len : 80), out_lines[i].s);
      return 0;
    }
  }
  if (!starts(out_lines[0], "v=") && !(in && (m == 0 || !starts(in_lines[0], "v=")))) {
    why_set(why, whylen, "the first line is not v=");
    return 0;
  }
  if (!connection_complete(out_lines, n) && !(in && !connection_complete(in_lines, m))) {
    why_set(why, whylen, "a media section has no c= line and there is no session-level one");
    return 0;
  }
  return 1;
}
