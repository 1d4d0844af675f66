// Implementation of the tproxy table (nft_tproxy.h): its messages, built
// with libnftnl and sent as one transaction through nft_netlink.h.
#include "kernel/nft_tproxy.h"

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "kernel/nft_expr.h"
#include "kernel/nft_netlink.h"
#include "kernel/nft_ruleset.h"
#include "kernel/tproxy_comment.h"

namespace mp::kernel {

using detail::add_ipv4_udp_unfragmented;
using detail::Batch;
using detail::BatchError;
using detail::cmp;
using detail::cmp_eq;
using detail::describe_errno;
using detail::immediate;
using detail::meta_load;
using detail::Netlink;
using detail::payload_load;
using detail::Rule;

namespace {

constexpr uint16_t kInet = NFPROTO_INET;
constexpr const char* kChain = "prerouting";

// One family's rule (see the header). `relay` is 4 or 16 bytes.
bool put_family_rule(Batch& batch, const std::string& table, bool v6, const uint8_t* relay,
                     uint16_t port, uint16_t lo, uint16_t hi) {
  Rule rule(nftnl_rule_alloc());
  nftnl_rule* r = rule.p;
  nftnl_rule_set_str(r, NFTNL_RULE_TABLE, table.c_str());
  nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, kChain);
  nftnl_rule_add_expr(r, meta_load(NFT_META_NFPROTO));
  const uint8_t nfproto = v6 ? NFPROTO_IPV6 : NFPROTO_IPV4;
  nftnl_rule_add_expr(r, cmp_eq(&nfproto, 1));
  if (v6) {
    // Next header UDP itself: extension headers (fragments among them) go
    // to the stack, which reassembles them for the port's socket.
    const uint8_t udp = IPPROTO_UDP;
    nftnl_rule_add_expr(r, payload_load(NFT_PAYLOAD_NETWORK_HEADER, 6, 1));
    nftnl_rule_add_expr(r, cmp_eq(&udp, 1));
    nftnl_rule_add_expr(r, payload_load(NFT_PAYLOAD_NETWORK_HEADER, 24, 16));
    nftnl_rule_add_expr(r, cmp_eq(relay, 16));
  } else {
    add_ipv4_udp_unfragmented(r);  // fragments go to the stack
    nftnl_rule_add_expr(r, payload_load(NFT_PAYLOAD_NETWORK_HEADER, 16, 4));
    nftnl_rule_add_expr(r, cmp_eq(relay, 4));
  }
  // Ports in network order compare bytewise as numbers.
  const uint16_t lo_be = htons(lo), hi_be = htons(hi), port_be = htons(port);
  nftnl_rule_add_expr(r, payload_load(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2));
  nftnl_rule_add_expr(r, cmp(NFT_CMP_GTE, &lo_be, 2));
  nftnl_rule_add_expr(r, cmp(NFT_CMP_LTE, &hi_be, 2));
  // Only a port whose socket is the relay's (transparent): a datagram for
  // another program's socket on the relay's address, or for a port nobody
  // has bound, goes on as if there were no rule.
  nftnl_expr* sock = nftnl_expr_alloc("socket");
  nftnl_expr_set_u32(sock, NFTNL_EXPR_SOCKET_KEY, NFT_SOCKET_TRANSPARENT);
  nftnl_expr_set_u32(sock, NFTNL_EXPR_SOCKET_DREG, NFT_REG_1);
  nftnl_rule_add_expr(r, sock);
  const uint8_t transparent = 1;
  nftnl_rule_add_expr(r, cmp_eq(&transparent, 1));
  nftnl_rule_add_expr(r, immediate(NFT_REG_2, relay, v6 ? 16 : 4));
  nftnl_rule_add_expr(r, immediate(NFT_REG_3, &port_be, 2));
  nftnl_expr* tp = nftnl_expr_alloc("tproxy");
  nftnl_expr_set_u32(tp, NFTNL_EXPR_TPROXY_FAMILY, nfproto);
  nftnl_expr_set_u32(tp, NFTNL_EXPR_TPROXY_REG_ADDR, NFT_REG_2);
  nftnl_expr_set_u32(tp, NFTNL_EXPR_TPROXY_REG_PORT, NFT_REG_3);
  nftnl_rule_add_expr(r, tp);
  return detail::put_rule(batch, r, kInet);
}

bool put_table(Batch& batch, uint16_t type, uint16_t flags, const std::string& name,
               const std::string& comment) {
  return detail::put_table(batch, type, flags, name, comment, kInet);
}

// Whether a socket is bound to relay_ip:port now (a bind there fails).
bool port_in_use(Ipv4 relay_ip, uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  std::memcpy(&sa.sin_addr, &relay_ip.be, 4);
  const bool in_use =
      ::bind(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0 && errno == EADDRINUSE;
  ::close(fd);
  return in_use;
}

// Whether table inet `name` may be replaced or deleted by the relay at
// `relay_ip` with media ports [port_lo, port_hi] whose tproxy socket has
// port `own_port` (0: none): there is none, or its comment names that
// address and those ports (its IPv6 address may have changed) and the
// socket it steers to is `own_port` or gone (a crash left it). Otherwise
// false with the reason: another relay instance on this host (or something
// else) made it, or one with the same address and ports runs, and it is
// left alone.
bool may_replace(Netlink& nl, const std::string& name, Ipv4 relay_ip, uint16_t port_lo,
                 uint16_t port_hi, uint16_t own_port, std::string& error) {
  alignas(nlmsghdr) char buf[512];
  nlmsghdr* req = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETTABLE, kInet, NLM_F_ACK, nl.take_seq());
  mnl_attr_put_strz(req, NFTA_TABLE_NAME, name.c_str());
  std::string comment;
  bool parsed = false;
  const int err = nl.request(
      req, [&](const nlmsghdr* nlh) { parsed = detail::parse_table_comment(nlh, comment); });
  if (err == ENOENT) return true;
  if (err != 0) {
    error = describe_errno(err, "cannot read nftables table inet " + name);
    return false;
  }
  const auto owner = parsed ? parse_tproxy_comment(comment) : std::nullopt;
  const std::string left_alone = "; it is left alone: set a different nft_table for the relay at " +
                                 format_ipv4(relay_ip) + " with ports " + std::to_string(port_lo) +
                                 "-" + std::to_string(port_hi);
  if (!owner || owner->relay_ip != relay_ip || owner->port_lo != port_lo ||
      owner->port_hi != port_hi) {
    error = "nftables table inet " + name + " exists and is not this relay's (" +
            (comment.empty() ? std::string("it has no comment")
                             : "its comment: \"" + log_safe(comment, 120) + "\"") +
            ")" + left_alone;
    return false;
  }
  const uint16_t steered = owner->port;
  if (steered != 0 && steered != own_port && port_in_use(relay_ip, steered)) {
    error = "nftables table inet " + name + " steers to " + format_ipv4(relay_ip) + ":" +
            std::to_string(steered) +
            ", a socket that is bound: another relay with this address and these ports is "
            "running" +
            left_alone;
    return false;
  }
  return true;
}

bool delete_table(const std::string& name, Ipv4 relay_ip, uint16_t port_lo, uint16_t port_hi,
                  uint16_t own_port, std::string& error) {
  Netlink nl;
  if (int err = nl.open()) {
    error = describe_errno(err, "cannot open a netlink socket to nf_tables");
    return false;
  }
  if (!may_replace(nl, name, relay_ip, port_lo, port_hi, own_port, error)) return false;
  Batch batch;
  BatchError be;
  const int err = nl.transact(
      batch, [&](Batch& b) { return put_table(b, NFT_MSG_DELTABLE, 0, name, ""); }, be);
  if (err == 0 || be.err == ENOENT) return true;
  error = describe_errno(be.err ? be.err : err, "cannot delete nftables table inet " + name);
  return false;
}

}  // namespace

