// Fuzz target for the rtpproxy control protocol codec (protocol/rtpproxy_command.h).
//
// Every input is used three ways: as a datagram (split_rtpproxy_cookie, then
// the command), as a bare command, and spliced into one of the built-in
// Kamailio command lines below (its first byte picks the line, its second the
// token it replaces), so that random bytes reach the deep checks of every
// verb. Invariants checked:
//   * the cookie split returns substrings of the input within the limits;
//   * a parse either succeeds or fails with one of rtpproxy's codes and a
//     reason of at most 200 printable ASCII characters;
//   * a successful parse has bounded, non-empty identifiers, the modifiers
//     within their ranges, and an address that is a literal of its family;
//   * a trailing CRLF never changes the outcome;
//   * the Q, G and I formatters accept any parsed command and never emit a
//     control byte other than I's line feeds;
//   * rtpproxy_url_unquote never grows its input and is the identity on text
//     without '%' and '+'.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "common/address.h"
#include "protocol/rtpproxy_command.h"

using namespace mp;
using namespace mp::protocol;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_rtpproxy_command: invariant violated: %s\n", what);
    std::abort();
  }
}

// What Kamailio 5.6 sends (and a few neighbours), to be mutated.
const char* const kCommands[] = {
    "Uc8,101 1-2@10.0.0.1 10.200.1.2 6000 14271SIPpTag091;1",
    "Lc0,8,101 1-2@x 10.200.2.2 6002 ftag;1 ttag;1",
    "UASZ20c0,8,101 cid 192.0.2.1 49170 f;2 t;2 tcp:127.0.0.1:8000 tag%20x",
    "U6 cid fd00::2 6000 ftag;1",
    "UIEl1.2.3.4r[::1]n cid 1.2.3.4 5 f;1 unix:/run/k.sock a+b%41",
    "D 1-2@x ftag ttag",
    "Dw 1-2@x ftag",
    "Qv cid ftag;1 ttag;1 ttl npkts_ina rtpa_jmax",
    "Q cid ftag;1",
    "VF 20050322",
    "V",
    "Ibl",
    "Gv nsess_created total_duration",
    "X",
    "P3 cid prompt session f t",
    "Csp cid name f t",
    "Na cid f",
    "D cid f && G",
};

bool known_code(int code) {
  switch (code) {
    case rtpp_error::kUnknownCommand:
    case rtpp_error::kWrongArgCount:
    case rtpp_error::kBadModifiers:
    case rtpp_error::kSubcommand:
    case rtpp_error::kSyntax:
    case rtpp_error::kModifierMisplaced:
    case rtpp_error::kRecordModifiers:
    case rtpp_error::kDeleteModifiers:
    case rtpp_error::kStatsModifiers:
    case rtpp_error::kBadUrlEncoding:
    case rtpp_error::kBridgeExternal:
    case rtpp_error::kBridgeInternal:
    case rtpp_error::kBadPtime:
    case rtpp_error::kBadCodecs:
    case rtpp_error::kBadLocalModifier:
    case rtpp_error::kBadRemoteModifier:
    case rtpp_error::kPlayModifiers:
    case rtpp_error::kInfoModifiers:
    case rtpp_error::kQueryModifiers:
    case rtpp_error::kTooBig:
    case rtpp_error::kBadArgument:
    case rtpp_error::kBadRemoteAddress:
    case rtpp_error::kUnknownModifier:
    case rtpp_error::kBadAddress:
      return true;
    default:
      return false;
  }
}

bool is_separator(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

bool is_token(std::string_view s) {
  if (s.empty() || s.size() > kMaxRtpproxyToken) return false;
  for (char c : s)
    if (is_separator(c) || c == '\0') return false;
  return true;
}

bool printable(std::string_view s, bool allow_newline) {
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\n' && allow_newline) continue;
    if (c < 0x20 || c >= 0x7f) return false;
  }
  return true;
}

bool has_call_id(RtpproxyVerb v) {
  return v != RtpproxyVerb::Version && v != RtpproxyVerb::VersionFeature &&
         v != RtpproxyVerb::Info && v != RtpproxyVerb::Stats && v != RtpproxyVerb::DeleteAll;
}

void check_tag(const RtpproxyTag& t) {
  check(is_token(t.tag), "tag is a bounded token");
  check(t.media_number <= kMaxRtpproxyMediaNumber, "media number range");
}

