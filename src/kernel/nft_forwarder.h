// In-kernel forwarding of latched media streams through nftables.
//
// Owns one nftables table per relay instance and its contents, programmed
// with libnftnl/libmnl over a netlink socket (no `nft` subprocess, no
// iptables, no conntrack). Design (measured in bench/kernel-designs/): a
// filter chain on the *ingress* hook of every non-loopback interface looks
// up UDP packets to the relay address by (source address, source port,
// destination port) in the `fwd_map` map (named so because `fwd` is an nft
// keyword); a hit rewrites addresses and ports from the element's value and
// sends the packet straight out of the interface towards the next hop
// (`fwd`), so it never enters the host's IP stack. Only the latched peer is
// forwarded by the kernel; packets from any other source fall through to the
// userspace socket. Every element has its own counter (packets and bytes as
// seen at the IP layer). The next hop and interface of each rule come from a
// route lookup when the rule is added. Streams are map elements; the
// ruleset itself never changes after start. Changes are queued and committed
// in netlink batches of at most kMaxBatchElements elements. With an IPv6
// relay address the same chain forwards IPv6 streams too, through a second
// map (`fwd6_map`) and rule; a stream between an IPv4 and an IPv6 party
// (bridged) cannot be forwarded by nftables and stays in userspace.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/address.h"
#include "common/ip_address.h"

namespace mp::kernel {

// One direction of one sub-stream: packets from `from` to relay port
// `relay_in_port` leave from relay port `relay_out_port` towards `to`. Both
// parties are of one family: IPv4 streams use the relay's IPv4 address,
// IPv6 streams its IPv6 address.
struct ForwardRule {
  IpEndpoint from;
  uint16_t relay_in_port = 0;
  uint16_t relay_out_port = 0;
  IpEndpoint to;
};

struct Counters {
  uint64_t packets = 0;
  uint64_t bytes = 0;
};

// A rule found in the table of a previous process (adopt()).
struct AdoptedRule {
  uint32_t id = 0;  // installed: remove(id) and read_counters() work on it
  ForwardRule rule;
  Counters counters;  // the element's, which kept counting while no process ran
};

class NftForwarder {
 public:
  static constexpr size_t kMaxBatchElements = 500;

  // Checks that nf_tables is usable here (netlink socket, CAP_NET_ADMIN,
  // ingress chains, fwd) by creating and deleting a scratch table. On failure `why` says what is
  // missing in words an operator can act on.
  static bool probe(std::string& why);

  // Creates table `table_name` (family netdev) with its chain (hooked on
  // every non-loopback interface present now) and map for `relay_ip` and,
  // if `relay_ip6` is given (an IPv6 address), the IPv6 map and rule for it. A table of that name
  // left by a crashed instance of this relay is deleted first (reclaimed) and this is logged. The
  // table's comment names the relay addresses; a table whose comment names another relay IPv4
  // address belongs to another instance and is never touched: nullptr, and `error` says so.
  // nullptr with `error` on failure.
  static std::unique_ptr<NftForwarder> create(const std::string& table_name, Ipv4 relay_ip,
                                              const std::optional<IpAddress>& relay_ip6,
                                              std::string& error);
  // Re-attaches to the table a previous process of this relay left (a
  // restart): its elements stay in the kernel untouched, so no packet falls
  // through while we start; each gets a fresh id and is returned in `adopted`
  // (the caller remove()s and commit()s those it does not claim). The chain
  // is hooked on the interfaces present now. No table: as create(); a table
  // of an older version or of another shape (also one made for another
  // IPv6 address, or without one when `relay_ip6` is given, or the reverse):
  // replaced as create() does; another relay's table: nullptr and `error`,
  // untouched.
  static std::unique_ptr<NftForwarder> adopt(const std::string& table_name, Ipv4 relay_ip,
                                             const std::optional<IpAddress>& relay_ip6,
                                             std::vector<AdoptedRule>& adopted, std::string& error);
  // Leaves the table and its elements in the kernel when the forwarder is
  // destroyed (a hand-over to a new process); by default it is deleted.
  void keep_table_on_exit(bool keep);
  // Deletes the table.
  ~NftForwarder();
  NftForwarder(const NftForwarder&) = delete;
  NftForwarder& operator=(const NftForwarder&) = delete;

