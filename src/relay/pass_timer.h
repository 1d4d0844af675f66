// A periodic timer of microsecond resolution, for the media pump's
// coalescing (media_pump.h, set_coalesce): libuv's timers count whole
// milliseconds, too coarse for a wait that must stay well below RTP's 20 ms
// packet interval. A timerfd watched by a uv_poll handle of the pump's loop;
// each expiry calls the callback once (expiries that piled up while the
// loop was busy count as one).
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>

namespace mp::relay {

class PassTimer {
 public:
  using Callback = void (*)(void* arg);
  // nullptr with the reason if the timerfd cannot be made or watched.
  static PassTimer* create(uv_loop_t* loop, Callback fn, void* arg, std::string& error);
  // Fires every `period_ns` (1 ns .. 1 s) from now on, until stop().
  void start(uint64_t period_ns);
  void stop();
  bool running() const { return running_; }
  // Stops and frees the timer once libuv has let go of its handle.
  void close();

 private:
  PassTimer() = default;
  static void on_readable(uv_poll_t* p, int status, int events);
  static void on_closed(uv_handle_t* h);
  void arm(uint64_t period_ns);

  uv_poll_t poll_;
  int fd_ = -1;
  Callback fn_ = nullptr;
  void* arg_ = nullptr;
  bool running_ = false;
};

}  // namespace mp::relay
