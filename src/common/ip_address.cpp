// IPv4 and IPv6 addresses (ip_address.h).
#include "common/ip_address.h"

#include <arpa/inet.h>

#include <cstring>

namespace mp {

namespace {

// RFC 6890 / IANA IPv6 special-purpose ranges that are not globally
// reachable, as (prefix, length).
struct Range6 {
  std::array<uint8_t, 16> prefix;
  int length;
};

bool in_range(const std::array<uint8_t, 16>& a, const Range6& r) {
  const int whole = r.length / 8;
  if (std::memcmp(a.data(), r.prefix.data(), static_cast<size_t>(whole)) != 0) return false;
  const int rest = r.length % 8;
  if (rest == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a[whole] & mask) == (r.prefix[whole] & mask);
}

const Range6 kSpecial6[] = {
    {{}, 128},                                                // :: unspecified
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128},  // ::1 loopback
    {{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48},               // 64:ff9b:1::/48 local NAT64
    {{0x01, 0x00}, 64},                                       // 100::/64 discard
    {{0x20, 0x01, 0x00, 0x00}, 23},  // 2001::/23 IETF protocols (Teredo, ORCHID, ...): not phones
    {{0x20, 0x01, 0x0d, 0xb8}, 32},  // 2001:db8::/32 documentation
    {{0x20, 0x02}, 16},              // 2002::/16 6to4
    {{0x3f, 0xff, 0x00}, 20},        // 3fff::/20 documentation
    {{0xfc}, 7},                     // fc00::/7 unique local
    {{0xfe, 0x80}, 10},              // fe80::/10 link-local
    {{0xfe, 0xc0}, 10},              // fec0::/10 site-local (old)
    {{0xff}, 8},                     // ff00::/8 multicast
};

}  // namespace

IpAddress IpAddress::from_v4(Ipv4 ip) {
  IpAddress a;
  a.family = Family::V4;
  std::memcpy(a.bytes.data(), &ip.be, 4);
  return a;
}

std::optional<Ipv4> IpAddress::v4() const {
  if (!is_v4()) return std::nullopt;
  Ipv4 ip;
  std::memcpy(&ip.be, bytes.data(), 4);
  return ip;
}

bool IpAddress::is_v4_mapped() const {
  static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return !is_v4() && std::memcmp(bytes.data(), kMapped, sizeof kMapped) == 0;
}

bool IpAddress::is_any() const {
  const size_t n = is_v4() ? 4 : 16;
  for (size_t i = 0; i < n; ++i)
    if (bytes[i] != 0) return false;
  return true;
}

SocketAddress SocketAddress::of(const IpEndpoint& ep) {
  SocketAddress a;
  if (ep.ip.is_v4()) {
    a.v4.sin_family = AF_INET;
    std::memcpy(&a.v4.sin_addr, ep.ip.bytes.data(), 4);
    a.v4.sin_port = htons(ep.port);
    a.len = sizeof(sockaddr_in);
  } else {
    a.v6.sin6_family = AF_INET6;
    std::memcpy(&a.v6.sin6_addr, ep.ip.bytes.data(), 16);
    a.v6.sin6_port = htons(ep.port);
    a.len = sizeof(sockaddr_in6);
  }
  return a;
}

IpEndpoint SocketAddress::endpoint() const {
  IpEndpoint ep;
  if (sa.sa_family == AF_INET6) {
    ep.ip.family = IpAddress::Family::V6;
    std::memcpy(ep.ip.bytes.data(), &v6.sin6_addr, 16);
    ep.port = ntohs(v6.sin6_port);
  } else if (sa.sa_family == AF_INET) {
    std::memcpy(ep.ip.bytes.data(), &v4.sin_addr, 4);
    ep.port = ntohs(v4.sin_port);
  }
  return ep;
}

bool SocketAddress::same_as(const SocketAddress& o) const {
  if (sa.sa_family != o.sa.sa_family) return false;
  if (sa.sa_family == AF_INET)
    return v4.sin_port == o.v4.sin_port && v4.sin_addr.s_addr == o.v4.sin_addr.s_addr;
  return v6.sin6_port == o.v6.sin6_port && std::memcmp(&v6.sin6_addr, &o.v6.sin6_addr, 16) == 0 &&
         v6.sin6_scope_id == o.v6.sin6_scope_id;
}

std::optional<IpAddress::Family> parse_family_digit(std::string_view text) {
  if (text == "4") return IpAddress::Family::V4;
  if (text == "6") return IpAddress::Family::V6;
  return std::nullopt;
}

std::optional<IpAddress> parse_ip(std::string_view text) {
  if (auto v4 = parse_ipv4(text)) return IpAddress::from_v4(*v4);
  // "a:b:c:d:e:f:g:h" is at most 39 characters, 45 with a dotted tail.
  if (text.empty() || text.size() > 45 || text.find(':') == std::string_view::npos)
    return std::nullopt;
  char buf[46];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  IpAddress a;
  a.family = IpAddress::Family::V6;
  if (inet_pton(AF_INET6, buf, a.bytes.data()) != 1) return std::nullopt;
  return a;
}

std::string format_ip(const IpAddress& ip) {
  if (auto v4 = ip.v4()) return format_ipv4(*v4);
  char buf[INET6_ADDRSTRLEN];
  if (!inet_ntop(AF_INET6, ip.bytes.data(), buf, sizeof buf)) return "::";
  return buf;
}

std::optional<IpEndpoint> parse_ip_endpoint(std::string_view text) {
  IpEndpoint ep;
  std::string_view host, port;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return std::nullopt;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    auto ip = parse_ip(host);
    if (!ip || ip->is_v4()) return std::nullopt;  // brackets are for IPv6 only
    ep.ip = *ip;
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    auto ip = parse_ipv4(text.substr(0, colon));  // a bare v6 host needs brackets
    if (!ip) return std::nullopt;
    ep.ip = IpAddress::from_v4(*ip);
    port = text.substr(colon + 1);
  }
  auto p = parse_port(port);
  if (!p) return std::nullopt;
  ep.port = *p;
  return ep;
}

std::string format_ip_endpoint(const IpEndpoint& ep) {
  if (ep.ip.is_v4()) return format_ip(ep.ip) + ":" + std::to_string(ep.port);
  return "[" + format_ip(ep.ip) + "]:" + std::to_string(ep.port);
}

bool is_publicly_routable(const IpAddress& ip, const std::vector<Cidr>& also_routable) {
  if (auto v4 = ip.v4()) return is_publicly_routable(*v4, also_routable);
  if (ip.is_v4_mapped()) {
    Ipv4 mapped;
    std::memcpy(&mapped.be, ip.bytes.data() + 12, 4);
    return is_publicly_routable(mapped, also_routable);
  }
  for (const Range6& r : kSpecial6)
    if (in_range(ip.bytes, r)) return false;
  return true;
}

}  // namespace mp
