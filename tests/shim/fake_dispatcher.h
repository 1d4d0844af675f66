/*
 * fake_dispatcher.h - a scriptable stand-in for the mediaproxy dispatcher's
 * module socket, run as a forked child process so that tests can stop
 * (SIGSTOP), kill and restart it like the real thing. It records every
 * request it reads into a pipe the test reads back, and answers with
 * scripted reply lines or misbehaves on request.
 */
#ifndef FAKE_DISPATCHER_H
#define FAKE_DISPATCHER_H

#include <stddef.h>
#include <sys/types.h>

enum {
  FAKE_SILENT = 1,    /* read requests, never answer */
  FAKE_CLOSE = 2,     /* close the connection after reading a request */
  FAKE_SPLIT = 4,     /* answer in pieces: the line, then "\r", then "\n" */
  FAKE_NO_RECORD = 8, /* do not record requests (for long runs) */
};

typedef struct fake_dispatcher {
  pid_t pid;
  int record_fd; /* read end: [uint32 length][request bytes] per request */
  char path[108];
} fake_dispatcher;

/* Start a fake at `path` answering the n-th request with replies[n] (the
 * last one repeats; NULL or nreplies == 0: "192.0.2.5" and one port per
 * media stream for `update`, "2001:db8::5" when the request asks for an
 * IPv6 relay (families header, or an IPv6 first non-zero media address),
 * "removed" for `remove`), after delay_ms.
 * Returns 0 once it accepts connections, -1 on failure. */
int fake_start(fake_dispatcher* f, const char* path, const char* const* replies, int nreplies,
               int delay_ms, int flags);
/* SIGKILL, reap, close the record pipe; the socket file is removed. */
void fake_stop(fake_dispatcher* f);
/* Next recorded request into buf (NUL-terminated); its length, or -1 when
 * none arrives within timeout_ms. */
int fake_next_request(fake_dispatcher* f, char* buf, size_t cap, int timeout_ms);
/* Number of open file descriptors of this process (/proc/self/fd). */
int count_open_fds(void);

#endif
