// Fuzz target for radius_attributes() (accounting/radius_attributes.h): a
// session record to the attributes of the RADIUS Accounting-Request.
//
// Each input is used twice: as the record text itself (any bytes), and as
// the material of a record built like the dispatcher's (JsonWriter): the
// input's first line gives the call-id and its second the caller's user
// agent (any bytes, non-UTF-8 included), then each byte of the rest picks,
// per stream and field, a value of the right type, of a wrong type, a
// negative, a huge or a missing one, so that the odd-field paths are
// reached without a dictionary. Invariants on every result:
//   * exactly one of attributes / error; an error only when
//     parse_session_record() refuses the record too (the accounting stage
//     relies on that: a record it queues is never unencodable);
//   * every attribute is one of radius_attribute_names() with its type, in
//     that order, at most once; Acct-Status-Type is 3;
//   * every string is at most 253 bytes and does not end inside a valid
//     UTF-8 sequence; Acct-Session-Id and Sip-From-Tag are the
//     (cut) call_id and from_tag bytes of parse_session_record();
//   * utf8_prefix() returns a prefix that takes every whole character that
//     fits.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "accounting/radius_attributes.h"
#include "accounting/session_record.h"
#include "common/json_writer.h"

using namespace mp::accounting;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_radius_attributes: invariant violated: %s\n", what);
    std::abort();
  }
}

void check_prefix(std::string_view s, size_t max) {
  const std::string_view p = utf8_prefix(s, max);
  check(p.size() <= max || p.size() == s.size(), "prefix within the limit");
  check(s.substr(0, p.size()) == p, "prefix of the input");
  check(p.size() <= s.size(), "prefix not longer than the input");
  if (s.size() <= max) check(p.size() == s.size(), "short strings are kept whole");
  // Whole characters: the next one (1 to 4 bytes) would not fit.
  if (p.size() < s.size()) check(p.size() + 4 > max, "no whole character left out");
  check(utf8_prefix(p, p.size()) == p, "idempotent");
}

void check_record(std::string_view json) {
  std::string error;
  const auto attrs = radius_attributes(json, error);
  check(attrs.has_value() == error.empty(), "exactly one of attributes / error");
  std::string parse_error;
  const auto parsed = parse_session_record(json, parse_error);
  check(attrs.has_value() == parsed.has_value(), "same verdict as parse_session_record");
  if (!attrs) return;
  const auto& names = radius_attribute_names();
  size_t next = 0;
  for (const RadiusAttribute& a : *attrs) {
    size_t i = next;
    while (i < names.size() && names[i].first != a.name) ++i;
    check(i < names.size(), "known attribute, in table order, at most once");
    check(names[i].second == a.type, "attribute of its type");
    next = i + 1;
    if (a.type == RadiusAttribute::Type::String) {
      check(a.text.size() <= kRadiusMaxString, "string within 253 bytes");
      check(utf8_prefix(a.text, a.text.size()) == a.text, "string is its own prefix");
    }
    if (a.name == "Acct-Status-Type") check(a.number == kAcctStatusUpdate, "status Update");
    if (a.name == "Acct-Session-Id")
      check(a.text == utf8_prefix(parsed->call_id, kRadiusMaxString), "session id = call_id");
    if (a.name == "Sip-From-Tag")
      check(a.text == utf8_prefix(parsed->from_tag, kRadiusMaxString), "from tag = from_tag");
  }
  check(!attrs->empty() && attrs->front().name == "Acct-Status-Type", "status first");
}

// A value for a numeric field, chosen by `b`.
void number_value(mp::JsonWriter& w, uint8_t b) {
  switch (b % 9) {
    case 0:
      w.value(static_cast<int64_t>(b));
      break;
    case 1:
      w.value(static_cast<uint64_t>(0xffffffffffffffffull - b));
      break;
    case 2:
      w.value(static_cast<int64_t>(-1 - b));
      break;
    case 3:
      w.value(b / 7.0);
      break;
    case 4:
      w.null();
      break;
    case 5:
      w.value("12");
      break;
    case 6:
      w.value(b % 2 == 0);
      break;
    case 7:
      w.value(static_cast<uint64_t>(4294967296ull + b));
      break;
    default:
      w.raw("[1]");
      break;
  }
}

void string_value(mp::JsonWriter& w, uint8_t b, std::string_view text) {
  switch (b % 4) {
    case 0:
      w.value(text);
      break;
    case 1:
      w.null();
      break;
    case 2:
      w.value(static_cast<int64_t>(b));
      break;
    default:
      w.value(text.substr(0, b % 16));
      break;
  }
}

std::string build_record(std::string_view input) {
  const size_t nl1 = input.find('\n');
  const std::string_view call_id = input.substr(0, nl1);
  std::string_view rest = nl1 == std::string_view::npos ? "" : input.substr(nl1 + 1);
  const size_t nl2 = rest.find('\n');
  const std::string_view ua = rest.substr(0, nl2);
  rest = nl2 == std::string_view::npos ? "" : rest.substr(nl2 + 1);
  size_t pos = 0;
  const auto byte = [&]() -> uint8_t {
    return pos < rest.size() ? static_cast<uint8_t>(rest[pos++]) : 0;
  };

  mp::JsonWriter w;
  w.begin_object();
  w.field("call_id", call_id);
  w.field("from_tag", ua.substr(0, 8));
  w.key("to_tag");
  string_value(w, byte(), ua);
  w.key("duration");
  number_value(w, byte());
  w.key("caller_ua");
  string_value(w, byte(), ua);
  w.key("callee_ua");
  string_value(w, byte(), call_id);
  w.key("username");
  string_value(w, byte(), ua);
  w.key("streams");
  const uint8_t n = byte() % 8;
  w.begin_array();
  for (uint8_t i = 0; i < n; ++i) {
    const uint8_t shape = byte();
    if (shape % 11 == 0) {
      w.value("not a stream");
      continue;
    }
    w.begin_object();
    w.key("media_type");
    static const char* kTypes[] = {"audio", "video", "image", "audio", "text"};
    string_value(w, byte(), kTypes[shape % 5]);
    w.key("caller_codec");
    string_value(w, byte(), ua);
    for (const char* key :
         {"start_time", "end_time", "post_dial_delay", "caller_bytes", "callee_bytes"}) {
      w.key(key);
      number_value(w, byte());
    }
    w.key("caller_local");
    static const char* kLocal[] = {"192.0.2.5:40000", "192.0.2.5", "garbage", "1.2.3.4:99999",
                                   "[::1]:5"};
    string_value(w, byte(), kLocal[shape % 5]);
    w.end_object();
  }
  w.end_array();
  w.key("timed_out");
  w.value(byte() % 2 == 0);
  w.key("all_streams_ice");
  w.value(byte() % 3 == 0);
  w.end_object();
  return w.take();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  check_record(input);
  const std::string built = build_record(input);
  check_record(built);
  check_prefix(input, size % 300);
  check_prefix(input, kRadiusMaxString);
  return 0;
}
