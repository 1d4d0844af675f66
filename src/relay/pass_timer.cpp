// Implementation of the media pump's microsecond timer (pass_timer.h).
#include "relay/pass_timer.h"

#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mp::relay {

PassTimer* PassTimer::create(uv_loop_t* loop, Callback fn, void* arg, std::string& error) {
  const int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd < 0) {
    error = std::string("cannot create a timerfd: ") + std::strerror(errno);
    return nullptr;
  }
  auto* t = new PassTimer();
  t->fd_ = fd;
  t->fn_ = fn;
  t->arg_ = arg;
  t->poll_.data = t;
  int rc = uv_poll_init(loop, &t->poll_, fd);
  if (rc == 0) rc = uv_poll_start(&t->poll_, UV_READABLE, on_readable);
  if (rc != 0) {
    error = std::string("cannot watch a timerfd: ") + uv_strerror(rc);
    ::close(fd);
    delete t;  // uv_poll_init failing leaves nothing registered
    return nullptr;
  }
  return t;
}

void PassTimer::arm(uint64_t period_ns) {
  itimerspec its{};
  its.it_interval.tv_sec = static_cast<time_t>(period_ns / 1'000'000'000);
  its.it_interval.tv_nsec = static_cast<long>(period_ns % 1'000'000'000);
  its.it_value = its.it_interval;
  timerfd_settime(fd_, 0, &its, nullptr);  // cannot fail with a valid fd and period
}

void PassTimer::start(uint64_t period_ns) {
  if (period_ns == 0) period_ns = 1;  // zero would disarm
  arm(period_ns);
  running_ = true;
}

void PassTimer::stop() {
  if (!running_) return;
  arm(0);
  running_ = false;
}

void PassTimer::on_readable(uv_poll_t* p, int status, int) {
  auto* t = static_cast<PassTimer*>(p->data);
  uint64_t expiries;
  // Reading clears the readiness; EAGAIN: stopped after the loop saw it.
  if (status < 0 || ::read(t->fd_, &expiries, sizeof expiries) != sizeof expiries) return;
  if (t->running_) t->fn_(t->arg_);
}

void PassTimer::close() {
  stop();
  uv_close(reinterpret_cast<uv_handle_t*>(&poll_), on_closed);
}

void PassTimer::on_closed(uv_handle_t* h) {
  auto* t = static_cast<PassTimer*>(h->data);
  ::close(t->fd_);
  delete t;
}

}  // namespace mp::relay
