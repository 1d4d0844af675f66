/*
 * sdp_valid.h - the tests' SDP validity checker (sdp_valid.c), used by the
 * golden test, the unit tests and the fuzz target to assert that the shim
 * never forwards a body it broke.
 */
#ifndef MPSHIM_TEST_SDP_VALID_H
#define MPSHIM_TEST_SDP_VALID_H

#include <stddef.h>

/* 1 if `out` is valid SDP as sdp_valid.c defines it, else 0 with the reason
 * in why[whylen]. With `in` (the body the shim was given) a defect the input
 * already had is tolerated: an invalid line byte-identical to a line of the
 * input, a missing c= when the input misses one too. */
int sdp_valid(const char* out, size_t out_len, const char* in, size_t in_len, char* why,
              size_t whylen);

#endif
