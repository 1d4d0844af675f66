// The forwarder's table: checking that nf_tables can be used (probe), making
// it (create), and telling our tables from another instance's (the comment
// names the relay addresses). Taking over the table a previous process of this
// relay left (adopt) is in nft_adopt.cpp. Part of nft_forwarder.h's
// implementation.
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
          batch, [&](Batch& b) { return put_ruleset(b, name, RelayAddresses{}, devices); }, be) !=
      0) {
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
                             const std::optional<IpAddress>& relay_ip6, std::string& error) {
  if (std::string why; !check_nft_table_name(table_name, why)) {
    error = "invalid nftables table name: " + why;
    return false;
  }
  if (relay_ip.is_any()) {
    error = "kernel forwarding needs the relay's own IPv4 address, not 0.0.0.0";
    return false;
  }
  if (relay_ip6 && (relay_ip6->is_v4() || relay_ip6->is_v4_mapped() || relay_ip6->is_any())) {
    error = "kernel forwarding needs the relay's own IPv6 address, not " + format_ip(*relay_ip6);
    return false;
  }
  im.table = table_name;
  im.relay = RelayAddresses{relay_ip, relay_ip6};
  if (int err = im.nl.open()) {
    error = describe_errno(err, "cannot open a netlink socket to nf_tables");
    return false;
  }
  if (!im.routes.open(error) || !hookable_devices(im.routes, im.devices, im.hooked, error))
    return false;
  std::string watch_error;
  if (!im.routes.watch(relay_ip6.has_value(), watch_error))
    LOG_WARN(
        "kernel forwarding: %s; route changes reach kernel-forwarded streams only when "
        "they are handed over again",
        watch_error.c_str());
  return true;
}

NftForwarder::Existing NftForwarder::existing_table(Impl& im, std::string& why,
                                                    std::string& error) {
  why.clear();
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
  if (who->ip == im.relay.ip) {
    // The same relay (its IPv4 address), maybe with another IPv6 address.
    if (who->ip6 != im.relay.ip6)
      why = who->ip6 ? "made for IPv6 address " + format_ip(*who->ip6) +
                           (im.relay.ip6 ? ", not " + format_ip(*im.relay.ip6) : ", now none")
                     : "made without an IPv6 address, now " + format_ip(*im.relay.ip6);
    return Existing::Ours;
  }
  error = "nftables table netdev " + im.table + " belongs to the relay at " + format_ipv4(who->ip) +
          " (its comment says so), another mediaproxy instance on this host; it is left alone: "
          "set a different nft_table for the relay at " +
          format_ipv4(im.relay.ip);
  return Existing::Foreign;
}

bool NftForwarder::install_ruleset(Impl& im, const std::string& replaced, std::string& error) {
  BatchError be;
  if (im.nl.transact(
          im.batch, [&](Batch& b) { return put_ruleset(b, im.table, im.relay, im.devices); }, be) !=
      0) {
    error = ruleset_error(be, im.table);
    return false;
  }
  if (!replaced.empty())
    LOG_WARN("kernel forwarding: nftables table netdev %s already existed (%s); replaced",
             im.table.c_str(), replaced.c_str());
  std::string names;
  for (const auto& d : im.devices) names += (names.empty() ? "" : ", ") + d;
  std::string addresses = format_ipv4(im.relay.ip);
  if (im.relay.ip6) addresses += " and " + format_ip(*im.relay.ip6);
  LOG_INFO(
      "kernel forwarding: created nftables table netdev %s for relay address %s, hooked on %s "
      "(new interfaces are hooked when they appear)",
      im.table.c_str(), addresses.c_str(), names.c_str());
  return true;
}

std::unique_ptr<NftForwarder> NftForwarder::create(const std::string& table_name, Ipv4 relay_ip,
                                                   const std::optional<IpAddress>& relay_ip6,
                                                   std::string& error) {
  auto impl = std::make_unique<Impl>();
  if (!open_impl(*impl, table_name, relay_ip, relay_ip6, error)) return nullptr;
  std::string ignored;
  const Existing found = existing_table(*impl, ignored, error);
  if (found == Existing::Foreign || found == Existing::Error) return nullptr;
  const char* replaced = found == Existing::None ? ""
                         : found == Existing::Ours
                             ? "left by an instance of this relay that did not exit cleanly"
                             : kNotOursComment;
  if (!install_ruleset(*impl, replaced, error)) return nullptr;
  return std::unique_ptr<NftForwarder>(new NftForwarder(std::move(impl)));
}

void NftForwarder::keep_table_on_exit(bool keep) {
  impl_->keep_table = keep;
}

}  // namespace mp::kernel
