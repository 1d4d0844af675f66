// Implementation of the forwarder's nftables objects (nft_ruleset.h).
//
// Design "netdev ingress + fwd" (measured against the earlier prerouting
// rewrite in bench/kernel-designs/): one chain on the ingress hook of every
// non-loopback interface, one map lookup that yields the whole new header
// and the way out, two header writes and a `fwd`, so a forwarded packet
// never enters the IP stack of the relay host (no routing, no forward or
// postrouting hooks). In nft terms:
//   map fwd_map { type ipv4_addr . ipv4_addr . ipv4_addr
//                 : ipv4_addr . ipv4_addr . ipv4_addr . ipv4_addr . iface_index; counter; }
//     key:   latched source address . relay address . source port and relay
//            port (4 raw bytes, printed as an address)
//     value: new source (relay) . new destination . new source port and
//            destination port (4 raw bytes, printed as an address) . next hop
//            . output interface
//   chain ingress { type filter hook ingress devices = { ... } priority filter; policy accept; }
// and the one rule, which nft's syntax cannot express (a map value written
// in two slices), as netlink expressions:
//   [ meta load protocol => reg 1 ] [ cmp eq reg 1 0x0008 ]
//   [ payload load 4b @ network header + 6 => reg 1 ]     (UDP, not a fragment:
//   [ bitwise reg 1 = ( reg 1 & 0xff00ff3f ) ^ 0 ]         fragments go to the
//   [ cmp eq reg 1 0x11000000 ]                            stack)
//   [ payload load 8b @ network header + 12 => reg 8 ]
//   [ payload load 4b @ transport header + 0 => reg 10 ]
//   [ lookup reg 8 set fwd_map dreg 8 ]                  (20 bytes: reg 8..12)
//   [ payload write reg 10 => 4b @ transport header + 0 csum_type 0 csum_flags 0x1 ]
//   [ payload write reg 8 => 8b @ network header + 12 csum_type 1 csum_off 10 csum_flags 0x1 ]
//   [ fwd sreg_dev reg 12 sreg_addr reg 11 nfproto 2 ]
// Eleven expressions (the rule had sixteen before: a compare of the
// destination address, `meta l4proto`, a separate fragment test and a load
// per port; bench/kernel-designs, design nd2k against nd2p). A lookup miss ends the rule:
// the packet goes on into the IP stack and
// reaches the userspace socket. The address write fixes the IP header
// checksum (inet, offset 10) and, through the L4 flag, the UDP checksum of
// the pseudo-header; the port write goes through the same UDP-aware update
// (which leaves "no checksum" (0) alone, where nft's own csum_off 6 would
// corrupt it). `fwd ip to` resolves the next hop's link-layer address
// through the neighbour table and decrements the TTL, as routing would.
// With an IPv6 relay address the table also has
//   map fwd6_map { type ipv6_addr . ipv6_addr . ipv4_addr
//                  : ipv6_addr . ipv6_addr . ipv4_addr . ipv6_addr . iface_index; counter; }
// (the same key and value in IPv6 addresses: 36 and 56 bytes) and a second
// rule in the same chain:
//   [ meta load protocol => reg 1 ] [ cmp eq reg 1 0xdd86 ]
//   [ payload load 1b @ network header + 6 => reg 1 ] [ cmp eq reg 1 0x11 ]
//   [ payload load 32b @ network header + 8 => reg 8 ]
//   [ payload load 4b @ transport header + 0 => reg 16 ]
//   [ lookup reg 8 set fwd6_map dreg 8 ]                 (56 bytes: reg 8..21)
//   [ payload write reg 16 => 4b @ transport header + 0 csum_type 0 csum_flags 0x1 ]
//   [ payload write reg 8 => 32b @ network header + 8 csum_type 0 csum_flags 0x1 ]
//   [ fwd sreg_dev reg 21 sreg_addr reg 17 nfproto 10 ]
// The next header field must be UDP itself: packets with extension headers
// (fragments among them) go to the IP stack. IPv6 has no header checksum;
// the UDP checksum, mandatory there, is updated for the new pseudo-header
// by the L4 flag of the address write. `fwd ip6 to` resolves the next hop
// (link-local gateways too: the interface comes with it) through the
// neighbour table and decrements the hop limit. A stream between an IPv4
// and an IPv6 party cannot be forwarded here: nftables cannot change a
// packet's IP version.
// Because the rules read as garbage in `nft list ruleset`, such a listing
// cannot be loaded back: the man page says so.
#include "kernel/nft_ruleset.h"

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/if_ether.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <netinet/in.h>

