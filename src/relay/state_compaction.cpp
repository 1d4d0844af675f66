// Compacting the state file off the loop (state_compaction.h).
#include "relay/state_compaction.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace mp::relay {

namespace {
// The compacted file is written in pieces of about this size.
constexpr size_t kWriteChunk = 1 << 20;
}  // namespace

struct BackgroundCompaction::Job {
  uv_work_t req;
  BackgroundCompaction* owner = nullptr;  // nullptr: abandoned
  StateJournal* journal = nullptr;
  std::string tmp_path;
  std::string header;
  Snapshot snapshot;
  // Set by work() on the thread pool, read by after() on the loop.
  int fd = -1;
  uint64_t size = 0;
  std::string error;
};

bool BackgroundCompaction::can_start() const {
  return !job_ && uv_now(loop_) >= not_before_ms_;
}

bool BackgroundCompaction::start(StateJournal& journal, std::string header, Snapshot snapshot,
                                 std::string& error) {
  auto* job = new Job;
  job->req.data = job;
  job->owner = this;
  job->journal = &journal;
  job->tmp_path = journal.path() + ".compact." + std::to_string(::getpid());
  job->header = std::move(header);
  job->snapshot = std::move(snapshot);
  const int rc = uv_queue_work(loop_, &job->req, work, after);
  if (rc != 0) {
    error = std::string("cannot queue the compaction: ") + uv_strerror(rc);
    delete job;
    not_before_ms_ = uv_now(loop_) + kRetryMs;
    return false;
  }
  journal.keep_aside();
  job_ = job;
  return true;
}

void BackgroundCompaction::abandon() {
  if (!job_) return;
  job_->journal->drop_aside();
  job_->owner = nullptr;
  job_->journal = nullptr;
  job_ = nullptr;
}

// On the thread pool: touches only the job.
void BackgroundCompaction::work(uv_work_t* req) {
  Job& job = *static_cast<Job*>(req->data);
  job.fd = ::open(job.tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (job.fd < 0) {
    job.error = "cannot create " + job.tmp_path + ": " + std::strerror(errno);
    return;
  }
  std::string chunk = job.header;
  chunk += '\n';
  chunk.reserve(kWriteChunk + 64 * 1024);
  bool ok = true;
  for (const auto& entry : job.snapshot) {
    const SessionState& state = entry.second;  // named: lambdas cannot capture bindings (clang)
    StateJournal::append_line_with(chunk, 'S', entry.first, [&state](std::string& out) {
      append_session_state_json(out, state);
    });
    if (chunk.size() < kWriteChunk) continue;
    ok = StateJournal::write_fully(job.fd, chunk, job.error);
    if (!ok) break;
    job.size += chunk.size();
    chunk.clear();
  }
  if (ok && StateJournal::write_fully(job.fd, chunk, job.error)) {
    job.size += chunk.size();
    return;
  }
  job.error = "cannot write " + job.tmp_path + ": " + job.error;
  ::close(job.fd);
  job.fd = -1;
  ::unlink(job.tmp_path.c_str());
}

// Back on the loop.
void BackgroundCompaction::after(uv_work_t* req, int status) {
  Job* job = static_cast<Job*>(req->data);
  BackgroundCompaction* owner = job->owner;
  if (!owner) {  // abandoned: a newer file has been written since
    if (job->fd >= 0) {
      ::close(job->fd);
      ::unlink(job->tmp_path.c_str());
    }
    delete job;
    return;
  }
  owner->job_ = nullptr;
  std::string error = status != 0 ? std::string("cancelled: ") + uv_strerror(status) : job->error;
  if (status == 0 && job->fd >= 0 &&
      job->journal->adopt_compacted(job->fd, job->tmp_path, job->size, error)) {
    ++owner->completed_;
    LOG_DEBUG("state file %s compacted: %zu session(s), %llu bytes", job->journal->path().c_str(),
              job->snapshot.size(), static_cast<unsigned long long>(job->size));
  } else {
    if (status != 0 && job->fd >= 0) {
      ::close(job->fd);
      ::unlink(job->tmp_path.c_str());
    }
    job->journal->drop_aside();
    owner->not_before_ms_ = uv_now(owner->loop_) + kRetryMs;
    LOG_LIMITED(Error, nullptr,
                "state file: compaction failed (%s); the file keeps growing, retried in %llu s",
                error.c_str(), static_cast<unsigned long long>(kRetryMs / 1000));
  }
  delete job;
}

}  // namespace mp::relay
