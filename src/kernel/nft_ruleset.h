// The forwarder's nftables objects and their netlink encoding (private to
// src/kernel/).
//
// Owns the shape of the ruleset (netdev table, the `fwd_map` map and, with
// an IPv6 relay address, the `fwd6_map` map, the ingress chain and its
// rules, one per family, described expression for expression in
// nft_ruleset.cpp), the table's comment that names the relay, and the shape
// check adopt() runs on a table it finds. Table, chains, sets and rules go
// through libnftnl; the maps' elements are nft_elements.h's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/address.h"
#include "common/ip_address.h"
#include "kernel/nft_elements.h"
#include "kernel/nft_netlink.h"

namespace mp::kernel::detail {

// The chain that carries the rules.
inline constexpr const char* kIngressChain = "ingress";

// The relay addresses a table is made for: IPv4 always, IPv6 optionally.
struct RelayAddresses {
  Ipv4 ip;
  std::optional<IpAddress> ip6;
  friend bool operator==(const RelayAddresses& a, const RelayAddresses& b) {
    return a.ip == b.ip && a.ip6 == b.ip6;
  }
};

// Appends the messages that create table `table` (family netdev) with
// everything in it for `relay` (the IPv6 map and rule only with relay.ip6),
// its chain hooked on `devices`. The table is first added (a no-op if it
// exists) and deleted, so a table of that name left behind is replaced in
// the same transaction. false if the batch has no room.
bool put_ruleset(Batch& batch, const std::string& table, const RelayAddresses& relay,
                 const std::vector<std::string>& devices);
// Appends an update of the ingress chain that hooks it on `devices` too
// (existing hooks stay).
bool put_ingress_devices(Batch& batch, const std::string& table,
                         const std::vector<std::string>& devices);
// Appends the deletion of table `table`.
bool put_delete_table(Batch& batch, const std::string& table);
// The table's comment, which names the relay addresses it belongs to
// ("mediaproxy relay 10.0.0.1: ..." or "mediaproxy relay 10.0.0.1 and
// fd00::1: ..."), and the inverse (nullopt for a comment not in that form,
// e.g. of an older version or made by hand).
std::string table_comment(const RelayAddresses& relay);
std::optional<RelayAddresses> table_owner(const std::string& comment);
// The comment of a GETTABLE answer ("" if it has none); false if malformed.
bool parse_table_comment(const nlmsghdr* nlh, std::string& comment);
// Writes into `buf` (at least 1 KiB) a GETTABLE request for `table`.
nlmsghdr* build_get_table(char* buf, uint32_t seq, const std::string& table);
// Writes into `buf` (at least 1 KiB) a GETSET request for `set`.
nlmsghdr* build_get_set(char* buf, uint32_t seq, const std::string& table, const char* set);
// Writes into `buf` (at least 1 KiB) a GETCHAIN request for `chain`.
nlmsghdr* build_get_chain(char* buf, uint32_t seq, const std::string& table, const char* chain);
// Writes into `buf` (at least 1 KiB) a GETRULE dump request for the rules of `chain`.
nlmsghdr* build_dump_rules(char* buf, uint32_t seq, const std::string& table, const char* chain);
// The shape check of a table found at start (adopt()): each takes one
// answer and returns true if it describes the object put_ruleset() makes
// (for `relay`), otherwise false with what differs in `error`, in words
// for a log line. The chain's interfaces are not compared (adopt() hooks the
// current ones). The chain holds ingress_rule_count() rules, the IPv4 one
// (index 0) first.
bool fwd_map_matches(const nlmsghdr* nlh, IpAddress::Family family, std::string& error);
bool ingress_chain_matches(const nlmsghdr* nlh, std::string& error);
size_t ingress_rule_count(const RelayAddresses& relay);
bool ingress_rule_matches(const nlmsghdr* nlh, size_t index, std::string& error);

}  // namespace mp::kernel::detail