#include <cstring>

#include "common/error.h"
#include "kernel/nft_expr.h"

namespace mp::kernel::detail {

namespace {

// nft's datatype ids (src/datatype.h) and byte orders, used for the set
// declarations and the user data that lets `nft list` print elements.
constexpr uint32_t kTypeIpAddr = 7;
constexpr uint32_t kTypeIp6Addr = 8;
constexpr uint32_t kTypeInetService = 13;
constexpr uint32_t kTypeIfindex = 20;
constexpr uint32_t kTypeBits = 6;
constexpr uint32_t kByteorderInvalid = 0;
// fwd_map's key and value types as nft declares concatenations; the two
// ports of the key and of the value are one 4-byte field, printed as an
// IPv4 address.
constexpr uint32_t kFwdKeyType =
    (((kTypeIpAddr << kTypeBits) | kTypeIpAddr) << kTypeBits) | kTypeIpAddr;
constexpr uint32_t kFwdValueType =
    (((((((kTypeIpAddr << kTypeBits) | kTypeIpAddr) << kTypeBits) | kTypeIpAddr) << kTypeBits) |
      kTypeIpAddr)
     << kTypeBits) |
    kTypeIfindex;
// fwd6_map's: the ports' 4 bytes are still printed as an IPv4 address.
constexpr uint32_t kFwd6KeyType =
    (((kTypeIp6Addr << kTypeBits) | kTypeIp6Addr) << kTypeBits) | kTypeIpAddr;
constexpr uint32_t kFwd6ValueType =
    (((((((kTypeIp6Addr << kTypeBits) | kTypeIp6Addr) << kTypeBits) | kTypeIpAddr) << kTypeBits) |
      kTypeIp6Addr)
     << kTypeBits) |
    kTypeIfindex;

constexpr const char* kTableCommentPrefix = "mediaproxy relay ";
constexpr const char* kTableCommentSuffix = ": in-kernel forwarding of latched media streams";
constexpr const char* kIngressComment = "mediaproxy: rewrite and send out packets of latched peers";
constexpr const char* kIngress6Comment =
    "mediaproxy: rewrite and send out IPv6 packets of latched peers";
constexpr const char* kAnd = " and ";

// Set ids tie the rules to sets created in the same transaction.
enum SetId : uint32_t { kFwdId = 1, kFwd6Id = 2 };

bool put_table(Batch& batch, uint16_t type, uint16_t flags, const std::string& name,
               const std::string& comment = std::string()) {
  return detail::put_table(batch, type, flags, name, comment, kTableFamily);
}

bool put_map(Batch& batch, const std::string& table, const char* name, uint32_t id,
             uint32_t key_type, uint32_t key_len, uint32_t key_order, uint32_t data_type,
             uint32_t data_len, uint32_t data_order, bool counter) {
  Set s(nftnl_set_alloc());
  nftnl_set_set_str(s.p, NFTNL_SET_TABLE, table.c_str());
  nftnl_set_set_str(s.p, NFTNL_SET_NAME, name);
  nftnl_set_set_u32(s.p, NFTNL_SET_FLAGS, NFT_SET_MAP);
  nftnl_set_set_u32(s.p, NFTNL_SET_KEY_TYPE, key_type);
  nftnl_set_set_u32(s.p, NFTNL_SET_KEY_LEN, key_len);
  nftnl_set_set_u32(s.p, NFTNL_SET_DATA_TYPE, data_type);
  nftnl_set_set_u32(s.p, NFTNL_SET_DATA_LEN, data_len);
  nftnl_set_set_u32(s.p, NFTNL_SET_ID, id);
  Udata ud(nftnl_udata_buf_alloc(64));
  nftnl_udata_put_u32(ud.p, NFTNL_UDATA_SET_KEYBYTEORDER, key_order);
  nftnl_udata_put_u32(ud.p, NFTNL_UDATA_SET_DATABYTEORDER, data_order);
  nftnl_set_set_data(s.p, NFTNL_SET_USERDATA, nftnl_udata_buf_data(ud.p),
                     nftnl_udata_buf_len(ud.p));
  if (counter) nftnl_set_add_expr(s.p, nftnl_expr_alloc("counter"));  // owned by the set
  nlmsghdr* nlh = batch.add(NFT_MSG_NEWSET, NLM_F_CREATE);
  if (!nlh) return false;
  nftnl_set_nlmsg_build_payload(nlh, s.p);
  batch.close(nlh);
  return true;
}

// Expression builders; the rule owns what they return.
// A header write from register `sreg` that keeps both checksums right: the
// IP header checksum through csum_type inet at offset 10 (network header
// only), and the UDP checksum through the L4 flag, which goes through the
// kernel's UDP-aware update (nft_payload_l4csum_update: skips checksum 0,
// keeps CHECKSUM_COMPLETE skb->csum right). nft itself emits csum_type inet,
// csum_off 6 for port writes, which turns the "no checksum" value 0 into a
// wrong one, so receivers would drop those packets.
// IPv6 (`ip_checksum` false) has no header checksum: only the UDP one is updated.
nftnl_expr* payload_write(uint32_t base, uint32_t offset, uint32_t len, uint32_t sreg,
                          bool ip_checksum = true) {
  nftnl_expr* e = nftnl_expr_alloc("payload");
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_SREG, sreg);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
  const bool ip_header = ip_checksum && base == NFT_PAYLOAD_NETWORK_HEADER;
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_CSUM_TYPE,
                     ip_header ? NFT_PAYLOAD_CSUM_INET : NFT_PAYLOAD_CSUM_NONE);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_CSUM_OFFSET, ip_header ? 10 : 0);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_FLAGS, NFT_PAYLOAD_L4CSUM_PSEUDOHDR);
  return e;
}

