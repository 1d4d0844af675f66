/*
 * fake_dispatcher.c - implementation of the forked fake dispatcher used by
 * the shim's C tests (see fake_dispatcher.h), and, built with
 * -DFAKE_DISPATCHER_MAIN, a stand-alone program for shell tests:
 *   shim-fake-dispatcher SOCKET [REPLY...]   (runs until killed)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "fake_dispatcher.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONN 32
#define BUF_MAX 65536

typedef struct conn {
  int fd;
  size_t len;
  char buf[BUF_MAX];
} conn;

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

static void write_all(int fd, const void* p, size_t n) {
  const char* c = p;
  while (n > 0) {
    ssize_t w = write(fd, c, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;
    }
    c += w;
    n -= (size_t)w;
  }
}

/* The relay family the protocol's IPv6 extension asks for: the families
 * header's second value, else the family of the first media item whose
 * address is not 0.0.0.0 or [::] (bracketed: IPv6), else IPv4. */
static int reply_family(const char* req, const char* media) {
  const char* f = strstr(req, "\r\nfamilies: ");
  if (f && f[13] == ',') return f[14] == '6' ? 6 : 4;
  for (const char* p = media; p && *p && *p != '\r';) {
    const char* colon = strchr(p, ':');
    if (!colon) break;
    const char* addr = colon + 1;
    if (*addr == '[' && strncmp(addr, "[::]", 4) != 0) return 6;
    if (*addr != '[' && strncmp(addr, "0.0.0.0:", 8) != 0) return 4;
    p = strchr(addr, ',');
    if (p) p++;
  }
  return 4;
}

static void default_reply(const char* req, char* out, size_t cap) {
  if (strncmp(req, "remove\r\n", 8) == 0) {
    snprintf(out, cap, "removed");
    return;
  }
  const char* m = strstr(req, "\r\nmedia: ");
  int streams = 0;
  if (m) {
    streams = 1;
    for (const char* p = m + 9; *p && *p != '\r'; p++) streams += *p == ',';
  }
  const int v6 = reply_family(req, m ? m + 9 : NULL) == 6;
  size_t n = (size_t)snprintf(out, cap, "%s", v6 ? "2001:db8::5" : "192.0.2.5");
  for (int i = 0; i < streams && n < cap; i++) {
    n += (size_t)snprintf(out + n, cap - n, " %d", 40000 + 2 * i);
  }
}

