// Where the kernel would send a packet: route and interface lookups over
// rtnetlink, for the in-kernel forwarder.
//
// The forwarder's rule sends packets straight out of an interface (nftables
// `fwd` on the ingress hook, bypassing the IP stack), so for every stream it
// needs what routing would have decided: the output interface and the next
// hop (the gateway, or the destination itself on a directly connected
// network). RouteLookup asks the kernel (RTM_GETROUTE, like `ip route get`)
// and caches the answer per (source, destination) for as long as the kernel
// reports no link, address or route change (watch()); without that
// subscription nothing is cached. IPv4 and IPv6 alike; an IPv6 next hop
// may be link-local, which is why the interface always comes with it. Also
// lists the interfaces an ingress chain can hook.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/ip_address.h"

namespace mp::kernel {

struct NextHop {
  uint32_t ifindex = 0;  // output interface
  IpAddress via;         // gateway, or the destination itself (same family)
};

struct Interface {
  uint32_t ifindex = 0;
  std::string name;
};

class RouteLookup {
 public:
  RouteLookup() = default;
  ~RouteLookup();
  RouteLookup(const RouteLookup&) = delete;
  RouteLookup& operator=(const RouteLookup&) = delete;

  // Opens the rtnetlink socket; false with `error`.
  bool open(std::string& error);
  // The route to `dst`. false with `why` if there is none, or if it is not a
  // plain unicast route leaving through a real interface with a next hop of
  // the same family (a local address, a blackhole, unreachable...): such a
  // stream stays in userspace. `src` (the relay address, of dst's family)
  // takes part, so source-based policy routing (`ip rule from <relay> ...`)
  // is honoured as for userspace sends.
  bool resolve(const IpAddress& src, const IpAddress& dst, NextHop& out, std::string& why);

  // Every interface except loopback ones, in the namespace of the socket
  // (not of the calling thread). false with `why` on a netlink failure.
  bool interfaces(std::vector<Interface>& out, std::string& why);

  // Subscribes to link, address and IPv4 route changes (and, with `ipv6`,
  // IPv6 address and route changes) on a second, non-blocking socket
  // (watch_fd(), for the caller's event loop).
  bool watch(bool ipv6, std::string& error);
  int watch_fd() const { return watch_fd_; }
  // Reads every pending notification; true if there was any (or some were
  // lost because the socket buffer overflowed).
  bool drain_changes();

 private:
  bool ask(const IpAddress& src, const IpAddress& dst, NextHop& out, std::string& why);

  int fd_ = -1;
  int watch_fd_ = -1;
  uint32_t seq_ = 1;
  struct Answer {
    bool ok = false;
    NextHop hop;
    std::string why;
  };
  // By family, source and destination.
  using CacheKey = std::array<uint8_t, 33>;
  struct CacheKeyHash {
    size_t operator()(const CacheKey& k) const;
  };
  std::unordered_map<CacheKey, Answer, CacheKeyHash> cache_;
};

}  // namespace mp::kernel
