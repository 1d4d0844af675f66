// The forwarder's nftables objects and their netlink encoding (private to
// src/kernel/).
//
// Owns the shape of the ruleset (netdev table, the `fwd_map` map, the
// ingress chain and its one rule, described expression for expression in
// nft_ruleset.cpp), the byte layout of the map's keys and values, and the
// encoding and parsing of set elements. Table, chains, sets and rules go
// through libnftnl; elements are written and parsed with libmnl directly,
// because there can be tens of thousands of them per call and libnftnl
// allocates per element.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/address.h"
#include "kernel/nft_netlink.h"

struct nlattr;

namespace mp::kernel::detail {

// The map of streams. Not `fwd`: that is an nft keyword (the netdev fwd
// statement), and a map of that name cannot be named on the nft command line.
inline constexpr const char* kFwdMap = "fwd_map";

// The chain that carries the one rule.
inline constexpr const char* kIngressChain = "ingress";

// Appends the messages that create table `table` (family netdev) with
// everything in it for `relay_ip`, its chain hooked on `devices`. The table is first added (a no-op
// if it exists) and deleted, so a table of that name left behind is replaced in the same
// transaction. false if the batch has no room.
bool put_ruleset(Batch& batch, const std::string& table, Ipv4 relay_ip,
                 const std::vector<std::string>& devices);
// Appends an update of the ingress chain that hooks it on `devices` too
// (existing hooks stay).
bool put_ingress_devices(Batch& batch, const std::string& table,
                         const std::vector<std::string>& devices);
// Appends the deletion of table `table`.
bool put_delete_table(Batch& batch, const std::string& table);
// The table's comment, which names the relay it belongs to, and the inverse
// (nullopt for a comment not in that form, e.g. of an older version).
std::string table_comment(Ipv4 relay_ip);
std::optional<Ipv4> table_owner(const std::string& comment);
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
// (for `relay_ip`), otherwise false with what differs in `error`, in words
// for a log line. The chain's interfaces are not compared (adopt() hooks the
// current ones).
bool fwd_map_matches(const nlmsghdr* nlh, std::string& error);
bool ingress_chain_matches(const nlmsghdr* nlh, std::string& error);
bool ingress_rule_matches(const nlmsghdr* nlh, Ipv4 relay_ip, std::string& error);
// Writes into `buf` (at least 1 KiB) a GETSETELEM dump request for `set`.
nlmsghdr* build_dump_elements(char* buf, uint32_t seq, const std::string& table, const char* set);

// Key of the fwd map: saddr . sport . dport as the registers hold them
// (network byte order, each port padded to 4 bytes).
struct FwdKey {
  uint8_t bytes[12];
};
FwdKey make_fwd_key(Ipv4 saddr, uint16_t sport, uint16_t dport);
// The inverse; false if `len` is not a key's length.
bool parse_fwd_key(const uint8_t* bytes, uint32_t len, Ipv4& saddr, uint16_t& sport,
                   uint16_t& dport);

// Value of the fwd map, as the rule's registers take it: new source address,
// new destination address, new source port and destination port (network
// order), next hop address, output interface index (host order).
struct FwdValue {
  uint8_t bytes[20];
};
FwdValue make_fwd_value(Ipv4 saddr, Ipv4 daddr, uint16_t sport, uint16_t dport, Ipv4 next_hop,
                        uint32_t ifindex);
// The inverse; false if `len` is not a value's length.
bool parse_fwd_value(const uint8_t* bytes, uint32_t len, Ipv4& saddr, Ipv4& daddr, uint16_t& sport,
                     uint16_t& dport, Ipv4& next_hop, uint32_t& ifindex);

// Appends the element list of one set to a message started with Batch::add()
// or build_element_request(). Elements are a key and, for maps being filled,
// data; both are copied as given.
class ElementWriter {
 public:
  ElementWriter(nlmsghdr* nlh, const std::string& table, const char* set);
  void add(const void* key, uint32_t key_len, const void* data = nullptr, uint32_t data_len = 0);
  // Closes the list; returns the number of elements written.
  size_t finish();
  // Bytes in the message so far.
  size_t size() const;

 private:
  nlmsghdr* nlh_;
  nlattr* list_;
  size_t count_ = 0;
};

// Writes into `buf` (at least Batch::kMaxMessage bytes) the header of a
// GETSETELEM request for given keys, to be filled with an ElementWriter.
nlmsghdr* build_element_request(char* buf, uint32_t seq);

// One element of a set as the kernel reports it.
struct ElementView {
  const uint8_t* key = nullptr;
  uint32_t key_len = 0;
  const uint8_t* data = nullptr;
  uint32_t data_len = 0;
  bool has_counter = false;
  uint64_t packets = 0;
  uint64_t bytes = 0;
};
// Calls `visit` for every element of a NEWSETELEM message (dump part or
// GETSETELEM answer). false if the message is malformed.
bool parse_elements(const nlmsghdr* nlh, const std::function<void(const ElementView&)>& visit);

}  // namespace mp::kernel::detail
