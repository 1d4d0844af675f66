// rtpproxy commands onto relay updates and back (rtpproxy_mapping.h).
#include "dispatcher/rtpproxy_mapping.h"

#include <string_view>
#include <vector>

namespace mp::dispatcher {

std::string rtpproxy_media_item(const std::string& ip, uint16_t port, bool asymmetric) {
  const bool v6 = ip.find(':') != std::string::npos;
  return "audio:" + (v6 ? "[" + ip + "]" : ip) + ":" + std::to_string(port) + ":sendrecv:ice=no" +
         (asymmetric ? ":asymmetric=yes" : "");
}

std::optional<IpAddress> rtpproxy_party_address(const protocol::RtpproxyCommand& cmd) {
  auto ip = parse_ip(cmd.address);
  if (!ip || ip->is_v4_mapped()) return std::nullopt;
  if (cmd.modifiers.ipv6 && ip->is_v4()) return std::nullopt;
  if (cmd.modifiers.ipv4 && !ip->is_v4()) return std::nullopt;
  return ip;
}

IpAddress::Family rtpproxy_reply_family(const protocol::RtpproxyCommand& cmd,
                                        const IpAddress& party) {
  const std::string& b = cmd.modifiers.bridge;
  if (b.size() == 2) return b[1] == 'e' ? IpAddress::Family::V6 : IpAddress::Family::V4;
  return party.family;
}

char rtpproxy_reply_family_token(const protocol::RtpproxyCommand& cmd,
                                 const std::string& relay_ip) {
  if (relay_ip.find(':') != std::string::npos) return '6';
  return cmd.modifiers.ipv6 || cmd.modifiers.bridge.size() == 2 ? '4' : 0;
}

bool rtpproxy_pick_port(const std::string& reply, size_t index, std::string& ip, uint16_t& port) {
  std::vector<std::string_view> tokens;
  std::string_view rest = reply;
  while (!rest.empty()) {
    size_t sp = rest.find(' ');
    tokens.push_back(rest.substr(0, sp));
    if (sp == std::string_view::npos) break;
    rest.remove_prefix(sp + 1);
  }
  if (tokens.size() < 2 || index + 1 >= tokens.size() || !parse_ip(tokens[0])) return false;
  auto p = parse_port(tokens[index + 1]);
  if (!p) return false;
  ip.assign(tokens[0]);
  port = *p;
  return true;
}

}  // namespace mp::dispatcher
