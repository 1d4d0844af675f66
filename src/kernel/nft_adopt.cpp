// Adoption after a restart: NftForwarder::adopt() (nft_forwarder.h).
//
// A relay that restarts (kill -9, crash, upgrade) finds the table its
// previous process left, still forwarding every kernel stream. Instead of
// replacing it, adopt() checks that it is ours (the comment names this relay
// address; another address means another instance, whose table is never
// touched; a comment naming another IPv6 address, or none where one is
// configured now, means a table to replace) and in the shape this version
// makes (fwd_map's and fwd6_map's key, value, flags and counters, the
// ingress chain, and its rules expression by expression; a table of an
// older, IPv4-only version lacks the IPv6 map and rule), then reads each
// map in one dump and registers every element as
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
  for (size_t m = 0; m < map_count(im.relay); ++m) {
    const IpAddress::Family family = kMapFamilies[m];
    int err = im.nl.request(
        build_get_set(im.request_buf.data(), im.nl.take_seq(), im.table, fwd_map_of(family)),
        [&](const nlmsghdr* nlh) { same = fwd_map_matches(nlh, family, error); });
    if (err)
      return fail(error,
                  describe_errno(err, std::string("cannot read its map ") + fwd_map_of(family)));
    if (!same) return false;
  }
  int err = im.nl.request(
      build_get_chain(im.request_buf.data(), im.nl.take_seq(), im.table, kIngressChain),
      [&](const nlmsghdr* nlh) { same = ingress_chain_matches(nlh, error); });
  if (err) return fail(error, describe_errno(err, "cannot read its chain ingress"));
  if (!same) return false;
  const size_t want = ingress_rule_count(im.relay);
  size_t rules = 0;
  err = im.nl.request(
      build_dump_rules(im.request_buf.data(), im.nl.take_seq(), im.table, kIngressChain),
      [&](const nlmsghdr* nlh) {
        if (same && rules < want) same = ingress_rule_matches(nlh, rules, error);
        ++rules;
      });
  if (err) return fail(error, describe_errno(err, "cannot read the rules of its chain ingress"));
  if (!same) return false;
  if (rules != want)
    return fail(error, "its chain ingress has " + std::to_string(rules) + " rules, not " +
                           std::to_string(want));
  return true;
}

// Registers every element of the table's maps as an installed rule.
// false (with `error`) if the map cannot be read or holds an element that is
// not one of ours; the caller then replaces the table.
bool NftForwarder::adopt_elements(Impl& im, std::vector<AdoptedRule>& adopted, std::string& error) {
  adopted.clear();
  std::vector<std::pair<Impl::Entry, Counters>> found;
  for (size_t m = 0; m < map_count(im.relay); ++m) {
    const IpAddress::Family family = kMapFamilies[m];
    const IpAddress relay = im.relay_of(family);
    bool malformed = false;
    nlmsghdr* req =
        build_dump_elements(im.request_buf.data(), im.nl.take_seq(), im.table, fwd_map_of(family));
    const int err = im.nl.request(req, [&](const nlmsghdr* nlh) {
      if (!parse_elements(nlh, [&](const ElementView& v) {
            IpAddress key_relay;
            const std::optional<RuleKey> key = parse_fwd_key(v.key, v.key_len, &key_relay);
            const std::optional<FwdTarget> value =
                v.data ? parse_fwd_value(v.data, v.data_len) : std::nullopt;
            if (!key || !value || !v.has_counter || key->saddr.family != family ||
                key_relay != relay || value->saddr != relay) {
              malformed = true;
              return;
            }
            Impl::Entry e;
            e.rule.from = IpEndpoint{key->saddr, key->sport};
            e.rule.relay_in_port = key->dport;
            e.rule.relay_out_port = value->sport;
            e.rule.to = IpEndpoint{value->daddr, value->dport};
            e.hop.via = value->next_hop;
            e.hop.ifindex = value->ifindex;
            e.key = *key;
            e.state = Impl::State::kInstalled;
            found.emplace_back(e, Counters{v.packets, v.bytes});
          }))
        malformed = true;
    });
    if (err != 0 || malformed) {
      error = err ? describe_errno(err, std::string("cannot read its map ") + fwd_map_of(family))
                  : std::string("its map ") + fwd_map_of(family) +
                        " holds elements this relay did not write";
      return false;
    }
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
                                                  const std::optional<IpAddress>& relay_ip6,
                                                  std::vector<AdoptedRule>& adopted,
                                                  std::string& error) {
  adopted.clear();
  auto impl = std::make_unique<Impl>();
  if (!open_impl(*impl, table_name, relay_ip, relay_ip6, error)) return nullptr;
  std::string why;
  const Existing found = existing_table(*impl, why, error);
  if (found == Existing::Foreign || found == Existing::Error) return nullptr;
  std::string replaced = found == Existing::Unknown ? kNotOursComment : "";
  if (found == Existing::Ours) {
    if (why.empty() && shape_matches(*impl, why) && adopt_elements(*impl, adopted, why)) {
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
