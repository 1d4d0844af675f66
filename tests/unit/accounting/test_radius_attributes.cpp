// Unit tests for radius_attributes(): a session record to the attributes of
// the RADIUS Accounting-Request (spec F.2), every attribute of the table on
// the D.13 example, the 253-byte limit of strings (ASCII, multi-byte UTF-8,
// bytes that are not UTF-8), records with no stream, and missing or odd
// fields, which must never fail the record nor crash.
#include <catch2/catch.hpp>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "accounting/radius_attributes.h"
#include "common/json_writer.h"

using mp::accounting::kRadiusMaxString;
using mp::accounting::radius_attributes;
using mp::accounting::RadiusAttribute;
using mp::accounting::utf8_prefix;
using Type = RadiusAttribute::Type;

namespace {

// Spec D.13 example with the dispatcher's additions after `remove`.
const std::string kD13 =
    R"({"call_id": "3c26700d2b0f@10.0.0.23", "from_tag": "9fxced76sl", )"
    R"("from_uri": "alice@example.com", "to_tag": "8321234356", )"
    R"("to_uri": "bob@example.net", "start_time": 1700000000.5213, "duration": 65, )"
    R"("caller_ua": "Blink 5.1.2", "callee_ua": "ExamplePhone/2.0", "username": null, )"
    R"("streams": [)"
    R"({"media_type": "audio", "status": "closed", "timeout_wait": 0, )"
    R"("caller_codec": "G711u", "callee_codec": "G711u", "start_time": 0, )"
    R"("end_time": 65, "post_dial_delay": 1.2034759521484375, )"
    R"("caller_bytes": 651300, "callee_bytes": 651300, "caller_packets": 3263, )"
    R"("callee_packets": 3263, "caller_local": "192.0.2.5:40000", )"
    R"("callee_local": "192.0.2.5:40002", "caller_remote": "203.0.113.7:62000", )"
    R"("callee_remote": "198.51.100.20:3456"}, )"
    R"({"media_type": "video", "status": "rejected", "timeout_wait": 0, )"
    R"("caller_codec": "Unknown", "callee_codec": "Unknown", "start_time": 0, )"
    R"("end_time": 0, "post_dial_delay": null, "caller_bytes": 0, )"
    R"("callee_bytes": 0, "caller_packets": 0, "callee_packets": 0, )"
    R"("caller_local": "192.0.2.5:40004", "callee_local": "192.0.2.5:40006", )"
    R"("caller_remote": "Unknown", "callee_remote": "Unknown"}], )"
    R"("dialog_id": "5299989648942", "timed_out": false})";

std::vector<RadiusAttribute> attrs_of(const std::string& json) {
  std::string error;
  auto a = radius_attributes(json, error);
  INFO(error);
  REQUIRE(a.has_value());
  return *a;
}

const RadiusAttribute* find(const std::vector<RadiusAttribute>& attrs, const std::string& name) {
  for (const auto& a : attrs)
    if (a.name == name) return &a;
  return nullptr;
}

std::string text(const std::vector<RadiusAttribute>& attrs, const std::string& name) {
  const RadiusAttribute* a = find(attrs, name);
  INFO(name);
  REQUIRE(a != nullptr);
  CHECK(a->type == Type::String);
  return a->text;
}

uint32_t number(const std::vector<RadiusAttribute>& attrs, const std::string& name) {
  const RadiusAttribute* a = find(attrs, name);
  INFO(name);
  REQUIRE(a != nullptr);
  CHECK(a->type != Type::String);
  return a->number;
}

// A record with the given top-level fields (raw JSON text after call_id and
// from_tag) and streams.
std::string record(const std::string& fields, const std::string& streams = "[]") {
  return R"({"call_id": "c1", "from_tag": "f1", )" + fields + (fields.empty() ? "" : ", ") +
         R"("streams": )" + streams + "}";
}

std::string stream(const std::string& fields) {
  return "{" + fields + "}";
}

}  // namespace

