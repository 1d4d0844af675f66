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
// subscription nothing is cached. Also lists the interfaces an ingress chain
// can hook.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/address.h"

namespace mp::kernel {

struct NextHop {
  uint32_t ifindex = 0;  // output interface
  Ipv4 via;              // gateway, or the destination itself
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
  // plain unicast route leaving through a real interface (a local address,
  // a blackhole, unreachable...): such a stream stays in userspace.
  // `src` (the relay address) takes part, so source-based policy routing
  // (`ip rule from <relay> ...`) is honoured as for userspace sends.
  bool resolve(Ipv4 src, Ipv4 dst, NextHop& out, std::string& why);

  // Every interface except loopback ones, in the namespace of the socket
  // (not of the calling thread). false with `why` on a netlink failure.
  bool interfaces(std::vector<Interface>& out, std::string& why);

  // Subscribes to link, address and IPv4 route changes on a second,
  // non-blocking socket (watch_fd(), for the caller's event loop).
  bool watch(std::string& error);
  int watch_fd() const { return watch_fd_; }
  // Reads every pending notification; true if there was any (or some were
  // lost because the socket buffer overflowed).
  bool drain_changes();

 private:
  bool ask(Ipv4 src, Ipv4 dst, NextHop& out, std::string& why);

  int fd_ = -1;
  int watch_fd_ = -1;
  uint32_t seq_ = 1;
  struct Answer {
    bool ok = false;
    NextHop hop;
    std::string why;
  };
  std::unordered_map<uint64_t, Answer> cache_;  // by source << 32 | destination
};

}  // namespace mp::kernel
