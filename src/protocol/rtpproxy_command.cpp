// Implementation of the rtpproxy control protocol codec (rtpproxy_command.h):
// the command grammar.
//
// Owns the tokenizer (spaces, tabs, CRs and LFs separate tokens, empty tokens
// vanish, as in rtpproxy's rtpp_command_split), the verb table with rtpproxy's
// argument counts (rtpp_command_parse.c), the one-letter modifiers of D, Q,
// I, G, P, R, C and N (rpcpv1_delete.c, rpcpv1_query.c, ...), addresses,
// ports and tags. The modifier grammar of U and L (rpcpv1_ul.c) is in
// rtpproxy_modifiers.cpp, the lexical pieces both use in rtpproxy_syntax.h,
// the reply formats in rtpproxy_reply.cpp. Checks run in rtpproxy's order,
// so a command with several faults gets the code rtpproxy would send: token
// faults (E5, E25), the verb (E0), the argument count (E1), modifiers on a
// verb that takes none (E2), "&&" sub-commands (E3), then the verb's own
// modifiers (U/L: the notify tag first, then the letters left to right), then
// the address and port, then the tags. Where rtpproxy is lax this code is
// strict: media numbers must be 1..1000, codec lists well-formed, addresses
// literal. Reasons quote the input only through quoted(), so they never carry
// control or non-ASCII bytes.
#include "protocol/rtpproxy_command.h"

#include <charconv>
#include <system_error>

#include "common/address.h"
#include "protocol/rtpproxy_modifiers.h"
#include "protocol/rtpproxy_syntax.h"

namespace mp::protocol {

using namespace rtpproxy_syntax;

namespace {

constexpr size_t kMaxSubcommands = 15;  // rtpproxy: MAX_SUBC_NUM - 1
constexpr size_t kMaxQueryNames = 11;   // rtpproxy: RTPP_QUERY_NSTATS

// Argument table, from rtpproxy's fill_cmd_props(); counts include the
// command token.
struct VerbSpec {
  char letter;  // lower case
  RtpproxyVerb verb;
  const char* name;  // rtpproxy's name for the command, for reasons
  size_t min_args;
  size_t max_args;
  bool modifiers;
  bool call_id;
  size_t from_pos;  // 0: none
  size_t to_pos;    // optional; 0: none
};

constexpr VerbSpec kVerbs[] = {
    {'u', RtpproxyVerb::Update, "update", 5, 8, true, true, 4, 5},
    {'l', RtpproxyVerb::Lookup, "lookup", 5, 6, true, true, 4, 5},
    {'d', RtpproxyVerb::Delete, "delete", 3, 4, true, true, 2, 3},
    {'p', RtpproxyVerb::Play, "play", 5, 6, true, true, 4, 5},
    {'r', RtpproxyVerb::Record, "record", 3, 4, true, true, 2, 3},
    {'c', RtpproxyVerb::Copy, "copy", 4, 5, true, true, 3, 4},
    {'s', RtpproxyVerb::StopPlay, "noplay", 3, 4, false, true, 2, 3},
    {'n', RtpproxyVerb::NoRecord, "norecord", 3, 4, true, true, 2, 3},
    {'v', RtpproxyVerb::Version, "get_version", 1, 1, false, false, 0, 0},
    {'i', RtpproxyVerb::Info, "get_info", 1, 1, true, false, 0, 0},
    {'q', RtpproxyVerb::Query, "query", 3, 4 + kMaxQueryNames, true, true, 2, 3},
    {'x', RtpproxyVerb::DeleteAll, "delete_all", 1, 1, false, false, 0, 0},
    {'g', RtpproxyVerb::Stats, "get_stats", 1, 1 + kRtpproxyStatsCounters.size(), true, false, 0,
     0},
};
constexpr VerbSpec kVersionFeature = {
    'v', RtpproxyVerb::VersionFeature, "feature_check", 2, 2, false, false, 0, 0};

// The tokens of one command, without allocating: tokenize() never stores
// more than kMaxRtpproxyTokens.
class TokenList {
 public:
  void push_back(std::string_view token) { tokens_[size_++] = token; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::string_view operator[](size_t i) const { return tokens_[i]; }

 private:
  std::array<std::string_view, kMaxRtpproxyTokens> tokens_;
  size_t size_ = 0;
};

class Parser {
 public:
  explicit Parser(RtpproxyParseError& error) : faults_(error) {}

