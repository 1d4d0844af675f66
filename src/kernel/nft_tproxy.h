// The nftables table that steers the relay's media ports to its tproxy
// receive sockets ([Relay] media_receive; relay/tproxy_socket.h).
//
// Owns table `inet <name>`: one chain on the prerouting hook (type filter,
// priority mangle) with a rule per IP family,
//   meta nfproto ipv4  (UDP, not a fragment)  ip daddr RELAY
//       udp dport LO-HI  socket transparent 1  tproxy ip to RELAY:PORT
//   meta nfproto ipv6  (next header UDP)  ip6 daddr RELAY6
//       udp dport LO-HI  socket transparent 1  tproxy ip6 to [RELAY6]:PORT6
// `socket transparent 1` looks up the socket the datagram would reach
// without the rule and steers it only if that socket is transparent, which
// the relay's own port sockets are (media_pump.h) and other programs'
// usually are not: an unconnected socket another program bound on the
// relay's address with a port in the range (an ephemeral port of a SIP
// phone or client on the same host) keeps its datagrams, and a port no one
// has bound answers with ICMP as before. The address is given explicitly:
// without one the kernel looks the socket up at the receiving interface's
// primary address, which is not the relay's on loopback or on a host with
// several. tproxy only assigns the datagram to the tproxy socket when that
// socket exists and is transparent; otherwise the datagram goes on to its
// port's own socket, so a missing socket loses nothing. Offloaded streams
// never get here: the forwarder's netdev ingress chain (nft_forwarder.h)
// runs before prerouting.
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
  // the same transaction (no moment without a rule) if its comment names
  // `relay_ip` and the same ports and the socket it steers to is `port` or
  // bound by no one (one left by this relay: a live upgrade hands that
  // socket over, a crash closes it); a table of another relay instance on
  // the host, of a running one with the same address and ports, or not a
  // relay's, is left alone and refused. The IPv6 rule
  // only with `relay_ip6`. nullptr with the reason on failure.
  static std::unique_ptr<NftTproxy> create(const std::string& name, Ipv4 relay_ip, uint16_t port,
                                           const std::optional<IpAddress>& relay_ip6,
                                           uint16_t port6, uint16_t port_lo, uint16_t port_hi,
                                           std::string& error);
  // Deletes table `inet <name>` if there is one and it is that of the relay
  // at `relay_ip` with those ports, left behind (its socket bound by no
  // one). False with the reason if it is another's or nf_tables refused
  // (other than: no such table).
  static bool remove(const std::string& name, Ipv4 relay_ip, uint16_t port_lo, uint16_t port_hi,
                     std::string& error);

  ~NftTproxy();  // deletes the table, unless keep_table_on_exit(true)
  NftTproxy(const NftTproxy&) = delete;
  NftTproxy& operator=(const NftTproxy&) = delete;
  // A live upgrade leaves the table to the successor, with the sockets.
  void keep_table_on_exit(bool keep) { keep_ = keep; }
  const std::string& name() const { return name_; }

 private:
  NftTproxy(std::string name, Ipv4 relay_ip, uint16_t port_lo, uint16_t port_hi, uint16_t port)
      : name_(std::move(name)),
        relay_ip_(relay_ip),
        port_lo_(port_lo),
        port_hi_(port_hi),
        port_(port) {}
  std::string name_;
  Ipv4 relay_ip_;
  uint16_t port_lo_, port_hi_, port_;
  bool keep_ = false;
};

}  // namespace mp::kernel
