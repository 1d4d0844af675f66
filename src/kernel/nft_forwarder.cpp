// In-kernel forwarding through nftables: implementation of nft_forwarder.h: rules in
// and out (add, remove, commit) and counters.
//
// Owns the bookkeeping between rule ids and the elements that carry them in
// the kernel, the batching of changes, the route lookups that give each rule
// its way out, and the words of every error. The objects and their encoding
// live in nft_ruleset.cpp (which also describes the rule), the socket
// discipline in nft_netlink.cpp. What an operator sees
// (`nft list table netdev <name>`):
//
//   map fwd_map { type ipv4_addr . inet_service . inet_service
//                 : ipv4_addr . ipv4_addr . ipv4_addr . ipv4_addr . iface_index; counter; }
//     latched source address . source port . relay port ->
//     relay address . destination . ports (printed as an address) . next hop . interface
//   map fwd6_map (with an IPv6 relay address): the same for IPv6 streams
//   chain ingress (filter, hook ingress on every non-loopback interface):
//     packets to the relay address whose key is in fwd_map are rewritten and
//     sent out of the interface towards the next hop; anything else (a lookup
//     miss) goes on into the IP stack and to the userspace socket. A second
//     rule does the same for IPv6 packets to the relay's IPv6 address with
//     fwd6_map.
//
// Both families share one id space and every rule below: a rule's family is
// its key's (the address it latched on), which picks the map its element
// lives in. A rule whose parties are of different families (a stream the
// relay bridges between IPv4 and IPv6) is refused by add(): nftables cannot
// turn an IPv4 packet into an IPv6 one or back, so userspace relays it.
//
// Rule ids and final counters: every id add() returned is reported exactly
// once through commit()'s `final_counters` when it leaves the kernel or the
// queue: after remove(), when a later add() of the same key replaced it (the
// old element is deleted and the new one added in the same transaction, so no
// packet falls through to userspace in between), or, with zero counters, when
// it was removed or replaced before ever being committed, or could not be
// installed (commit() then also returns false and says why). Final counters
// are read in one request per chunk of removed keys (a dump when many rules
// go) just before the transaction that deletes them; packets forwarded
// between the read and the deletion (microseconds) are not counted.
//
// Errors: the kernel reports EEXIST/ENOENT/EBUSY for the whole transaction of
// a batch. Those mean the table was changed behind our back (e.g. by hand with
// nft); the rules of such a batch are then retried one by one, deleting what
// stands in the way (an element of the same key, an element already gone is
// fine). Any other error (permissions, memory, timeout) leaves the remaining
// changes queued for the next commit(). If the whole table (or a map) is
// gone, typically `nft flush ruleset` from an nftables.service reload, the
// next commit() or read_counters() that notices logs it, recreates the table
// and reinstalls every installed rule, counters continuing from the last
// values read; until then the packets of those streams reach userspace.
#include "kernel/nft_forwarder.h"

#include "kernel/nft_forwarder_impl.h"

