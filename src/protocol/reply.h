// Replies to the proxy module (spec A.6): one line per request.
//
//   update success:  "<ip> <port1> ... <portN>"   (port 0 for closed streams;
//                    <ip> IPv6 text only for requests that asked for IPv6)
//   remove success:  "removed"
//   failure:         "error"
//   no media:        "None"   (compatibility quirk of the original)
// Serialisers produce the line without CRLF; parse_module_reply() is the pure
// inverse used by tests and by plugin-shim.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip_address.h"

namespace mp::protocol {

std::string format_ports_reply(const IpAddress& ip, const std::vector<uint16_t>& ports);
inline constexpr std::string_view kReplyRemoved = "removed";
inline constexpr std::string_view kReplyError = "error";
inline constexpr std::string_view kReplyNone = "None";
inline constexpr std::string_view kReplyHalting = "halting";

struct ModuleReply {
  enum class Kind { Ports, Removed, Error, None } kind = Kind::Error;
  IpAddress ip;  // IPv6 only from relays with an IPv6 address (issue 17)
  std::vector<uint16_t> ports;
};

// `line` without CRLF. Unparseable text yields nullopt.
std::optional<ModuleReply> parse_module_reply(std::string_view line);

}  // namespace mp::protocol
