// Detaching from the terminal, and the service-manager check (daemon.h).
#include "app/daemon.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

namespace mp::app {

bool started_by_service_manager() {
  const char* notify = getenv("NOTIFY_SOCKET");
  const char* invocation = getenv("INVOCATION_ID");
  return (notify && *notify) || (invocation && *invocation);
}

int daemonize(int& ready_fd) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid > 0) {
    close(fds[1]);
    char status = 1;
    ssize_t n = read(fds[0], &status, 1);
    _exit(n == 1 && status == 0 ? 0 : 1);
  }
  close(fds[0]);
  setsid();
  pid = fork();
  if (pid < 0) _exit(1);
  if (pid > 0) _exit(0);
  if (chdir("/") != 0) { /* stay where we are */
  }
  int devnull = open("/dev/null", O_RDWR);
  if (devnull >= 0) {
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    if (devnull > 2) close(devnull);
  }
  ready_fd = fds[1];
  return 0;
}

void report_ready(int& fd, bool ok) {
  if (fd < 0) return;
  char status = ok ? 0 : 1;
  ssize_t n = write(fd, &status, 1);
  (void)n;
  close(fd);
  fd = -1;
}

}  // namespace mp::app