std::unique_ptr<NftTproxy> NftTproxy::create(const std::string& name, Ipv4 relay_ip, uint16_t port,
                                             const std::optional<IpAddress>& relay_ip6,
                                             uint16_t port6, uint16_t port_lo, uint16_t port_hi,
                                             std::string& error) {
  Netlink nl;
  if (int err = nl.open()) {
    error = describe_errno(err, "cannot open a netlink socket to nf_tables");
    return nullptr;
  }
  if (!may_replace(nl, name, relay_ip, port_lo, port_hi, port, error)) return nullptr;
  const std::string comment =
      format_tproxy_comment(TproxyTableOwner{relay_ip, relay_ip6, port_lo, port_hi, port});
  uint8_t v4[4];
  std::memcpy(v4, &relay_ip.be, 4);
  Batch batch;
  BatchError be;
  const int err = nl.transact(
      batch,
      [&](Batch& b) {
        // Added (a no-op if it exists) and deleted, so that one left behind
        // is replaced within this transaction.
        return put_table(b, NFT_MSG_NEWTABLE, NLM_F_CREATE, name, "") &&
               put_table(b, NFT_MSG_DELTABLE, 0, name, "") &&
               put_table(b, NFT_MSG_NEWTABLE, NLM_F_CREATE, name, comment) &&
               detail::put_base_chain(b, name, kChain, NF_INET_PRE_ROUTING, NF_IP_PRI_MANGLE,
                                      kInet) &&
               put_family_rule(b, name, false, v4, port, port_lo, port_hi) &&
               (!relay_ip6 ||
                put_family_rule(b, name, true, relay_ip6->bytes.data(), port6, port_lo, port_hi));
      },
      be);
  if (err != 0) {
    error = describe_errno(be.err ? be.err : err, "cannot create nftables table inet " + name);
    if (be.err == ENOENT || be.err == EOPNOTSUPP)
      error +=
          " (the kernel may lack nftables tproxy or socket: CONFIG_NFT_TPROXY, "
          "CONFIG_NFT_SOCKET)";
    return nullptr;
  }
  return std::unique_ptr<NftTproxy>(new NftTproxy(name, relay_ip, port_lo, port_hi, port));
}

bool NftTproxy::remove(const std::string& name, Ipv4 relay_ip, uint16_t port_lo, uint16_t port_hi,
                       std::string& error) {
  return delete_table(name, relay_ip, port_lo, port_hi, 0, error);
}

NftTproxy::~NftTproxy() {
  if (keep_) return;
  std::string error;
  if (!delete_table(name_, relay_ip_, port_lo_, port_hi_, port_, error))
    LOG_WARN("%s", error.c_str());
}

}  // namespace mp::kernel
