// Unit tests for the `media` header codec (protocol/media.h, spec A.5): the
// spec's examples, the tolerated irregularities (empty items, empty
// parameters, unknown parameters) and every way an item can be malformed.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "protocol/media.h"

using namespace mp;
using namespace mp::protocol;

namespace {

Ipv4 ip(const char* text) {
  return *parse_ipv4(text);
}

std::vector<MediaItem> parse_ok(std::string_view text) {
  std::string error;
  auto items = parse_media(text, error);
  INFO("media: " << text << " error: " << error);
  REQUIRE(items);
  CHECK(error.empty());
  return *items;
}

void parse_bad(std::string_view text) {
  std::string error;
  auto items = parse_media(text, error);
  INFO("media: " << text);
  CHECK_FALSE(items);
  CHECK_FALSE(error.empty());
}

}  // namespace

TEST_CASE("Direction names", "[media]") {
  CHECK(to_string(Direction::SendRecv) == "sendrecv");
  CHECK(to_string(Direction::SendOnly) == "sendonly");
  CHECK(to_string(Direction::RecvOnly) == "recvonly");
  CHECK(to_string(Direction::Inactive) == "inactive");
  for (auto d :
       {Direction::SendRecv, Direction::SendOnly, Direction::RecvOnly, Direction::Inactive})
    CHECK(parse_direction(to_string(d)) == d);
  // The modules copy the attribute from the SDP, where it is case-insensitive.
  CHECK(parse_direction("SENDONLY") == Direction::SendOnly);
  CHECK(parse_direction("RecvOnly") == Direction::RecvOnly);
  CHECK_FALSE(parse_direction(""));
  CHECK_FALSE(parse_direction("send"));
  CHECK_FALSE(parse_direction("sendrecv "));
  CHECK_FALSE(parse_direction("recvsend"));
}

TEST_CASE("parse_media: the A.11 offer", "[media]") {
  auto items =
      parse_ok("audio:10.0.0.23:49170:sendrecv:ice=no,video:10.0.0.23:51372:sendrecv:ice=no");
  REQUIRE(items.size() == 2);
  CHECK(items[0] == MediaItem{"audio", ip("10.0.0.23"), 49170, Direction::SendRecv, false});
  CHECK(items[1] == MediaItem{"video", ip("10.0.0.23"), 51372, Direction::SendRecv, false});
}

TEST_CASE("parse_media: the A.11 answer with a rejected stream", "[media]") {
  auto items =
      parse_ok("audio:198.51.100.20:3456:sendrecv:ice=no,video:198.51.100.20:0:sendrecv:ice=no");
  REQUIRE(items.size() == 2);
  CHECK(items[0].port == 3456);
  CHECK(items[0].ip == ip("198.51.100.20"));
  CHECK(items[1].type == "video");
  CHECK(items[1].port == 0);
}

TEST_CASE("parse_media: hold forms, ICE and other media types", "[media]") {
  auto items = parse_ok(
      "audio:0.0.0.0:4000:sendrecv:ice=no,video:1.2.3.4:4002:sendonly:ice=yes,"
      "image:1.2.3.4:4004:recvonly:ice=no,application:1.2.3.4:4006:inactive:ice=no");
  REQUIRE(items.size() == 4);
  CHECK(items[0].ip.is_any());
  CHECK(items[1].direction == Direction::SendOnly);
  CHECK(items[1].ice);
  CHECK_FALSE(items[0].ice);
  CHECK(items[2].type == "image");
  CHECK(items[2].direction == Direction::RecvOnly);
  CHECK(items[3].type == "application");
  CHECK(items[3].direction == Direction::Inactive);
}