void check_command(const RtpproxyCommand& c) {
  check(is_token(c.letters), "letters are a token");
  if (has_call_id(c.verb)) {
    check(is_token(c.call_id), "call-id is a non-empty bounded token");
    check_tag(c.from_tag);
    if (c.to_tag) check_tag(*c.to_tag);
  } else {
    check(c.call_id.empty(), "no call-id without a call");
  }
  if (c.verb == RtpproxyVerb::Update || c.verb == RtpproxyVerb::Lookup) {
    const RtpproxyModifiers& m = c.modifiers;
    check(!(m.ipv4 && m.ipv6), "4 and 6 exclusive");
    check(!(m.asymmetric && m.symmetric), "a and s exclusive");
    if (!m.ipv6) check(parse_ipv4(c.address).has_value(), "IPv4 address parses");
    check(!c.address.empty() && c.address.size() <= 45, "address bounded");
    check(m.bridge.size() <= 2, "at most two bridge letters");
    check(m.internal == (m.bridge.find('i') != std::string::npos), "internal matches bridge");
    check(m.external == (m.bridge.find('e') != std::string::npos), "external matches bridge");
    check(m.codecs.size() <= kMaxRtpproxyCodecs, "codec list bounded");
    for (unsigned pt : m.codecs) check(pt <= 127, "payload type range");
    check(m.repacketize_ms <= 999, "ptime range");
    check(c.notify_socket.empty() == c.notify_tag.empty(), "notify socket and tag together");
    check(c.notify_tag.size() <= kMaxRtpproxyToken, "notify tag bounded");
    if (c.verb == RtpproxyVerb::Lookup) check(c.notify_socket.empty(), "L has no notify socket");
  } else {
    check(c.address.empty() && c.port == 0, "address only for U/L");
    check(c.notify_socket.empty() && c.notify_tag.empty(), "notify only for U");
  }
  check(c.stats_names.size() < kMaxRtpproxyTokens, "counter names bounded");
  for (const std::string& n : c.stats_names) check(is_token(n), "counter name is a token");

  RtpproxyQueryFigures f;
  f.ttl = -1;
  f.relayed = UINT64_MAX;
  f.longest_ipi = 1e300;
  f.jitter_avg = -0.5;
  const std::string q = format_rtpproxy_query(c, f);
  check(!q.empty() && printable(q, false), "Q reply is one printable line");
  RtpproxyStatsValues v;
  for (std::string_view name : kRtpproxyStatsCounters) v.set(name, 42);
  v.set_real("total_duration", 1.25);
  const std::string g = format_rtpproxy_stats(c, v);
  check(printable(g, false), "G reply is one printable line");
  RtpproxyInfo info;
  if (c.load) info.average_load = 0.125;
  check(printable(format_rtpproxy_info(!c.verbose, info), true), "I reply is printable");
}

// Parses `text`; checks the outcome and that a trailing CRLF changes nothing.
void parse_and_check(std::string_view text) {
  RtpproxyParseError error;
  const auto cmd = parse_rtpproxy_command(text, error);
  if (cmd) {
    check_command(*cmd);
  } else {
    check(known_code(error.code), "error code is one rtpproxy sends");
    check(!error.reason.empty() && error.reason.size() <= 200, "reason bounded");
    check(printable(error.reason, false), "reason is printable ASCII");
  }
  std::string with_crlf(text);
  with_crlf += "\r\n";
  RtpproxyParseError error2;
  const auto cmd2 = parse_rtpproxy_command(with_crlf, error2);
  check(cmd.has_value() == cmd2.has_value(), "CRLF keeps the outcome");
  if (cmd)
    check(*cmd == *cmd2, "CRLF keeps the command");
  else
    check(error.code == error2.code, "CRLF keeps the error code");
}

void check_split(std::string_view input) {
  std::string_view cookie, command;
  const bool ok = split_rtpproxy_cookie(input, cookie, command);
  const char* begin = input.data();
  const char* end = input.data() + input.size();
  const auto inside = [&](std::string_view s) {
    return s.empty() || (s.data() >= begin && s.data() + s.size() <= end);
  };
  check(inside(cookie) && inside(command), "split returns substrings");
  check(cookie.size() <= kMaxRtpproxyCookie, "cookie bounded");
  for (char c : cookie) check(!is_separator(c), "cookie has no separator");
  check(ok == !command.empty(), "split succeeds exactly when there is a command");
  if (ok) {
    check(!cookie.empty(), "a command comes with a cookie");
    check(!is_separator(command.front()) && !is_separator(command.back()), "command trimmed");
    parse_and_check(command);
  }
}

void check_unquote(std::string_view input) {
  const auto out = rtpproxy_url_unquote(input);
  if (out) check(out->size() <= input.size(), "unquote never grows");
  if (input.find('%') == std::string_view::npos) {
    check(out.has_value() && out->size() == input.size(), "no escapes: always decodes");
    if (input.find('+') == std::string_view::npos) check(*out == input, "identity without % +");
  }
}

// The seed line with one of its tokens replaced by `payload`.
std::string splice(size_t which, size_t token, std::string_view payload) {
  const std::string_view line = kCommands[which % std::size(kCommands)];
  std::vector<std::string_view> tokens;
  for (size_t i = 0; i < line.size();) {
    const size_t sp = line.find(' ', i);
    const size_t stop = sp == std::string_view::npos ? line.size() : sp;
    tokens.push_back(line.substr(i, stop - i));
    i = stop + 1;
  }
  std::string out;
  const size_t replaced = token % tokens.size();
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i > 0) out += ' ';
    if (i == replaced)
      out += payload;
    else
      out += tokens[i];
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  check_split(input);
  parse_and_check(input);
  check_unquote(input);
  if (size >= 2) {
    const std::string spliced = splice(data[0], data[1], input.substr(2));
    parse_and_check(spliced);
    check_split("c " + spliced);
  }
  static bool seeds_done = false;  // the unmutated lines, once per process
  if (!seeds_done) {
    seeds_done = true;
    for (std::string_view seed : kCommands) {
      parse_and_check(seed);
      check_split("4711_1 " + std::string(seed) + "\n");
    }
  }
  return 0;
}
