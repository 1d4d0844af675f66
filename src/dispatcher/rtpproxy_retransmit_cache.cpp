// Implementation of the rtpproxy retransmission cache
// (rtpproxy_retransmit_cache.h).
#include "dispatcher/rtpproxy_retransmit_cache.h"

#include <algorithm>
#include <functional>

#include "protocol/rtpproxy_command.h"

namespace mp::dispatcher {

RtpproxyRetransmitCache::RtpproxyRetransmitCache(size_t capacity)
    : capacity_(std::max<size_t>(capacity, 1)), mask_(0) {
  size_t cells = 2;
  while (cells < 2 * capacity_) cells *= 2;
  mask_ = cells - 1;
}

uint64_t RtpproxyRetransmitCache::digest_of(const Sender& sender, std::string_view cookie) {
  char buf[sizeof sender.bytes + protocol::kMaxRtpproxyCookie];
  const size_t n = std::min(cookie.size(), protocol::kMaxRtpproxyCookie);
  std::memcpy(buf, sender.bytes, sender.len);
  std::memcpy(buf + sender.len, cookie.data(), n);
  return std::hash<std::string_view>{}(std::string_view(buf, sender.len + n));
}

RtpproxyRetransmitCache::Lookup RtpproxyRetransmitCache::begin_digest(uint64_t digest,
                                                                      const Sender& sender,
                                                                      std::string_view cookie,
                                                                      double now, double ttl) {
  // Allocated on first use (a listener nobody sends to costs nothing), and
  // at full size: growing the ring would move every entry in one command's
  // time. The pages are touched as the slots are first used.
  if (index_.empty()) {
    index_.resize(mask_ + 1);
    ring_.reserve(capacity_);
  }
  expire(now - ttl);
  const auto tag = static_cast<uint32_t>(digest);
  size_t c = home(tag);
  for (; index_[c].slot_plus_1 != 0; c = (c + 1) & mask_) {
    if (index_[c].tag != tag) continue;
    const Entry& e = ring_[index_[c].slot_plus_1 - 1];
    if (e.digest != digest) continue;
    if (!(e.sender == sender) || e.cookie != cookie) return {Found::Collision};
    if (!e.replied) return {Found::Pending};
    return {Found::Replied, 0, &e.reply};
  }
  if (size() == capacity_) {
    pop_oldest();
    // The deletion may have shifted cells: find the free one again.
    c = home(tag);
    while (index_[c].slot_plus_1 != 0) c = (c + 1) & mask_;
  }
  const uint64_t ticket = next_++;
  const size_t slot = static_cast<size_t>((ticket - 1) % capacity_);
  if (slot == ring_.size()) ring_.emplace_back();
  Entry& e = ring_[slot];
  e.ticket = ticket;
  e.digest = digest;
  e.at = now;
  e.sender = sender;
  e.replied = false;
  e.cookie.assign(cookie);
  e.reply.clear();
  index_[c] = Cell{static_cast<uint32_t>(slot + 1), tag};
  return {Found::Fresh, ticket};
}

void RtpproxyRetransmitCache::complete(uint64_t ticket, std::string_view reply) {
  if (ticket < head_ || ticket >= next_) return;  // expired (or never handed out)
  Entry& e = ring_[static_cast<size_t>((ticket - 1) % capacity_)];
  e.reply.assign(reply);
  e.replied = true;
}

void RtpproxyRetransmitCache::expire(double before) {
  while (head_ != next_ && ring_[static_cast<size_t>((head_ - 1) % capacity_)].at < before)
    pop_oldest();
}

void RtpproxyRetransmitCache::pop_oldest() {
  const size_t slot = static_cast<size_t>((head_ - 1) % capacity_);
  erase_cell(cell_of(slot, ring_[slot].digest));
  ++head_;
}

size_t RtpproxyRetransmitCache::cell_of(size_t slot, uint64_t digest) const {
  // Every live entry has exactly one cell, reachable from its home without
  // crossing an empty cell (linear probing with backward-shift deletion).
  size_t c = home(static_cast<uint32_t>(digest));
  while (index_[c].slot_plus_1 != slot + 1) c = (c + 1) & mask_;
  return c;
}

void RtpproxyRetransmitCache::erase_cell(size_t hole) {
  // Backward shift: a later cell of the same probe run moves into the hole
  // unless its home lies cyclically in (hole, cell], where it already is
  // as close to home as it can be.
  size_t c = hole;
  for (;;) {
    c = (c + 1) & mask_;
    if (index_[c].slot_plus_1 == 0) break;
    const size_t h = home(index_[c].tag);
    const bool stays = hole <= c ? (hole < h && h <= c) : (hole < h || h <= c);
    if (stays) continue;
    index_[hole] = index_[c];
    hole = c;
  }
  index_[hole] = Cell{};
}

}  // namespace mp::dispatcher
