// The nftables table that steers the relay's media ports to its tproxy
// receive sockets ([Relay] media_receive; relay/tproxy_socket.h).
//
// Owns table `inet <name>`: one chain on the prerouting hook (type filter,
// priority mangle) with a rule per IP family,
//   meta nfproto ipv4  (UDP, not a fragment)  ip daddr RELAY
//       udp dport LO-HI  tproxy ip to RELAY:PORT
//   meta nfproto ipv6  (next header UDP)  ip6 daddr RELAY6
//       udp dport LO-HI  tproxy ip6 to [RELAY6]:PORT6
// The address is given explicitly: without one the kernel looks the socket
// up at the receiving interface's primary address, which is not the relay's
// on loopback or on a host with several. tproxy only assigns the datagram
// to the socket when that socket exists and is transparent; otherwise the
// datagram goes on to its port's own socket, so a missing socket loses
// nothing. Offloaded streams never get here: the forwarder's netdev ingress
// chain (nft_forwarder.h) runs before prerouting.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/address.h"
#include "common/ip_address.h"

namespace mp::kernel {

class NftTproxy {
 public:
  // Creates table `inet <name>` as above, or replaces one of that name in
  // the same transaction (no moment without a rule). The IPv6 rule only
  // with `relay_ip6`. nullptr with the reason on failure.
  static std::unique_ptr<NftTproxy> create(const std::string& name, Ipv4 relay_ip, uint16_t port,
                                           const std::optional<IpAddress>& relay_ip6,
                                           uint16_t port6, uint16_t port_lo, uint16_t port_hi,
                                           std::string& error);
  // Deletes table `inet <name>` if there is one. False with the reason if
  // nf_tables refused (other than: no such table).
  static bool remove(const std::string& name, std::string& error);

  ~NftTproxy();  // deletes the table, unless keep_table_on_exit(true)
  NftTproxy(const NftTproxy&) = delete;
  NftTproxy& operator=(const NftTproxy&) = delete;
  // A live upgrade leaves the table to the successor, with the sockets.
  void keep_table_on_exit(bool keep) { keep_ = keep; }
  const std::string& name() const { return name_; }

 private:
  explicit NftTproxy(std::string name) : name_(std::move(name)) {}
  std::string name_;
  bool keep_ = false;
};

}  // namespace mp::kernel