nftnl_expr* lookup(const char* set, uint32_t set_id, uint32_t reg) {
  nftnl_expr* e = nftnl_expr_alloc("lookup");
  nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SREG, reg);
  nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_DREG, reg);
  nftnl_expr_set_str(e, NFTNL_EXPR_LOOKUP_SET, set);
  nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SET_ID, set_id);
  return e;
}

bool put_rule(Batch& batch, const std::string& table, const char* chain, const char* comment,
              const std::function<void(nftnl_rule*)>& fill) {
  Rule r(nftnl_rule_alloc());
  nftnl_rule_set_str(r.p, NFTNL_RULE_TABLE, table.c_str());
  nftnl_rule_set_str(r.p, NFTNL_RULE_CHAIN, chain);
  fill(r.p);
  Udata ud(nftnl_udata_buf_alloc(256));
  nftnl_udata_put_strz(ud.p, NFTNL_UDATA_RULE_COMMENT, comment);
  nftnl_rule_set_data(r.p, NFTNL_RULE_USERDATA, nftnl_udata_buf_data(ud.p),
                      nftnl_udata_buf_len(ud.p));
  return detail::put_rule(batch, r.p, kTableFamily);
}

void fill_ingress(nftnl_rule* r) {
  nftnl_rule_add_expr(r, meta_load(NFT_META_PROTOCOL));
  uint16_t ipv4 = htons(ETH_P_IP);
  nftnl_rule_add_expr(r, cmp_eq(&ipv4, 2));
  add_ipv4_udp_unfragmented(r);  // fragments go to the stack
  // ip saddr . ip daddr (adjacent: one load) . udp sport and dport (one
  // load) in 32-bit registers 00..01 and 02. The relay's own address is part
  // of every key, so a packet to another address of the host never matches.
  // (Ports loaded one by one into registers of their own make
  // `nft --debug=netlink list` of nft 1.0.6 crash.)
  nftnl_rule_add_expr(r, payload_load(NFT_PAYLOAD_NETWORK_HEADER, 12, 8, NFT_REG32_00));
  nftnl_rule_add_expr(r, payload_load(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 4, NFT_REG32_02));
  // A miss ends the rule here: the packet goes on to the userspace socket.
  // A hit fills registers 00..04 with the element's value (kFwdValueLen).
  nftnl_rule_add_expr(r, lookup(kFwdMap, kFwdId, NFT_REG32_00));
  nftnl_rule_add_expr(r, payload_write(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 4, NFT_REG32_02));
  nftnl_rule_add_expr(r, payload_write(NFT_PAYLOAD_NETWORK_HEADER, 12, 8, NFT_REG32_00));
  nftnl_expr* fwd = nftnl_expr_alloc("fwd");
  nftnl_expr_set_u32(fwd, NFTNL_EXPR_FWD_SREG_DEV, NFT_REG32_04);
  nftnl_expr_set_u32(fwd, NFTNL_EXPR_FWD_SREG_ADDR, NFT_REG32_03);
  nftnl_expr_set_u32(fwd, NFTNL_EXPR_FWD_NFPROTO, NFPROTO_IPV4);
  nftnl_rule_add_expr(r, fwd);
}

