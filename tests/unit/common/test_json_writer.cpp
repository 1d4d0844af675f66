// Unit tests for JsonWriter / json_quote (common/json_writer.h): the output is
// compared byte for byte with what CPython's json.dumps() prints for the same
// data (expected strings below were produced with Python 3; bytes that are
// not UTF-8 as json.dumps(b.decode("utf-8", "surrogateescape"))). The round
// trip json_quote -> rapidjson -> json_string_bytes, which the dispatcher
// uses on the relay's records, must give back any byte string exactly.
#include <rapidjson/document.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <string>

#include "common/json_writer.h"

using mp::json_quote;
using mp::json_string_bytes;
using mp::JsonWriter;

namespace {

std::string dump_double(double v) {
  JsonWriter w;
  w.value(v);
  return w.take();
}

// What the dispatcher does with a string field of a relay record: rapidjson
// with its default flags, the length from GetStringLength(), then
// json_string_bytes().
std::string round_trip(std::string_view bytes) {
  JsonWriter w;
  w.begin_object();
  w.field("call_id", bytes);
  w.end_object();
  rapidjson::Document d;
  d.Parse(w.str().c_str(), w.str().size());
  REQUIRE_FALSE(d.HasParseError());
  REQUIRE(d.IsObject());
  REQUIRE(d["call_id"].IsString());
  return json_string_bytes({d["call_id"].GetString(), d["call_id"].GetStringLength()});
}

}  // namespace

TEST_CASE("json_quote: plain ASCII and the short escapes", "[json]") {
  CHECK(json_quote("") == "\"\"");
  CHECK(json_quote("abc") == "\"abc\"");
  CHECK(json_quote("a\"b") == "\"a\\\"b\"");
  CHECK(json_quote("a\\b") == "\"a\\\\b\"");
  CHECK(json_quote("a/b") == "\"a/b\"");  // '/' is not escaped by Python
  CHECK(json_quote("\n") == "\"\\n\"");
  CHECK(json_quote("\t") == "\"\\t\"");
  CHECK(json_quote("\r") == "\"\\r\"");
  CHECK(json_quote("\b") == "\"\\b\"");
  CHECK(json_quote("\f") == "\"\\f\"");
}

TEST_CASE("json_quote: other control characters and DEL use lower-case \\u00XX", "[json]") {
  CHECK(json_quote("\x01") == "\"\\u0001\"");
  CHECK(json_quote("\x1f") == "\"\\u001f\"");
  CHECK(json_quote("\x7f") == "\"\\u007f\"");
  CHECK(json_quote(std::string("a\0b", 3)) == "\"a\\u0000b\"");
  CHECK(json_quote("\x0b") == "\"\\u000b\"");
}

TEST_CASE("json_quote: the Python reference sample", "[json]") {
  // json.dumps("a\"b\\c/d\n\t\r\b\f\x01\x1f\x7f é中😀\u2028")
  const std::string input =
      "a\"b\\c/d\n\t\r\b\f\x01\x1f\x7f "
      "\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\xe2\x80\xa8";
  CHECK(json_quote(input) ==
        "\"a\\\"b\\\\c/d\\n\\t\\r\\b\\f\\u0001\\u001f\\u007f "
        "\\u00e9\\u4e2d\\ud83d\\ude00\\u2028\"");
}

TEST_CASE("json_quote: non-ASCII UTF-8", "[json]") {
  CHECK(json_quote("\xc3\xa9") == "\"\\u00e9\"");                 // é (2 bytes)
  CHECK(json_quote("\xe2\x82\xac") == "\"\\u20ac\"");             // € (3 bytes)
  CHECK(json_quote("\xef\xbf\xbf") == "\"\\uffff\"");             // U+FFFF
  CHECK(json_quote("\xc2\x80") == "\"\\u0080\"");                 // U+0080
  CHECK(json_quote("\xf0\x9f\x98\x80") == "\"\\ud83d\\ude00\"");  // 😀 surrogate pair
  CHECK(json_quote("\xf0\x90\x80\x80") == "\"\\ud800\\udc00\"");  // U+10000
  CHECK(json_quote("\xf4\x8f\xbf\xbf") == "\"\\udbff\\udfff\"");  // U+10FFFF
  CHECK(json_quote("Bj\xc3\xb6rk <bj\xc3\xb6rk@example.com>") ==
        "\"Bj\\u00f6rk <bj\\u00f6rk@example.com>\"");
}

