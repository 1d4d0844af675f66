// Readiness, status and watchdog messages for systemd (service_notify.h).
#include "app/service_notify.h"

#include <stdlib.h>

#include <cstring>

#include "common/log.h"

#if MEDIAPROXY_HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace mp::app {

ServiceNotifier::ServiceNotifier(uv_loop_t* loop, StatusText status)
    : loop_(loop), status_(std::move(status)) {
  const char* socket = getenv("NOTIFY_SOCKET");
  if (!socket || !*socket) return;
#if MEDIAPROXY_HAVE_LIBSYSTEMD
  active_ = true;
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0) watchdog_usec_ = usec;
#else
  LOG_WARN(
      "NOTIFY_SOCKET is set but this mediaproxy was built without libsystemd: systemd is not "
      "told when it is ready; use Type=simple in the unit, or rebuild with libsystemd-dev");
#endif
}

void ServiceNotifier::send(const std::string& message) {
#if MEDIAPROXY_HAVE_LIBSYSTEMD
  const int rc = sd_notify(0, message.c_str());
  if (rc < 0) LOG_DEBUG("sd_notify: %s", strerror(-rc));
#else
  (void)message;
#endif
}

void ServiceNotifier::ready() {
  if (!active_ || stopped_) return;
  last_status_ = status_();
  send("READY=1\nSTATUS=" + last_status_);
  timers_ = true;
  uv_timer_init(loop_, &status_timer_);
  status_timer_.data = this;
  uv_timer_start(
      &status_timer_,
      [](uv_timer_t* t) { static_cast<ServiceNotifier*>(t->data)->status_changed(); },
      kStatusIntervalMs, kStatusIntervalMs);
  // Neither timer keeps the loop alive: the process ends when its work does.
  uv_unref(reinterpret_cast<uv_handle_t*>(&status_timer_));
  uv_timer_init(loop_, &watchdog_timer_);
  watchdog_timer_.data = this;
  if (watchdog_usec_ > 0) {
    const uint64_t every_ms = watchdog_usec_ / 2000 > 0 ? watchdog_usec_ / 2000 : 1;
    send("WATCHDOG=1");
    uv_timer_start(
        &watchdog_timer_,
        [](uv_timer_t* t) { static_cast<ServiceNotifier*>(t->data)->send("WATCHDOG=1"); }, every_ms,
        every_ms);
    LOG_DEBUG("systemd watchdog: WATCHDOG=1 every %llu ms",
              static_cast<unsigned long long>(every_ms));
  }
  uv_unref(reinterpret_cast<uv_handle_t*>(&watchdog_timer_));
}

void ServiceNotifier::status_changed() {
  if (!active_ || stopped_ || !timers_) return;
  std::string now = status_();
  if (now == last_status_) return;
  last_status_ = std::move(now);
  send("STATUS=" + last_status_);
}

void ServiceNotifier::stopping() {
  if (stopped_) return;
  stopped_ = true;
  if (active_) send("STOPPING=1\nSTATUS=stopping");
  if (!timers_) return;
  uv_close(reinterpret_cast<uv_handle_t*>(&status_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&watchdog_timer_), nullptr);
}

}  // namespace mp::app
