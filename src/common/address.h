// IPv4 addresses and UDP endpoints as plain values.
//
// Owns parsing and formatting of dotted-quad addresses, "ip:port" endpoints
// and CIDR ranges, and the "is this address publicly routable" test of the
// spec (section D.5, RFC 6890 special ranges). Everything here is a pure
// function over bytes so it can be unit tested and fuzzed. Addresses are kept
// in network byte order, exactly as they sit in a sockaddr_in.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mp {

struct Ipv4 {
  uint32_t be = 0;  // network byte order

  bool is_any() const { return be == 0; }
  uint32_t host_order() const { return ntohl(be); }
  static Ipv4 from_host_order(uint32_t h) { return Ipv4{htonl(h)}; }
  friend bool operator==(Ipv4 a, Ipv4 b) { return a.be == b.be; }
  friend bool operator!=(Ipv4 a, Ipv4 b) { return a.be != b.be; }
};

struct Endpoint {
  Ipv4 ip;
  uint16_t port = 0;  // host byte order

  bool empty() const { return ip.is_any() && port == 0; }
  sockaddr_in to_sockaddr() const;
  static Endpoint from_sockaddr(const sockaddr_in& sa);
  friend bool operator==(const Endpoint& a, const Endpoint& b) {
    return a.ip == b.ip && a.port == b.port;
  }
  friend bool operator!=(const Endpoint& a, const Endpoint& b) { return !(a == b); }
};

struct Cidr {
  Ipv4 network;
  int prefix = 32;
  bool contains(Ipv4 ip) const;
};

// Strict dotted quad: four decimal octets 0-255, no leading '+', no spaces.
std::optional<Ipv4> parse_ipv4(std::string_view text);
std::string format_ipv4(Ipv4 ip);

// "a.b.c.d:port"; port 0-65535.
std::optional<Endpoint> parse_endpoint(std::string_view text);
std::string format_endpoint(const Endpoint& ep);

// "a.b.c.d/len" or a bare address (= /32).
std::optional<Cidr> parse_cidr(std::string_view text);

// Decimal port 0-65535 with no sign and no surrounding spaces.
std::optional<uint16_t> parse_port(std::string_view text);

// True unless the address lies in one of the RFC 6890 special ranges listed in
// the spec (D.5), and not inside one of `also_routable`.
bool is_publicly_routable(Ipv4 ip, const std::vector<Cidr>& also_routable);

}  // namespace mp