TEST_CASE("json_quote: bytes that are not UTF-8 are escaped one by one as \\udcXX", "[json]") {
  CHECK(json_quote("\xff") == "\"\\udcff\"");
  CHECK(json_quote("\x80") == "\"\\udc80\"");                                   // lone continuation
  CHECK(json_quote("\xc0\x80") == "\"\\udcc0\\udc80\"");                        // overlong NUL
  CHECK(json_quote("\xe0\x80\xaf") == "\"\\udce0\\udc80\\udcaf\"");             // overlong '/'
  CHECK(json_quote("\xed\xa0\x80") == "\"\\udced\\udca0\\udc80\"");             // UTF-8 surrogate
  CHECK(json_quote("\xf4\x90\x80\x80") == "\"\\udcf4\\udc90\\udc80\\udc80\"");  // > U+10FFFF
  CHECK(json_quote("\xe2\x82") == "\"\\udce2\\udc82\"");                        // truncated at end
  CHECK(json_quote("\xe2\x82x") == "\"\\udce2\\udc82x\"");                   // truncated mid-string
  CHECK(json_quote("\xc3\xa9\xff\xc3\xa9") == "\"\\u00e9\\udcff\\u00e9\"");  // resync
  CHECK(json_quote(std::string("nul\0\xff", 5)) == "\"nul\\u0000\\udcff\"");
}

TEST_CASE("json round trip: NUL, control bytes and bytes >= 0x80 come back exactly", "[json]") {
  const std::string cases[] = {
      std::string("a\0b", 3),
      std::string("\0", 1),
      std::string("\0\0\xff\0", 4),
      "\x80",
      "\xff",
      "\xff\xfe\x80-high@host",
      "\xc3\x28",                         // invalid continuation
      "\xc0\xaf",                         // overlong '/'
      "\xed\xa0\x80",                     // an encoded surrogate
      "\xed\xb3\xbf",                     // the bytes rapidjson makes of \udcff
      "\xf4\x90\x80\x80",                 // above U+10FFFF
      "\xf0\x9f\x98",                     // truncated
      "\xc3\xa9\xc3\xbf",                 // valid: \u00e9\u00ff, not Latin-1 bytes
      "\xf0\x9f\x98\x80",                 // valid, a surrogate pair in JSON
      "\x01\x1b[31m\x7f\t\r\n\b\f\"\\/",  // control bytes, DEL, escapes
      "tab\there\nFORGED",
  };
  for (const std::string& bytes : cases) {
    INFO(json_quote(bytes));
    CHECK(round_trip(bytes) == bytes);
  }
  // Transcoding would have made these two one key.
  CHECK(round_trip("\xff") != round_trip("\xc3\xbf"));
}

TEST_CASE("json round trip: every byte value and random byte strings", "[json]") {
  std::string all;
  for (int c = 0; c < 256; ++c) all.push_back(static_cast<char>(c));
  CHECK(round_trip(all) == all);
  std::mt19937 rng(20240611);
  for (int n = 0; n < 2000; ++n) {
    std::string bytes(rng() % 24, '\0');
    // Biased towards the bytes of UTF-8 sequences, so valid and broken ones mix.
    static const unsigned char kPool[] = {0x00, 0x0a, 0x41, 0x5c, 0x7f, 0x80, 0x9f, 0xa0,
                                          0xbf, 0xc2, 0xc3, 0xdf, 0xe0, 0xed, 0xef, 0xf0,
                                          0xf4, 0xf5, 0xff, 0xb2, 0xb3, 0x22};
    for (char& ch : bytes)
      ch = static_cast<char>(rng() % 2 ? kPool[rng() % sizeof kPool] : rng() % 256);
    INFO(json_quote(bytes));
    REQUIRE(round_trip(bytes) == bytes);
  }
}

