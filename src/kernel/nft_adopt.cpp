// Adoption after a restart: NftForwarder::adopt() (nft_forwarder.h).
//
// A relay that restarts (kill -9, crash, upgrade) finds the table its
// previous process left, still forwarding every kernel stream. Instead of
// replacing it, adopt() checks that it is ours (the comment names this relay
// address; another address means another instance, whose table is never
// touched) and in the shape this version makes (fwd_map's key, value, flags
// and counters, the ingress chain, and its one rule expression by
// expression), then reads fwd_map in one dump and registers every element as
// an installed rule with a fresh id, its ForwardRule decoded from the key and
// value, its next hop and interface from the value and its counters as they
// stand (they kept counting while no process ran). Nothing is written to the
// map, so no packet falls through to userspace meanwhile. The chain is then
// hooked on the interfaces present now, and rules whose route changed while
// no process ran move to the new next hop as follow_network() would move
// them. A table that fails the checks is replaced as create() does, with one
// log line saying why; the relay's own streams then go back to userspace and
// are handed over again.
#include "kernel/nft_forwarder.h"

#include "common/error.h"
#include "kernel/nft_forwarder_impl.h"

namespace mp::kernel {

bool NftForwarder::shape_matches(Impl& im, std::string& error) {
  bool same = true;
  int err = im.nl.request(build_get_set(im.request_buf.data(), im.nl.take_seq(), im.table, kFwdMap),
                          [&](const nlmsghdr* nlh) { same = fwd_map_matches(nlh, error); });
  if (err) return fail(error, describe_errno(err, "cannot read its map fwd_map"));
  if (!same) return false;
  err = im.nl.request(
      build_get_chain(im.request_buf.data(), im.nl.take_seq(), im.table, kIngressChain),
      [&](const nlmsghdr* nlh) { same = ingress_chain_matches(nlh, error); });
  if (err) return fail(error, describe_errno(err, "cannot read its chain ingress"));
  if (!same) return false;
  size_t rules = 0;
  err = im.nl.request(
      build_dump_rules(im.request_buf.data(), im.nl.take_seq(), im.table, kIngressChain),
      [&](const nlmsghdr* nlh) {
        if (rules++ == 0) same = ingress_rule_matches(nlh, im.relay_ip, error);
      });
  if (err) return fail(error, describe_errno(err, "cannot read the rules of its chain ingress"));
  if (rules != 1)
    return fail(error, "its chain ingress has " + std::to_string(rules) + " rules, not 1");
  return same;
}

// Registers every element of the table's fwd_map as an installed rule.
// false (with `error`) if the map cannot be read or holds an element that is
// not one of ours; the caller then replaces the table.
bool NftForwarder::adopt_elements(Impl& im, std::vector<AdoptedRule>& adopted, std::string& error) {
  adopted.clear();
  std::vector<std::pair<Impl::Entry, Counters>> found;
  bool malformed = false;
  nlmsghdr* req = build_dump_elements(im.request_buf.data(), im.nl.take_seq(), im.table, kFwdMap);
  const int err = im.nl.request(req, [&](const nlmsghdr* nlh) {
    if (!parse_elements(nlh, [&](const ElementView& v) {
          Impl::Entry e;
          Ipv4 saddr, next_hop;
          uint16_t sport, dport, out_port, to_port;
          uint32_t ifindex;
          if (!parse_fwd_key(v.key, v.key_len, e.rule.from.ip, sport, dport) || !v.data ||
              !v.has_counter ||
              !parse_fwd_value(v.data, v.data_len, saddr, e.rule.to.ip, out_port, to_port, next_hop,
                               ifindex) ||
              saddr != im.relay_ip) {
            malformed = true;
            return;
          }
          e.rule.from.port = sport;
          e.rule.relay_in_port = dport;
          e.rule.relay_out_port = out_port;
          e.rule.to.port = to_port;
          e.hop.via = next_hop;
          e.hop.ifindex = ifindex;
          e.key = key_of(e.rule.from.ip, sport, dport);
          e.state = Impl::State::kInstalled;
          found.emplace_back(e, Counters{v.packets, v.bytes});
        }))
      malformed = true;
  });
  if (err != 0 || malformed) {
    error = err ? describe_errno(err, "cannot read its map")
                : "its map holds elements this relay did not write";
    return false;
  }
  for (auto& [e, c] : found) {
    const uint32_t id = im.alloc_id();
    if (id == 0) break;
    e.last = c;
    im.kernel_owner[e.key] = id;
    im.entries.emplace(id, e);
    adopted.push_back(AdoptedRule{id, e.rule, c});
  }
  // Interfaces that appeared while no process ran get the chain's hook too.
  BatchError be;
  if (int hook_err = im.nl.transact(
          im.batch, [&](Batch& b) { return put_ingress_devices(b, im.table, im.devices); }, be)) {
    error = describe_errno(hook_err, "cannot hook its chain on the interfaces");
    return false;
  }
  return true;
}

std::unique_ptr<NftForwarder> NftForwarder::adopt(const std::string& table_name, Ipv4 relay_ip,
                                                  std::vector<AdoptedRule>& adopted,
                                                  std::string& error) {
  adopted.clear();
  auto impl = std::make_unique<Impl>();
  if (!open_impl(*impl, table_name, relay_ip, error)) return nullptr;
  Ipv4 owner;
  const Existing found = existing_table(*impl, owner, error);
  if (found == Existing::Foreign || found == Existing::Error) return nullptr;
  std::string replaced = found == Existing::Unknown ? kNotOursComment : "";
  if (found == Existing::Ours) {
    std::string why;
    if (shape_matches(*impl, why) && adopt_elements(*impl, adopted, why)) {
      size_t moved = 0;
      std::string route_error;
      if (!reroute(*impl, moved, route_error)) LOG_WARN("%s", route_error.c_str());
      LOG_INFO(
          "kernel forwarding: adopted nftables table netdev %s with %zu rule(s) left by the "
          "previous process of this relay (%zu moved to a route that changed meanwhile)",
          table_name.c_str(), adopted.size(), moved);
      return std::unique_ptr<NftForwarder>(new NftForwarder(std::move(impl)));
    }
    replaced = "left by this relay but not in the shape this version makes: " + why;
    adopted.clear();
    impl->entries.clear();
    impl->kernel_owner.clear();
  }
  if (!install_ruleset(*impl, replaced, error)) return nullptr;
  return std::unique_ptr<NftForwarder>(new NftForwarder(std::move(impl)));
}

}  // namespace mp::kernel