void fill_ingress6(nftnl_rule* r) {
  nftnl_rule_add_expr(r, meta_load(NFT_META_PROTOCOL));
  uint16_t ipv6 = htons(ETH_P_IPV6);
  nftnl_rule_add_expr(r, cmp_eq(&ipv6, 2));
  // The next header right after the fixed header must be UDP: extension
  // headers (a fragment header among them) send the packet to the IP stack.
  nftnl_rule_add_expr(r, payload_load(NFT_PAYLOAD_NETWORK_HEADER, 6, 1, NFT_REG_1));
  uint8_t udp = IPPROTO_UDP;
  nftnl_rule_add_expr(r, cmp_eq(&udp, 1));
  // ip6 saddr . ip6 daddr (adjacent: one load) . udp sport and dport (one
  // load) in 32-bit registers 00..07 and 08; the relay's address is part of
  // the key.
  nftnl_rule_add_expr(r, payload_load(NFT_PAYLOAD_NETWORK_HEADER, 8, 32, NFT_REG32_00));
  nftnl_rule_add_expr(r, payload_load(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 4, NFT_REG32_08));
  // A hit fills registers 00..13 with the element's value (kFwd6ValueLen):
  // saddr 00..03, daddr 04..07, ports 08, next hop 09..12, interface 13.
  nftnl_rule_add_expr(r, lookup(kFwd6Map, kFwd6Id, NFT_REG32_00));
  nftnl_rule_add_expr(r, payload_write(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 4, NFT_REG32_08, false));
  nftnl_rule_add_expr(r, payload_write(NFT_PAYLOAD_NETWORK_HEADER, 8, 32, NFT_REG32_00, false));
  nftnl_expr* fwd = nftnl_expr_alloc("fwd");
  nftnl_expr_set_u32(fwd, NFTNL_EXPR_FWD_SREG_DEV, NFT_REG32_13);
  nftnl_expr_set_u32(fwd, NFTNL_EXPR_FWD_SREG_ADDR, NFT_REG32_09);
  nftnl_expr_set_u32(fwd, NFTNL_EXPR_FWD_NFPROTO, NFPROTO_IPV6);
  nftnl_rule_add_expr(r, fwd);
}

// The expressions of rule `index` of the ingress chain (0: IPv4, 1: IPv6).
void fill_ingress_rule(nftnl_rule* r, size_t index) {
  if (index == 0)
    fill_ingress(r);
  else
    fill_ingress6(r);
}

}  // namespace

