// Moving stream legs into and out of the kernel (kernel_offload.h).
#include "relay/kernel_offload.h"

#include <algorithm>

#include "common/log.h"
#include "kernel/nft_forwarder.h"
#include "relay/stream.h"

namespace mp::relay {

KernelOffload::KernelOffload(std::unique_ptr<kernel::NftForwarder> forwarder, size_t max_streams)
    : forwarder_(std::move(forwarder)) {
  // Each stream has two sub-streams: room for all of them, so that want()
  // never allocates.
  pending_.reserve(2 * max_streams + 16);
  batch_.reserve(2 * max_streams + 16);
}

KernelOffload::~KernelOffload() = default;

void KernelOffload::want(MediaStream* st, int sub) {
  if (st->offload_queued_[sub]) return;
  st->offload_queued_[sub] = true;
  pending_.emplace_back(st, sub);
}

void KernelOffload::forget(MediaStream* st) {
  pending_.erase(std::remove_if(pending_.begin(), pending_.end(),
                                [st](const auto& p) { return p.first == st; }),
                 pending_.end());
}

void KernelOffload::commit_pending() {
  if (pending_.empty()) return;
  batch_.clear();
  for (auto [st, sub] : pending_) {
    st->offload_queued_[sub] = false;
    const auto k = static_cast<SubStream>(sub);
    IpEndpoint to_caller, to_callee;
    if (!st->ready_for_kernel(k, to_caller, to_callee)) continue;  // changed since
    Leg& a = st->legs_[k][kCaller];
    Leg& b = st->legs_[k][kCallee];
    // The forwarder refuses what the kernel cannot do (a bridged stream
    // changes the IP version: it stays in userspace, with the reason).
    kernel::ForwardRule from_caller{a.remote, a.socket->local().port, b.socket->local().port,
                                    to_callee};
    kernel::ForwardRule from_callee{b.remote, b.socket->local().port, a.socket->local().port,
                                    to_caller};
    std::string why;
    const std::optional<uint32_t> ida = forwarder_->add(from_caller, why);
    const std::optional<uint32_t> idb = ida ? forwarder_->add(from_callee, why) : std::nullopt;
    if (!ida || !idb) {
      // The kernel cannot send to one of the parties (a local address, no
      // route...): that stream stays in userspace.
      if (ida) forwarder_->remove(*ida);
      st->kernel_refused_ = true;
      st->state_changed();
      LOG_INFO("%s %s: stays in userspace: %s", st->media_type().c_str(),
               k == kRtp ? "RTP" : "RTCP", why.c_str());
      continue;
    }
    batch_.push_back(Handover{st, sub, {*ida, *idb}});
  }
  pending_.clear();
  if (batch_.empty()) {
    std::string ignored;
    forwarder_->commit(nullptr, ignored);  // the removals of refused pairs
    return;
  }
  // One transaction for the whole pass. Ids the kernel refused are reported
  // through final_counters (then commit() returns false).
  std::vector<uint32_t> refused;
  std::string error;
  ++batches_;
  const bool ok = forwarder_->commit(
      [&refused](uint32_t id, const kernel::Counters&) { refused.push_back(id); }, error);
  if (!ok && refused.empty()) {
    // Nothing installed for sure (permissions, memory): all stay in userspace.
    for (const Handover& h : batch_) {
      forwarder_->remove(h.ids[0]);
      forwarder_->remove(h.ids[1]);
    }
    std::string ignored;
    forwarder_->commit(nullptr, ignored);
  }
  size_t failed = 0;
  for (const Handover& h : batch_) {
    MediaStream* st = h.stream;
    const auto k = static_cast<SubStream>(h.sub);
    const bool in = ok || (!refused.empty() &&
                           std::find(refused.begin(), refused.end(), h.ids[0]) == refused.end() &&
                           std::find(refused.begin(), refused.end(), h.ids[1]) == refused.end());
    if (!in) {
      ++failed;
      for (uint32_t id : h.ids)
        if (std::find(refused.begin(), refused.end(), id) == refused.end()) forwarder_->remove(id);
      st->kernel_refused_ = true;
      st->state_changed();
      continue;
    }
    for (Side side : {kCaller, kCallee}) {
      Leg& l = st->legs_[k][side];
      l.kernel_id = h.ids[side];
      l.kernel_live_packets = l.kernel_live_bytes = 0;
      rules_[h.ids[side]] = Ref{st, h.sub, side};
    }
    st->state_changed();
    LOG_DEBUG("%s %s: handed to the kernel (%s <-> %s)", st->media_type().c_str(),
              k == kRtp ? "RTP" : "RTCP", format_ip_endpoint(st->legs_[k][kCaller].remote).c_str(),
              format_ip_endpoint(st->legs_[k][kCallee].remote).c_str());
  }
  if (failed) {
    std::string ignored;
    forwarder_->commit(nullptr, ignored);
    LOG_WARN("kernel forwarding refused for %zu stream(s) (%s); they stay in userspace", failed,
             error.c_str());
  }
  handed_over_ += batch_.size() - failed;
  LOG_DEBUG("kernel forwarding: %zu sub-stream(s) handed over in one transaction",
            batch_.size() - failed);
}

void KernelOffload::take_back(MediaStream* st, int sub) {
  const auto k = static_cast<SubStream>(sub);
  Leg* legs[2] = {&st->legs_[k][kCaller], &st->legs_[k][kCallee]};
  bool any = false;
  for (Leg* l : legs) {
    if (!l->kernel_id) continue;
    forwarder_->remove(l->kernel_id);
    any = true;
  }
  if (!any) return;
  std::string error;
  const bool ok = forwarder_->commit(
      [&](uint32_t id, const kernel::Counters& c) {
        for (Leg* l : legs) {
          if (l->kernel_id != id) continue;
          l->kernel_live_packets = c.packets;
          l->kernel_live_bytes = c.bytes;
        }
      },
      error);
  if (!ok)
    LOG_ERROR("%s %s: removing kernel rules failed: %s", st->media_type().c_str(),
              k == kRtp ? "RTP" : "RTCP", error.c_str());
  for (Leg* l : legs) {
    if (!l->kernel_id) continue;
    rules_.erase(l->kernel_id);
    l->kernel_id = 0;
    l->kernel_packets += l->kernel_live_packets;
    l->kernel_bytes += l->kernel_live_bytes;
    l->kernel_live_packets = l->kernel_live_bytes = 0;
  }
  st->state_changed();
}

void KernelOffload::adopt(uint32_t id, MediaStream* st, int sub, int side, uint64_t packets,
                          uint64_t bytes) {
  st->adopt_kernel_rule(static_cast<SubStream>(sub), static_cast<Side>(side), id, packets, bytes);
  rules_[id] = Ref{st, sub, side};
}

bool KernelOffload::read_counters(std::string& error) {
  if (rules_.empty()) return true;
  return forwarder_->read_counters(
      [this](uint32_t id, const kernel::Counters& c) {
        auto it = rules_.find(id);
        if (it == rules_.end()) return;
        it->second.stream->kernel_counters(static_cast<SubStream>(it->second.sub),
                                           static_cast<Side>(it->second.side), c.packets, c.bytes);
      },
      error);
}

}  // namespace mp::relay
