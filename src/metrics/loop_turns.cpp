// Busy time of each event-loop turn (loop_turns.h).
#include "metrics/loop_turns.h"

#include <algorithm>

namespace mp::metrics {

LoopTurnMeter::LoopTurnMeter(uv_loop_t* loop) : loop_(loop) {
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
  if (self->last_now_) {
    const uint64_t wall = now - self->last_now_;
    const uint64_t blocked = idle - self->last_idle_;
    self->record(wall > blocked ? wall - blocked : 0);
  }
  self->last_now_ = now;
  self->last_idle_ = idle;
}

void LoopTurnMeter::record(uint64_t busy_ns) {
  longest_ns_ = std::max(longest_ns_, busy_ns);
  turns_.observe(static_cast<double>(busy_ns) / 1e9);
}

void LoopTurnMeter::write_metrics(Exposition& out) const {
  if (!handle_) return;
  out.histogram("mediaproxy_event_loop_turn_seconds",
                "Busy time of each turn of the event loop (what a request can wait behind).",
                turns_.bounds, turns_.buckets, turns_.overflow, turns_.sum);
  out.gauge("mediaproxy_event_loop_turn_longest_seconds",
            "The longest event-loop turn since the process started.", longest_seconds());
}

}  // namespace mp::metrics