TEST_CASE("parse_media: parameters", "[media]") {
  SECTION("no parameter at all means ice=no") {
    auto items = parse_ok("audio:1.2.3.4:5:sendrecv");
    REQUIRE(items.size() == 1);
    CHECK_FALSE(items[0].ice);
  }
  SECTION("ice=yes") {
    CHECK(parse_ok("audio:1.2.3.4:5:sendrecv:ice=yes")[0].ice);
  }
  SECTION("only the exact value yes enables ICE") {
    CHECK_FALSE(parse_ok("audio:1.2.3.4:5:sendrecv:ice=YES")[0].ice);
    CHECK_FALSE(parse_ok("audio:1.2.3.4:5:sendrecv:ice=")[0].ice);
    CHECK_FALSE(parse_ok("audio:1.2.3.4:5:sendrecv:ICE=yes")[0].ice);
  }
  SECTION("unknown parameters are ignored, the last ice wins") {
    auto items = parse_ok("audio:1.2.3.4:5:sendrecv:foo=bar:ice=no:x=:=y:ice=yes");
    CHECK(items[0].ice);
    CHECK_FALSE(parse_ok("audio:1.2.3.4:5:sendrecv:ice=yes:ice=no")[0].ice);
  }
  SECTION("a value may contain '='") {
    CHECK(parse_ok("audio:1.2.3.4:5:sendrecv:k=a=b:ice=yes")[0].ice);
  }
  SECTION("empty parameters are tolerated") {
    CHECK(parse_ok("audio:1.2.3.4:5:sendrecv:")[0].port == 5);
    CHECK(parse_ok("audio:1.2.3.4:5:sendrecv::ice=yes::")[0].ice);
  }
  SECTION("a parameter without '=' rejects the whole header") {
    parse_bad("audio:1.2.3.4:5:sendrecv:ice");
    parse_bad("audio:1.2.3.4:5:sendrecv:ice=yes:bogus");
    parse_bad("audio:1.2.3.4:5:sendrecv:ice=no,video:1.2.3.4:6:sendrecv:yes");
  }
}

TEST_CASE("parse_media: empty items between commas are ignored", "[media]") {
  auto items = parse_ok(",audio:1.2.3.4:5:sendrecv:ice=no,,,video:1.2.3.4:7:sendrecv:ice=no,");
  REQUIRE(items.size() == 2);
  CHECK(items[0].type == "audio");
  CHECK(items[1].type == "video");
  CHECK(parse_ok(",,,").empty());
  CHECK(parse_ok("").empty());
}

TEST_CASE("parse_media: malformed items", "[media]") {
  parse_bad("audio");
  parse_bad("audio:1.2.3.4");
  parse_bad("audio:1.2.3.4:5");
  parse_bad("audio:1.2.3.4:5:");              // empty direction
  parse_bad(":1.2.3.4:5:sendrecv");           // empty media type
  parse_bad("audio::5:sendrecv");             // empty ip
  parse_bad("audio:1.2.3.4::sendrecv");       // empty port
  parse_bad("audio:1.2.3:5:sendrecv");        // bad ip
  parse_bad("audio:1.2.3.256:5:sendrecv");    // bad ip
  parse_bad("audio:example.com:5:sendrecv");  // not an address
  parse_bad("audio:1.2.3.4:65536:sendrecv");  // port > 65535
  parse_bad("audio:1.2.3.4:99999999999999999999:sendrecv");
  parse_bad("audio:1.2.3.4:1/1:sendrecv");  // the module strips "/1"; anything left is bad
  parse_bad("audio:1.2.3.4:-1:sendrecv");
  parse_bad("audio:1.2.3.4:+5:sendrecv");
  parse_bad("audio:1.2.3.4: 5:sendrecv");
  parse_bad("audio:1.2.3.4:0x10:sendrecv");
  parse_bad("audio:1.2.3.4:5:sendrecieve");  // unknown direction
  parse_bad("audio:1.2.3.4:5:both:ice=no");
  parse_bad(" audio:1.2.3.4:5:sendrecv");  // whitespace is not skipped...
  parse_bad("audio:1.2.3.4:5:sendrecv ");  // ...anywhere
  parse_bad("au dio:1.2.3.4:5:sendrecv");
  parse_bad("audio\t:1.2.3.4:5:sendrecv");
  parse_bad("audi\xc3\xb6:1.2.3.4:5:sendrecv");  // media types are ASCII tokens
  // One bad item spoils the whole header.
  parse_bad("audio:1.2.3.4:5:sendrecv:ice=no,video:1.2.3.4:70000:sendrecv:ice=no");
}

TEST_CASE("parse_media: the error is written only on failure", "[media]") {
  std::string error = "untouched";
  CHECK(parse_media("audio:1.2.3.4:5:sendrecv", error));
  CHECK(error == "untouched");
  CHECK_FALSE(parse_media("garbage", error));
  CHECK(error != "untouched");
}

TEST_CASE("parse_media: at most kMaxMediaItems items", "[media]") {
  std::string value;
  for (size_t i = 0; i < kMaxMediaItems; ++i) {
    if (!value.empty()) value += ",";
    value += "audio:10.0.0.1:" + std::to_string(4000 + 2 * i) + ":sendrecv:ice=no";
  }
  auto items = parse_ok(value);
  CHECK(items.size() == kMaxMediaItems);
  CHECK(items.back().port == 4000 + 2 * (kMaxMediaItems - 1));
  // Empty items do not count.
  CHECK(parse_ok(value + ",,,").size() == kMaxMediaItems);
  parse_bad(value + ",audio:10.0.0.1:9000:sendrecv:ice=no");
}

