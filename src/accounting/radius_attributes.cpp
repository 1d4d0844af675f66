// radius_attributes(): a session record to the attributes of spec F.2.
//
// Pure: rapidjson reads the record, strings go back to their original bytes
// with json_string_bytes() (the record escapes non-UTF-8 bytes as lone
// surrogates), and every value is checked for its type before use, so that
// no record, however odd, can crash the accounting worker.
#include "accounting/radius_attributes.h"

#include <rapidjson/document.h>

#include <cmath>
#include <limits>
#include <set>

#include "common/address.h"
#include "common/json_writer.h"

namespace mp::accounting {

namespace {

using Type = RadiusAttribute::Type;
using Value = rapidjson::Value;

constexpr uint64_t kMax32 = std::numeric_limits<uint32_t>::max();

// Length of the valid UTF-8 sequence at s[i], or 1 for a byte that does not
// start one (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF).
size_t sequence_length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 1;
  }
  if (i + n > s.size()) return 1;
  if (b(i + 1) < lo || b(i + 1) > hi) return 1;
  for (size_t k = 2; k < n; ++k)
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 1;
  return n;
}

const Value* member(const Value& obj, const char* key) {
  if (!obj.IsObject()) return nullptr;
  auto it = obj.FindMember(key);
  return it == obj.MemberEnd() ? nullptr : &it->value;
}

std::optional<std::string> string_bytes(const Value* v) {
  if (!v || !v->IsString()) return std::nullopt;
  return json_string_bytes({v->GetString(), v->GetStringLength()});
}

// A non-negative JSON number as an integer (fractions dropped, saturated at
// 2^64-1); nullopt for anything else.
std::optional<uint64_t> count(const Value* v) {
  if (!v || !v->IsNumber()) return std::nullopt;
  if (v->IsUint64()) return v->GetUint64();
  if (v->IsInt64()) return std::nullopt;  // negative integer
  const double d = v->GetDouble();
  if (!(d >= 0)) return std::nullopt;
  if (d >= 18446744073709551615.0) return std::numeric_limits<uint64_t>::max();
  return static_cast<uint64_t>(d);
}

bool is_true(const Value* v) {
  return v && v->IsBool() && v->GetBool();
}

// Python's `a != b` on the two JSON values (absent = null).
bool differ(const Value* a, const Value* b) {
  const bool a_null = !a || a->IsNull();
  const bool b_null = !b || b->IsNull();
  if (a_null || b_null) return a_null != b_null;
  if (a->IsNumber() && b->IsNumber()) {
    if (a->IsInt64() && b->IsInt64()) return a->GetInt64() != b->GetInt64();
    if (a->IsUint64() && b->IsUint64()) return a->GetUint64() != b->GetUint64();
    return a->GetDouble() != b->GetDouble();
  }
  return *a != *b;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) {
    if (!out.empty()) out += ", ";
    out += s;
    if (out.size() > kRadiusMaxString) break;  // the rest would be cut anyway
  }
  return out;
}

RadiusAttribute string_attr(const char* name, std::string_view value) {
  RadiusAttribute a;
  a.name = name;
  a.type = Type::String;
  a.text = std::string(utf8_prefix(value, kRadiusMaxString));
  return a;
}

RadiusAttribute int_attr(const char* name, uint64_t value) {
  RadiusAttribute a;
  a.name = name;
  a.type = Type::Integer;
  a.number = static_cast<uint32_t>(std::min(value, kMax32));
  return a;
}

// Octets (low 32 bits) and, when the counter passed 4 GiB, its gigawords.
void add_counter(std::vector<RadiusAttribute>& out, const char* octets, const char* gigawords,
                 uint64_t total) {
  out.push_back(int_attr(octets, total & kMax32));
  if (total >> 32) out.push_back(int_attr(gigawords, total >> 32));
}

// The IPv4 address of an "ip:port" (or bare "ip") value.
std::optional<uint32_t> endpoint_ip(const Value* v) {
  auto text = string_bytes(v);
  if (!text) return std::nullopt;
  std::string_view t = *text;
  if (auto colon = t.rfind(':'); colon != std::string_view::npos) t = t.substr(0, colon);
  auto ip = parse_ipv4(t);
  if (!ip) return std::nullopt;
  return ip->host_order();
}

}  // namespace

std::string_view utf8_prefix(std::string_view s, size_t max) {
  if (s.size() <= max) return s;
  size_t end = 0;
  while (end < s.size()) {
    const size_t n = sequence_length(s, end);
    if (end + n > max) break;
    end += n;
  }
  return s.substr(0, end);
}