  // Queues the installation of a rule; returns its id (never 0). Takes effect
  // at commit(). Installing a rule whose (from, relay_in_port) key is already
  // installed replaces it: the old element is deleted and the new one added in
  // the same transaction, and the old id is reported through commit()'s
  // `final_counters`.
  //
  // Returns nullopt with `error` if the kernel cannot send to rule.to: no
  // unicast route, a local address, or an interface the chain does not hook
  // (such a stream stays in userspace); if `from` and `to` are of different
  // families (an IPv4-IPv6 bridged stream: nftables cannot change a
  // packet's IP version); if the rule is IPv6 and the forwarder has no IPv6
  // address; or if 16,777,215 rules are live. One id space for both families.
  std::optional<uint32_t> add(const ForwardRule& rule, std::string& error);
  // Queues the removal of rule `id` (unknown ids are ignored). Its final
  // counters are read during commit() just before the transaction that
  // deletes the element (one request per kMaxBatchElements removed keys, or
  // one dump of the map when many rules go) and reported through
  // `final_counters` once it is deleted.
  void remove(uint32_t id);
  // Sends the queued changes (removals first, then additions) in batches.
  // `final_counters(id, counters)` is called exactly once for every id that
  // leaves: removed, replaced, or, with zero counters, removed or replaced
  // before it was ever committed, or refused by the kernel (then commit()
  // also returns false and `error` says why). It is called after all kernel
  // work of this commit and may queue new changes. On errors other than a
  // refused element (permissions, memory, timeout) the changes not done stay
  // queued for the next commit().
  bool commit(const std::function<void(uint32_t id, const Counters&)>& final_counters,
              std::string& error);

  // One dump of the `fwd_map` map (and of `fwd6_map`): calls `visit(id,
  // counters)` for every installed rule. One netlink request per map however
  // many rules are installed.
  bool read_counters(const std::function<void(uint32_t id, const Counters&)>& visit,
                     std::string& error);

  // A descriptor that becomes readable when links, addresses or routes (IPv4,
  // and IPv6 with an IPv6 address) change (-1 if it could not be opened);
  // then call follow_network().
  int network_change_fd() const;
  // Reads the pending change notifications and, if there were any, hooks
  // the ingress chain on interfaces that appeared since, and moves every
  // installed rule whose route changed to its new next hop and interface
  // (same id; counters continue). Returns the number of rules moved; false
  // only on a netlink failure, with `error`.
  bool follow_network(size_t& moved, std::string& error);

  // Rules whose elements are in the kernel (as of the last commit()).
  size_t installed() const;
  const std::string& table_name() const;

  struct Impl;

 private:
  explicit NftForwarder(std::unique_ptr<Impl> impl);
  // The steps of create() and adopt() (nft_table.cpp, nft_adopt.cpp).
  enum class Existing { None, Ours, Unknown, Foreign, Error };
  static bool open_impl(Impl& im, const std::string& table_name, Ipv4 relay_ip,
                        const std::optional<IpAddress>& relay_ip6, std::string& error);
  // `why`: for Ours, "" or why the table cannot be adopted as it is.
  static Existing existing_table(Impl& im, std::string& why, std::string& error);
  // `replaced`: why a table of that name is replaced ("" if there was none).
  static bool install_ruleset(Impl& im, const std::string& replaced, std::string& error);
  static bool shape_matches(Impl& im, std::string& error);
  static bool adopt_elements(Impl& im, std::vector<AdoptedRule>& adopted, std::string& error);
  // Moves installed rules whose route changed (nft_follow.cpp).
  static bool reroute(Impl& im, size_t& moved, std::string& error);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mp::kernel
