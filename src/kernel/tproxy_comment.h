// The comment of the relay's tproxy table (nft_tproxy.h), which says whose
// table it is: "mediaproxy relay IP[ and IP6]: media ports LO-HI to one
// socket per family at port PORT", PORT being the IPv4 tproxy socket's (a
// table written before the port was recorded lacks " at port PORT"). A
// relay replaces or deletes the table only when the comment names its own
// address and ports, and the socket PORT is its own or gone. Pure
// functions: formatting, and parsing text read back from the kernel (which
// anyone with CAP_NET_ADMIN can write: bounded, strict, nullopt on anything
// else).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/address.h"
#include "common/ip_address.h"

namespace mp::kernel {

struct TproxyTableOwner {
  Ipv4 relay_ip;
  std::optional<IpAddress> relay_ip6;  // an IPv6 address, when the relay has one
  uint16_t port_lo = 0, port_hi = 0;   // the media ports the rule steers
  uint16_t port = 0;                   // the IPv4 tproxy socket's; 0: not recorded
  friend bool operator==(const TproxyTableOwner& a, const TproxyTableOwner& b) {
    return a.relay_ip == b.relay_ip && a.relay_ip6 == b.relay_ip6 && a.port_lo == b.port_lo &&
           a.port_hi == b.port_hi && a.port == b.port;
  }
};

std::string format_tproxy_comment(const TproxyTableOwner& owner);
// The owner a comment names, or nullopt if it is not such a comment
// (another program's, or longer than any the relay writes).
std::optional<TproxyTableOwner> parse_tproxy_comment(std::string_view comment);

}  // namespace mp::kernel