static void serve(int lfd, int record_fd, const char* const* replies, int nreplies, int delay_ms,
                  int flags) {
  static conn conns[MAX_CONN];
  int nconn = 0;
  int served = 0;
  for (;;) {
    struct pollfd p[MAX_CONN + 1];
    p[0].fd = lfd;
    p[0].events = POLLIN;
    for (int i = 0; i < nconn; i++) {
      p[i + 1].fd = conns[i].fd;
      p[i + 1].events = POLLIN;
    }
    if (poll(p, (nfds_t)nconn + 1, -1) < 0) {
      if (errno == EINTR) continue;
      _exit(1);
    }
    if (p[0].revents & POLLIN) {
      int fd = accept(lfd, NULL, NULL);
      if (fd >= 0 && nconn < MAX_CONN) {
        conns[nconn].fd = fd;
        conns[nconn].len = 0;
        nconn++;
      } else if (fd >= 0) {
        close(fd);
      }
    }
    for (int i = nconn - 1; i >= 0; i--) {
      if (!(p[i + 1].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      conn* c = &conns[i];
      ssize_t r = read(c->fd, c->buf + c->len, BUF_MAX - 1 - c->len);
      if (r <= 0) {
        close(c->fd);
        conns[i] = conns[--nconn];
        continue;
      }
      c->len += (size_t)r;
      c->buf[c->len] = '\0';
      char* end;
      int closed = 0;
      while (!closed && (end = strstr(c->buf, "\r\n\r\n")) != NULL) {
        size_t rlen = (size_t)(end - c->buf) + 4;
        if (record_fd >= 0) {
          uint32_t l32 = (uint32_t)rlen;
          write_all(record_fd, &l32, sizeof l32);
          write_all(record_fd, c->buf, rlen);
        }
        char line[8192];
        const char* scripted = NULL;
        if (nreplies > 0) scripted = replies[served < nreplies ? served : nreplies - 1];
        if (scripted) {
          snprintf(line, sizeof line, "%s", scripted);
        } else {
          char req[BUF_MAX];
          memcpy(req, c->buf, rlen);
          req[rlen] = '\0';
          default_reply(req, line, sizeof line);
        }
        served++;
        memmove(c->buf, c->buf + rlen, c->len - rlen + 1);
        c->len -= rlen;
        if (flags & FAKE_CLOSE) {
          close(c->fd);
          conns[i] = conns[--nconn];
          closed = 1;
          break;
        }
        if (flags & FAKE_SILENT) continue;
        if (delay_ms > 0) sleep_ms(delay_ms);
        if (flags & FAKE_SPLIT) {
          write_all(c->fd, line, strlen(line));
          sleep_ms(20);
          write_all(c->fd, "\r", 1);
          sleep_ms(20);
          write_all(c->fd, "\n", 1);
        } else {
          char out[8200];
          int n = snprintf(out, sizeof out, "%s\r\n", line);
          write_all(c->fd, out, (size_t)n);
        }
      }
    }
  }
}

static int listen_at(const char* path) {
  struct sockaddr_un a;
  memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
  unlink(path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (bind(fd, (struct sockaddr*)&a, sizeof a) < 0 || listen(fd, 64) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

int fake_start(fake_dispatcher* f, const char* path, const char* const* replies, int nreplies,
               int delay_ms, int flags) {
  int rec[2], ready[2];
  memset(f, 0, sizeof *f);
  f->pid = -1;
  f->record_fd = -1;
  snprintf(f->path, sizeof f->path, "%s", path);
  if (pipe2(rec, O_CLOEXEC) < 0) return -1;
  if (pipe2(ready, O_CLOEXEC) < 0) {
    close(rec[0]);
    close(rec[1]);
    return -1;
  }
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    /* never outlive the test */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    close(rec[0]);
    close(ready[0]);
    signal(SIGPIPE, SIG_IGN);
    int lfd = listen_at(path);
    char ok = lfd >= 0 ? 'y' : 'n';
    write_all(ready[1], &ok, 1);
    close(ready[1]);
    if (lfd < 0) _exit(1);
    if (flags & FAKE_NO_RECORD) {
      close(rec[1]);
      rec[1] = -1;
    }
    serve(lfd, rec[1], replies, nreplies, delay_ms, flags);
    _exit(0);
  }
  close(rec[1]);
  close(ready[1]);
  char ok = 'n';
  ssize_t r;
  do r = read(ready[0], &ok, 1);
  while (r < 0 && errno == EINTR);
  close(ready[0]);
  f->pid = pid;
  f->record_fd = rec[0];
  if (r != 1 || ok != 'y') {
    fake_stop(f);
    return -1;
  }
  return 0;
}

void fake_stop(fake_dispatcher* f) {
  if (f->pid > 0) {
    kill(f->pid, SIGKILL);
    kill(f->pid, SIGCONT);
    while (waitpid(f->pid, NULL, 0) < 0 && errno == EINTR) {
    }
    f->pid = -1;
  }
  if (f->record_fd >= 0) {
    close(f->record_fd);
    f->record_fd = -1;
  }
  if (f->path[0]) unlink(f->path);
}

static int read_full(int fd, void* p, size_t n, int timeout_ms) {
  char* c = p;
  while (n > 0) {
    struct pollfd pf = {fd, POLLIN, 0};
    int r = poll(&pf, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    ssize_t got = read(fd, c, n);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return -1;
    c += got;
    n -= (size_t)got;
  }
  return 0;
}

int fake_next_request(fake_dispatcher* f, char* buf, size_t cap, int timeout_ms) {
  uint32_t len;
  if (f->record_fd < 0 || read_full(f->record_fd, &len, sizeof len, timeout_ms) < 0) return -1;
  char* tmp = malloc(len + 1);
  if (!tmp) return -1;
  if (read_full(f->record_fd, tmp, len, timeout_ms) < 0) {
    free(tmp);
    return -1;
  }
  size_t n = len < cap - 1 ? len : cap - 1;
  memcpy(buf, tmp, n);
  buf[n] = '\0';
  free(tmp);
  return (int)len;
}

int count_open_fds(void) {
  DIR* d = opendir("/proc/self/fd");
  int n = 0;
  if (!d) return -1;
  struct dirent* e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] != '.') n++;
  }
  closedir(d);
  return n - 1; /* the directory stream's own descriptor */
}

#ifdef FAKE_DISPATCHER_MAIN
int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s SOCKET [REPLY...]\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlive the test that ran us */
  int lfd = listen_at(argv[1]);
  if (lfd < 0) {
    perror("listen");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  serve(lfd, -1, (const char* const*)(argv + 2), argc - 2, 0, 0);
  return 0;
}
#endif
