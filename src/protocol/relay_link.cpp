// Implementation of the dispatcher-to-relay message codec (relay_link.h,
// spec B.2 / B.3).
//
// Owns the text form of relay commands ("<name> <seq>" + headers + blank
// line), of relay replies ("<seq> <payload>"), of expiry reports
// ("expired <json>") and of the keepalive words. Sequence numbers are plain
// decimal uint64 values: no sign, no blanks, no overflow. The JSON carried by
// replies and reports is passed through untouched; decoding it is the
// caller's business.
#include "protocol/relay_link.h"

#include <charconv>
#include <utility>

namespace mp::protocol {

namespace {

constexpr std::string_view kCrlf = "\r\n";
constexpr std::string_view kExpiredPrefix = "expired ";

bool is_blank(char c) {
  return c == ' ' || c == '\t';
}

std::optional<uint64_t> parse_seq(std::string_view text) {
  if (text.empty() || text.size() > 20) return std::nullopt;
  for (char c : text)
    if (c < '0' || c > '9') return std::nullopt;
  uint64_t v = 0;
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size()) return std::nullopt;
  return v;
}

}  // namespace

const std::string* RelayCommandView::find(std::string_view header) const {
  for (auto it = headers.rbegin(); it != headers.rend(); ++it)
    if (it->name == header && !it->value.empty()) return &it->value;
  return nullptr;
}

std::string serialize_command(const RelayCommand& cmd) {
  std::string out = cmd.name;
  out.push_back(' ');
  out += std::to_string(cmd.seq);
  out += kCrlf;
  for (const Header& h : cmd.headers) {
    if (h.value.empty()) continue;
    out += h.name;
    out += ": ";
    out += h.value;
    out += kCrlf;
  }
  out += kCrlf;
  return out;
}

std::optional<RelayCommand> to_relay_command(Request&& request, std::string& error) {
  // Like Python's str.split(): blanks separate tokens, runs of them count once.
  std::string_view tokens[2];
  size_t count = 0;
  const std::string_view line = request.command;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_blank(line[i])) ++i;
    const size_t begin = i;
    while (i < line.size() && !is_blank(line[i])) ++i;
    if (i == begin) break;
    if (count == 2) {
      error = "command line has more than two tokens";
      return std::nullopt;
    }
    tokens[count++] = line.substr(begin, i - begin);
  }
  if (count != 2) {
    error = "command line must be \"<command> <seq>\"";
    return std::nullopt;
  }
  const auto seq = parse_seq(tokens[1]);
  if (!seq) {
    error = "invalid sequence number";
    return std::nullopt;
  }
  RelayCommand cmd;
  cmd.name.assign(tokens[0]);
  cmd.seq = *seq;
  cmd.headers = std::move(request.headers);
  return cmd;
}

std::string serialize_reply(uint64_t seq, std::string_view payload) {
  std::string out = std::to_string(seq);
  out.push_back(' ');
  out += payload;
  out += kCrlf;
  return out;
}

std::string serialize_expired(std::string_view json) {
  std::string out(kExpiredPrefix);
  out += json;
  out += kCrlf;
  return out;
}

std::optional<RelayMessage> parse_relay_message(std::string_view line, std::string& error) {
  RelayMessage msg;
  if (line == "ping") {
    msg.kind = RelayMessage::Kind::Ping;
    return msg;
  }
  if (line == "pong") {
    msg.kind = RelayMessage::Kind::Pong;
    return msg;
  }
  if (line.substr(0, kExpiredPrefix.size()) == kExpiredPrefix) {
    if (line.size() == kExpiredPrefix.size()) {
      error = "expiry report without JSON";
      return std::nullopt;
    }
    msg.kind = RelayMessage::Kind::Expired;
    msg.payload.assign(line.substr(kExpiredPrefix.size()));
    return msg;
  }
  const size_t space = line.find(' ');
  if (space == std::string_view::npos) {
    error = "reply without payload";
    return std::nullopt;
  }
  const auto seq = parse_seq(line.substr(0, space));
  if (!seq) {
    error = "invalid sequence number in reply";
    return std::nullopt;
  }
  if (space + 1 == line.size()) {
    error = "reply with empty payload";
    return std::nullopt;
  }
  msg.kind = RelayMessage::Kind::Reply;
  msg.seq = *seq;
  msg.payload.assign(line.substr(space + 1));
  return msg;
}

}  // namespace mp::protocol
