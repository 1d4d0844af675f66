// The forwarder's table: checking that nf_tables can be used (probe), making
// it (create), taking over the one a previous process of this relay left
// (adopt), and telling our tables from another instance's (the comment names
// the relay address). Part of nft_forwarder.h's implementation.
#include "kernel/nft_forwarder.h"

#include "kernel/nft_forwarder_impl.h"

namespace mp::kernel {

bool NftForwarder::probe(std::string& why) {
  Netlink nl;
  if (int err = nl.open()) {
    why = describe_errno(err, "cannot open a netlink socket to nf_tables");
    return false;
  }
  static std::atomic<unsigned> counter{0};
  std::string name =
      "mediaproxy_probe_" + std::to_string(getpid()) + "_" + std::to_string(counter.fetch_add(1));
  RouteLookup routes;
  std::vector<std::string> devices;
  std::vector<uint32_t> hooked;
  if (!routes.open(why) || !hookable_devices(routes, devices, hooked, why)) return false;
  Batch batch;
  BatchError be;
  if (nl.transact(
          batch, [&](Batch& b) { return put_ruleset(b, name, Ipv4{}, devices); }, be) != 0) {
    why = ruleset_error(be, name);
    return false;
  }
  if (nl.transact(
          batch, [&](Batch& b) { return put_delete_table(b, name); }, be) != 0) {
    why = describe_errno(be.err, "cannot delete the scratch nftables table netdev " + name +
                                     " (delete it by hand: nft delete table netdev " + name + ")");
    return false;
  }
  return true;
}

bool NftForwarder::open_impl(Impl& im, const std::string& table_name, Ipv4 relay_ip,
                             std::string& error) {
  if (std::string why = check_nft_table_name(table_name); !why.empty()) {
    error = "invalid nftables table name: " + why;
    return false;
  }
  if (relay_ip.is_any()) {
    error = "kernel forwarding needs the relay's own IPv4 address, not 0.0.0.0";
    return false;
  }
  im.table = table_name;
  im.relay_ip = relay_ip;
  if (int err = im.nl.open()) {
    error = describe_errno(err, "cannot open a netlink socket to nf_tables");
    return false;
  }
  if (!im.routes.open(error) || !hookable_devices(im.routes, im.devices, im.hooked, error))
    return false;
  std::string watch_error;
  if (!im.routes.watch(watch_error))
    LOG_WARN(
        "kernel forwarding: %s; route changes reach kernel-forwarded streams only when "
        "they are handed over again",
        watch_error.c_str());
  return true;
}

NftForwarder::Existing NftForwarder::existing_table(Impl& im, Ipv4& owner, std::string& error) {
  nlmsghdr* req = build_get_table(im.request_buf.data(), im.nl.take_seq(), im.table);
  std::string comment;
  bool parsed = false;
  const int err =
      im.nl.request(req, [&](const nlmsghdr* nlh) { parsed = parse_table_comment(nlh, comment); });
  if (err == ENOENT) return Existing::None;
  if (err != 0) {
    error = describe_errno(err, "cannot read nftables table netdev " + im.table);
    return Existing::Error;
  }
  const auto who = parsed ? table_owner(comment) : std::nullopt;
  if (!who) return Existing::Unknown;
  owner = *who;
  if (owner == im.relay_ip) return Existing::Ours;
  error = "nftables table netdev " + im.table + " belongs to the relay at " + format_ipv4(owner) +
          " (its comment says so), another mediaproxy instance on this host; it is left alone: "
          "set a different nft_table for the relay at " +
          format_ipv4(im.relay_ip);
  return Existing::Foreign;
}

bool NftForwarder::install_ruleset(Impl& im, bool stale, std::string& error) {
  BatchError be;
  if (im.nl.transact(
          im.batch, [&](Batch& b) { return put_ruleset(b, im.table, im.relay_ip, im.devices); },
          be) != 0) {
    error = ruleset_error(be, im.table);
    return false;
  }
  if (stale)
    LOG_WARN(
        "kernel forwarding: nftables table netdev %s already existed (left by an instance of this "
        "relay that did not exit cleanly, or of an older version); deleted and recreated",
        im.table.c_str());
  std::string names;
  for (const auto& d : im.devices) names += (names.empty() ? "" : ", ") + d;
  LOG_INFO(
      "kernel forwarding: created nftables table netdev %s for relay address %s, hooked on %s "
      "(new interfaces are hooked when they appear)",
      im.table.c_str(), format_ipv4(im.relay_ip).c_str(), names.c_str());
  return true;
}

std::unique_ptr<NftForwarder> NftForwarder::create(const std::string& table_name, Ipv4 relay_ip,
                                                   std::string& error) {
  auto impl = std::make_unique<Impl>();
  if (!open_impl(*impl, table_name, relay_ip, error)) return nullptr;
  Ipv4 owner;
  const Existing found = existing_table(*impl, owner, error);
  if (found == Existing::Foreign || found == Existing::Error) return nullptr;
  if (!install_ruleset(*impl, found != Existing::None, error)) return nullptr;
  return std::unique_ptr<NftForwarder>(new NftForwarder(std::move(impl)));
}

void NftForwarder::keep_table_on_exit(bool keep) {
  impl_->keep_table = keep;
}

// ---- adoption after a restart --------------------------------------------

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
    error = err ? describe_errno(err, "cannot read its map") : "its map holds foreign elements";
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
  if (found == Existing::Ours) {
    std::string why;
    if (adopt_elements(*impl, adopted, why)) {
      LOG_INFO("kernel forwarding: adopted nftables table netdev %s with %zu rule(s)",
               table_name.c_str(), adopted.size());
      return std::unique_ptr<NftForwarder>(new NftForwarder(std::move(impl)));
    }
    LOG_WARN("kernel forwarding: the nftables table netdev %s left behind cannot be adopted (%s)",
             table_name.c_str(), why.c_str());
    adopted.clear();
    impl->entries.clear();
    impl->kernel_owner.clear();
  }
  if (!install_ruleset(*impl, found != Existing::None, error)) return nullptr;
  return std::unique_ptr<NftForwarder>(new NftForwarder(std::move(impl)));
}

}  // namespace mp::kernel