  std::optional<RtpproxyCommand> run(std::string_view text) {
    if (!parse(text)) return std::nullopt;
    return std::move(cmd_);
  }

 private:
  bool fail(int code, std::string reason) { return faults_.fail(code, std::move(reason)); }

  bool parse(std::string_view text) {
    text = trim_trailing(text);
    if (text.size() > kMaxRtpproxyCommand)
      return fail(rtpp_error::kTooBig, "command of " + std::to_string(text.size()) +
                                           " bytes (limit " + std::to_string(kMaxRtpproxyCommand) +
                                           ")");
    if (!tokenize(text)) return false;

    const std::string_view first = tokens_[0];
    const VerbSpec* spec = nullptr;
    for (const VerbSpec& v : kVerbs)
      if (v.letter == lower(first[0])) spec = &v;
    if (!spec) return fail(rtpp_error::kUnknownCommand, "unknown command " + quoted(first));
    std::string_view mods = first.substr(1);
    if (spec->verb == RtpproxyVerb::Version && !mods.empty() && lower(mods[0]) == 'f') {
      spec = &kVersionFeature;
      mods.remove_prefix(1);
    }
    const size_t argc = tokens_.size();
    if (argc < spec->min_args || argc > spec->max_args)
      return fail(rtpp_error::kWrongArgCount,
                  std::string(spec->name) + ": " + std::to_string(argc) + " tokens, expected " +
                      std::to_string(spec->min_args) +
                      (spec->max_args == spec->min_args ? std::string()
                                                        : " to " + std::to_string(spec->max_args)));
    if (!spec->modifiers && !mods.empty())
      return fail(rtpp_error::kBadModifiers,
                  std::string(spec->name) + ": takes no modifiers, got " + quoted(mods));
    if (subcommands_ > 0)
      return fail(rtpp_error::kSubcommand,
                  std::string(spec->name) + ": \"&&\" sub-commands are not supported");

    cmd_.verb = spec->verb;
    cmd_.letters.assign(first);
    if (spec->call_id) cmd_.call_id.assign(tokens_[1]);
    name_ = spec->name;

    switch (spec->verb) {
      case RtpproxyVerb::Version:
      case RtpproxyVerb::DeleteAll:
        return true;
      case RtpproxyVerb::VersionFeature:
        cmd_.feature.assign(tokens_[1]);
        return true;
      case RtpproxyVerb::Info:
        return parse_info(mods);
      case RtpproxyVerb::Stats:
        return parse_stats(mods);
      case RtpproxyVerb::Update:
      case RtpproxyVerb::Lookup:
        return parse_update_lookup(mods);
      case RtpproxyVerb::Delete:
        for (char c : mods) {
          if (lower(c) != 'w')
            return fail(rtpp_error::kDeleteModifiers,
                        "delete: unknown modifier " + quoted(std::string_view(&c, 1)));
          cmd_.modifiers.weak = true;
        }
        break;
      case RtpproxyVerb::Query:
        for (char c : mods) {
          if (lower(c) != 'v')
            return fail(rtpp_error::kQueryModifiers,
                        "query: unknown modifier " + quoted(std::string_view(&c, 1)));
          cmd_.verbose = true;
        }
        for (size_t i = 4; i < argc; ++i) cmd_.stats_names.emplace_back(tokens_[i]);
        break;
      case RtpproxyVerb::Play:
        // P<count>: how many times to play the prompt.
        for (char c : mods)
          if (!is_digit(c))
            return fail(rtpp_error::kPlayModifiers,
                        "play: repeat count " + quoted(mods) + " is not a decimal number");
        break;
      case RtpproxyVerb::Record:
      case RtpproxyVerb::Copy:
        for (char c : mods) {
          const char l = lower(c);
          if (l == 'p' && spec->verb == RtpproxyVerb::Record)
            return fail(rtpp_error::kModifierMisplaced, "record: modifier 'p' is for copy only");
          if (l != 's' && l != 'p')
            return fail(
                rtpp_error::kRecordModifiers,
                std::string(spec->name) + ": unknown modifier " + quoted(std::string_view(&c, 1)));
        }
        break;
      case RtpproxyVerb::NoRecord:
        if (!mods.empty() && lower(mods[0]) == 'a') {
          if (mods.size() > 1)
            return fail(rtpp_error::kModifierMisplaced,
                        "norecord: nothing may follow modifier 'a', got " + quoted(mods));
        } else if (!mods.empty()) {
          return fail(rtpp_error::kRecordModifiers, "norecord: unknown modifiers " + quoted(mods));
        }
        break;
      case RtpproxyVerb::StopPlay:
        break;
    }
    return parse_tags(spec->from_pos, spec->to_pos < argc ? spec->to_pos : 0);
  }