TEST_CASE("radius: every F.2 attribute of the D.13 example, in table order", "[radius]") {
  const auto attrs = attrs_of(kD13);
  std::vector<std::string> names;
  for (const auto& a : attrs) names.push_back(a.name);
  CHECK(names == std::vector<std::string>{"Acct-Status-Type", "User-Name", "Acct-Session-Id",
                                          "Acct-Session-Time", "Acct-Input-Octets",
                                          "Acct-Output-Octets", "Sip-From-Tag", "Sip-To-Tag",
                                          "NAS-IP-Address", "Sip-User-Agents", "Sip-Applications",
                                          "Media-Codecs", "Media-Info", "Acct-Delay-Time"});
  CHECK(number(attrs, "Acct-Status-Type") == 3);
  CHECK(text(attrs, "User-Name") == "mediaproxy@default");
  CHECK(text(attrs, "Acct-Session-Id") == "3c26700d2b0f@10.0.0.23");
  CHECK(number(attrs, "Acct-Session-Time") == 65);
  CHECK(number(attrs, "Acct-Input-Octets") == 651300);
  CHECK(number(attrs, "Acct-Output-Octets") == 651300);
  CHECK(text(attrs, "Sip-From-Tag") == "9fxced76sl");
  CHECK(text(attrs, "Sip-To-Tag") == "8321234356");
  CHECK(find(attrs, "NAS-IP-Address")->type == Type::Ipv4);
  CHECK(number(attrs, "NAS-IP-Address") == ((192u << 24) | (2u << 8) | 5u));
  CHECK(text(attrs, "Sip-User-Agents") == "Blink 5.1.2+ExamplePhone/2.0");
  CHECK(text(attrs, "Sip-Applications") == "audio");  // video: start_time == end_time
  CHECK(text(attrs, "Media-Codecs") == "G711u, Unknown");
  CHECK(text(attrs, "Media-Info") == "");
  CHECK(number(attrs, "Acct-Delay-Time") == 1);
  CHECK(find(attrs, "Acct-Input-Gigawords") == nullptr);
  CHECK(find(attrs, "Acct-Output-Gigawords") == nullptr);
}

TEST_CASE("radius: every name returned is listed with its type", "[radius]") {
  const auto& names = mp::accounting::radius_attribute_names();
  const auto attrs =
      attrs_of(record(R"("duration": 1, "timed_out": true)",
                      "[" +
                          stream(R"("caller_bytes": 5000000000, "callee_bytes": 5000000000, )"
                                 R"("caller_local": "10.0.0.1:1", "post_dial_delay": 0.5)") +
                          "]"));
  for (const auto& a : attrs) {
    INFO(a.name);
    bool listed = false;
    for (const auto& [n, t] : names) listed = listed || (n == a.name && t == a.type);
    CHECK(listed);
  }
  CHECK(attrs.size() == names.size());  // this record has every attribute
}

TEST_CASE("radius: User-Name from the record", "[radius]") {
  CHECK(text(attrs_of(record(R"("username": "alice@example.com")")), "User-Name") ==
        "alice@example.com");
  CHECK(text(attrs_of(record(R"("username": "")")), "User-Name") == "mediaproxy@default");
  CHECK(text(attrs_of(record(R"("username": 17)")), "User-Name") == "mediaproxy@default");
  CHECK(text(attrs_of(record("")), "User-Name") == "mediaproxy@default");
}

TEST_CASE("radius: Media-Info for timeouts and ICE sessions", "[radius]") {
  CHECK(text(attrs_of(record(R"("timed_out": true, "all_streams_ice": false)")), "Media-Info") ==
        "timeout");
  CHECK(text(attrs_of(record(R"("timed_out": true, "all_streams_ice": true)")), "Media-Info") ==
        "ICE session");
  CHECK(text(attrs_of(record(R"("timed_out": false, "all_streams_ice": true)")), "Media-Info") ==
        "ICE session");
  CHECK(text(attrs_of(record(R"("timed_out": false)")), "Media-Info") == "");
  CHECK(text(attrs_of(record(R"("timed_out": "yes", "all_streams_ice": 1)")), "Media-Info") == "");
}

