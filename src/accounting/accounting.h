// The accounting stage: every session's final record to every backend.
//
// The dispatcher (and the combined role) hands each final record here once
// per session end (remove, expiry, relay loss). Records of sessions that were
// never answered (`start_time` null) are not accounted, as in AG MediaProxy
// (spec F). Each configured backend (`[Dispatcher] accounting = database,
// radius`) has its own RecordQueue, journaled in the runtime directory as
// `accounting-<backend>.journal`, and its own worker thread, so a slow,
// failing or absent backend never delays signalling, media or the other
// backend. A delivery that fails is retried with a growing backoff (1 s up to
// 30 s) and nothing behind it overtakes it; a record a backend can never
// take goes to `accounting-<backend>.rejected` in the runtime directory.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "accounting/backend.h"
#include "accounting/record_queue.h"
#include "common/config.h"
#include "metrics/exposition.h"

namespace mp::accounting {

class Accounting {
 public:
  // `backends` are started on their own threads by start().
  Accounting(std::vector<std::unique_ptr<Backend>> backends, const std::string& runtime_dir,
             size_t memory_records);
  ~Accounting();
  // Builds the backends `cfg` asks for; false with `error` on a
  // configuration mistake (nothing configured is not an error).
  static bool create(const Config& cfg, std::unique_ptr<Accounting>& out, std::string& error);

  // Opens the journals and starts the workers.
  bool start(std::string& error);
  // Event loop: one final record (spec D.13 with the dispatcher's additions).
  void submit(const std::string& record);
  // mediaproxy_accounting_* metrics.
  void write_metrics(metrics::Exposition& out) const;
  // Stops the workers after their current delivery and closes the journals.
  // A worker still inside a delivery after `grace_seconds` (a RADIUS server
  // or a database that does not answer) is left behind: false then, and the
  // caller must end the process without destroying this object (the
  // record in flight stays in the journal and is delivered after restart).
  bool close(double grace_seconds = 3.0);

  size_t backend_count() const { return lanes_.size(); }

 private:
  struct Lane {
    std::unique_ptr<Backend> backend;
    std::unique_ptr<RecordQueue> queue;
    std::string rejected_path;
    std::thread worker;
    std::atomic<uint64_t> stored{0}, duplicate{0}, rejected{0}, lost{0}, retries{0};
    std::atomic<bool> up{false};
    std::atomic<bool> finished{false};  // run() has returned
  };
  void run(Lane& lane);
  void set_aside(Lane& lane, const std::string& line, const std::string& why);

  std::vector<std::unique_ptr<Lane>> lanes_;
  std::string runtime_dir_;
  size_t memory_records_;
  uint64_t not_answered_ = 0;  // records skipped: never answered
  bool started_ = false;
};

}  // namespace mp::accounting
