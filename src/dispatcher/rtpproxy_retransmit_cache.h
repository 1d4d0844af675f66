// The rtpproxy UDP listener's retransmission cache: the reply to every
// recent (sender, cookie), so that a command the proxy sends again because
// the reply was lost is answered again instead of being run twice.
//
// A busy listener caches every command of the last few seconds (hundreds of
// thousands), and each command looks the cache up, inserts itself, expires
// the oldest entry and later stores its reply. A node-based hash table pays
// an allocation and two or three cache misses for each of those steps. This
// one keeps the entries in a ring in arrival order (expiry is first in,
// first out, and a slot's strings keep their capacity for the entries that
// reuse it) and finds them through an open-addressing index of 8-byte cells
// (ring position and 32 bits of the key's digest, linear probing,
// backward-shift deletion): a lookup of a new command reads one index cell,
// usually one cache line, and never the ring. A request's reply is stored
// through the ticket begin() handed out, without a lookup.
//
// Two keys with the same 64-bit digest are told apart by the sender and
// cookie kept in the entry: the second is answered uncached (Collision).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace mp::dispatcher {

class RtpproxyRetransmitCache {
 public:
  // A sender's address and port as bytes: IPv4 (6) or IPv6 (18).
  struct Sender {
    uint8_t bytes[18] = {};
    uint8_t len = 0;
    bool operator==(const Sender& o) const {
      return len == o.len && std::memcmp(bytes, o.bytes, len) == 0;
    }
  };

  enum class Found {
    Fresh,      // not cached: run the command, then complete(ticket, reply)
    Pending,    // the same request is still being answered: say nothing
    Replied,    // answered before: send *reply again
    Collision,  // another key with the same digest is cached: run it uncached
  };
  struct Lookup {
    Found found;
    uint64_t ticket = 0;                 // Fresh: where the reply goes
    const std::string* reply = nullptr;  // Replied: valid until the next begin()
  };

  // Holds at most `capacity` entries (at least 1).
  explicit RtpproxyRetransmitCache(size_t capacity);

  // Drops the entries that arrived before `now - ttl` (seconds), then looks
  // (sender, cookie) up; a Fresh key is inserted, pending, at `now` (the
  // oldest entry goes if the cache is full).
  Lookup begin(const Sender& sender, std::string_view cookie, double now, double ttl) {
    return begin_digest(digest_of(sender, cookie), sender, cookie, now, ttl);
  }
  // Stores the reply of the request `ticket` came from; nothing if its entry
  // has expired since.
  void complete(uint64_t ticket, std::string_view reply);

  size_t size() const { return static_cast<size_t>(next_ - head_); }
  size_t capacity() const { return capacity_; }

  static uint64_t digest_of(const Sender& sender, std::string_view cookie);
  // begin() with the digest given (tests force collisions with it).
  Lookup begin_digest(uint64_t digest, const Sender& sender, std::string_view cookie, double now,
                      double ttl);

 private:
  struct Entry {
    uint64_t ticket = 0;
    uint64_t digest = 0;
    double at = 0;
    Sender sender;
    bool replied = false;
    std::string cookie;
    std::string reply;
  };
  // An index cell: 0, or the ring position + 1 and the digest's low 32 bits
  // (whose low bits are also the cell's home).
  struct Cell {
    uint32_t slot_plus_1 = 0;
    uint32_t tag = 0;
  };

  void expire(double before);
  void pop_oldest();
  size_t home(uint32_t tag) const { return tag & mask_; }
  // The index cell of ring slot `slot` (its entry's digest given).
  size_t cell_of(size_t slot, uint64_t digest) const;
  void erase_cell(size_t cell);

  size_t capacity_;
  std::vector<Entry> ring_;  // grows to capacity_, then entries reuse slots
  std::vector<Cell> index_;  // a power of two, at least twice capacity_
  size_t mask_;
  uint64_t head_ = 1;  // ticket of the oldest entry
  uint64_t next_ = 1;  // ticket of the next one (tickets start at 1)
};

}  // namespace mp::dispatcher