TEST_CASE("radius: a record with no stream (the F.2 crash) has no NAS-IP-Address", "[radius]") {
  const auto attrs = attrs_of(record(R"("duration": 3, "to_tag": "t")"));
  CHECK(find(attrs, "NAS-IP-Address") == nullptr);
  CHECK(find(attrs, "Acct-Delay-Time") == nullptr);
  CHECK(number(attrs, "Acct-Input-Octets") == 0);
  CHECK(number(attrs, "Acct-Output-Octets") == 0);
  CHECK(text(attrs, "Sip-Applications") == "");
  CHECK(text(attrs, "Media-Codecs") == "");
  CHECK(number(attrs, "Acct-Session-Time") == 3);
  // `streams` missing or not a list: the same.
  for (const std::string& json : {std::string(R"({"call_id": "c", "from_tag": "f"})"),
                                  std::string(R"({"call_id": "c", "from_tag": "f", "streams": 7})"),
                                  record("", R"([1, "x", null, []])")}) {
    INFO(json);
    const auto a = attrs_of(json);
    CHECK(find(a, "NAS-IP-Address") == nullptr);
    CHECK(text(a, "Media-Codecs") == "");
  }
}

TEST_CASE("radius: to_tag null, missing or odd gives an empty Sip-To-Tag", "[radius]") {
  CHECK(text(attrs_of(record(R"("to_tag": null)")), "Sip-To-Tag") == "");
  CHECK(text(attrs_of(record("")), "Sip-To-Tag") == "");
  CHECK(text(attrs_of(record(R"("to_tag": 12)")), "Sip-To-Tag") == "");
  CHECK(text(attrs_of(record(R"("to_tag": "x")")), "Sip-To-Tag") == "x");
}

TEST_CASE("radius: call-id bytes that are not UTF-8 are kept", "[radius]") {
  const std::string call_id = std::string("ab\xff\xfe\x80z", 6) + std::string(1, '\0') + "\x01";
  const std::string json = R"({"call_id": )" + mp::json_quote(call_id) + R"(, "from_tag": )" +
                           mp::json_quote("t\xc3\xa9") + "}";
  const auto attrs = attrs_of(json);
  CHECK(text(attrs, "Acct-Session-Id") == call_id);
  CHECK(text(attrs, "Sip-From-Tag") == "t\xc3\xa9");
}