TEST_CASE("json_string_bytes: only the escaped bytes change", "[json]") {
  CHECK(json_string_bytes("") == "");
  CHECK(json_string_bytes("plain") == "plain");
  CHECK(json_string_bytes("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80") ==
        "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
  CHECK(json_string_bytes("\xed\xb2\x80") == "\x80");  // U+DC80
  CHECK(json_string_bytes("\xed\xb3\xbf") == "\xff");  // U+DCFF
  CHECK(json_string_bytes("a\xed\xb3\xbf\xed\xb3\xbe"
                          "b") ==
        "a\xff\xfe"
        "b");
  CHECK(json_string_bytes("\xed\xb0\x80") == "\xed\xb0\x80");  // U+DC00: not ours
  CHECK(json_string_bytes("\xed\x9f\xbf") == "\xed\x9f\xbf");  // U+D7FF
  CHECK(json_string_bytes("\xed\xb3") == "\xed\xb3");          // truncated
  CHECK(json_string_bytes(std::string("\0", 1)) == std::string("\0", 1));
}

TEST_CASE("json_quote: output is always printable ASCII", "[json]") {
  std::string all;
  for (int c = 0; c < 256; ++c) all.push_back(static_cast<char>(c));
  const std::string q = json_quote(all);
  for (char c : q) {
    const auto u = static_cast<unsigned char>(c);
    CHECK((u >= 0x20 && u < 0x7f));
  }
  CHECK(q.front() == '"');
  CHECK(q.back() == '"');
}

TEST_CASE("JsonWriter: doubles are printed like Python's float repr", "[json]") {
  CHECK(dump_double(0.0) == "0.0");
  CHECK(dump_double(-0.0) == "-0.0");
  CHECK(dump_double(1.5) == "1.5");
  CHECK(dump_double(5.0) == "5.0");
  CHECK(dump_double(65.0) == "65.0");
  CHECK(dump_double(100.0) == "100.0");
  CHECK(dump_double(-3.75) == "-3.75");
  CHECK(dump_double(0.1) == "0.1");
  CHECK(dump_double(0.30000000000000004) == "0.30000000000000004");
  CHECK(dump_double(123.456) == "123.456");
  CHECK(dump_double(1700000000.5213) == "1700000000.5213");
  CHECK(dump_double(1.2034759521484375) == "1.2034759521484375");
  CHECK(dump_double(1e16) == "1e+16");
  CHECK(dump_double(1e22) == "1e+22");
  CHECK(dump_double(1e300) == "1e+300");
  CHECK(dump_double(1234567890123456.0) == "1234567890123456.0");
  CHECK(dump_double(12345678901234567.0) == "1.2345678901234568e+16");
  CHECK(dump_double(9007199254740993.0) == "9007199254740992.0");
  CHECK(dump_double(0.0001) == "0.0001");
  CHECK(dump_double(1e-5) == "1e-05");
  CHECK(dump_double(-1e-7) == "-1e-07");
  CHECK(dump_double(2.5e-10) == "2.5e-10");
  CHECK(dump_double(5e-324) == "5e-324");
  CHECK(dump_double(1.7976931348623157e308) == "1.7976931348623157e+308");
}

TEST_CASE("JsonWriter: doubles of every decimal exponent from -4 to 15 as Python writes them",
          "[json]") {
  // Two random values per exponent and a few edges, with the text CPython 3.11's
  // repr() gave for each (random.seed(14); random.uniform(1, 10) * 10**e).
  const std::pair<double, const char*> cases[] = {
      {0.00019614568393149014, "0.00019614568393149014"},
      {0.00073232697158817, "0.00073232697158817"},
      {0.0068683781828284786, "0.0068683781828284786"},
      {0.009463171506095063, "0.009463171506095063"},
      {0.034400370390429084, "0.034400370390429084"},
      {0.03301979620897352, "0.03301979620897352"},
      {0.7606534277302271, "0.7606534277302271"},
      {0.6926050164160682, "0.6926050164160682"},
      {3.726891764995196, "3.726891764995196"},
      {7.158098152692599, "7.158098152692599"},
      {45.700628052971254, "45.700628052971254"},
      {79.97649291011011, "79.97649291011011"},
      {206.55961287889468, "206.55961287889468"},
      {300.9395046810246, "300.9395046810246"},
      {9113.16777647229, "9113.16777647229"},
      {4222.294116546639, "4222.294116546639"},
      {33436.20987579457, "33436.20987579457"},
      {82385.31557429997, "82385.31557429997"},
      {668497.5301075118, "668497.5301075118"},
      {234733.2004081118, "234733.2004081118"},
      {5961994.051850501, "5961994.051850501"},
      {6975991.4761630455, "6975991.4761630455"},
      {24845342.27069077, "24845342.27069077"},
      {68652846.26405172, "68652846.26405172"},
      {210723711.0684962, "210723711.0684962"},
      {403359603.3231074, "403359603.3231074"},
      {1748872037.7273247, "1748872037.7273247"},
      {2839795281.6390367, "2839795281.6390367"},
      {98019958022.0072, "98019958022.0072"},
      {46330821905.252914, "46330821905.252914"},
      {991389371014.2021, "991389371014.2021"},
      {494783246567.6238, "494783246567.6238"},
      {6467780916761.975, "6467780916761.975"},
      {8853358438370.89, "8853358438370.89"},
      {71819515077426.58, "71819515077426.58"},
      {20037831009106.625, "20037831009106.625"},
      {630175751251544.0, "630175751251544.0"},
      {670356434045969.4, "670356434045969.4"},
      {2630782334384518.5, "2630782334384518.5"},
      {1852052492819976.8, "1852052492819976.8"},
      {1796386856.6437292, "1796386856.6437292"},
      {1764806400.0, "1764806400.0"},
      {0.00010000000000000002, "0.00010000000000000002"},
      {9999999999999998.0, "9999999999999998.0"},
      {0.5, "0.5"},
      {1000000000000000.0, "1000000000000000.0"},
      {123456.0, "123456.0"},
  };
  for (const auto& [value, text] : cases) {
    INFO(text);
    CHECK(dump_double(value) == text);
    CHECK(dump_double(-value) == std::string("-") + text);
  }
}

TEST_CASE("JsonWriter: non-finite doubles as json.dumps writes them", "[json]") {
  CHECK(dump_double(std::numeric_limits<double>::quiet_NaN()) == "NaN");
  CHECK(dump_double(std::numeric_limits<double>::infinity()) == "Infinity");
  CHECK(dump_double(-std::numeric_limits<double>::infinity()) == "-Infinity");
}

TEST_CASE("JsonWriter: integers and literals", "[json]") {
  JsonWriter w;
  w.begin_array();
  w.value(std::numeric_limits<int64_t>::min());
  w.value(std::numeric_limits<int64_t>::max());
  w.value(std::numeric_limits<uint64_t>::max());
  w.value(0);
  w.value(-1);
  w.value(true);
  w.value(false);
  w.null();
  w.end_array();
  CHECK(w.str() ==
        "[-9223372036854775808, 9223372036854775807, 18446744073709551615, 0, -1, true, false, "
        "null]");
}

TEST_CASE("JsonWriter: empty containers", "[json]") {
  JsonWriter a;
  a.begin_object();
  a.end_object();
  CHECK(a.str() == "{}");
  JsonWriter b;
  b.begin_array();
  b.end_array();
  CHECK(b.str() == "[]");
}

TEST_CASE("JsonWriter: nested containers use Python separators", "[json]") {
  // json.dumps({"a": [1, [], {}, {"b": [None, True, False]}], "c": {}})
  JsonWriter w;
  w.begin_object();
  w.key("a");
  w.begin_array();
  w.value(1);
  w.begin_array();
  w.end_array();
  w.begin_object();
  w.end_object();
  w.begin_object();
  w.key("b");
  w.begin_array();
  w.null();
  w.value(true);
  w.value(false);
  w.end_array();
  w.end_object();
  w.end_array();
  w.key("c");
  w.begin_object();
  w.end_object();
  w.end_object();
  CHECK(w.str() == "{\"a\": [1, [], {}, {\"b\": [null, true, false]}], \"c\": {}}");
}

TEST_CASE("JsonWriter: keys are escaped like values", "[json]") {
  // (A literal key that needs escaping does not compile: JsonKey; keys
  // known only at run time go through the escaping overloads.)
  JsonWriter w;
  w.begin_object();
  w.field(std::string_view("k\"\xc3\xa9"), "v\n");
  w.key(std::string("t\tab"));
  w.value(1);
  w.end_object();
  CHECK(w.str() == "{\"k\\\"\\u00e9\": \"v\\n\", \"t\\tab\": 1}");
}

TEST_CASE("JsonWriter: literal and run-time keys write the same text", "[json]") {
  JsonWriter literal, runtime;
  const std::string names[] = {"a", "caller_packets", "x y-z.0", ""};
  literal.begin_object();
  literal.field("a", 1);
  literal.field("caller_packets", std::optional<int64_t>{2});
  literal.key("x y-z.0");
  literal.value("v");
  literal.field("", std::optional<int64_t>{});
  literal.end_object();
  runtime.begin_object();
  runtime.field(names[0], 1);
  runtime.field(std::string_view(names[1]), std::optional<int64_t>{2});
  runtime.key(names[2]);
  runtime.value("v");
  runtime.field(names[3], std::optional<int64_t>{});
  runtime.end_object();
  CHECK(literal.str() == "{\"a\": 1, \"caller_packets\": 2, \"x y-z.0\": \"v\", \"\": null}");
  CHECK(runtime.str() == literal.str());
}

TEST_CASE("JsonWriter: raw() inserts pre-serialised JSON as a value", "[json]") {
  JsonWriter w;
  w.begin_array();
  w.raw("{\"x\": 1}");
  w.raw("[]");
  w.value("s");
  w.end_array();
  CHECK(w.str() == "[{\"x\": 1}, [], \"s\"]");

  JsonWriter o;
  o.begin_object();
  o.key("inner");
  o.raw("{\"x\": 1}");
  o.field("after", 2);
  o.end_object();
  CHECK(o.str() == "{\"inner\": {\"x\": 1}, \"after\": 2}");
}

TEST_CASE("JsonWriter: field() with optionals writes null when empty", "[json]") {
  JsonWriter w;
  w.begin_object();
  w.field("a", std::optional<double>{});
  w.field("b", std::optional<double>{2.0});
  w.field("c", std::optional<std::string>{});
  w.field("d", std::optional<std::string>{"x"});
  w.field("e", std::optional<int64_t>{7});
  w.end_object();
  CHECK(w.str() == "{\"a\": null, \"b\": 2.0, \"c\": null, \"d\": \"x\", \"e\": 7}");
}

TEST_CASE("JsonWriter: string overloads", "[json]") {
  JsonWriter w;
  w.begin_array();
  w.value("literal");
  w.value(std::string("string"));
  w.value(std::string_view("view"));
  w.end_array();
  CHECK(w.str() == "[\"literal\", \"string\", \"view\"]");
  const std::string taken = w.take();
  CHECK(taken == "[\"literal\", \"string\", \"view\"]");
}

TEST_CASE("JsonWriter: the D.13 statistics record, byte for byte", "[json]") {
  JsonWriter w;
  w.begin_object();
  w.field("call_id", "3c26700d2b0f@10.0.0.23");
  w.field("from_tag", "9fxced76sl");
  w.field("from_uri", "alice@example.com");
  w.field("to_tag", std::optional<std::string>{"8321234356"});
  w.field("to_uri", "bob@example.net");
  w.field("start_time", std::optional<double>{1700000000.5213});
  w.field("duration", int64_t{65});
  w.field("caller_ua", "Blink 5.1.2");
  w.field("callee_ua", "ExamplePhone/2.0");
  w.field("username", std::optional<std::string>{});
  w.key("streams");
  w.begin_array();

  w.begin_object();
  w.field("media_type", "audio");
  w.field("status", "closed");
  w.field("timeout_wait", 0);
  w.field("caller_codec", "G711u");
  w.field("callee_codec", "G711u");
  w.field("start_time", std::optional<int64_t>{0});
  w.field("end_time", std::optional<int64_t>{65});
  w.field("post_dial_delay", std::optional<double>{1.2034759521484375});
  w.field("caller_bytes", uint64_t{651300});
  w.field("callee_bytes", uint64_t{651300});
  w.field("caller_packets", uint64_t{3263});
  w.field("callee_packets", uint64_t{3263});
  w.field("caller_local", "192.0.2.5:40000");
  w.field("callee_local", "192.0.2.5:40002");
  w.field("caller_remote", "203.0.113.7:62000");
  w.field("callee_remote", "198.51.100.20:3456");
  w.end_object();

  w.begin_object();
  w.field("media_type", "video");
  w.field("status", "rejected");
  w.field("timeout_wait", 0);
  w.field("caller_codec", "Unknown");
  w.field("callee_codec", "Unknown");
  w.field("start_time", std::optional<int64_t>{0});
  w.field("end_time", std::optional<int64_t>{0});
  w.field("post_dial_delay", std::optional<double>{});
  w.field("caller_bytes", uint64_t{0});
  w.field("callee_bytes", uint64_t{0});
  w.field("caller_packets", uint64_t{0});
  w.field("callee_packets", uint64_t{0});
  w.field("caller_local", "192.0.2.5:40004");
  w.field("callee_local", "192.0.2.5:40006");
  w.field("caller_remote", "Unknown");
  w.field("callee_remote", "Unknown");
  w.end_object();

  w.end_array();
  w.end_object();

  const char* expected =
      "{\"call_id\": \"3c26700d2b0f@10.0.0.23\", \"from_tag\": \"9fxced76sl\", \"from_uri\": "
      "\"alice@example.com\", \"to_tag\": \"8321234356\", \"to_uri\": \"bob@example.net\", "
      "\"start_time\": 1700000000.5213, \"duration\": 65, \"caller_ua\": \"Blink 5.1.2\", "
      "\"callee_ua\": \"ExamplePhone/2.0\", \"username\": null, \"streams\": [{\"media_type\": "
      "\"audio\", \"status\": \"closed\", \"timeout_wait\": 0, \"caller_codec\": \"G711u\", "
      "\"callee_codec\": \"G711u\", \"start_time\": 0, \"end_time\": 65, \"post_dial_delay\": "
      "1.2034759521484375, \"caller_bytes\": 651300, \"callee_bytes\": 651300, "
      "\"caller_packets\": 3263, \"callee_packets\": 3263, \"caller_local\": "
      "\"192.0.2.5:40000\", \"callee_local\": \"192.0.2.5:40002\", \"caller_remote\": "
      "\"203.0.113.7:62000\", \"callee_remote\": \"198.51.100.20:3456\"}, {\"media_type\": "
      "\"video\", \"status\": \"rejected\", \"timeout_wait\": 0, \"caller_codec\": \"Unknown\", "
      "\"callee_codec\": \"Unknown\", \"start_time\": 0, \"end_time\": 0, \"post_dial_delay\": "
      "null, \"caller_bytes\": 0, \"callee_bytes\": 0, \"caller_packets\": 0, "
      "\"callee_packets\": 0, \"caller_local\": \"192.0.2.5:40004\", \"callee_local\": "
      "\"192.0.2.5:40006\", \"caller_remote\": \"Unknown\", \"callee_remote\": \"Unknown\"}]}";
  CHECK(w.str() == expected);
}

TEST_CASE("JsonWriter: dispatcher additions appended through raw() prefix", "[json]") {
  // The dispatcher re-emits a relay record with keys appended; emulate the
  // common tail: ..."callee_remote": "Unknown"}], "dialog_id": ..., "timed_out": false}
  JsonWriter w;
  w.begin_object();
  w.key("streams");
  w.raw("[]");
  w.field("dialog_id", "1234:5678");
  w.field("timed_out", false);
  w.end_object();
  CHECK(w.str() == "{\"streams\": [], \"dialog_id\": \"1234:5678\", \"timed_out\": false}");
}
