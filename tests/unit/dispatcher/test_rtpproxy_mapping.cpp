// The rtpproxy front end's mapping of U/L commands onto relay updates
// (dispatcher/rtpproxy_mapping.h): families, bridge letters, reply tokens.
#include <catch2/catch.hpp>

#include <string>

#include "dispatcher/rtpproxy_mapping.h"

using namespace mp;
using namespace mp::dispatcher;

namespace {
protocol::RtpproxyCommand parse(const std::string& text) {
  protocol::RtpproxyParseError error;
  auto cmd = protocol::parse_rtpproxy_command(text, error);
  REQUIRE(cmd);
  return *cmd;
}
}  // namespace

TEST_CASE("a party's address must be of the family its modifier says", "[rtpproxy]") {
  // The parser refuses most mismatches itself (E37); what it lets through,
  // the mapping refuses.
  auto accepted = [](const std::string& text) {
    protocol::RtpproxyParseError error;
    auto cmd = protocol::parse_rtpproxy_command(text, error);
    return cmd && rtpproxy_party_address(*cmd).has_value();
  };
  CHECK(accepted("U c 192.0.2.1 4000 ft;1"));
  CHECK(accepted("U6 c 2001:db8::2 4000 ft;1"));
  CHECK(rtpproxy_party_address(parse("U6 c 2001:db8::2 4000 ft;1"))->is_v6());
  CHECK_FALSE(accepted("U6 c 192.0.2.1 4000 ft;1"));
  CHECK_FALSE(accepted("U4 c 2001:db8::2 4000 ft;1"));
  CHECK_FALSE(accepted("U6 c ::ffff:192.0.2.1 4000 ft;1"));
}

TEST_CASE("bridge letters choose the reply's family: i is IPv4, e is IPv6", "[rtpproxy]") {
  const auto v4 = *parse_ip("192.0.2.1");
  const auto v6 = *parse_ip("2001:db8::2");
  CHECK(rtpproxy_reply_family(parse("UIE c 192.0.2.1 4000 ft;1"), v4) == IpAddress::Family::V6);
  CHECK(rtpproxy_reply_family(parse("LEI6 c 2001:db8::2 4000 ft;1 tt;1"), v6) ==
        IpAddress::Family::V4);
  CHECK(rtpproxy_reply_family(parse("Uii c 192.0.2.1 4000 ft;1"), v4) == IpAddress::Family::V4);
  CHECK(rtpproxy_reply_family(parse("U6 c 2001:db8::2 4000 ft;1"), v6) == IpAddress::Family::V6);
  CHECK(rtpproxy_reply_family(parse("Ui c 192.0.2.1 4000 ft;1"), v4) == IpAddress::Family::V4);
}

TEST_CASE("the reply's family token is what Kamailio needs", "[rtpproxy]") {
  CHECK(rtpproxy_reply_family_token(parse("U c 192.0.2.1 4000 ft;1"), "192.0.2.9") == 0);
  CHECK(rtpproxy_reply_family_token(parse("U6 c 2001:db8::2 4000 ft;1"), "2001:db8::9") == '6');
  CHECK(rtpproxy_reply_family_token(parse("UIE c 192.0.2.1 4000 ft;1"), "2001:db8::9") == '6');
  CHECK(rtpproxy_reply_family_token(parse("LEI6 c 2001:db8::2 4 ft;1 tt;1"), "192.0.2.9") == '4');
}

TEST_CASE("media items and relay replies of either family", "[rtpproxy]") {
  CHECK(rtpproxy_media_item("192.0.2.1", 4000) == "audio:192.0.2.1:4000:sendrecv:ice=no");
  CHECK(rtpproxy_media_item("2001:db8::2", 4000, true) ==
        "audio:[2001:db8::2]:4000:sendrecv:ice=no:asymmetric=yes");
  std::string ip;
  uint16_t port = 0;
  REQUIRE(rtpproxy_pick_port("2001:db8::9 30000 30004", 1, ip, port));
  CHECK(ip == "2001:db8::9");
  CHECK(port == 30004);
  CHECK_FALSE(rtpproxy_pick_port("2001:db8::9 30000", 1, ip, port));
  CHECK_FALSE(rtpproxy_pick_port("error", 0, ip, port));
}