const std::vector<std::pair<std::string_view, RadiusAttribute::Type>>& radius_attribute_names() {
  static const std::vector<std::pair<std::string_view, Type>> names = {
      {"Acct-Status-Type", Type::Integer},   {"User-Name", Type::String},
      {"Acct-Session-Id", Type::String},     {"Acct-Session-Time", Type::Integer},
      {"Acct-Input-Octets", Type::Integer},  {"Acct-Input-Gigawords", Type::Integer},
      {"Acct-Output-Octets", Type::Integer}, {"Acct-Output-Gigawords", Type::Integer},
      {"Sip-From-Tag", Type::String},        {"Sip-To-Tag", Type::String},
      {"NAS-IP-Address", Type::Ipv4},        {"Sip-User-Agents", Type::String},
      {"Sip-Applications", Type::String},    {"Media-Codecs", Type::String},
      {"Media-Info", Type::String},          {"Acct-Delay-Time", Type::Integer},
  };
  return names;
}

std::optional<std::vector<RadiusAttribute>> radius_attributes(std::string_view json,
                                                              std::string& error) {
  rapidjson::Document d;
  d.Parse(json.data(), json.size());
  if (d.HasParseError() || !d.IsObject()) {
    error = "the record is not a JSON object";
    return std::nullopt;
  }
  const auto call_id = string_bytes(member(d, "call_id"));
  const auto from_tag = string_bytes(member(d, "from_tag"));
  if (!call_id || !from_tag) {
    error = "the record has no string call_id and from_tag";
    return std::nullopt;
  }

  // The streams that are objects, in record order.
  std::vector<const Value*> streams;
  if (const Value* s = member(d, "streams"); s && s->IsArray())
    for (const Value& v : s->GetArray())
      if (v.IsObject()) streams.push_back(&v);

  uint64_t caller_bytes = 0, callee_bytes = 0;
  const auto add = [](uint64_t a, uint64_t b) {
    return a > std::numeric_limits<uint64_t>::max() - b ? std::numeric_limits<uint64_t>::max()
                                                        : a + b;
  };
  std::set<std::string> applications;
  std::vector<std::string> codecs;
  std::optional<uint64_t> post_dial_delay;
  for (const Value* s : streams) {
    caller_bytes = add(caller_bytes, count(member(*s, "caller_bytes")).value_or(0));
    callee_bytes = add(callee_bytes, count(member(*s, "callee_bytes")).value_or(0));
    if (differ(member(*s, "start_time"), member(*s, "end_time")))
      if (auto type = string_bytes(member(*s, "media_type"))) applications.insert(*type);
    codecs.push_back(string_bytes(member(*s, "caller_codec")).value_or("Unknown"));
    if (!post_dial_delay) post_dial_delay = count(member(*s, "post_dial_delay"));
  }

  std::vector<RadiusAttribute> out;
  out.push_back(int_attr("Acct-Status-Type", kAcctStatusUpdate));
  auto username = string_bytes(member(d, "username"));
  out.push_back(
      string_attr("User-Name", username && !username->empty() ? *username : "mediaproxy@default"));
  out.push_back(string_attr("Acct-Session-Id", *call_id));
  if (auto duration = count(member(d, "duration")))
    out.push_back(int_attr("Acct-Session-Time", *duration));
  add_counter(out, "Acct-Input-Octets", "Acct-Input-Gigawords", caller_bytes);
  add_counter(out, "Acct-Output-Octets", "Acct-Output-Gigawords", callee_bytes);
  out.push_back(string_attr("Sip-From-Tag", *from_tag));
  out.push_back(string_attr("Sip-To-Tag", string_bytes(member(d, "to_tag")).value_or("")));
  if (!streams.empty()) {
    // The relay's IPv4 address: an IPv6 caller side (a bridged or IPv6
    // call) gives way to the callee side; an all-IPv6 call has none.
    auto ip = endpoint_ip(member(*streams.front(), "caller_local"));
    if (!ip) ip = endpoint_ip(member(*streams.front(), "callee_local"));
    if (ip) {
      RadiusAttribute a;
      a.name = "NAS-IP-Address";
      a.type = Type::Ipv4;
      a.number = *ip;
      out.push_back(std::move(a));
    }
  }
  out.push_back(string_attr("Sip-User-Agents",
                            string_bytes(member(d, "caller_ua")).value_or("Unknown") + "+" +
                                string_bytes(member(d, "callee_ua")).value_or("Unknown")));
  out.push_back(string_attr("Sip-Applications", join({applications.begin(), applications.end()})));
  out.push_back(string_attr("Media-Codecs", join(codecs)));
  const bool all_ice = is_true(member(d, "all_streams_ice"));
  const char* info = all_ice ? "ICE session" : is_true(member(d, "timed_out")) ? "timeout" : "";
  out.push_back(string_attr("Media-Info", info));
  if (post_dial_delay) out.push_back(int_attr("Acct-Delay-Time", *post_dial_delay));
  return out;
}

}  // namespace mp::accounting