bool put_ruleset(Batch& batch, const std::string& table, const RelayAddresses& relay,
                 const std::vector<std::string>& devices) {
  const bool v6 = relay.ip6.has_value();
  return put_table(batch, NFT_MSG_NEWTABLE, NLM_F_CREATE, table) &&
         put_table(batch, NFT_MSG_DELTABLE, 0, table) &&
         put_table(batch, NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL, table,
                   table_comment(relay)) &&
         put_map(batch, table, kFwdMap, kFwdId, kFwdKeyType, kFwdKeyLen, kByteorderInvalid,
                 kFwdValueType, kFwdValueLen, kByteorderInvalid, true) &&
         (!v6 ||
          put_map(batch, table, kFwd6Map, kFwd6Id, kFwd6KeyType, kFwd6KeyLen, kByteorderInvalid,
                  kFwd6ValueType, kFwd6ValueLen, kByteorderInvalid, true)) &&
         put_base_chain(batch, table, kIngressChain, NF_NETDEV_INGRESS, 0, kTableFamily, devices) &&
         put_rule(batch, table, kIngressChain, kIngressComment,
                  [&](nftnl_rule* r) { fill_ingress(r); }) &&
         (!v6 || put_rule(batch, table, kIngressChain, kIngress6Comment,
                          [&](nftnl_rule* r) { fill_ingress6(r); }));
}

bool put_ingress_devices(Batch& batch, const std::string& table,
                         const std::vector<std::string>& devices) {
  return put_base_chain(batch, table, kIngressChain, NF_NETDEV_INGRESS, 0, kTableFamily, devices);
}

bool put_delete_table(Batch& batch, const std::string& table) {
  return put_table(batch, NFT_MSG_DELTABLE, 0, table);
}

std::string table_comment(const RelayAddresses& relay) {
  std::string who = format_ipv4(relay.ip);
  if (relay.ip6) who += kAnd + format_ip(*relay.ip6);
  return kTableCommentPrefix + who + kTableCommentSuffix;
}

std::optional<RelayAddresses> table_owner(const std::string& comment) {
  const size_t prefix = std::strlen(kTableCommentPrefix);
  const size_t suffix = std::strlen(kTableCommentSuffix);
  if (comment.size() < prefix + suffix || comment.compare(0, prefix, kTableCommentPrefix) != 0 ||
      comment.compare(comment.size() - suffix, suffix, kTableCommentSuffix) != 0)
    return std::nullopt;
  const std::string_view who =
      std::string_view(comment).substr(prefix, comment.size() - prefix - suffix);
  const size_t a = who.find(kAnd);
  RelayAddresses owner;
  auto ip = parse_ipv4(who.substr(0, a));
  if (!ip) return std::nullopt;
  owner.ip = *ip;
  if (a != std::string_view::npos) {
    owner.ip6 = parse_ip(who.substr(a + std::strlen(kAnd)));
    if (!owner.ip6 || owner.ip6->is_v4()) return std::nullopt;
  }
  return owner;
}

bool parse_table_comment(const nlmsghdr* nlh, std::string& comment) {
  comment.clear();
  Table t(nftnl_table_alloc());
  if (nftnl_table_nlmsg_parse(nlh, t.p) < 0) return false;
  uint32_t len = 0;
  const void* data = nftnl_table_get_data(t.p, NFTNL_TABLE_USERDATA, &len);
  if (!data || len == 0) return true;  // no comment: not one of ours
  nftnl_udata_parse(
      data, len,
      [](const nftnl_udata* attr, void* out) -> int {
        if (nftnl_udata_type(attr) != NFTNL_UDATA_TABLE_COMMENT) return MNL_CB_OK;
        const char* text = static_cast<const char*>(nftnl_udata_get(attr));
        const uint32_t n = nftnl_udata_len(attr);
        static_cast<std::string*>(out)->assign(text, n > 0 && text[n - 1] == '\0' ? n - 1 : n);
        return MNL_CB_OK;
      },
      &comment);
  return true;
}

