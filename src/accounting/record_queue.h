// The queue of one accounting backend: bounded in memory, complete on disk.
//
// Every record pushed is first appended to the backend's journal file in the
// runtime directory (one JSON line per record, O_APPEND, page cache only:
// no fsync on the event loop), so a record survives a backend outage of any
// length and a crash or restart of the process. At most `memory_records`
// records are also kept in memory; beyond that they wait in the journal only
// and are read back, in order, as the worker drains the queue. When the
// worker has delivered everything the journal is truncated to zero; at a
// clean stop it is rewritten to hold exactly the undelivered records, so a
// restart replays each of them once. After a crash, the records delivered
// since the last truncation are replayed too: backends treat a replay as a
// harmless duplicate (unique key, spec F.1).
//
// Threads: push() and the counters are for the event loop, next()/pop()/
// wait_for() and close() for the backend's worker; one mutex guards the
// shared state and is never held across a disk read or a delivery.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace mp::accounting {

class RecordQueue {
 public:
  RecordQueue(std::string journal_path, size_t memory_records);
  ~RecordQueue();
  RecordQueue(const RecordQueue&) = delete;
  RecordQueue& operator=(const RecordQueue&) = delete;

  // Opens (creates) the journal; records found in it are pending, oldest
  // first. False with `error` when the file cannot be opened.
  bool open(std::string& error);

  // Event loop: queues one record (a single line, no '\n'). A record the
  // journal could not take (disk full) is still kept in memory, up to four
  // times the memory bound; false only when it had to be dropped (the caller
  // logs it whole, so that it survives in the log).
  bool push(const std::string& record);

  // Worker: the oldest undelivered record, waiting until there is one;
  // nullopt once stop() was called. The same record is returned until pop().
  std::optional<std::string> next();
  // Worker: like next(), up to `max` of the oldest records, in order. With
  // fewer than `max` at hand it waits up to `linger` seconds for more, so
  // that a steady trickle still goes out in batches.
  std::optional<std::vector<std::string>> next_batch(size_t max, double linger = 0);
  // Worker: the oldest `n` records (returned by next() or next_batch()) are
  // delivered (or set aside).
  void pop(size_t n = 1);
  // Worker: waits `seconds` or until stop(); false if stopped.
  bool wait_for(double seconds);
  // Any thread: wakes the worker; next() and wait_for() return at once.
  void stop();
  // Worker, after its last delivery: rewrites the journal to hold exactly
  // the undelivered records (or removes it when there are none).
  void close();

  size_t pending() const;  // records not yet delivered (memory and journal)
  uint64_t journal_bytes() const;

 private:
  struct Entry {
    std::string line;
    bool journaled = true;
  };
  // Reads up to a batch of journal-only records into memory. Worker only.
  void load_from_journal(std::unique_lock<std::mutex>& lock);

  const std::string path_;
  const size_t memory_records_;
  int fd_ = -1;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Entry> memory_;
  uint64_t file_size_ = 0;
  uint64_t read_off_ = 0;  // records in [read_off_, file_size_) are on disk only
  size_t disk_only_records_ = 0;
  bool stopped_ = false;
  // push() wakes the worker once this many records wait (it is waiting
  // for them); kNotWaiting while the worker is busy.
  static constexpr size_t kNotWaiting = SIZE_MAX;
  size_t wake_at_ = kNotWaiting;
};

}  // namespace mp::accounting
