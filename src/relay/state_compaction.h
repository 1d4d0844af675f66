// Compacting the relay's state file without stalling the loop.
//
// The state file (state_journal.h) grows by a record per change and is
// rewritten with one line per live session once it has grown past twice
// that. Serialising every session and writing the file took the loop about
// 20-100 ms per 4,500 sessions (and ten times that at 50,000), during which
// no media was read. BackgroundCompaction splits the work: on the loop, a
// snapshot of the sessions (their SessionState, a copy of plain fields);
// on libuv's thread pool, the JSON and the write of `<state_file>.compact.<pid>`;
// back on the loop, the records the journal wrote to the old file meanwhile
// (kept aside by the journal) are appended to the new one and it is renamed
// into place. Until that rename the old file holds everything, so a crash at
// any point leaves a complete state file. A failed compaction is logged and
// retried after kRetryMs; abandon() (a synchronous rewrite, a hand-over, the
// end) forgets a job in flight, whose file is removed when its thread ends.
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "relay/session_state.h"
#include "relay/state_journal.h"

namespace mp::relay {

class BackgroundCompaction {
 public:
  using Snapshot = std::vector<std::pair<uint64_t, SessionState>>;  // journal id, state
  static constexpr uint64_t kRetryMs = 5000;

  explicit BackgroundCompaction(uv_loop_t* loop) : loop_(loop) {}
  ~BackgroundCompaction() { abandon(); }
  BackgroundCompaction(const BackgroundCompaction&) = delete;
  BackgroundCompaction& operator=(const BackgroundCompaction&) = delete;

  // Whether start() would start one now (none in flight, no recent failure).
  bool can_start() const;
  bool running() const { return job_ != nullptr; }
  // Writes `header` and one S line per snapshot entry off the loop; `journal`
  // keeps aside what it writes from now until the job ends. false (nothing
  // started, `error` set) if the thread pool refuses the job.
  bool start(StateJournal& journal, std::string header, Snapshot snapshot, std::string& error);
  // Forgets the job in flight, if any; the journal stops keeping records aside.
  void abandon();
  // Compactions finished and renamed into place (for tests and logs).
  uint64_t completed() const { return completed_; }

 private:
  struct Job;
  static void work(uv_work_t* req);
  static void after(uv_work_t* req, int status);

  uv_loop_t* loop_;
  Job* job_ = nullptr;
  uint64_t not_before_ms_ = 0;
  uint64_t completed_ = 0;
};

}  // namespace mp::relay
