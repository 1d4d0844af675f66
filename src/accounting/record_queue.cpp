// RecordQueue: the journal-backed queue of one accounting backend.
#include "accounting/record_queue.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include "common/log.h"

namespace mp::accounting {

namespace {

constexpr size_t kReadChunk = 1 << 20;  // bytes read from the journal at a time

bool write_all(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

}  // namespace

RecordQueue::RecordQueue(std::string journal_path, size_t memory_records)
    : path_(std::move(journal_path)), memory_records_(memory_records ? memory_records : 1) {}

RecordQueue::~RecordQueue() {
  if (fd_ >= 0) ::close(fd_);
}

bool RecordQueue::open(std::string& error) {
  fd_ = ::open(path_.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    error = "cannot open accounting journal " + path_ + ": " + std::strerror(errno);
    return false;
  }
  struct stat st {};
  if (fstat(fd_, &st) != 0) {
    error = "cannot stat accounting journal " + path_ + ": " + std::strerror(errno);
    return false;
  }
  file_size_ = static_cast<uint64_t>(st.st_size);
  // Count the records left by an earlier run; they are replayed first.
  std::vector<char> buf(kReadChunk);
  char last = '\n';
  for (uint64_t off = 0; off < file_size_;) {
    ssize_t n = ::pread(fd_, buf.data(), buf.size(), static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error = "cannot read accounting journal " + path_ + ": " + std::strerror(errno);
      return false;
    }
    for (ssize_t i = 0; i < n; ++i)
      if (buf[static_cast<size_t>(i)] == '\n') ++disk_only_records_;
    last = buf[static_cast<size_t>(n - 1)];
    off += static_cast<uint64_t>(n);
  }
  // A line cut short by a crash in the middle of an append is closed, so
  // that the next record starts on a line of its own; the worker sets the
  // fragment aside as unreadable rather than dropping its bytes.
  if (last != '\n') {
    if (!write_all(fd_, "\n", 1)) {
      error = "cannot repair accounting journal " + path_ + ": " + std::strerror(errno);
      return false;
    }
    ++file_size_;
    ++disk_only_records_;
  }
  if (disk_only_records_)
    LOG_INFO("accounting journal %s holds %zu undelivered records: replaying them", path_.c_str(),
             disk_only_records_);
  return true;
}

bool RecordQueue::push(const std::string& record) {
  std::lock_guard<std::mutex> lock(mu_);
  bool journaled = false;
  if (fd_ >= 0) {
    std::string line = record;
    line += '\n';
    journaled = write_all(fd_, line.data(), line.size());
    if (journaled) {
      file_size_ += line.size();
    } else {
      const int err = errno;
      // Never leave half a line for the next record to be glued to.
      if (ftruncate(fd_, static_cast<off_t>(file_size_)) != 0) {
      }
      LOG_LIMITED(Error, nullptr, "accounting journal %s: write failed (%s); record kept in memory",
                  path_.c_str(), std::strerror(err));
    }
  }
  if (journaled) {
    if (disk_only_records_ == 0 && memory_.size() < memory_records_) {
      memory_.push_back({record, true});
      read_off_ = file_size_;
    } else {
      ++disk_only_records_;
    }
  } else if (memory_.size() < 4 * memory_records_) {
    memory_.push_back({record, false});
  } else {
    return false;
  }
  // Wake the worker only when it waits for what is there now: a worker
  // busy delivering, or lingering for a fuller batch, is left alone (each
  // wake-up is a context switch on the event loop's core).
  if (memory_.size() + disk_only_records_ >= wake_at_) cv_.notify_one();
  return true;
}

void RecordQueue::load_from_journal(std::unique_lock<std::mutex>& lock) {
  // Only the worker moves read_off_ or truncates, and appends never touch
  // bytes below file_size_: the region read here is stable without the lock.
  const uint64_t start = read_off_;
  const uint64_t end = file_size_;
  const size_t room = memory_records_ > memory_.size() ? memory_records_ - memory_.size() : 1;
  lock.unlock();
  std::vector<std::string> lines;
  uint64_t consumed = 0;
  std::string partial;
  std::vector<char> buf(kReadChunk);
  uint64_t off = start;
  bool io_error = false;
  while (off < end && lines.size() < room) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), end - off));
    ssize_t n = ::pread(fd_, buf.data(), want, static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      io_error = true;
      break;
    }
    size_t i = 0;
    while (i < static_cast<size_t>(n) && lines.size() < room) {
      const char* nl =
          static_cast<const char*>(memchr(buf.data() + i, '\n', static_cast<size_t>(n) - i));
      if (!nl) {
        partial.append(buf.data() + i, static_cast<size_t>(n) - i);
        i = static_cast<size_t>(n);
        break;
      }
      const size_t len = static_cast<size_t>(nl - (buf.data() + i));
      partial.append(buf.data() + i, len);
      lines.push_back(std::move(partial));
      partial.clear();
      i += len + 1;
      consumed = off + i - start;
    }
    off += i;
  }
  lock.lock();
  if (io_error && lines.empty()) {
    LOG_LIMITED(Error, nullptr, "accounting journal %s: read failed (%s)", path_.c_str(),
                std::strerror(errno));
    return;
  }
  read_off_ = start + consumed;
  disk_only_records_ -= std::min(disk_only_records_, lines.size());
  for (std::string& l : lines)
    if (!l.empty()) memory_.push_back({std::move(l), true});
}

