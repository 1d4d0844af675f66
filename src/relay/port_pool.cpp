// Implementation of the FIFO port-pair pool declared in port_pool.h.
#include "relay/port_pool.h"

#include <algorithm>

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

bool PortPool::reserve(const std::vector<uint16_t>& rtp_ports, uint16_t& bad) {
  std::vector<uint16_t> wanted(rtp_ports);
  std::sort(wanted.begin(), wanted.end());
  std::vector<uint16_t> free_sorted(free_.begin(), free_.end());
  std::sort(free_sorted.begin(), free_sorted.end());
  for (size_t i = 0; i < wanted.size(); ++i) {
    if ((i > 0 && wanted[i] == wanted[i - 1]) ||
        !std::binary_search(free_sorted.begin(), free_sorted.end(), wanted[i])) {
      bad = wanted[i];
      return false;
    }
  }
  std::deque<uint16_t> rest;
  for (uint16_t p : free_)
    if (!std::binary_search(wanted.begin(), wanted.end(), p)) rest.push_back(p);
  free_ = std::move(rest);
  return true;
}

}  // namespace mp::relay
