// Unit tests for LoopTurnMeter (metrics/loop_turns.h): a turn that keeps the
// loop busy is measured as such, time the loop spends waiting in its poll is
// not, and the metrics come out as a histogram and a gauge.
#include <time.h>
#include <uv.h>

#include <catch2/catch.hpp>

#include "metrics/loop_turns.h"

using mp::metrics::LoopTurnMeter;

namespace {

void busy_for(uint64_t ns) {
  const uint64_t until = uv_hrtime() + ns;
  while (uv_hrtime() < until) {
  }
}

uint64_t count_above(const mp::metrics::LatencyHistogram& h, double seconds) {
  uint64_t n = h.overflow;
  for (size_t i = 0; i < h.bounds.size(); ++i)
    if (h.bounds[i] > seconds) n += h.buckets[i];
  return n;
}

}  // namespace

TEST_CASE("LoopTurnMeter: a busy turn counts, waiting in the poll does not", "[metrics]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    LoopTurnMeter meter(&loop);
    REQUIRE(meter.running());
    // Three timers: the loop waits ~60 ms in its poll before each; the second
    // keeps its turn busy for 20 ms. (Bounds leave room for a loaded machine
    // preempting the test: a wait counted as busy would still show.)
    struct Step {
      uv_timer_t timer;
      uint64_t busy_ns;
    } steps[3] = {{{}, 0}, {{}, 20'000'000}, {{}, 0}};
    for (int i = 0; i < 3; ++i) {
      uv_timer_init(&loop, &steps[i].timer);
      steps[i].timer.data = &steps[i];
      uv_timer_start(
          &steps[i].timer, [](uv_timer_t* t) { busy_for(static_cast<Step*>(t->data)->busy_ns); },
          60 * (i + 1), 0);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(count_above(meter.turns(), 0.01) >= 1);  // the busy turn
    CHECK(meter.longest_seconds() >= 0.02);
    CHECK(meter.longest_seconds() < 0.055);  // the 60 ms waits were not counted

    mp::metrics::Exposition e;
    meter.write_metrics(e);
    CHECK(e.text().find("# TYPE mediaproxy_event_loop_turn_seconds histogram") !=
          std::string::npos);
    CHECK(e.text().find("mediaproxy_event_loop_turn_longest_seconds 0.0") != std::string::npos);
    for (auto& s : steps) uv_close(reinterpret_cast<uv_handle_t*>(&s.timer), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_run(&loop, UV_RUN_DEFAULT);  // the meter's close callback
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("LoopTurnMeter: CPU time tells work from waiting for a CPU", "[metrics]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    LoopTurnMeter meter(&loop, true);
    REQUIRE(meter.measures_cpu());
    // One turn computes for 20 ms; another is off the CPU for 40 ms inside
    // its callback, as a process is when another one has the CPU: both are
    // long in wall time, only the first in CPU time.
    uv_timer_t work;
    uv_timer_t wait;
    uv_timer_init(&loop, &work);
    uv_timer_init(&loop, &wait);
    // The work is 20 ms of this thread's CPU time, however long a loaded
    // machine takes to give it that much.
    uv_timer_start(
        &work,
        [](uv_timer_t*) {
          auto cpu_ns = [] {
            timespec t;
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
            return static_cast<uint64_t>(t.tv_sec) * 1'000'000'000u +
                   static_cast<uint64_t>(t.tv_nsec);
          };
          const uint64_t until = cpu_ns() + 20'000'000;
          while (cpu_ns() < until) {
          }
        },
        30, 0);
    uv_timer_start(
        &wait,
        [](uv_timer_t*) {
          timespec t{0, 40'000'000};
          while (nanosleep(&t, &t) != 0) {
          }
        },
        90, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(meter.longest_seconds() >= 0.04);      // the waiting turn, by the wall clock
    CHECK(meter.longest_cpu_seconds() >= 0.02);  // the computing turn
    CHECK(meter.longest_cpu_seconds() < 0.035);  // the 40 ms off the CPU are not CPU time
    CHECK(count_above(meter.turns_cpu(), 0.005) == 1);

    mp::metrics::Exposition e;
    meter.write_metrics(e);
    CHECK(e.text().find("# TYPE mediaproxy_event_loop_turn_cpu_seconds histogram") !=
          std::string::npos);
    CHECK(e.text().find("mediaproxy_event_loop_turn_longest_cpu_seconds 0.0") != std::string::npos);
    uv_close(reinterpret_cast<uv_handle_t*>(&work), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&wait), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("LoopTurnMeter: without measure_cpu no CPU metrics are exported", "[metrics]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    LoopTurnMeter meter(&loop);
    CHECK_FALSE(meter.measures_cpu());
    mp::metrics::Exposition e;
    meter.write_metrics(e);
    CHECK(e.text().find("turn_cpu_seconds") == std::string::npos);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("LoopTurnMeter: record() fills the buckets and keeps the longest", "[metrics]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    LoopTurnMeter meter(&loop);
    meter.record(50'000);       // 50 us: the first bucket
    meter.record(3'000'000);    // 3 ms: <= 5 ms
    meter.record(700'000'000);  // 0.7 s: above the last bound
    CHECK(meter.turns().buckets[0] == 1);
    CHECK(count_above(meter.turns(), 0.0025) == 2);
    CHECK(meter.turns().overflow == 1);
    CHECK(meter.longest_seconds() == Approx(0.7));
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}