  bool tokenize(std::string_view text) {
    size_t in_segment = 0;  // tokens in the current command or sub-command
    size_t i = 0;
    size_t index = 0;
    for (;;) {
      while (i < text.size() && is_separator(text[i])) ++i;
      if (i == text.size()) break;
      size_t j = i;
      while (j < text.size() && !is_separator(text[j])) ++j;
      const std::string_view token = text.substr(i, j - i);
      i = j;
      ++index;
      if (token.size() > kMaxRtpproxyToken)
        return fail(rtpp_error::kTooBig, "token " + std::to_string(index) + " has " +
                                             std::to_string(token.size()) + " bytes (limit " +
                                             std::to_string(kMaxRtpproxyToken) + ")");
      if (token.find('\0') != std::string_view::npos)
        return fail(rtpp_error::kSyntax, "NUL byte in token " + std::to_string(index));
      if (token == "&&") {
        if (in_segment == 0)
          return fail(rtpp_error::kSyntax,
                      subcommands_ == 0 ? "\"&&\" with no command before it" : "empty sub-command");
        if (subcommands_ == kMaxSubcommands)
          return fail(rtpp_error::kSyntax,
                      "more than " + std::to_string(kMaxSubcommands) + " sub-commands");
        ++subcommands_;
        in_segment = 0;
        continue;
      }
      if (++in_segment > kMaxRtpproxyTokens)
        return fail(rtpp_error::kSyntax,
                    "more than " + std::to_string(kMaxRtpproxyTokens) + " tokens in a command");
      if (subcommands_ == 0) tokens_.push_back(token);
    }
    if (tokens_.empty()) return fail(rtpp_error::kSyntax, "empty command");
    if (in_segment == 0) return fail(rtpp_error::kSyntax, "empty sub-command after \"&&\"");
    return true;
  }

  bool parse_info(std::string_view mods) {
    cmd_.verbose = true;
    for (char c : mods) {
      switch (lower(c)) {
        case 'b':
          cmd_.verbose = false;
          break;
        case 'l':
          cmd_.load = true;
          break;
        default:
          return fail(rtpp_error::kInfoModifiers,
                      "get_info: unknown modifier " + quoted(std::string_view(&c, 1)));
      }
    }
    return true;
  }

  bool parse_stats(std::string_view mods) {
    for (char c : mods) {
      if (lower(c) != 'v')
        return fail(rtpp_error::kStatsModifiers,
                    "get_stats: unknown modifier " + quoted(std::string_view(&c, 1)));
      cmd_.verbose = true;
    }
    for (size_t i = 1; i < tokens_.size(); ++i) cmd_.stats_names.emplace_back(tokens_[i]);
    return true;
  }

  bool parse_tag(std::string_view text, const char* what, RtpproxyTag& out) {
    const size_t semi = text.rfind(';');
    if (semi == std::string_view::npos) {
      out.tag.assign(text);
      out.media_number = 0;
      return true;
    }
    if (semi == 0)
      return fail(rtpp_error::kBadArgument,
                  name_ + ": " + what + " " + quoted(text) + " is empty before ';'");
    unsigned n = 0;
    if (!parse_number(text.substr(semi + 1), kMaxRtpproxyMediaNumber, n) || n == 0)
      return fail(rtpp_error::kBadArgument, name_ + ": " + what + " " + quoted(text) +
                                                " has a media number outside 1.." +
                                                std::to_string(kMaxRtpproxyMediaNumber));
    out.tag.assign(text.substr(0, semi));
    out.media_number = n;
    return true;
  }

