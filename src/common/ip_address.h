// IPv4 and IPv6 addresses as one value, and UDP endpoints of either family.
//
// Groundwork for IPv6 media (issue 17): the relay, the protocols and the
// kernel path still use Ipv4/Endpoint (address.h); this is the value type
// they will carry, with its text forms settled first. Parsing is strict:
// a dotted quad (address.h's rules) or RFC 4291 text without zone index;
// formatting is RFC 5952 (lower case, the longest run of two or more zero
// fields shortened to "::"). Endpoints are "a.b.c.d:port" and
// "[v6]:port", the bracket form every log line, record and management
// answer will print. is_publicly_routable() extends spec D.5's RFC 6890
// test to IPv6's special ranges; an IPv4-mapped address is judged as the
// IPv4 address it maps. Pure functions, unit tested and fuzzed.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/address.h"

namespace mp {

struct IpAddress {
  enum class Family : uint8_t { V4 = 4, V6 = 6 };
  Family family = Family::V4;
  std::array<uint8_t, 16> bytes{};  // network order; IPv4 in the first 4

  static IpAddress from_v4(Ipv4 ip);
  bool is_v4() const { return family == Family::V4; }
  // The IPv4 address of an IPv4 value (not of an IPv4-mapped IPv6 one).
  std::optional<Ipv4> v4() const;
  // ::ffff:a.b.c.d
  bool is_v4_mapped() const;
  friend bool operator==(const IpAddress& a, const IpAddress& b) {
    return a.family == b.family && a.bytes == b.bytes;
  }
  friend bool operator!=(const IpAddress& a, const IpAddress& b) { return !(a == b); }
};

struct IpEndpoint {
  IpAddress ip;
  uint16_t port = 0;  // host order
  friend bool operator==(const IpEndpoint& a, const IpEndpoint& b) {
    return a.ip == b.ip && a.port == b.port;
  }
};

// A dotted quad or an IPv6 address (no brackets, no "%zone").
std::optional<IpAddress> parse_ip(std::string_view text);
std::string format_ip(const IpAddress& ip);

// "a.b.c.d:port" or "[v6]:port"; port 0-65535.
std::optional<IpEndpoint> parse_ip_endpoint(std::string_view text);
std::string format_ip_endpoint(const IpEndpoint& ep);

// False for RFC 6890's special ranges of either family (and IPv4-mapped
// addresses of special IPv4 ones), unless inside one of `also_routable`
// (IPv4 ranges, as the configuration gives them).
bool is_publicly_routable(const IpAddress& ip, const std::vector<Cidr>& also_routable);

}  // namespace mp
