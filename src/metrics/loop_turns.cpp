// Busy time of each event-loop turn (loop_turns.h).
#include "metrics/loop_turns.h"

#include <time.h>

#include <algorithm>

namespace mp::metrics {

namespace {
// The calling thread's CPU time (ns); 0 if the clock cannot be read.
uint64_t thread_cpu_ns() {
  timespec ts;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0;
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}
}  // namespace

LoopTurnMeter::LoopTurnMeter(uv_loop_t* loop, bool measure_cpu)
    : loop_(loop), measure_cpu_(measure_cpu) {
  if (uv_loop_configure(loop, UV_METRICS_IDLE_TIME) != 0) return;
  handle_ = new uv_prepare_t;
  uv_prepare_init(loop, handle_);
  handle_->data = this;
  uv_prepare_start(handle_, on_prepare);
  // The meter must not keep the loop alive on its own.
  uv_unref(reinterpret_cast<uv_handle_t*>(handle_));
}

LoopTurnMeter::~LoopTurnMeter() {
  if (!handle_) return;
  handle_->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(handle_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_prepare_t*>(h); });
}

void LoopTurnMeter::on_prepare(uv_prepare_t* h) {
  auto* self = static_cast<LoopTurnMeter*>(h->data);
  if (!self) return;
  const uint64_t now = uv_hrtime();
  const uint64_t idle = uv_metrics_idle_time(self->loop_);
  // Between two prepare callbacks the thread ran one turn and one poll; the
  // poll's own CPU time (the epoll_wait call) is small and counted in.
  const uint64_t cpu = self->measure_cpu_ ? thread_cpu_ns() : 0;
  if (self->last_now_) {
    const uint64_t wall = now - self->last_now_;
    const uint64_t blocked = idle - self->last_idle_;
    self->record(wall > blocked ? wall - blocked : 0);
    if (self->measure_cpu_ && cpu >= self->last_cpu_) self->record_cpu(cpu - self->last_cpu_);
  }
  self->last_now_ = now;
  self->last_idle_ = idle;
  self->last_cpu_ = cpu;
}

void LoopTurnMeter::record(uint64_t busy_ns) {
  longest_ns_ = std::max(longest_ns_, busy_ns);
  turns_.observe(static_cast<double>(busy_ns) / 1e9);
}

void LoopTurnMeter::record_cpu(uint64_t cpu_ns) {
  longest_cpu_ns_ = std::max(longest_cpu_ns_, cpu_ns);
  turns_cpu_.observe(static_cast<double>(cpu_ns) / 1e9);
}

void LoopTurnMeter::write_metrics(Exposition& out) const {
  if (!handle_) return;
  out.histogram("mediaproxy_event_loop_turn_seconds",
                "Busy time of each turn of the event loop (what a request can wait behind).",
                turns_.bounds, turns_.buckets, turns_.overflow, turns_.sum);
  out.gauge("mediaproxy_event_loop_turn_longest_seconds",
            "The longest event-loop turn since the process started.", longest_seconds());
  if (!measure_cpu_) return;
  out.histogram("mediaproxy_event_loop_turn_cpu_seconds",
                "CPU time of each turn of the event loop (its own work, without waits for a CPU).",
                turns_cpu_.bounds, turns_cpu_.buckets, turns_cpu_.overflow, turns_cpu_.sum);
  out.gauge("mediaproxy_event_loop_turn_longest_cpu_seconds",
            "The most CPU time one event-loop turn used since the process started.",
            longest_cpu_seconds());
}

}  // namespace mp::metrics