std::optional<std::string> RecordQueue::next() {
  auto batch = next_batch(1);
  if (!batch) return std::nullopt;
  return std::move(batch->front());
}

std::optional<std::vector<std::string>> RecordQueue::next_batch(size_t max, double linger) {
  std::unique_lock<std::mutex> lock(mu_);
  bool lingered = linger <= 0;
  for (;;) {
    if (stopped_) return std::nullopt;
    if (!lingered && !memory_.empty() && memory_.size() < max && disk_only_records_ == 0) {
      lingered = true;
      wake_at_ = max;
      cv_.wait_for(lock, std::chrono::duration<double>(linger),
                   [&] { return stopped_ || memory_.size() >= max || disk_only_records_ > 0; });
      wake_at_ = kNotWaiting;
      continue;
    }
    // Top memory up from the journal so that a batch is as full as it can be.
    if (memory_.size() < max && memory_.size() < memory_records_ && disk_only_records_ > 0 &&
        read_off_ < file_size_)
      load_from_journal(lock);
    if (!memory_.empty()) {
      std::vector<std::string> out;
      const size_t n = std::min(std::max<size_t>(max, 1), memory_.size());
      out.reserve(n);
      for (size_t i = 0; i < n; ++i) out.push_back(memory_[i].line);
      return out;
    }
    if (disk_only_records_ > 0 && read_off_ < file_size_) {
      load_from_journal(lock);
      if (memory_.empty() && disk_only_records_ > 0 && !stopped_)
        cv_.wait_for(lock, std::chrono::seconds(1));  // a read error: try again shortly
      continue;
    }
    wake_at_ = 1;
    cv_.wait(lock);
    wake_at_ = kNotWaiting;
  }
}

void RecordQueue::pop(size_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  for (; n > 0 && !memory_.empty(); --n) memory_.pop_front();
  if (memory_.empty() && disk_only_records_ == 0 && read_off_ == file_size_ && fd_ >= 0 &&
      file_size_ > 0) {
    if (ftruncate(fd_, 0) == 0) {
      file_size_ = read_off_ = 0;
    } else {
      LOG_LIMITED(Warning, nullptr, "accounting journal %s: truncate failed (%s)", path_.c_str(),
                  std::strerror(errno));
    }
  }
}

bool RecordQueue::wait_for(double seconds) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, std::chrono::duration<double>(seconds), [this] { return stopped_; });
  return !stopped_;
}

void RecordQueue::stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stopped_ = true;
  cv_.notify_all();
}

void RecordQueue::close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0) return;
  const bool unjournaled =
      std::any_of(memory_.begin(), memory_.end(), [](const Entry& e) { return !e.journaled; });
  if (memory_.empty() && disk_only_records_ == 0 && !unjournaled) {
    ::close(fd_);
    fd_ = -1;
    ::unlink(path_.c_str());
    return;
  }
  // Undelivered records only, oldest first: memory, then the journal's tail.
  const std::string tmp = path_ + ".tmp";
  int out = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  bool ok = out >= 0;
  for (const Entry& e : memory_) {
    if (!ok) break;
    ok = write_all(out, e.line.data(), e.line.size()) && write_all(out, "\n", 1);
  }
  std::vector<char> buf(kReadChunk);
  for (uint64_t off = read_off_; ok && off < file_size_;) {
    ssize_t n = ::pread(fd_, buf.data(),
                        static_cast<size_t>(std::min<uint64_t>(buf.size(), file_size_ - off)),
                        static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0 && write_all(out, buf.data(), static_cast<size_t>(n));
    off += n > 0 ? static_cast<uint64_t>(n) : 0;
  }
  ok = ok && fsync(out) == 0;
  if (out >= 0) ::close(out);
  if (ok && ::rename(tmp.c_str(), path_.c_str()) == 0) {
    ::close(fd_);
    fd_ = -1;
    return;
  }
  ::unlink(tmp.c_str());
  // The old journal stays as it is: a restart replays delivered records too
  // (harmless duplicates), and records only in memory are appended to it.
  for (const Entry& e : memory_)
    if (!e.journaled) {
      std::string line = e.line + "\n";
      if (!write_all(fd_, line.data(), line.size()))
        LOG_ERROR("accounting record lost (journal %s not writable): %s", path_.c_str(),
                  log_safe(e.line, e.line.size()).c_str());
    }
  fsync(fd_);
  ::close(fd_);
  fd_ = -1;
}

size_t RecordQueue::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return memory_.size() + disk_only_records_;
}

uint64_t RecordQueue::journal_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return file_size_;
}

}  // namespace mp::accounting