nlmsghdr* build_get_table(char* buf, uint32_t seq, const std::string& table) {
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETTABLE, kTableFamily, NLM_F_ACK, seq);
  mnl_attr_put_strz(nlh, NFTA_TABLE_NAME, table.c_str());
  return nlh;
}

nlmsghdr* build_get_set(char* buf, uint32_t seq, const std::string& table, const char* set) {
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSET, kTableFamily, NLM_F_ACK, seq);
  mnl_attr_put_strz(nlh, NFTA_SET_TABLE, table.c_str());
  mnl_attr_put_strz(nlh, NFTA_SET_NAME, set);
  return nlh;
}

nlmsghdr* build_get_chain(char* buf, uint32_t seq, const std::string& table, const char* chain) {
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETCHAIN, kTableFamily, NLM_F_ACK, seq);
  mnl_attr_put_strz(nlh, NFTA_CHAIN_TABLE, table.c_str());
  mnl_attr_put_strz(nlh, NFTA_CHAIN_NAME, chain);
  return nlh;
}

nlmsghdr* build_dump_rules(char* buf, uint32_t seq, const std::string& table, const char* chain) {
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETRULE, kTableFamily, NLM_F_DUMP, seq);
  mnl_attr_put_strz(nlh, NFTA_RULE_TABLE, table.c_str());
  mnl_attr_put_strz(nlh, NFTA_RULE_CHAIN, chain);
  return nlh;
}

bool fwd_map_matches(const nlmsghdr* nlh, IpAddress::Family family, std::string& error) {
  const bool v4 = family == IpAddress::Family::V4;
  const std::string name = fwd_map_of(family);
  Set s(nftnl_set_alloc());
  if (nftnl_set_nlmsg_parse(nlh, s.p) < 0)
    return fail(error, "its map " + name + " cannot be parsed");
  auto u32 = [&](uint16_t attr) {
    return nftnl_set_is_set(s.p, attr) ? nftnl_set_get_u32(s.p, attr) : 0xffffffffu;
  };
  if (u32(NFTNL_SET_FLAGS) != NFT_SET_MAP)
    return fail(error, name + " has other flags than a plain map");
  if (u32(NFTNL_SET_KEY_TYPE) != (v4 ? kFwdKeyType : kFwd6KeyType) ||
      u32(NFTNL_SET_KEY_LEN) != (v4 ? kFwdKeyLen : kFwd6KeyLen))
    return fail(error, name + " has another key type");
  if (u32(NFTNL_SET_DATA_TYPE) != (v4 ? kFwdValueType : kFwd6ValueType) ||
      u32(NFTNL_SET_DATA_LEN) != (v4 ? kFwdValueLen : kFwd6ValueLen))
    return fail(error, name + " has another value type");
  std::vector<std::string> exprs;
  nftnl_set_expr_foreach(
      s.p,
      [](nftnl_expr* e, void* out) -> int {
        static_cast<std::vector<std::string>*>(out)->push_back(
            nftnl_expr_get_str(e, NFTNL_EXPR_NAME));
        return 0;
      },
      &exprs);
  if (exprs != std::vector<std::string>{"counter"})
    return fail(error, name + " has no element counters");
  return true;
}

bool ingress_chain_matches(const nlmsghdr* nlh, std::string& error) {
  Chain c(nftnl_chain_alloc());
  if (nftnl_chain_nlmsg_parse(nlh, c.p) < 0)
    return fail(error, "its chain ingress cannot be parsed");
  const char* type = nftnl_chain_get_str(c.p, NFTNL_CHAIN_TYPE);
  if (!nftnl_chain_is_set(c.p, NFTNL_CHAIN_HOOKNUM) ||
      nftnl_chain_get_u32(c.p, NFTNL_CHAIN_HOOKNUM) != NF_NETDEV_INGRESS || !type ||
      std::strcmp(type, "filter") != 0)
    return fail(error, "its chain ingress is not a filter chain on the ingress hook");
  if (nftnl_chain_get_s32(c.p, NFTNL_CHAIN_PRIO) != 0 ||
      nftnl_chain_get_u32(c.p, NFTNL_CHAIN_POLICY) != NF_ACCEPT)
    return fail(error, "its chain ingress has another priority or policy");
  return true;
}

