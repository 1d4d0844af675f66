// Fuzz target for the one-line messages: relay replies / expiry reports /
// keepalives (protocol/relay_link.h), module replies (protocol/reply.h), and
// the JSON string and number formatting used for their payloads
// (common/json_writer.h).
//
// Invariants checked on every input:
//   * parse_relay_message() either yields a message or an error; a parsed
//     message re-serialises to a line that parses back to the same message;
//   * parse_module_reply() results survive format_ports_reply();
//   * json_quote() output is quoted printable ASCII that decodes back to the
//     input, whatever its bytes: a byte that is not UTF-8 is the lone
//     surrogate \udcXX (surrogateescape), and rapidjson's reading of the
//     string through json_string_bytes() gives back the input exactly;
//   * JsonWriter prints any 8-byte double so that strtod() gives back the
//     same bits, in Python's style (always a '.', an 'e', or a NaN/Infinity).
#include <rapidjson/document.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "common/json_writer.h"
#include "protocol/relay_link.h"
#include "protocol/reply.h"

using namespace mp;
using namespace mp::protocol;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_relay_message: invariant violated: %s\n", what);
    std::abort();
  }
}

std::string strip_crlf(std::string line) {
  check(line.size() >= 2 && line.compare(line.size() - 2, 2, "\r\n") == 0, "ends in CRLF");
  line.resize(line.size() - 2);
  return line;
}

void check_relay_message(std::string_view input) {
  std::string error;
  const auto msg = parse_relay_message(input, error);
  check(msg.has_value() == error.empty(), "exactly one of message / error");
  if (!msg) return;
  std::string line;
  switch (msg->kind) {
    case RelayMessage::Kind::Ping:
      check(input == "ping", "ping is exact");
      return;
    case RelayMessage::Kind::Pong:
      check(input == "pong", "pong is exact");
      return;
    case RelayMessage::Kind::Expired:
      check(!msg->payload.empty(), "expired carries JSON");
      line = strip_crlf(serialize_expired(msg->payload));
      check(line == input, "expired re-serialises verbatim");
      break;
    case RelayMessage::Kind::Reply:
      check(!msg->payload.empty(), "reply carries a payload");
      line = strip_crlf(serialize_reply(msg->seq, msg->payload));
      break;
  }
  const auto again = parse_relay_message(line, error);
  check(again.has_value(), "re-serialised message parses");
  check(again->kind == msg->kind && again->seq == msg->seq && again->payload == msg->payload,
        "relay message round-trip");
}

void check_module_reply(std::string_view input) {
  const auto reply = parse_module_reply(input);
  if (!reply || reply->kind != ModuleReply::Kind::Ports) return;
  const auto again = parse_module_reply(format_ports_reply(reply->ip, reply->ports));
  check(again.has_value(), "formatted reply parses");
  check(again->kind == ModuleReply::Kind::Ports && again->ip == reply->ip &&
            again->ports == reply->ports,
        "module reply round-trip");
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

uint32_t hex4(std::string_view q, size_t at) {
  check(at + 4 <= q.size(), "complete \\u escape");
  uint32_t v = 0;
  for (size_t k = 0; k < 4; ++k) {
    const char c = q[at + k];
    uint32_t d;
    if (c >= '0' && c <= '9')
      d = static_cast<uint32_t>(c - '0');
    else if (c >= 'a' && c <= 'f')
      d = static_cast<uint32_t>(c - 'a' + 10);
    else
      d = 99;
    check(d < 16, "lower-case hex digits");
    v = v * 16 + d;
  }
  return v;
}

void check_json_quote(std::string_view input) {
  const std::string q = json_quote(input);
  check(q.size() >= 2 && q.front() == '"' && q.back() == '"', "quoted");
  for (char c : q) check(c >= 0x20 && c < 0x7f, "printable ASCII only");
  std::string decoded;
  for (size_t i = 1; i + 1 < q.size(); ++i) {
    check(q[i] != '"', "no bare quote inside");
    if (q[i] != '\\') {
      decoded.push_back(q[i]);
      continue;
    }
    check(i + 2 < q.size(), "escape complete");
    const char e = q[++i];
    switch (e) {
      case '"':
      case '\\':
        decoded.push_back(e);
        break;
      case 'n':
        decoded.push_back('\n');
        break;
      case 'r':
        decoded.push_back('\r');
        break;
      case 't':
        decoded.push_back('\t');
        break;
      case 'b':
        decoded.push_back('\b');
        break;
      case 'f':
        decoded.push_back('\f');
        break;
      case 'u': {
        uint32_t cp = hex4(q, i + 1);
        i += 4;
        if (cp >= 0xd800 && cp <= 0xdbff) {
          check(i + 6 < q.size() && q[i + 1] == '\\' && q[i + 2] == 'u', "surrogate pair");
          const uint32_t lo = hex4(q, i + 3);
          check(lo >= 0xdc00 && lo <= 0xdfff, "low surrogate follows high");
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          i += 6;
        } else if (cp >= 0xdc80 && cp <= 0xdcff) {  // an escaped byte that is not UTF-8
          decoded.push_back(static_cast<char>(cp & 0xff));
          break;
        } else {
          check(cp < 0xdc00 || cp > 0xdfff, "no other lone low surrogate");
        }
        append_utf8(decoded, cp);
        break;
      }
      default:
        check(false, "known escape");
    }
  }
  check(decoded == input, "json_quote decodes to the input");
  rapidjson::Document d;
  d.Parse(q.c_str(), q.size());
  check(!d.HasParseError() && d.IsString(), "rapidjson reads json_quote output");
  check(json_string_bytes({d.GetString(), d.GetStringLength()}) == input,
        "json_string_bytes gives back the input");
}

void check_double(const uint8_t* data, size_t size) {
  if (size < 8) return;
  double v;
  std::memcpy(&v, data, sizeof v);
  JsonWriter w;
  w.value(v);
  const std::string& text = w.str();
  if (text == "NaN" || text == "Infinity" || text == "-Infinity") return;
  check(text.find_first_of(".e") != std::string::npos, "float has '.' or exponent");
  const double back = std::strtod(text.c_str(), nullptr);
  check(std::memcmp(&back, &v, sizeof v) == 0, "double round-trip");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  check_relay_message(input);
  check_module_reply(input);
  check_json_quote(input);
  check_double(data, size);
  return 0;
}
