// IPv4 and IPv6 addresses as one value, and UDP endpoints of either family.
//
// The relay's media path (sockets, latching, session state) carries these;
// Ipv4/Endpoint (address.h) remain for what is IPv4 only (the stock module
// protocol, listening addresses). Parsing is strict:
// a dotted quad (address.h's rules) or RFC 4291 text without zone index;
// formatting is RFC 5952 (lower case, the longest run of two or more zero
// fields shortened to "::"). Endpoints are "a.b.c.d:port" and
// "[v6]:port", the bracket form every log line, record and management
// answer will print. is_publicly_routable() extends spec D.5's RFC 6890
// test to IPv6's special ranges; an IPv4-mapped address is judged as the
// IPv4 address it maps. Pure functions, unit tested and fuzzed.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

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

  IpAddress() = default;  // 0.0.0.0
  // An IPv4 address is an IpAddress (lossless, so implicit).
  IpAddress(Ipv4 ip) { *this = from_v4(ip); }  // NOLINT(google-explicit-constructor)
  static IpAddress from_v4(Ipv4 ip);
  // 0.0.0.0 or :: (the hold address of SDP, "unknown" in records).
  static IpAddress any(Family f) {
    IpAddress a;
    a.family = f;
    return a;
  }
  bool is_v4() const { return family == Family::V4; }
  bool is_v6() const { return family == Family::V6; }
  bool is_any() const;
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

  IpEndpoint() = default;
  IpEndpoint(const IpAddress& a, uint16_t p) : ip(a), port(p) {}
  // An IPv4 endpoint is an IpEndpoint (lossless, so implicit).
  IpEndpoint(const Endpoint& e) : ip(e.ip), port(e.port) {}  // NOLINT(google-explicit-constructor)
  bool empty() const { return ip.is_any() && port == 0; }
  friend bool operator==(const IpEndpoint& a, const IpEndpoint& b) {
    return a.ip == b.ip && a.port == b.port;
  }
  friend bool operator!=(const IpEndpoint& a, const IpEndpoint& b) { return !(a == b); }
};

// A socket address of either family, as the system calls take and fill it.
// Big enough for both; `len` says which is in use (0: none).
struct SocketAddress {
  union {
    sockaddr sa;
    sockaddr_in v4;
    sockaddr_in6 v6;
  };
  socklen_t len = 0;

  SocketAddress() : v6{} {}
  static SocketAddress of(const IpEndpoint& ep);
  // The endpoint of an AF_INET or AF_INET6 address (an IPv4-mapped IPv6
  // source stays IPv6: a relay socket is bound to one family).
  IpEndpoint endpoint() const;
  bool same_as(const SocketAddress& o) const;
};

// "4" / "6" and back (the `families` header, rtpproxy replies).
inline char family_digit(IpAddress::Family f) {
  return f == IpAddress::Family::V6 ? '6' : '4';
}
std::optional<IpAddress::Family> parse_family_digit(std::string_view text);

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