namespace mp::kernel {

NftForwarder::NftForwarder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

NftForwarder::~NftForwarder() {
  if (!impl_) return;
  Impl& im = *impl_;
  if (im.keep_table) {
    LOG_INFO("kernel forwarding: nftables table netdev %s left in place with %zu rule(s)",
             im.table.c_str(), im.kernel_owner.size());
    return;
  }
  BatchError be;
  int err = im.nl.transact(
      im.batch, [&](Batch& b) { return put_delete_table(b, im.table); }, be);
  if (err == 0)
    LOG_INFO("kernel forwarding: deleted nftables table netdev %s", im.table.c_str());
  else if (err != ENOENT)
    LOG_ERROR("%s", describe_errno(
                        err, "kernel forwarding: cannot delete nftables table netdev " + im.table +
                                 " (delete it by hand: nft delete table netdev " + im.table + ")")
                        .c_str());
}

std::optional<uint32_t> NftForwarder::add(const ForwardRule& rule, std::string& error) {
  Impl& im = *impl_;
  if (rule.from.ip.family != rule.to.ip.family) {
    error =
        "IPv4⇄IPv6 bridged stream: stays in userspace (nftables cannot change a packet's IP "
        "version; from " +
        format_ip_endpoint(rule.from) + " to " + format_ip_endpoint(rule.to) + ")";
    return std::nullopt;
  }
  if (!rule.to.ip.is_v4()) {
    if (!im.relay.ip6) {
      error = "IPv6 stream (to " + format_ip_endpoint(rule.to) +
              "), but kernel forwarding was started without an IPv6 relay address";
      return std::nullopt;
    }
    if (rule.from.ip.is_v4_mapped() || rule.to.ip.is_v4_mapped()) {
      error = "IPv4-mapped IPv6 address in stream from " + format_ip_endpoint(rule.from) + " to " +
              format_ip_endpoint(rule.to) + ": such packets are IPv4 on the wire";
      return std::nullopt;
    }
  }
  NextHop hop;
  std::string reason;
  if (!im.routes.resolve(im.relay_of(rule.to.ip.family), rule.to.ip, hop, reason)) {
    error = "cannot send to " + format_ip(rule.to.ip) + " from the kernel: " + reason;
    return std::nullopt;
  }
  if (std::find(im.hooked.begin(), im.hooked.end(), hop.ifindex) == im.hooked.end()) {
    error = "the route to " + format_ip(rule.to.ip) + " leaves through interface " +
            interface_name(im.routes, hop.ifindex) +
            ", which did not exist when forwarding started and is not hooked (yet)";
    return std::nullopt;
  }
  uint32_t id = im.alloc_id();
  if (id == 0) {
    LOG_ERROR("kernel forwarding: no free rule id (%u rules live)", kMaxId);
    error = "no free rule id";
    return std::nullopt;
  }
  Impl::Entry e;
  e.rule = rule;
  e.hop = hop;
  e.key = key_of(rule);
  // An earlier add of the same key not yet committed never reaches the kernel.
  if (auto it = im.pending_owner.find(e.key); it != im.pending_owner.end()) {
    uint32_t old = it->second;
    im.entries.at(old).state = Impl::State::kCancelled;
    im.cancelled.push_back(old);
  }
  // The element installed for this key is deleted in the transaction that adds this one.
  if (auto it = im.kernel_owner.find(e.key); it != im.kernel_owner.end()) {
    Impl::Entry& installed = im.entries.at(it->second);
    installed.state = Impl::State::kPendingRemove;
    installed.replaced_by = id;
    e.replaces = it->second;
  }
  im.pending_owner[e.key] = id;
  im.entries.emplace(id, e);
  im.pending_adds.push_back(id);
  return id;
}

void NftForwarder::remove(uint32_t id) {
  Impl& im = *impl_;
  Impl::Entry* e = im.find(id);
  if (!e) return;
  switch (e->state) {
    case Impl::State::kPendingAdd: {
      auto it = im.pending_owner.find(e->key);
      if (it != im.pending_owner.end() && it->second == id) im.pending_owner.erase(it);
      if (e->replaces) {
        // The rule it was to replace goes anyway, on its own.
        im.entries.at(e->replaces).replaced_by = 0;
        im.pending_removes.push_back(e->replaces);
      }
      e->state = Impl::State::kCancelled;
      im.cancelled.push_back(id);
      break;
    }
    case Impl::State::kInstalled:
      e->state = Impl::State::kPendingRemove;
      im.pending_removes.push_back(id);
      break;
    case Impl::State::kPendingRemove:
    case Impl::State::kCancelled:
      break;
  }
}

bool NftForwarder::commit(const std::function<void(uint32_t id, const Counters&)>& final_counters,
                          std::string& error) {
  Impl& im = *impl_;
  using Unit = Impl::Unit;
  using State = Impl::State;
  error.clear();
  int fatal = im.table_lost ? im.rebuild() : 0;

  // Work queued so far; callbacks below may queue more.
  std::vector<uint32_t> removes = std::move(im.pending_removes);
  std::vector<uint32_t> adds = std::move(im.pending_adds);
  std::vector<uint32_t> cancelled = std::move(im.cancelled);
  im.pending_removes.clear();
  im.pending_adds.clear();
  im.cancelled.clear();
  std::sort(removes.begin(), removes.end());
  removes.erase(std::unique(removes.begin(), removes.end()), removes.end());

  std::vector<Unit> units;
  for (uint32_t id : removes) {
    const Impl::Entry* e = im.find(id);
    if (e && e->state == State::kPendingRemove && !e->replaced_by) units.push_back(Unit{id, 0});
  }
  for (uint32_t id : adds) {
    const Impl::Entry* e = im.find(id);
    if (e && e->state == State::kPendingAdd) units.push_back(Unit{e->replaces, id});
  }
  if (!fatal) {
    std::vector<uint32_t> deleting;
    for (const Unit& u : units)
      if (u.remove) deleting.push_back(u.remove);
    if (im.lost_table(im.read_final(deleting))) {
      fatal = im.rebuild();
      im.refilter(units, 0);
    }
  }

  std::vector<uint32_t> removed;
  std::vector<uint32_t> dropped;
  std::string failures;
  size_t failed = 0;
  size_t i = 0;
  while (i < units.size() && !fatal) {
    size_t j = i;
    size_t n = 0;
    while (j < units.size() && n + units[j].elements() <= kMaxBatchElements)
      n += units[j++].elements();
    int err = im.send_units(units, i, j);
    if (err == 0) {
      for (; i < j; ++i)
        if (uint32_t r = im.applied(units[i])) removed.push_back(r);
    } else if (im.lost_table(err)) {
      fatal = im.rebuild();
      im.refilter(units, i);
    } else if (element_error(err)) {
      LOG_WARN(
          "kernel forwarding: the kernel refused a batch of %zu rule changes (%s): nftables "
          "table netdev %s was changed by someone else; retrying rule by rule",
          j - i, std::strerror(err), im.table.c_str());
      for (; i < j && !fatal; ++i) {
        fatal = im.retry_unit(units[i], removed, dropped, failures, failed);
        if (fatal) break;
      }
    } else {
      fatal = err;
    }
  }
  if (fatal) {
    // Keep what was not done queued for the next commit().
    for (size_t k = i; k < units.size(); ++k) {
      const Unit& u = units[k];
      if (u.add && im.entries.at(u.add).state == State::kPendingAdd)
        im.pending_adds.push_back(u.add);
      else if (u.remove && im.entries.at(u.remove).state == State::kPendingRemove)
        im.pending_removes.push_back(u.remove);
    }
    error = describe_errno(fatal, "kernel forwarding: cannot update nftables table netdev " +
                                      im.table + " (" + std::to_string(units.size() - i) +
                                      " rule changes stay queued)");
  } else if (failed) {
    error = failures;
    if (failed > 1) error += " (and " + std::to_string(failed - 1) + " more rules)";
  }

  // Reported last, with no reference into the tables held: the callback may
  // queue new changes. `late`: rules whose deletion a rebuild made moot.
  std::vector<uint32_t> late = std::move(im.cancelled);
  im.cancelled.clear();
  for (const auto* list : {&cancelled, &removed, &dropped, &late})
    for (uint32_t id : *list) im.report(id, final_counters);
  return error.empty();
}

bool NftForwarder::read_counters(const std::function<void(uint32_t id, const Counters&)>& visit,
                                 std::string& error) {
  Impl& im = *impl_;
  int err = im.table_lost ? ENOENT : im.dump_fwd();
  if (err && (im.table_lost || im.lost_table(err))) {
    err = im.rebuild();
    if (err == 0) err = im.dump_fwd();
  }
  if (err) {
    error = describe_errno(
        err, "kernel forwarding: cannot read counters of nftables table netdev " + im.table);
    return false;
  }
  error.clear();
  if (visit)
    for (const auto& [id, c] : im.dumped) visit(id, c);
  return true;
}

size_t NftForwarder::installed() const {
  return impl_->kernel_owner.size();
}

const std::string& NftForwarder::table_name() const {
  return impl_->table;
}

}  // namespace mp::kernel