TEST_CASE("radius: strings are cut to 253 bytes at a character boundary", "[radius]") {
  SECTION("ASCII") {
    const std::string ua(300, 'a');
    const auto attrs =
        attrs_of(record(R"("caller_ua": )" + mp::json_quote(ua) + R"(, "callee_ua": "b")"));
    CHECK(text(attrs, "Sip-User-Agents") == std::string(kRadiusMaxString, 'a'));
  }
  SECTION("exactly 253 bytes are kept whole") {
    const std::string id(kRadiusMaxString, 'x');
    CHECK(text(attrs_of(R"({"call_id": ")" + id + R"(", "from_tag": "f"})"), "Acct-Session-Id") ==
          id);
  }
  SECTION("two-byte characters: 126 of them (252 bytes), never half of the 127th") {
    std::string ua;
    for (int i = 0; i < 200; ++i) ua += "\xc3\xa9";  // é
    const auto attrs = attrs_of(record(R"("caller_ua": )" + mp::json_quote(ua)));
    const std::string got = text(attrs, "Sip-User-Agents");
    CHECK(got.size() == 252);
    CHECK(got == ua.substr(0, 252));
  }
  SECTION("three- and four-byte characters in call-id and tags") {
    std::string euro, emoji;
    for (int i = 0; i < 100; ++i) euro += "\xe2\x82\xac";       // € (3 bytes)
    for (int i = 0; i < 100; ++i) emoji += "\xf0\x9f\x98\x80";  // U+1F600 (4 bytes)
    const auto attrs =
        attrs_of(R"({"call_id": )" + mp::json_quote(euro) + R"(, "from_tag": )" +
                 mp::json_quote(emoji) + R"(, "to_tag": )" + mp::json_quote("a" + euro) + "}");
    CHECK(text(attrs, "Acct-Session-Id") == euro.substr(0, 252));     // 84 x 3
    CHECK(text(attrs, "Sip-From-Tag") == emoji.substr(0, 252));       // 63 x 4
    CHECK(text(attrs, "Sip-To-Tag") == ("a" + euro).substr(0, 253));  // 1 + 84 x 3
  }
  SECTION("bytes that are not UTF-8 count one each") {
    const std::string id(300, '\xff');
    const auto attrs = attrs_of(R"({"call_id": )" + mp::json_quote(id) + R"(, "from_tag": "f"})");
    CHECK(text(attrs, "Acct-Session-Id") == std::string(kRadiusMaxString, '\xff'));
  }
  SECTION("lists of codecs and media types") {
    std::string streams = "[";
    for (int i = 0; i < 100; ++i) {
      if (i) streams += ", ";
      streams +=
          stream(R"("media_type": "type)" + std::to_string(i) + R"(", "caller_codec": "codec)" +
                 std::to_string(i) + R"(", "start_time": 0, "end_time": 1)");
    }
    streams += "]";
    const auto attrs = attrs_of(record("", streams));
    const std::string codecs = text(attrs, "Media-Codecs");
    CHECK(codecs.size() == kRadiusMaxString);
    CHECK(codecs.rfind("codec0, codec1, codec2, ", 0) == 0);
    const std::string apps = text(attrs, "Sip-Applications");
    CHECK(apps.size() == kRadiusMaxString);
    CHECK(apps.rfind("type0, type1, type10, type11, ", 0) == 0);  // sorted as strings
  }
}

TEST_CASE("radius: utf8_prefix", "[radius]") {
  CHECK(utf8_prefix("abc", 5) == "abc");
  CHECK(utf8_prefix("abc", 2) == "ab");
  CHECK(utf8_prefix("a\xc3\xa9", 2) == "a");
  CHECK(utf8_prefix("a\xe2\x82\xac", 3) == "a");
  CHECK(utf8_prefix("a\xe2\x82\xac", 4) == "a\xe2\x82\xac");
  CHECK(utf8_prefix("a\xf0\x9f\x98\x80z", 4) == "a");
  // Invalid sequences are single bytes and may be cut anywhere.
  CHECK(utf8_prefix("a\xe2\x82z", 2) == "a\xe2");               // truncated sequence
  CHECK(utf8_prefix("\xc0\x80\xc0\x80", 3) == "\xc0\x80\xc0");  // overlong
  CHECK(utf8_prefix("\xed\xa0\x80x", 2) == "\xed\xa0");         // surrogate
  CHECK(utf8_prefix("", 0) == "");
}

TEST_CASE("radius: Sip-Applications are the distinct sorted types of streams that ran",
          "[radius]") {
  const std::string streams =
      "[" + stream(R"("media_type": "video", "start_time": 0, "end_time": 10)") + ", " +
      stream(R"("media_type": "audio", "start_time": 0, "end_time": 10)") + ", " +
      stream(R"("media_type": "audio", "start_time": 5, "end_time": 10)") + ", " +
      stream(R"("media_type": "image", "start_time": 3, "end_time": 3)") + ", " +
      stream(R"("media_type": "text", "start_time": null, "end_time": null)") + ", " +
      stream(R"("media_type": "message", "start_time": null, "end_time": 4)") + ", " +
      stream(R"("media_type": "application", "start_time": 2, "end_time": 2.0)") + ", " +
      stream(R"("media_type": 5, "start_time": 1, "end_time": 2)") + "]";
  CHECK(text(attrs_of(record("", streams)), "Sip-Applications") == "audio, message, video");
}

