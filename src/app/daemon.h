// Whether and how the process leaves its terminal.
//
// A plain start detaches (double fork, setsid, stdio to /dev/null) and the
// original process exits only once the daemon has reported that start-up
// succeeded or failed, so init scripts see start-up errors. A process started
// by a service manager (systemd sets NOTIFY_SOCKET for Type=notify and
// INVOCATION_ID for every service) stays in the foreground: the manager
// supervises it and reads its standard error (mediaproxy(8), "Running under
// systemd").
#pragma once

namespace mp::app {

// True when systemd (or another manager speaking its protocol) started us.
bool started_by_service_manager();

// Classic double fork; in the daemon, `ready_fd` is where report_ready()
// writes. Returns -1 (errno set) if the first fork or the pipe fails.
int daemonize(int& ready_fd);

// Tells the waiting original process how start-up ended (once; no-op for -1).
void report_ready(int& fd, bool ok);

}  // namespace mp::app
