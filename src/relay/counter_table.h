// Live traffic counters of the relay's streams in a memory-mapped file.
//
// The state journal (state_journal.h) records a stream's counters when its
// state changes and in checkpoints; between them, the packets a stream
// forwards in userspace are counted here too: every stream has a slot in a
// shared mapping of <runtime_dir>/relay.counters, and the packet path
// mirrors each leg's counters and the stream's last activity into it with a
// few plain stores (no system call, no allocation). The kernel's page cache
// keeps what was stored when the process dies, so a relay restarted after
// `kill -9` knows every packet its predecessor forwarded.
//
// A slot belongs to the stream whose 64-bit id it carries (the id is in the
// stream's journal record); a restart takes the slots of the streams it
// restores and clears the others. The file starts with a header naming the
// relay (StateIdentity) and the writer's clock offset; a file that does not
// match is recreated empty.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace mp::relay {

struct CounterSlot {
  struct Leg {
    uint64_t packets, bytes, dropped, foreign, media_seen;
  };
  uint64_t owner;        // the stream's id; 0: free
  double last_activity;  // monotonic seconds of the writing process
  Leg leg[2][2];         // [sub-stream][side]
};

class CounterTable {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;

  CounterTable() = default;
  ~CounterTable();
  CounterTable(const CounterTable&) = delete;
  CounterTable& operator=(const CounterTable&) = delete;

  // Maps `path` with room for `slots` streams. An existing file with the same
  // `identity` and size keeps its slots for find() (a restart); any other is
  // replaced by an empty table. `clock_offset` (Unix time minus monotonic
  // time of this process) is recorded for the next process; the previous
  // one's is returned by previous_clock_offset(). false with `error`.
  bool open(const std::string& path, const std::string& identity, uint32_t slots,
            double clock_offset, std::string& error);
  bool is_open() const { return slots_ != nullptr; }
  double previous_clock_offset() const { return previous_offset_; }

  // The slot `index` if it belongs to stream `owner` (restart), else nullptr.
  CounterSlot* find(uint32_t index, uint64_t owner);
  // After the restored streams have claimed their slots with find() and
  // claim(): every other slot is cleared and free.
  void claim(uint32_t index);
  void release_unclaimed();

  // A free slot for stream `owner`, zeroed; kNone when full.
  uint32_t acquire(uint64_t owner);
  void release(uint32_t index);
  CounterSlot* at(uint32_t index) { return index < count_ ? &slots_[index] : nullptr; }

  void close();  // unmaps (the file stays)
  void remove_file();

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  CounterSlot* slots_ = nullptr;
  uint32_t count_ = 0;
  double previous_offset_ = 0;
  std::vector<uint32_t> free_;
  std::vector<bool> claimed_;
};

}  // namespace mp::relay
