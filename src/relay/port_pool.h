// The relay's pool of even/odd UDP port pairs (spec D.1).
//
// Owns which RTP/RTCP pairs (p, p+1) of [Relay] port_range are free. Free
// pairs are handed out oldest-first and returned to the back, so a port is
// reused as late as possible (stray packets of an old call rarely reach a new
// one). Pairs that could not be bound are parked on a "bad" list and retried
// once the bad list outgrows the free list. Pure bookkeeping: no sockets here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

namespace mp::relay {

class PortPool {
 public:
  // `start` and `end` even, start < end; pairs are start, start+2, ..., end-2.
  PortPool(int start, int end);

  // Oldest free RTP port (even), or nullopt when the pool is empty.
  std::optional<uint16_t> allocate();
  // Returns a pair taken with allocate().
  void release(uint16_t rtp_port);
  // A pair taken with allocate() that could not be bound.
  void mark_bad(uint16_t rtp_port);

  // Takes the given pairs out of the free list (a restart re-binds the ports
  // of the sessions it keeps). false, taking nothing, if one is not a free
  // pair of the pool or appears twice; `bad` is then that port.
  bool reserve(const std::vector<uint16_t>& rtp_ports, uint16_t& bad);

  size_t free_count() const { return free_.size(); }
  size_t capacity() const { return capacity_; }

 private:
  std::deque<uint16_t> free_;
  std::vector<uint16_t> bad_;
  size_t capacity_;
};

}  // namespace mp::relay
