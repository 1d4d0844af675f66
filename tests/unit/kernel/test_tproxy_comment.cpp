// The tproxy table's comment (kernel/tproxy_comment.h): what the relay
// writes reads back as the same owner, with and without an IPv6 address,
// the older form without the socket's port is still understood, and
// anything else (another program's comment, a bad address, range or port,
// trailing text, an over-long comment) is no owner at all.
#include <catch2/catch.hpp>

#include "kernel/tproxy_comment.h"

using namespace mp;
using mp::kernel::format_tproxy_comment;
using mp::kernel::parse_tproxy_comment;
using mp::kernel::TproxyTableOwner;

TEST_CASE("the tproxy table comment names its relay and reads back", "[kernel]") {
  TproxyTableOwner owner{*parse_ipv4("10.0.0.1"), std::nullopt, 40000, 59999, 33117};
  const std::string text = format_tproxy_comment(owner);
  CHECK(text ==
        "mediaproxy relay 10.0.0.1: media ports 40000-59999 to one socket per family at port "
        "33117");
  CHECK(parse_tproxy_comment(text) == owner);

  owner.relay_ip6 = parse_ip("2001:db8::7");
  const std::string both = format_tproxy_comment(owner);
  CHECK(both ==
        "mediaproxy relay 10.0.0.1 and 2001:db8::7: media ports 40000-59999 to one socket per "
        "family at port 33117");
  CHECK(parse_tproxy_comment(both) == owner);

  // Written before the port was recorded (port 0: not known).
  const auto older = parse_tproxy_comment(
      "mediaproxy relay 127.0.0.1: media ports 42000-42999 to one socket per family");
  REQUIRE(older);
  CHECK(older->port == 0);
  CHECK(older->port_lo == 42000);
  CHECK(older->port_hi == 42999);
}

TEST_CASE("anything else is no tproxy table owner", "[kernel]") {
  const char* bad[] = {
      "",
      "mediaproxy relay 10.0.0.1: in-kernel forwarding of latched media streams",  // netdev table
      "someone else's table",
      "mediaproxy relay 10.0.0: media ports 40000-59999 to one socket per family",
      "mediaproxy relay 10.0.0.1 and 10.0.0.2: media ports 40000-59999 to one socket per family",
      "mediaproxy relay 10.0.0.1 and ::ffff:10.0.0.2: media ports 1-2 to one socket per family",
      "mediaproxy relay 10.0.0.1: media ports 59999-40000 to one socket per family",
      "mediaproxy relay 10.0.0.1: media ports 40000-65536 to one socket per family",
      "mediaproxy relay 10.0.0.1: media ports 040000-59999 to one socket per family",
      "mediaproxy relay 10.0.0.1: media ports 40000 to one socket per family",
      "mediaproxy relay 10.0.0.1: media ports 40000-59999 to one socket per family at port 0",
      "mediaproxy relay 10.0.0.1: media ports 40000-59999 to one socket per family at port ",
      "mediaproxy relay 10.0.0.1: media ports 40000-59999 to one socket per family at port 7x",
      "mediaproxy relay 10.0.0.1: media ports 40000-59999 to one socket per family, and more",
  };
  for (const char* text : bad) {
    CAPTURE(text);
    CHECK_FALSE(parse_tproxy_comment(text));
  }
  std::string long_one =
      "mediaproxy relay 10.0.0.1: media ports 40000-59999 to one socket per family at port 1";
  long_one.insert(17 + 8, std::string(200, ' '));
  CHECK_FALSE(parse_tproxy_comment(long_one));
}