TEST_CASE("radius: byte counters are summed; 4 GiB and more use the gigawords", "[radius]") {
  SECTION("sums over streams") {
    const auto attrs =
        attrs_of(record("", "[" + stream(R"("caller_bytes": 10, "callee_bytes": 20)") + ", " +
                                stream(R"("caller_bytes": 1, "callee_bytes": 2)") + "]"));
    CHECK(number(attrs, "Acct-Input-Octets") == 11);
    CHECK(number(attrs, "Acct-Output-Octets") == 22);
  }
  SECTION("past 32 bits") {
    const auto attrs = attrs_of(
        record("", "[" + stream(R"("caller_bytes": 4294967295, "callee_bytes": 3000000000)") +
                       ", " + stream(R"("caller_bytes": 1, "callee_bytes": 3000000000)") + "]"));
    CHECK(number(attrs, "Acct-Input-Octets") == 0);
    CHECK(number(attrs, "Acct-Input-Gigawords") == 1);
    CHECK(number(attrs, "Acct-Output-Octets") == static_cast<uint32_t>(6000000000ull));
    CHECK(number(attrs, "Acct-Output-Gigawords") == 1);
    // The gigawords follow their octets.
    std::vector<std::string> names;
    for (const auto& a : attrs) names.push_back(a.name);
    const auto at = std::find(names.begin(), names.end(), "Acct-Input-Octets");
    REQUIRE(names.end() - at >= 4);
    CHECK(at[1] == "Acct-Input-Gigawords");
    CHECK(at[2] == "Acct-Output-Octets");
    CHECK(at[3] == "Acct-Output-Gigawords");
  }
  SECTION("saturated, never wrapped") {
    const auto attrs =
        attrs_of(record("", "[" + stream(R"("caller_bytes": 18446744073709551615)") + ", " +
                                stream(R"("caller_bytes": 18446744073709551615)") + "]"));
    CHECK(number(attrs, "Acct-Input-Octets") == 0xffffffffu);
    CHECK(number(attrs, "Acct-Input-Gigawords") == 0xffffffffu);
  }
}

