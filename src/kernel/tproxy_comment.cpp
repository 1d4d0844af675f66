// Implementation of the tproxy table's comment (tproxy_comment.h).
#include "kernel/tproxy_comment.h"

#include <charconv>

namespace mp::kernel {

namespace {

constexpr std::string_view kPrefix = "mediaproxy relay ";
constexpr std::string_view kAnd = " and ";
constexpr std::string_view kPorts = ": media ports ";
constexpr std::string_view kPerFamily = " to one socket per family";
constexpr std::string_view kAtPort = " at port ";
// Longer than any comment the relay writes (two addresses, three ports).
constexpr size_t kMaxLength = 200;

// A port number in decimal, all of `text`; 1..65535.
std::optional<uint16_t> port_of(std::string_view text) {
  if (text.empty() || text.size() > 5 || text[0] == '0') return std::nullopt;
  uint32_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value == 0 || value > 65535)
    return std::nullopt;
  return static_cast<uint16_t>(value);
}

}  // namespace

std::string format_tproxy_comment(const TproxyTableOwner& owner) {
  std::string out(kPrefix);
  out += format_ipv4(owner.relay_ip);
  if (owner.relay_ip6) {
    out += kAnd;
    out += format_ip(*owner.relay_ip6);
  }
  out += kPorts;
  out += std::to_string(owner.port_lo) + "-" + std::to_string(owner.port_hi);
  out += kPerFamily;
  if (owner.port) {
    out += kAtPort;
    out += std::to_string(owner.port);
  }
  return out;
}

std::optional<TproxyTableOwner> parse_tproxy_comment(std::string_view text) {
  if (text.size() > kMaxLength || text.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  text.remove_prefix(kPrefix.size());
  const size_t colon = text.find(kPorts);
  if (colon == std::string_view::npos) return std::nullopt;
  std::string_view who = text.substr(0, colon);
  std::string_view rest = text.substr(colon + kPorts.size());
  TproxyTableOwner owner;
  const size_t and_at = who.find(kAnd);
  const auto ip = parse_ipv4(who.substr(0, and_at));
  if (!ip) return std::nullopt;
  owner.relay_ip = *ip;
  if (and_at != std::string_view::npos) {
    owner.relay_ip6 = parse_ip(who.substr(and_at + kAnd.size()));
    if (!owner.relay_ip6 || !owner.relay_ip6->is_v6() || owner.relay_ip6->is_v4_mapped())
      return std::nullopt;
  }
  const size_t per_family = rest.find(kPerFamily);
  if (per_family == std::string_view::npos) return std::nullopt;
  const std::string_view range = rest.substr(0, per_family);
  rest.remove_prefix(per_family + kPerFamily.size());
  const size_t dash = range.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  const auto lo = port_of(range.substr(0, dash));
  const auto hi = port_of(range.substr(dash + 1));
  if (!lo || !hi || *lo > *hi) return std::nullopt;
  owner.port_lo = *lo;
  owner.port_hi = *hi;
  if (rest.empty()) return owner;  // written before the port was recorded
  if (rest.substr(0, kAtPort.size()) != kAtPort) return std::nullopt;
  const auto port = port_of(rest.substr(kAtPort.size()));
  if (!port) return std::nullopt;
  owner.port = *port;
  return owner;
}

}  // namespace mp::kernel
