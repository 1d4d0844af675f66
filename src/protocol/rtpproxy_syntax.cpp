// The lexical pieces of the rtpproxy command parser (rtpproxy_syntax.h):
// quoting input bytes for reasons, strict decimal numbers, IPv6 literals and
// the fault recorder.
#include "protocol/rtpproxy_syntax.h"

#include <cstdint>
#include <utility>

#include "common/address.h"

namespace mp::protocol::rtpproxy_syntax {

namespace {

constexpr size_t kMaxReason = 200;  // characters of RtpproxyParseError::reason
constexpr size_t kMaxQuoted = 40;   // input bytes quoted in a reason

}  // namespace

std::string quoted(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  const size_t n = bytes.size() > kMaxQuoted ? kMaxQuoted : bytes.size();
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
  if (bytes.size() > n) out += "...";
  return out;
}

bool parse_number(std::string_view text, unsigned max, unsigned& out) {
  if (text.empty()) return false;
  uint64_t v = 0;
  for (char c : text) {
    if (!is_digit(c)) return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
    if (v > max) return false;
  }
  out = static_cast<unsigned>(v);
  return true;
}

bool is_ipv6_literal(std::string_view s) {
  if (s.size() < 2 || s.size() > 45) return false;
  size_t groups = 0;
  bool compressed = false;
  size_t i = 0;
  if (s.substr(0, 2) == "::") {
    compressed = true;
    i = 2;
    if (i == s.size()) return true;
  } else if (s[0] == ':') {
    return false;
  }
  for (;;) {
    const size_t end = s.find(':', i);
    const std::string_view group = s.substr(i, end == std::string_view::npos ? end : end - i);
    if (group.find('.') != std::string_view::npos) {
      if (end != std::string_view::npos || !parse_ipv4(group)) return false;
      groups += 2;
      break;
    }
    if (group.empty() || group.size() > 4) return false;
    for (char c : group)
      if (hex_value(c) < 0) return false;
    ++groups;
    if (end == std::string_view::npos) break;
    i = end + 1;
    if (i < s.size() && s[i] == ':') {
      if (compressed) return false;
      compressed = true;
      ++i;
      if (i == s.size()) break;
    } else if (i == s.size()) {
      return false;  // a single trailing ':'
    }
  }
  return compressed ? groups <= 7 : groups == 8;
}

bool Faults::fail(int code, std::string reason) {
  if (reason.size() > kMaxReason) {
    reason.resize(kMaxReason - 3);
    reason += "...";
  }
  error_.code = code;
  error_.reason = std::move(reason);
  return false;
}

}  // namespace mp::protocol::rtpproxy_syntax