TEST_CASE("format_media", "[media]") {
  std::vector<MediaItem> items{
      {"audio", ip("192.0.2.5"), 40002, Direction::SendRecv, false},
      {"video", ip("0.0.0.0"), 0, Direction::Inactive, true},
  };
  CHECK(format_media(items) ==
        "audio:192.0.2.5:40002:sendrecv:ice=no,video:0.0.0.0:0:inactive:ice=yes");
  CHECK(format_media({}).empty());
}

TEST_CASE("format_media / parse_media round-trip", "[media]") {
  const char* inputs[] = {
      "audio:10.0.0.23:49170:sendrecv:ice=no,video:10.0.0.23:51372:sendrecv:ice=no",
      "audio:198.51.100.20:3456:sendrecv:ice=no,video:198.51.100.20:0:sendrecv:ice=no",
      "audio:0.0.0.0:65535:inactive:ice=yes",
      "image:1.2.3.4:0:recvonly:ice=no",
  };
  for (const char* text : inputs) {
    auto items = parse_ok(text);
    CHECK(format_media(items) == text);  // canonical inputs come back verbatim
    CHECK(parse_ok(format_media(items)) == items);
  }
  // Non-canonical input normalises, and the normal form parses to the same items.
  auto messy = parse_ok(",audio:1.2.3.4:5:SENDONLY::x=y:ice=yes,");
  CHECK(format_media(messy) == "audio:1.2.3.4:5:sendonly:ice=yes");
  CHECK(parse_ok(format_media(messy)) == messy);
}

TEST_CASE("asymmetric=yes is read and written back; absent means no", "[media]") {
  std::string error;
  auto items = mp::protocol::parse_media(
      "audio:192.0.2.1:4000:sendrecv:ice=no:asymmetric=yes,audio:192.0.2.1:4002:sendrecv", error);
  REQUIRE(items);
  REQUIRE(items->size() == 2);
  CHECK((*items)[0].asymmetric);
  CHECK_FALSE((*items)[1].asymmetric);
  CHECK(mp::protocol::format_media(*items) ==
        "audio:192.0.2.1:4000:sendrecv:ice=no:asymmetric=yes,audio:192.0.2.1:4002:sendrecv:ice=no");
}

TEST_CASE("parse_media: IPv6 addresses in brackets (this relay's extension)", "[media]") {
  auto items = parse_ok("audio:[2001:db8::5]:6000:sendrecv:ice=no,video:[::]:0:inactive");
  REQUIRE(items.size() == 2);
  CHECK(items[0].ip == *parse_ip("2001:db8::5"));
  CHECK(items[0].port == 6000);
  CHECK(items[1].ip.is_v6());
  CHECK(items[1].ip.is_any());
  CHECK(format_media(items) ==
        "audio:[2001:db8::5]:6000:sendrecv:ice=no,video:[::]:0:inactive:ice=no");
  // Kamailio's stock module writes IPv6 bare: the address ends at the port
  // before the direction.
  auto bare = parse_ok("audio:2001:db8::23:49170:sendrecv:ice=no,video:::1:5000:RecvOnly");
  REQUIRE(bare.size() == 2);
  CHECK(bare[0].ip == *parse_ip("2001:db8::23"));
  CHECK(bare[0].port == 49170);
  CHECK(bare[1].ip == *parse_ip("::1"));
  CHECK(bare[1].port == 5000);
  CHECK(bare[1].direction == Direction::RecvOnly);
  CHECK(format_media(bare) ==
        "audio:[2001:db8::23]:49170:sendrecv:ice=no,video:[::1]:5000:recvonly:ice=no");
  for (const char* bad :
       {"audio:2001:db8::5:6000",             // no direction: no anchor
        "audio:2001:db8::zz:6000:sendrecv",   // not an address
        "audio:10.0.0.1:6000:7000:sendrecv",  // two ports
        "audio:[10.0.0.1]:6000:sendrecv",     // IPv4 must not have brackets
        "audio:[2001:db8::5:6000:sendrecv", "audio:[2001:db8::5]6000:sendrecv",
        "audio:[]:6000:sendrecv", "audio:[fe80::1%eth0]:6000:sendrecv", "audio:[2001:db8::5]:"}) {
    std::string error;
    CHECK_FALSE(parse_media(bad, error));
    CHECK_FALSE(error.empty());
  }
}
