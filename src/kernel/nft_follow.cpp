// Following the network: interfaces that appear get the ingress hook, and
// installed rules whose route changed move to their new next hop (same id,
// counters continue), IPv4 and IPv6 rules alike (the route watch covers IPv6
// routes and addresses when the forwarder has an IPv6 address). Part of
// nft_forwarder.h's implementation.
#include "kernel/nft_forwarder.h"

#include "kernel/nft_forwarder_impl.h"

namespace mp::kernel {

int NftForwarder::network_change_fd() const {
  return impl_->routes.watch_fd();
}

bool NftForwarder::follow_network(size_t& moved, std::string& error) {
  Impl& im = *impl_;
  moved = 0;
  error.clear();
  if (!im.routes.drain_changes()) return true;

  // New interfaces: hook them (the chain keeps its existing hooks).
  std::vector<std::string> now;
  std::vector<uint32_t> now_index;
  std::string why;
  if (hookable_devices(im.routes, now, now_index, why)) {
    std::vector<std::string> added;
    for (const auto& d : now)
      if (std::find(im.devices.begin(), im.devices.end(), d) == im.devices.end())
        added.push_back(d);
    if (!added.empty()) {
      std::vector<std::string> all = im.devices;
      all.insert(all.end(), added.begin(), added.end());
      BatchError be;
      if (int err = im.nl.transact(
              im.batch, [&](Batch& b) { return put_ingress_devices(b, im.table, all); }, be)) {
        LOG_WARN("%s", describe_errno(err, "kernel forwarding: cannot hook new interface(s) " +
                                               added.front() +
                                               "...; their streams stay in "
                                               "userspace")
                           .c_str());
      } else {
        im.devices = all;
        im.hooked = now_index;
        LOG_INFO("kernel forwarding: hooked new interface(s): %s (and %zu more)",
                 added.front().c_str(), added.size() - 1);
      }
    }
  }

  return reroute(im, moved, error);
}

bool NftForwarder::reroute(Impl& im, size_t& moved, std::string& error) {
  // Rules whose way out changed.
  std::vector<uint32_t> ids;
  std::vector<NextHop> hops;
  for (auto& [id, e] : im.entries) {
    if (e.state != Impl::State::kInstalled) continue;
    NextHop hop;
    std::string reason;
    // No route any more: keep the old way out, userspace could not do better.
    if (!im.routes.resolve(im.relay_of(e.key.saddr.family), e.rule.to.ip, hop, reason)) continue;
    if (hop.ifindex == e.hop.ifindex && hop.via == e.hop.via) continue;
    ids.push_back(id);
    hops.push_back(hop);
  }
  if (ids.empty()) return true;
  // Counters so far, then delete and re-add each element with its new value
  // in one transaction per batch; the new elements count on from there.
  im.read_final(ids);
  // Each move is a unit that deletes and re-adds the same id's element.
  for (size_t i = 0; i < ids.size(); i += kMaxBatchElements / 2) {
    const size_t end = std::min(ids.size(), i + kMaxBatchElements / 2);
    std::vector<Impl::Unit> units;
    std::vector<NextHop> old_hops;
    for (size_t j = i; j < end; ++j) {
      Impl::Entry& e = im.entries.at(ids[j]);
      old_hops.push_back(e.hop);
      e.hop = hops[j];  // what put_units() writes
      units.push_back(Impl::Unit{ids[j], ids[j]});
    }
    if (int err = im.send_units(units, 0, units.size())) {
      for (size_t j = i; j < end; ++j) im.entries.at(ids[j]).hop = old_hops[j - i];
      error =
          describe_errno(err, "kernel forwarding: cannot move " + std::to_string(ids.size() - i) +
                                  " rules to their new routes in table netdev " + im.table);
      if (im.lost_table(err)) im.rebuild();
      return false;
    }
    for (size_t j = i; j < end; ++j) {
      Impl::Entry& e = im.entries.at(ids[j]);
      e.base = e.last;
      ++moved;
    }
  }
  return true;
}

}  // namespace mp::kernel
