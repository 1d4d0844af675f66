// Implementation of the IPv4 address helpers declared in address.h.
#include "common/address.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace mp {

sockaddr_in Endpoint::to_sockaddr() const {
  sockaddr_in sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = ip.be;
  sa.sin_port = htons(port);
  return sa;
}

Endpoint Endpoint::from_sockaddr(const sockaddr_in& sa) {
  return Endpoint{Ipv4{sa.sin_addr.s_addr}, ntohs(sa.sin_port)};
}

bool Cidr::contains(Ipv4 ip) const {
  if (prefix == 0) return true;
  uint32_t mask = prefix >= 32 ? 0xffffffffu : ~(0xffffffffu >> prefix);
  return (ip.host_order() & mask) == (network.host_order() & mask);
}

namespace {
bool parse_decimal(std::string_view text, unsigned max, unsigned& out) {
  if (text.empty() || text.size() > 5) return false;
  for (char c : text)
    if (c < '0' || c > '9') return false;
  unsigned v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size() || v > max) return false;
  out = v;
  return true;
}
}  // namespace

std::optional<Ipv4> parse_ipv4(std::string_view text) {
  uint32_t h = 0;
  for (int i = 0; i < 4; ++i) {
    size_t dot = text.find('.');
    std::string_view part = i < 3 ? text.substr(0, dot) : text;
    if (i < 3 && dot == std::string_view::npos) return std::nullopt;
    if (part.size() > 3) return std::nullopt;
    unsigned v;
    if (!parse_decimal(part, 255, v)) return std::nullopt;
    h = (h << 8) | v;
    if (i < 3) text.remove_prefix(dot + 1);
  }
  return Ipv4::from_host_order(h);
}

std::string format_ipv4(Ipv4 ip) {
  // Dotted quad by hand: glibc's inet_ntop(AF_INET) formats with sprintf,
  // and this runs for every reply and record.
  const auto* b = reinterpret_cast<const unsigned char*>(&ip.be);
  char buf[INET_ADDRSTRLEN];
  char* p = buf;
  for (int i = 0; i < 4; ++i) {
    if (i) *p++ = '.';
    p = std::to_chars(p, buf + sizeof buf, b[i]).ptr;
  }
  return std::string(buf, static_cast<size_t>(p - buf));
}

std::optional<uint16_t> parse_port(std::string_view text) {
  unsigned v;
  if (!parse_decimal(text, 65535, v)) return std::nullopt;
  return static_cast<uint16_t>(v);
}

std::optional<Endpoint> parse_endpoint(std::string_view text) {
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  auto ip = parse_ipv4(text.substr(0, colon));
  auto port = parse_port(text.substr(colon + 1));
  if (!ip || !port) return std::nullopt;
  return Endpoint{*ip, *port};
}

std::string format_endpoint(const Endpoint& ep) {
  return format_ipv4(ep.ip) + ":" + std::to_string(ep.port);
}

std::optional<Cidr> parse_cidr(std::string_view text) {
  size_t slash = text.find('/');
  auto ip = parse_ipv4(text.substr(0, slash));
  if (!ip) return std::nullopt;
  unsigned prefix = 32;
  if (slash != std::string_view::npos && !parse_decimal(text.substr(slash + 1), 32, prefix))
    return std::nullopt;
  return Cidr{*ip, static_cast<int>(prefix)};
}

bool is_publicly_routable(Ipv4 ip, const std::vector<Cidr>& also_routable) {
  for (const Cidr& c : also_routable)
    if (c.contains(ip)) return true;
  static const struct {
    uint32_t net;
    int prefix;
  } kSpecial[] = {
      {0x00000000, 8},  {0x0a000000, 8},  {0x64400000, 10}, {0x7f000000, 8},
      {0xa9fe0000, 16}, {0xac100000, 12}, {0xc0000000, 24}, {0xc0000200, 24},
      {0xc0586300, 24}, {0xc0a80000, 16}, {0xc6120000, 15}, {0xc6336400, 24},
      {0xcb007100, 24}, {0xe0000000, 4},  {0xf0000000, 4},  {0xffffffff, 32},
  };
  for (const auto& s : kSpecial)
    if (Cidr{Ipv4::from_host_order(s.net), s.prefix}.contains(ip)) return false;
  return true;
}

}  // namespace mp
