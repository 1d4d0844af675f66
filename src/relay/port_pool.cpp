// Implementation of the FIFO port-pair pool declared in port_pool.h.
#include "relay/port_pool.h"

namespace mp::relay {

PortPool::PortPool(int start, int end) {
  for (int p = start; p + 1 < end; p += 2) free_.push_back(static_cast<uint16_t>(p));
  capacity_ = free_.size();
}

std::optional<uint16_t> PortPool::allocate() {
  if (free_.empty()) return std::nullopt;
  uint16_t p = free_.front();
  free_.pop_front();
  return p;
}

void PortPool::release(uint16_t rtp_port) {
  free_.push_back(rtp_port);
}

void PortPool::mark_bad(uint16_t rtp_port) {
  bad_.push_back(rtp_port);
  if (bad_.size() > free_.size()) {
    for (uint16_t p : bad_) free_.push_back(p);
    bad_.clear();
  }
}

}  // namespace mp::relay
