// The kernel forwarding tests' main: needs root, builds the test namespaces
// (harness.h), runs the Catch2 session in a child process and deletes the
// namespaces however the child ends. Exits 77 (skipped) without root.
#include "catch_runner.h"
#include "harness.h"

// ====================================================================== main

int main(int argc, char** argv) {
  if (geteuid() != 0) {
    std::printf("SKIP: kernel forwarding tests need root (network namespaces, CAP_NET_ADMIN)\n");
    return 77;
  }
  mp::log::set_level(mp::log::Level::Warning);
  std::string error;
  if (!topology_up(error)) {
    std::printf("SKIP: cannot build the test namespaces: %s\n", error.c_str());
    topology_down();
    return 77;
  }
  // The tests run in a child so that the namespaces are deleted however it ends.
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  std::fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    int rc = mp::test::run_catch_session(argc, argv);
    std::fflush(stdout);
    _exit(rc > 255 ? 255 : rc);
  }
  int st = 0;
  if (pid > 0) waitpid(pid, &st, 0);
  topology_down();
  if (pid < 0) return 1;
  if (WIFSIGNALED(st)) {
    std::printf("tests killed by signal %d\n", WTERMSIG(st));
    return 1;
  }
  return WEXITSTATUS(st);
}
