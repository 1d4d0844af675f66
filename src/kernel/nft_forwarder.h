// In-kernel forwarding of latched media streams through nftables.
//
// Owns one nftables table per relay instance and its contents, programmed
// with libnftnl/libmnl over a netlink socket (no `nft` subprocess, no
// iptables, no conntrack). Design (measured in shared/notes/platform-findings.md,
// "stateless header rewrite"): a filter chain on prerouting at raw priority
// matches UDP packets to the relay address whose (source address, source
// port, destination port) is a key of the `fwd` map, marks them notrack,
// rewrites source port, destination address and destination port from
// id-keyed maps, and a postrouting chain sets the source address to the
// relay address. Only the latched peer is forwarded by the kernel; packets
// from any other source fall through to the userspace socket. Every element
// of the `fwd` map has its own counter (packets and bytes as seen at the IP
// layer). Streams are map elements; the ruleset itself never changes after
// start. Changes are queued and committed in netlink batches of at most
// kMaxBatchElements elements.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/address.h"

namespace mp::kernel {

// One direction of one sub-stream: packets from `from` to relay port
// `relay_in_port` leave from relay port `relay_out_port` towards `to`.
struct ForwardRule {
  Endpoint from;
  uint16_t relay_in_port = 0;
  uint16_t relay_out_port = 0;
  Endpoint to;
};

struct Counters {
  uint64_t packets = 0;
  uint64_t bytes = 0;
};

class NftForwarder {
 public:
  static constexpr size_t kMaxBatchElements = 500;

  // Checks that nf_tables is usable here (netlink socket, CAP_NET_ADMIN) by
  // creating and deleting a scratch table. On failure `why` says what is
  // missing in words an operator can act on.
  static bool probe(std::string& why);

  // Creates table `table_name` (family ip) with its chains and maps for
  // `relay_ip`. A table of that name left by a crashed instance is deleted
  // first (reclaimed) and this is logged. nullptr with `error` on failure.
  static std::unique_ptr<NftForwarder> create(const std::string& table_name, Ipv4 relay_ip,
                                              std::string& error);
  // Deletes the table.
  ~NftForwarder();
  NftForwarder(const NftForwarder&) = delete;
  NftForwarder& operator=(const NftForwarder&) = delete;

  // Queues the installation of a rule; returns its id (never 0). Takes effect
  // at commit(). Installing a rule whose (from, relay_in_port) key is already
  // installed replaces it.
  uint32_t add(const ForwardRule& rule);
  // Queues the removal of rule `id`. Its final counters are read (in one
  // request for all queued removals) during commit() and reported through
  // `final_counters` before the element is deleted.
  void remove(uint32_t id);
  // Sends the queued changes (removals first, then additions) in batches.
  // `final_counters(id, counters)` is called for each removed rule.
  bool commit(const std::function<void(uint32_t id, const Counters&)>& final_counters,
              std::string& error);

  // One dump of the `fwd` map: calls `visit(id, counters)` for every
  // installed rule. One netlink request however many rules are installed.
  bool read_counters(const std::function<void(uint32_t id, const Counters&)>& visit,
                     std::string& error);

  size_t installed() const;
  const std::string& table_name() const;

  struct Impl;

 private:
  explicit NftForwarder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mp::kernel
