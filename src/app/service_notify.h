// What the service manager (systemd) is told about the running process.
//
// Started with Type=notify, systemd passes NOTIFY_SOCKET and waits for
// READY=1 before it calls the unit started. ServiceNotifier sends READY=1
// once every listener accepts (run_server() calls ready() after the module
// socket, the last one, is listening), then a STATUS= line whenever the text
// the status function returns has changed (looked at every kStatusInterval,
// or at once with status_changed()), WATCHDOG=1 at half the WatchdogSec=
// interval when systemd asks for it (from the event loop, so a wedged loop
// gets the process restarted), and STOPPING=1 at shutdown. It uses libsystemd's
// sd_notify(); without NOTIFY_SOCKET it does nothing, and a build without
// libsystemd does nothing but say so once if NOTIFY_SOCKET is set.
// mediaproxy(8), "Running under systemd".
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>

namespace mp::app {

class ServiceNotifier {
 public:
  static constexpr uint64_t kStatusIntervalMs = 5000;
  using StatusText = std::function<std::string()>;

  ServiceNotifier(uv_loop_t* loop, StatusText status);
  ServiceNotifier(const ServiceNotifier&) = delete;
  ServiceNotifier& operator=(const ServiceNotifier&) = delete;

  // Whether anything is sent at all (NOTIFY_SOCKET set, libsystemd built in).
  bool active() const { return active_; }
  // READY=1 with the first STATUS=; starts the status and watchdog timers.
  void ready();
  // Sends STATUS= now if the text changed (e.g. right after SIGHUP).
  void status_changed();
  // STOPPING=1 and the timers stop; closes their handles (run the loop after).
  void stopping();

 private:
  void send(const std::string& message);

  uv_loop_t* loop_;
  StatusText status_;
  bool active_ = false;
  bool timers_ = false;
  bool stopped_ = false;
  uint64_t watchdog_usec_ = 0;
  std::string last_status_;
  uv_timer_t status_timer_{};
  uv_timer_t watchdog_timer_{};
};

}  // namespace mp::app
