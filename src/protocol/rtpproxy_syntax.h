// The lexical pieces of the rtpproxy command parser (src/protocol only), shared
// by the command grammar (rtpproxy_command.cpp) and the U/L modifier grammar
// (rtpproxy_modifiers.cpp): rtpproxy's character classes, strict decimal
// numbers, IPv4/IPv6 literals as rtpproxy takes them, quoting of input bytes
// for error reasons, and Faults, which records the first fault of a command
// as its E<code> and reason. Pure functions; reasons quote the input only
// through quoted(), so they never carry control or non-ASCII bytes.
#pragma once

#include <string>
#include <string_view>

#include "protocol/rtpproxy_command.h"

namespace mp::protocol::rtpproxy_syntax {

// Spaces, tabs, CRs and LFs separate tokens (rtpproxy's rtpp_command_split).
inline bool is_separator(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}
inline bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
// 0..15, or -1 for a character that is not a hex digit.
inline int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
inline char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

inline std::string_view trim_trailing(std::string_view s) {
  while (!s.empty() && is_separator(s.back())) s.remove_suffix(1);
  return s;
}

// `bytes` in double quotes for a reason: bytes outside 0x20-0x7e, the quote
// and the backslash become \xNN; more than 40 bytes are cut with "...".
std::string quoted(std::string_view bytes);

// Plain decimal digits (at least one, no sign) with a value <= max.
bool parse_number(std::string_view text, unsigned max, unsigned& out);

// An IPv6 literal as getaddrinfo(AI_NUMERICHOST) takes it, minus zone ids:
// up to eight groups of 1-4 hex digits, at most one "::", optionally ending in
// a dotted quad that stands for two groups.
bool is_ipv6_literal(std::string_view s);

// Where a parse step reports its fault: fail() stores the code and the
// reason (cut to 200 characters) in the caller's RtpproxyParseError and
// returns false, so a step can `return faults.fail(...)`.
class Faults {
 public:
  explicit Faults(RtpproxyParseError& error) : error_(error) {}
  bool fail(int code, std::string reason);

 private:
  RtpproxyParseError& error_;
};

}  // namespace mp::protocol::rtpproxy_syntax