  bool parse_tags(size_t from_pos, size_t to_pos) {
    if (from_pos == 0) return true;
    if (!parse_tag(tokens_[from_pos], "from-tag", cmd_.from_tag)) return false;
    if (to_pos == 0) return true;
    RtpproxyTag to;
    if (!parse_tag(tokens_[to_pos], "to-tag", to)) return false;
    cmd_.to_tag = std::move(to);
    return true;
  }

  // U and L: rtpproxy_command_ul_pre_parse() picks the tags and the notify
  // arguments by the argument count; the notify tag is unquoted before the
  // modifiers are looked at.
  bool parse_update_lookup(std::string_view mods) {
    size_t to_pos = 0;
    size_t notify_pos = 0;
    switch (tokens_.size()) {
      case 6:
        to_pos = 5;
        break;
      case 7:
        notify_pos = 5;
        break;
      case 8:
        to_pos = 5;
        notify_pos = 6;
        break;
      default:
        break;
    }
    if (notify_pos) {
      auto tag = rtpproxy_url_unquote(tokens_[notify_pos + 1]);
      if (!tag)
        return fail(rtpp_error::kBadUrlEncoding, "update: notify tag " +
                                                     quoted(tokens_[notify_pos + 1]) +
                                                     " has a malformed %XX escape");
      cmd_.notify_socket.assign(tokens_[notify_pos]);
      cmd_.notify_tag = std::move(*tag);
    }
    if (!parse_ul_modifiers(mods, name_, faults_, cmd_.modifiers)) return false;

    const std::string_view address = tokens_[2];
    if (cmd_.modifiers.ipv6 ? !is_ipv6_literal(address) : !parse_ipv4(address))
      return fail(rtpp_error::kBadAddress, name_ + ": " + quoted(address) + " is not an " +
                                               (cmd_.modifiers.ipv6 ? "IPv6" : "IPv4") +
                                               " address" +
                                               (cmd_.modifiers.ipv6 ? "" : " (IPv6 needs '6')"));
    unsigned port = 0;
    if (!parse_number(tokens_[3], 65535, port))
      return fail(rtpp_error::kBadAddress,
                  name_ + ": port " + quoted(tokens_[3]) + " is not a number 0..65535");
    cmd_.address.assign(address);
    cmd_.port = static_cast<uint16_t>(port);
    return parse_tags(4, to_pos);
  }

  Faults faults_;
  TokenList tokens_;  // of the command before any "&&"
  size_t subcommands_ = 0;
  std::string name_;  // the verb's name, for reasons (short: no allocation)
  RtpproxyCommand cmd_;
};

}  // namespace

bool rtpproxy_capability_supported(std::string_view yyyymmdd) {
  for (const RtpproxyCapability& cap : kRtpproxyCapabilities)
    if (cap.id == yyyymmdd) return true;
  return false;
}

bool split_rtpproxy_cookie(std::string_view line, std::string_view& cookie,
                           std::string_view& command) {
  cookie = {};
  command = {};
  line = trim_trailing(line);
  size_t begin = 0;
  while (begin < line.size() && is_separator(line[begin])) ++begin;
  size_t end = begin;
  while (end < line.size() && !is_separator(line[end])) ++end;
  if (end == begin || end - begin > kMaxRtpproxyCookie) return false;
  cookie = line.substr(begin, end - begin);
  while (end < line.size() && is_separator(line[end])) ++end;
  command = line.substr(end);
  return !command.empty();
}

std::optional<RtpproxyCommand> parse_rtpproxy_command(std::string_view text,
                                                      RtpproxyParseError& error) {
  return Parser(error).run(text);
}

std::optional<std::string> rtpproxy_url_unquote(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%') {
      if (i + 2 >= text.size()) return std::nullopt;
      const int hi = hex_value(text[i + 1]);
      const int lo = hex_value(text[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+') {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace mp::protocol
