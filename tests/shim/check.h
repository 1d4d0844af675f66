/* The shim tests' CHECK(cond, fmt, ...): counts checks, prints each failure
 * with its place, never stops the test; main() reports `checks` and
 * `failures`. One copy per test program (static counters). */
#ifndef MPSHIM_TEST_CHECK_H
#define MPSHIM_TEST_CHECK_H

#include <stdio.h>

static int checks, failures;

#define CHECK(cond, ...)                          \
  do {                                            \
    checks++;                                     \
    if (!(cond)) {                                \
      failures++;                                 \
      printf("FAIL %s:%d: ", __FILE__, __LINE__); \
      printf(__VA_ARGS__);                        \
      printf("\n");                               \
    }                                             \
  } while (0)

#endif
