// The interface of an accounting backend (database, RADIUS).
//
// Each configured backend gets its own worker thread and its own record
// queue (record_queue.h); deliver() is only ever called on that thread, one
// record at a time, so a backend needs no locking of its own and may block
// (a database round trip, a RADIUS exchange with its retries) without
// delaying signalling, media or any other backend.
//
// deliver() says what happened, and the queue acts on it:
// - Stored / Duplicate: done (a duplicate is a record replayed from the
//   journal that the backend already has: harmless by design, spec F.1);
// - Retry: a transient failure (server down, timeout, lock held): the same
//   record is offered again after a backoff, and nothing behind it overtakes it;
// - Rejected: this record can never be stored (the backend refused its
//   content): it is written to the backend's rejected-records file in the
//   runtime directory and logged, never retried, never lost.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "accounting/session_record.h"

namespace mp::accounting {

enum class Delivery { Stored, Duplicate, Retry, Rejected };

struct DeliveryResult {
  Delivery outcome = Delivery::Stored;
  std::string detail;  // why (for the log; the caller escapes it)
};

class Backend {
 public:
  virtual ~Backend() = default;
  // "database" or "radius": names the queue, journal file, log lines and
  // metric labels.
  virtual std::string_view name() const = 0;
  // Called once on the worker thread before the first record: connect,
  // create the table, read dictionaries. A failure is logged by the caller
  // and is not fatal: deliver() connects again when it is next called.
  virtual DeliveryResult start() = 0;
  virtual DeliveryResult deliver(const SessionRecord& record) = 0;
  // Several records in queue order: `out` gets one result per record tried,
  // stopping after the first Retry. A backend that can store many records
  // at the cost of one (a database transaction) overrides this; by default
  // it is deliver() for each.
  virtual void deliver_batch(const std::vector<SessionRecord>& records,
                             std::vector<DeliveryResult>& out) {
    out.clear();
    for (const SessionRecord& r : records) {
      out.push_back(deliver(r));
      if (out.back().outcome == Delivery::Retry) break;
    }
  }
};

}  // namespace mp::accounting
