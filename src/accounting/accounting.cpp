// The accounting stage: one queue and one worker thread per backend.
#include "accounting/accounting.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "accounting/database_backend.h"
#include "accounting/radius_backend.h"
#include "common/log.h"

namespace mp::accounting {

namespace {

constexpr double kFirstBackoff = 1.0;  // seconds before the first retry
constexpr double kMaxBackoff = 30.0;
// Records offered to a backend at once: a database stores them in one
// transaction (one commit instead of 64), RADIUS sends them one by one.
constexpr size_t kBatch = 64;
// How long a worker that has fewer records than a batch waits for more: a
// record reaches its backend at most this much later, and at thousands of
// calls per second the commits stay few.
constexpr double kLinger = 0.02;

double monotonic() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

}  // namespace

Accounting::Accounting(std::vector<std::unique_ptr<Backend>> backends,
                       const std::string& runtime_dir, size_t memory_records)
    : runtime_dir_(runtime_dir), memory_records_(memory_records) {
  for (auto& b : backends) {
    auto lane = std::make_unique<Lane>();
    const std::string base = runtime_dir_ + "/accounting-" + std::string(b->name());
    lane->queue = std::make_unique<RecordQueue>(base + ".journal", memory_records_);
    lane->rejected_path = base + ".rejected";
    lane->backend = std::move(b);
    lanes_.push_back(std::move(lane));
  }
}

Accounting::~Accounting() {
  close();
}

bool Accounting::create(const Config& cfg, std::unique_ptr<Accounting>& out, std::string& error) {
  std::vector<std::unique_ptr<Backend>> backends;
  if (cfg.accounting.database) {
    DatabaseConfig db = cfg.accounting.db;
    db.runtime_dir = cfg.runtime_dir;
    auto b = make_database_backend(db, error);
    if (!b) {
      error = "[Database]: " + error;
      return false;
    }
    backends.push_back(std::move(b));
  }
  if (cfg.accounting.radius) {
    RadiusConfig rc = cfg.accounting.radius_cfg;
    auto resolve = [&](std::string& p) {
      if (!p.empty() && p.front() != '/') p = cfg.config_dir + "/" + p;
    };
    resolve(rc.config_file);
    resolve(rc.additional_dictionary);
    auto b = make_radius_backend(rc, error);
    if (!b) {
      error = "[Radius]: " + error;
      return false;
    }
    backends.push_back(std::move(b));
  }
  out = std::make_unique<Accounting>(std::move(backends), cfg.runtime_dir,
                                     cfg.accounting.memory_records);
  return true;
}

bool Accounting::start(std::string& error) {
  for (auto& lane : lanes_)
    if (!lane->queue->open(error)) return false;
  for (auto& lane : lanes_) {
    Lane* l = lane.get();
    l->worker = std::thread([this, l] { run(*l); });
  }
  started_ = true;
  return true;
}

void Accounting::submit(const std::string& record) {
  std::string error;
  auto parsed = parse_session_record(record, error);
  // Spec F: a session that was never answered is not accounted. An
  // unreadable record is queued all the same: the worker sets it aside in
  // the rejected file, where the operator finds it.
  if (parsed && !parsed->start_time) {
    ++not_answered_;
    return;
  }
  for (auto& lane : lanes_) {
    if (!lane->queue->push(record)) {
      ++lane->lost;
      LOG_ERROR("accounting backend %s: queue and journal full, record only in this log: %s",
                std::string(lane->backend->name()).c_str(),
                log_safe(record, record.size()).c_str());
    }
  }
}

void Accounting::set_aside(Lane& lane, const std::string& line, const std::string& why) {
  ++lane.rejected;
  const std::string name(lane.backend->name());
  int fd = ::open(lane.rejected_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  std::string out = line + "\n";
  bool saved = fd >= 0 && ::write(fd, out.data(), out.size()) == static_cast<ssize_t>(out.size());
  if (fd >= 0) ::close(fd);
  if (saved)
    LOG_ERROR("accounting backend %s refused a record (%s); kept in %s", name.c_str(),
              log_safe(why).c_str(), lane.rejected_path.c_str());
  else
    LOG_ERROR("accounting backend %s refused a record (%s) and %s is not writable: %s",
              name.c_str(), log_safe(why).c_str(), lane.rejected_path.c_str(),
              log_safe(line, line.size()).c_str());
}

void Accounting::run(Lane& lane) {
  const std::string name(lane.backend->name());
  // "acct-database", "acct-radius" in top -H, perf and /proc/PID/task.
  pthread_setname_np(pthread_self(), ("acct-" + name).substr(0, 15).c_str());
  DeliveryResult first = lane.backend->start();
  if (first.outcome == Delivery::Stored || first.outcome == Delivery::Duplicate) {
    lane.up = true;
    LOG_INFO("accounting backend %s ready", name.c_str());
  } else {
    LOG_ERROR("accounting backend %s not ready: %s; records wait in its journal until it is",
              name.c_str(), log_safe(first.detail).c_str());
  }
  double backoff = kFirstBackoff;
  double failing_since = 0;
  bool failing = false;
  std::vector<SessionRecord> batch;
  std::vector<DeliveryResult> results;
  while (auto lines = lane.queue->next_batch(kBatch, kLinger)) {
    // The readable records at the front, in order; an unreadable one at
    // the very front is set aside on its own.
    batch.clear();
    std::string error;
    for (const std::string& line : *lines) {
      auto record = parse_session_record(line, error);
      if (!record) break;
      batch.push_back(std::move(*record));
    }
    if (batch.empty()) {
      set_aside(lane, lines->front(), "unreadable record: " + error);
      lane.queue->pop(1);
      continue;
    }
    lane.backend->deliver_batch(batch, results);
    size_t done = 0;
    bool retry = false;
    for (const DeliveryResult& r : results) {
      if (r.outcome == Delivery::Retry) {
        retry = true;
        ++lane.retries;
        lane.up = false;
        if (!failing) {
          failing = true;
          failing_since = monotonic();
          LOG_ERROR("accounting backend %s failed: %s; %zu records wait in its journal, retrying",
                    name.c_str(), log_safe(r.detail).c_str(), lane.queue->pending() - done);
        } else {
          LOG_LIMITED(Warning, nullptr, "accounting backend %s still failing: %s (%zu waiting)",
                      name.c_str(), log_safe(r.detail).c_str(), lane.queue->pending() - done);
        }
        break;
      }
      if (r.outcome == Delivery::Rejected) {
        set_aside(lane, batch[done].json, r.detail);
      } else {
        (r.outcome == Delivery::Stored ? lane.stored : lane.duplicate)++;
        lane.up = true;
      }
      ++done;
    }
    lane.queue->pop(done);
    if (retry) {
      if (!lane.queue->wait_for(backoff)) break;
      backoff = std::min(backoff * 2, kMaxBackoff);
      continue;
    }
    if (failing)
      LOG_INFO("accounting backend %s is back after %.0f s; %zu records still waiting",
               name.c_str(), monotonic() - failing_since, lane.queue->pending());
    failing = false;
    backoff = kFirstBackoff;
  }
  lane.queue->close();
  lane.finished = true;
}

void Accounting::write_metrics(metrics::Exposition& out) const {
  if (lanes_.empty()) return;
  bool first = true;
  for (const auto& lane : lanes_) {
    const std::string name(lane->backend->name());
    const char* help = first ? "Session records by accounting backend and outcome." : "";
    out.counter("mediaproxy_accounting_records_total", help,
                static_cast<double>(lane->stored.load()),
                {{"backend", name}, {"result", "stored"}});
    out.counter("mediaproxy_accounting_records_total", "",
                static_cast<double>(lane->duplicate.load()),
                {{"backend", name}, {"result", "duplicate"}});
    out.counter("mediaproxy_accounting_records_total", "",
                static_cast<double>(lane->rejected.load()),
                {{"backend", name}, {"result", "rejected"}});
    out.counter("mediaproxy_accounting_records_total", "", static_cast<double>(lane->lost.load()),
                {{"backend", name}, {"result", "lost"}});
    first = false;
  }
  first = true;
  for (const auto& lane : lanes_) {
    out.counter("mediaproxy_accounting_retries_total",
                first ? "Deliveries that failed and will be retried." : "",
                static_cast<double>(lane->retries.load()),
                {{"backend", std::string(lane->backend->name())}});
    first = false;
  }
  first = true;
  for (const auto& lane : lanes_) {
    out.gauge("mediaproxy_accounting_pending_records",
              first ? "Records waiting for delivery (in memory and in the journal)." : "",
              static_cast<double>(lane->queue->pending()),
              {{"backend", std::string(lane->backend->name())}});
    first = false;
  }
  first = true;
  for (const auto& lane : lanes_) {
    out.gauge("mediaproxy_accounting_journal_bytes",
              first ? "Size of the backend's journal file." : "",
              static_cast<double>(lane->queue->journal_bytes()),
              {{"backend", std::string(lane->backend->name())}});
    first = false;
  }
  first = true;
  for (const auto& lane : lanes_) {
    out.gauge("mediaproxy_accounting_backend_up",
              first ? "1 if the backend's last delivery succeeded." : "",
              lane->up.load() ? 1.0 : 0.0, {{"backend", std::string(lane->backend->name())}});
    first = false;
  }
  out.counter("mediaproxy_accounting_unanswered_total",
              "Session records not accounted: the session was never answered.",
              static_cast<double>(not_answered_));
}

bool Accounting::close(double grace_seconds) {
  if (!started_) return true;
  started_ = false;
  for (auto& lane : lanes_) lane->queue->stop();
  const double deadline = monotonic() + grace_seconds;
  bool all = true;
  for (auto& lane : lanes_) {
    if (!lane->worker.joinable()) continue;
    while (!lane->finished && monotonic() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // bounded by the grace time
    if (lane->finished) {
      lane->worker.join();
      continue;
    }
    LOG_WARN(
        "accounting backend %s is still inside a request after %.0f s; leaving it, its "
        "records stay in the journal for the next start",
        std::string(lane->backend->name()).c_str(), grace_seconds);
    lane->worker.detach();
    all = false;
  }
  return all;
}

}  // namespace mp::accounting
