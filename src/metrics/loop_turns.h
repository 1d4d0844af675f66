// How long each turn of the event loop keeps the process busy.
//
// Everything a mediaproxy process does runs on one libuv loop, so the
// longest turn is the longest any request can wait behind other work (a
// management dump, a burst of call set-ups, a kernel hand-over batch). The
// meter runs a prepare handle, which libuv calls once per turn right before
// it polls; the time since the previous call minus the time the loop spent
// blocked in that poll (libuv's idle-time metric) is the turn's busy time.
// Exported as the histogram mediaproxy_event_loop_turn_seconds, with the
// longest turn seen as a gauge.
//
// A turn's busy time is wall time: it includes time the process was ready
// but not running (another process, or the hypervisor, had the CPU). With
// `measure_cpu` the meter also reads the loop thread's CPU clock once per
// turn (a system call, ~1 us) and exports the CPU time of each turn as
// mediaproxy_event_loop_turn_cpu_seconds: a turn long in wall time but short
// in CPU time waited for a CPU; one long in both did that much work.
#pragma once

#include <uv.h>

#include <cstdint>

#include "metrics/exposition.h"

namespace mp::metrics {

class LoopTurnMeter {
 public:
  // Turns on libuv's idle-time accounting for `loop` (before it runs) and
  // starts measuring; running() is false if libuv refuses (nothing exported).
  explicit LoopTurnMeter(uv_loop_t* loop, bool measure_cpu = false);
  ~LoopTurnMeter();
  LoopTurnMeter(const LoopTurnMeter&) = delete;
  LoopTurnMeter& operator=(const LoopTurnMeter&) = delete;

  bool running() const { return handle_ != nullptr; }
  // Adds one turn's busy time (what the prepare callback does; public for tests).
  void record(uint64_t busy_ns);
  // Adds one turn's CPU time (with measure_cpu).
  void record_cpu(uint64_t cpu_ns);
  void write_metrics(Exposition& out) const;

  const LatencyHistogram& turns() const { return turns_; }
  double longest_seconds() const { return static_cast<double>(longest_ns_) / 1e9; }
  bool measures_cpu() const { return measure_cpu_; }
  const LatencyHistogram& turns_cpu() const { return turns_cpu_; }
  double longest_cpu_seconds() const { return static_cast<double>(longest_cpu_ns_) / 1e9; }

 private:
  static void on_prepare(uv_prepare_t* h);

  uv_loop_t* loop_;
  uv_prepare_t* handle_ = nullptr;  // freed by its close callback
  uint64_t last_now_ = 0;
  uint64_t last_idle_ = 0;
  uint64_t longest_ns_ = 0;
  bool measure_cpu_ = false;
  uint64_t last_cpu_ = 0;
  uint64_t longest_cpu_ns_ = 0;
  LatencyHistogram turns_{
      {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5},
      std::vector<uint64_t>(12, 0)};
  LatencyHistogram turns_cpu_ = turns_;
};

}  // namespace mp::metrics