namespace {

// The expressions of `r` as libnftnl prints them, one string each.
std::vector<std::string> expression_texts(nftnl_rule* r) {
  std::vector<std::string> out;
  nftnl_expr_foreach(
      r,
      [](nftnl_expr* e, void* data) -> int {
        char text[512];
        nftnl_expr_snprintf(text, sizeof text, e, NFTNL_OUTPUT_DEFAULT, 0);
        static_cast<std::vector<std::string>*>(data)->push_back(
            std::string(nftnl_expr_get_str(e, NFTNL_EXPR_NAME)) + " " + text);
        return 0;
      },
      &out);
  return out;
}

// A register number as the kernel reports it back (nft_dump_register()):
// 32-bit registers that start a 128-bit one are reported as the latter.
uint32_t as_dumped(uint32_t reg) {
  const uint32_t internal = reg <= NFT_REG_4 ? reg * 4 : reg - 4;  // in 32-bit words
  return internal % 4 == 0 ? internal / 4 : internal - 4 + NFT_REG32_00;
}

// Rewrites the expressions of `r` as the kernel reports them back: register
// numbers, and lookup flags (always reported, 0 when not inverted).
void as_dumped(nftnl_rule* r) {
  nftnl_expr_foreach(
      r,
      [](nftnl_expr* e, void*) -> int {
        static const std::pair<const char*, uint16_t> kRegisters[] = {
            {"payload", NFTNL_EXPR_PAYLOAD_DREG}, {"payload", NFTNL_EXPR_PAYLOAD_SREG},
            {"meta", NFTNL_EXPR_META_DREG},       {"cmp", NFTNL_EXPR_CMP_SREG},
            {"bitwise", NFTNL_EXPR_BITWISE_SREG}, {"bitwise", NFTNL_EXPR_BITWISE_DREG},
            {"lookup", NFTNL_EXPR_LOOKUP_SREG},   {"lookup", NFTNL_EXPR_LOOKUP_DREG},
            {"fwd", NFTNL_EXPR_FWD_SREG_DEV},     {"fwd", NFTNL_EXPR_FWD_SREG_ADDR},
        };
        const char* name = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
        for (const auto& [expr, attr] : kRegisters)
          if (std::strcmp(name, expr) == 0 && nftnl_expr_is_set(e, attr))
            nftnl_expr_set_u32(e, attr, as_dumped(nftnl_expr_get_u32(e, attr)));
        if (std::strcmp(name, "lookup") == 0 && !nftnl_expr_is_set(e, NFTNL_EXPR_LOOKUP_FLAGS))
          nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_FLAGS, 0);
        return 0;
      },
      nullptr);
}

}  // namespace

size_t ingress_rule_count(const RelayAddresses& relay) {
  return relay.ip6 ? 2 : 1;
}

bool ingress_rule_matches(const nlmsghdr* nlh, size_t index, std::string& error) {
  const std::string which = index == 0 ? "its IPv4 rule" : "its IPv6 rule";
  Rule found(nftnl_rule_alloc());
  if (nftnl_rule_nlmsg_parse(nlh, found.p) < 0) return fail(error, which + " cannot be parsed");
  Rule expected(nftnl_rule_alloc());
  fill_ingress_rule(expected.p, index);
  as_dumped(expected.p);
  const std::vector<std::string> have = expression_texts(found.p);
  const std::vector<std::string> want = expression_texts(expected.p);
  for (size_t i = 0; i < have.size() && i < want.size(); ++i)
    if (have[i] != want[i])
      return fail(error, "expression " + std::to_string(i + 1) + " of " + which + " is `" +
                             have[i] + "`, not `" + want[i] + "`");
  if (have.size() != want.size())
    return fail(error, which + " has " + std::to_string(have.size()) + " expressions, not " +
                           std::to_string(want.size()));
  return true;
}

}  // namespace mp::kernel::detail
