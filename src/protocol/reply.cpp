// Implementation of the module reply line (reply.h, spec A.6).
//
// Owns formatting of "<ip> <port>..." and the inverse parser. The parser
// tokenises on whitespace as the modules do, so surrounding or repeated
// blanks are tolerated; anything that is neither one of the keywords nor an
// IPv4 address followed by decimal ports is rejected.
#include "protocol/reply.h"

namespace mp::protocol {

namespace {

bool is_blank(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

std::vector<std::string_view> split_blanks(std::string_view line) {
  std::vector<std::string_view> tokens;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_blank(line[i])) ++i;
    const size_t begin = i;
    while (i < line.size() && !is_blank(line[i])) ++i;
    if (i > begin) tokens.push_back(line.substr(begin, i - begin));
  }
  return tokens;
}

}  // namespace

std::string format_ports_reply(const IpAddress& ip, const std::vector<uint16_t>& ports) {
  std::string out = format_ip(ip);
  for (uint16_t port : ports) {
    out.push_back(' ');
    out += std::to_string(port);
  }
  return out;
}

std::optional<ModuleReply> parse_module_reply(std::string_view line) {
  const std::vector<std::string_view> tokens = split_blanks(line);
  if (tokens.empty()) return std::nullopt;
  ModuleReply reply;
  if (tokens.size() == 1) {
    if (tokens[0] == kReplyRemoved) {
      reply.kind = ModuleReply::Kind::Removed;
      return reply;
    }
    if (tokens[0] == kReplyError) {
      reply.kind = ModuleReply::Kind::Error;
      return reply;
    }
    if (tokens[0] == kReplyNone) {
      reply.kind = ModuleReply::Kind::None;
      return reply;
    }
  }
  const auto ip = parse_ip(tokens[0]);
  if (!ip) return std::nullopt;
  reply.kind = ModuleReply::Kind::Ports;
  reply.ip = *ip;
  reply.ports.reserve(tokens.size() - 1);
  for (size_t i = 1; i < tokens.size(); ++i) {
    const auto port = parse_port(tokens[i]);
    if (!port) return std::nullopt;
    reply.ports.push_back(*port);
  }
  return reply;
}

}  // namespace mp::protocol
