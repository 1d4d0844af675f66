// The forwarder's map elements: their byte layout and their netlink encoding
// (private to src/kernel/).
//
// Owns the two maps' names, the layout of their keys and values (as the
// ingress rules' registers hold them, see nft_ruleset.cpp) for IPv4
// (`fwd_map`) and IPv6 (`fwd6_map`), and the writing and parsing of set
// element lists. Elements are written and parsed with libmnl directly,
// because there can be tens of thousands of them per call and libnftnl
// allocates per element. The family of a key or value is told by its
// length. Pure functions apart from the netlink buffers they fill.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "common/ip_address.h"

struct nlattr;
struct nlmsghdr;

namespace mp::kernel::detail {

// The maps of streams, one per family. Not `fwd`: that is an nft keyword
// (the netdev fwd statement), and a map of that name cannot be named on the
// nft command line.
inline constexpr const char* kFwdMap = "fwd_map";
inline constexpr const char* kFwd6Map = "fwd6_map";
inline const char* fwd_map_of(IpAddress::Family family) {
  return family == IpAddress::Family::V4 ? kFwdMap : kFwd6Map;
}

// Key: source address . destination (relay) address . source port and
// destination port (4 bytes, network order): 12 bytes for IPv4, 36 for IPv6,
// as the fields lie in the headers, so the rule fills it with two loads and
// needs no separate compare of the destination address.
inline constexpr uint32_t kFwdKeyLen = 12;
inline constexpr uint32_t kFwd6KeyLen = 36;
// Value: new source address . new destination address . new source port
// and destination port (4 bytes, network order) . next hop address .
// output interface index (host order): 20 bytes for IPv4, 56 for IPv6.
inline constexpr uint32_t kFwdValueLen = 20;
inline constexpr uint32_t kFwd6ValueLen = 56;

// What a key says: packets from `saddr`:`sport` to relay port `dport`.
struct RuleKey {
  IpAddress saddr;
  uint16_t sport = 0;
  uint16_t dport = 0;
  friend bool operator==(const RuleKey& a, const RuleKey& b) {
    return a.saddr == b.saddr && a.sport == b.sport && a.dport == b.dport;
  }
};
struct RuleKeyHash {
  size_t operator()(const RuleKey& k) const;
};

struct FwdKey {
  uint8_t bytes[kFwd6KeyLen];
  uint32_t len;  // kFwdKeyLen or kFwd6KeyLen
};
// The key of packets from key.saddr:key.sport to `relay`:key.dport; `relay`
// is of key.saddr's family.
FwdKey make_fwd_key(const RuleKey& key, const IpAddress& relay);
// The inverse; nullopt if `len` is no key's length. The relay address the
// key names goes to `relay` when given.
std::optional<RuleKey> parse_fwd_key(const uint8_t* bytes, uint32_t len,
                                     IpAddress* relay = nullptr);

// What a value says. The three addresses are of one family.
struct FwdTarget {
  IpAddress saddr;  // the relay's address
  IpAddress daddr;
  uint16_t sport = 0;  // relay port
  uint16_t dport = 0;
  IpAddress next_hop;  // gateway, or daddr itself
  uint32_t ifindex = 0;
};
struct FwdValue {
  uint8_t bytes[kFwd6ValueLen];
  uint32_t len;  // kFwdValueLen or kFwd6ValueLen
};
// The family is saddr's; daddr and next_hop must be of the same.
FwdValue make_fwd_value(const FwdTarget& target);
// The inverse; nullopt if `len` is no value's length.
std::optional<FwdTarget> parse_fwd_value(const uint8_t* bytes, uint32_t len);

// Writes into `buf` (at least 1 KiB) a GETSETELEM dump request for `set`.
nlmsghdr* build_dump_elements(char* buf, uint32_t seq, const std::string& table, const char* set);
// Writes into `buf` (at least Batch::kMaxMessage bytes) the header of a
// GETSETELEM request for given keys, to be filled with an ElementWriter.
nlmsghdr* build_element_request(char* buf, uint32_t seq);

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
