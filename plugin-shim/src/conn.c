/*
 * conn.c - the shim's connection to the dispatcher: one persistent UNIX
 * stream connection per client handle, opened lazily, with the module's
 * rules (spec A.1): after any failure the socket is closed and no reconnect
 * is tried for the retry interval; a send that fails with EPIPE/ECONNRESET
 * (dispatcher restarted) reconnects at once and resends from the start, once;
 * up to 3 partial sends; the reply is complete at the first CRLF. Unlike the
 * module, every step (connect, send, receive) runs against one deadline of
 * timeout_ms, so a call never blocks longer than that.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "shim_internal.h"

int64_t mps_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* strerror() is not thread-safe; handles may be used from several threads */
static const char* errstr(int e, char* buf, size_t len) {
  return strerror_r(e, buf, len);
}
#define ERRSTR(e) errstr((e), (char[128]){0}, 128)

static int remaining_ms(int64_t deadline) {
  int64_t r = deadline - mps_now_ms();
  return r < 0 ? 0 : (int)r;
}

void mps_disconnect(mpshim_client* c) {
  if (c->fd >= 0) {
    close(c->fd);
    c->fd = -1;
  }
}

/* Close and start the retry interval; err has been set by the caller. */
static int fail(mpshim_client* c) {
  mps_disconnect(c);
  c->have_failure = 1;
  c->last_failure_ms = mps_now_ms();
  return -1;
}

/* Connect unless connected. ignore_retry: the immediate reconnect after a
 * dead connection. 1 ok, -1 with err (retry interval started unless we were
 * still inside it). */
static int connect_dispatcher(mpshim_client* c, int64_t deadline, int ignore_retry) {
  if (c->fd >= 0) return 1;
  if (!ignore_retry && c->have_failure) {
    int64_t left = c->last_failure_ms + c->retry_interval_ms - mps_now_ms();
    if (left > 0) {
      mps_seterr(c->err, "dispatcher connection failed recently; next attempt in %lld ms (%s)",
                 (long long)left, c->socket_path);
      return -1;
    }
  }
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, c->socket_path, strlen(c->socket_path) + 1);

  for (;;) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      mps_seterr(c->err, "cannot create socket: %s", ERRSTR(errno));
      return fail(c);
    }
    int r;
    do r = connect(fd, (struct sockaddr*)&addr, sizeof addr);
    while (r < 0 && errno == EINTR);
    if (r == 0) {
      c->fd = fd;
      return 1;
    }
    int e = errno;
    if (e == EINPROGRESS) {
      struct pollfd p = {fd, POLLOUT, 0};
      int n;
      do n = poll(&p, 1, remaining_ms(deadline));
      while (n < 0 && errno == EINTR);
      int soerr = 0;
      socklen_t sl = sizeof soerr;
      if (n == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0) {
        c->fd = fd;
        return 1;
      }
      close(fd);
      mps_seterr(c->err, "cannot connect to %s: %s", c->socket_path,
                 n == 0 ? "timeout" : ERRSTR(soerr ? soerr : errno));
      return fail(c);
    }
    close(fd);
    if (e == EAGAIN && remaining_ms(deadline) > 0) {
      /* listen backlog full (dispatcher busy or stopped): a blocking connect
       * would wait here; wait a little, bounded by the deadline */
      struct timespec ts = {0, 5 * 1000000L};
      nanosleep(&ts, NULL);
      continue;
    }
    mps_seterr(c->err, "cannot connect to %s: %s", c->socket_path,
               e == EAGAIN ? "timeout (listen queue full)" : ERRSTR(e));
    return fail(c);
  }
}

/* Before sending: discard anything unsolicited and notice a connection the
 * dispatcher has closed (restart) -> 0 means "dead, reconnect". */
static int connection_alive(mpshim_client* c) {
  char junk[512];
  for (int i = 0; i < 64; i++) { /* bounded: a peer that floods is "alive" */
    ssize_t n = recv(c->fd, junk, sizeof junk, MSG_DONTWAIT);
    if (n > 0) continue;
    if (n == 0) return 0;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 1;
    return 0;
  }
  return 1;
}

int mps_send_command(mpshim_client* c, const char* req, size_t len) {
  const int64_t deadline = mps_now_ms() + c->timeout_ms;
  int reconnected = 0;
  c->reply_len = 0;
  c->reply[0] = '\0';

  if (c->fd >= 0 && !connection_alive(c)) {
    mps_disconnect(c);
    reconnected = 1; /* the one immediate reconnect of the module */
    if (connect_dispatcher(c, deadline, 1) < 0) return -1;
  }
  if (connect_dispatcher(c, deadline, 0) < 0) return -1;

  size_t sent = 0;
  for (int tries = 0; sent < len && tries < 3; tries++) {
    ssize_t n;
    do n = send(c->fd, req + sent, len - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n >= 0) {
      sent += (size_t)n;
      continue;
    }
    int e = errno;
    if ((e == EPIPE || e == ECONNRESET || e == ENOTCONN) && !reconnected) {
      mps_disconnect(c);
      reconnected = 1;
      if (connect_dispatcher(c, deadline, 1) < 0) return -1;
      sent = 0;
      continue;
    }
    if (e == EAGAIN || e == EWOULDBLOCK) {
      struct pollfd p = {c->fd, POLLOUT, 0};
      int r;
      do r = poll(&p, 1, remaining_ms(deadline));
      while (r < 0 && errno == EINTR);
      if (r > 0) continue;
      mps_seterr(c->err, "timeout sending to the dispatcher");
      return fail(c);
    }
    mps_seterr(c->err, "cannot send to the dispatcher: %s", ERRSTR(e));
    return fail(c);
  }
  if (sent < len) {
    mps_seterr(c->err, "could not send the whole request after 3 tries");
    return fail(c);
  }

  size_t got = 0;
  for (;;) {
    struct pollfd p = {c->fd, POLLIN, 0};
    int r;
    do r = poll(&p, 1, remaining_ms(deadline));
    while (r < 0 && errno == EINTR);
    if (r < 0) {
      mps_seterr(c->err, "poll failed: %s", ERRSTR(errno));
      return fail(c);
    }
    if (r == 0) {
      mps_seterr(c->err, "timeout waiting for the dispatcher's reply (%d ms)", c->timeout_ms);
      return fail(c);
    }
    if (got >= MPS_REPLY_MAX - 1) {
      mps_seterr(c->err, "dispatcher reply longer than %d bytes", MPS_REPLY_MAX - 1);
      return fail(c);
    }
    ssize_t n;
    do n = recv(c->fd, c->reply + got, MPS_REPLY_MAX - 1 - got, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) continue;
      mps_seterr(c->err, "cannot read the dispatcher's reply: %s", ERRSTR(errno));
      return fail(c);
    }
    if (n == 0) {
      mps_seterr(c->err, "the dispatcher closed the connection");
      return fail(c);
    }
    size_t from = got > 0 ? got - 1 : 0;
    got += (size_t)n;
    c->reply[got] = '\0';
    if (mps_memfind(c->reply + from, got - from, "\r\n", 2, 0)) break;
  }
  c->reply_len = got;
  return 1;
}
