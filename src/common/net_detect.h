// Finding the host's own addresses without sending anything.
//
// Owns the default for [Relay] relay_ip: the IPv4 address of the interface
// that holds the default route (read from /proc/net/route and getifaddrs),
// and the check that an address (IPv4 or IPv6) is configured on this host.
#pragma once

#include <optional>
#include <string>

#include "common/address.h"
#include "common/ip_address.h"

namespace mp {

// Address of the default-route interface, or nullopt with `why` set.
std::optional<Ipv4> default_route_address(std::string& why);

// True if `ip` is assigned to a local interface.
bool is_local_address(Ipv4 ip);
// Likewise for either family (an IPv6 address still in duplicate address
// detection is not usable yet, and counts as not local).
bool is_local_address(const IpAddress& ip);

}  // namespace mp