TEST_CASE("radius: missing and odd fields never fail the record", "[radius]") {
  SECTION("duration") {
    CHECK(find(attrs_of(record("")), "Acct-Session-Time") == nullptr);
    CHECK(find(attrs_of(record(R"("duration": null)")), "Acct-Session-Time") == nullptr);
    CHECK(find(attrs_of(record(R"("duration": -5)")), "Acct-Session-Time") == nullptr);
    CHECK(find(attrs_of(record(R"("duration": "65")")), "Acct-Session-Time") == nullptr);
    CHECK(number(attrs_of(record(R"("duration": 65.9)")), "Acct-Session-Time") == 65);
    CHECK(number(attrs_of(record(R"("duration": 0)")), "Acct-Session-Time") == 0);
    CHECK(number(attrs_of(record(R"("duration": 99999999999)")), "Acct-Session-Time") ==
          0xffffffffu);
  }
  SECTION("counters that are not non-negative numbers count as 0") {
    const auto attrs =
        attrs_of(record("", "[" + stream(R"("caller_bytes": "100", "callee_bytes": -3)") + ", " +
                                stream(R"("caller_bytes": 7.5, "callee_bytes": null)") + "]"));
    CHECK(number(attrs, "Acct-Input-Octets") == 7);
    CHECK(number(attrs, "Acct-Output-Octets") == 0);
  }
  SECTION("user agents and codecs") {
    const auto attrs = attrs_of(record(R"("caller_ua": null, "callee_ua": ["x"])",
                                       "[" + stream(R"("caller_codec": 8)") + ", " + stream("") +
                                           ", " + stream(R"("caller_codec": "opus")") + "]"));
    CHECK(text(attrs, "Sip-User-Agents") == "Unknown+Unknown");
    CHECK(text(attrs, "Media-Codecs") == "Unknown, Unknown, opus");
  }
  SECTION("NAS-IP-Address only from a valid IPv4 caller_local of the first stream") {
    auto nas = [](const std::string& first) -> std::optional<uint32_t> {
      const auto attrs = attrs_of(
          record("", "[" + stream(first) + ", " + stream(R"("caller_local": "10.0.0.1:5")") + "]"));
      const RadiusAttribute* a = find(attrs, "NAS-IP-Address");
      if (!a) return std::nullopt;
      return a->number;
    };
    CHECK(nas(R"("caller_local": "garbage")") == std::nullopt);
    CHECK(nas(R"("caller_local": "Unknown")") == std::nullopt);
    CHECK(nas(R"("caller_local": "[2001:db8::1]:4000")") == std::nullopt);
    CHECK(nas(R"("caller_local": 17)") == std::nullopt);
    CHECK(nas("") == std::nullopt);
    CHECK(nas(R"("caller_local": "198.51.100.1")") == 0xc6336401u);
    CHECK(nas(R"("caller_local": "198.51.100.1:40000")") == 0xc6336401u);
  }
  SECTION("Acct-Delay-Time from the first stream that has a post-dial delay") {
    auto delay = [](const std::string& streams) -> std::optional<uint32_t> {
      const auto attrs = attrs_of(record("", streams));
      const RadiusAttribute* a = find(attrs, "Acct-Delay-Time");
      if (!a) return std::nullopt;
      return a->number;
    };
    const std::string later = stream(R"("post_dial_delay": 2.7)");
    CHECK(delay("[" + stream(R"("post_dial_delay": null)") + ", " + later + "]") == 2u);
    CHECK(delay("[" + stream(R"("post_dial_delay": "1")") + ", " + later + "]") == 2u);
    CHECK(delay("[" + stream(R"("post_dial_delay": -1.5)") + ", " + later + "]") == 2u);
    CHECK(delay("[" + stream(R"("post_dial_delay": 0.2)") + ", " + later + "]") == 0u);
    CHECK(delay("[" + stream(R"("post_dial_delay": null)") + "]") == std::nullopt);
  }
}

TEST_CASE("radius: records without call_id or from_tag are errors", "[radius]") {
  for (const std::string& json :
       {std::string(""), std::string("not json"), std::string("[]"), std::string("null"),
        std::string(R"({"from_tag": "f"})"), std::string(R"({"call_id": "c"})"),
        std::string(R"({"call_id": 1, "from_tag": "f"})"),
        std::string(R"({"call_id": "c", "from_tag": null})"),
        std::string(R"({"call_id": "c", "from_tag": "f")")}) {
    INFO(json);
    std::string error;
    CHECK_FALSE(radius_attributes(json, error).has_value());
    CHECK_FALSE(error.empty());
  }
}

TEST_CASE("radius: NAS-IP-Address of IPv6 and bridged calls", "[radius]") {
  // Bridged: the caller side is IPv6, the callee side gives the relay's IPv4.
  auto bridged = attrs_of(record(
      "",
      "[" + stream(R"("caller_local": "[2001:db8::7]:40000", "callee_local": "192.0.2.5:40002")") +
          "]"));
  CHECK(number(bridged, "NAS-IP-Address") == ((192u << 24) | (2u << 8) | 5u));
  // All IPv6: no IPv4 address to give, so no attribute (never a wrong one).
  auto v6 = attrs_of(record(
      "",
      "[" +
          stream(
              R"("caller_local": "[2001:db8::7]:40000", "callee_local": "[2001:db8::7]:40002")") +
          "]"));
  CHECK(find(v6, "NAS-IP-Address") == nullptr);
}
