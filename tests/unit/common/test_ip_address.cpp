// IPv4 and IPv6 addresses as one value (common/ip_address.h): strict parsing,
// RFC 5952 text, the bracket form of endpoints, and the routable test over
// both families' special ranges.
#include <catch2/catch.hpp>

#include "common/ip_address.h"

using namespace mp;

namespace {
std::string round_trip(const char* text) {
  auto ip = parse_ip(text);
  return ip ? format_ip(*ip) : "(refused)";
}
bool routable(const char* text) {
  auto ip = parse_ip(text);
  REQUIRE(ip);
  return is_publicly_routable(*ip, {});
}
}  // namespace

TEST_CASE("addresses of both families parse strictly and print in RFC 5952 form", "[address]") {
  CHECK(round_trip("192.0.2.7") == "192.0.2.7");
  CHECK(parse_ip("192.0.2.7")->is_v4());
  CHECK(round_trip("2001:DB8:0:0:0:0:0:7") == "2001:db8::7");
  CHECK(round_trip("2001:db8:0:1:0:0:0:1") == "2001:db8:0:1::1");       // the longest run
  CHECK(round_trip("2001:db8:0:1:1:1:1:1") == "2001:db8:0:1:1:1:1:1");  // one zero field stays
  CHECK(round_trip("::1") == "::1");
  CHECK(round_trip("::") == "::");
  CHECK(round_trip("::ffff:192.0.2.1") == "::ffff:192.0.2.1");
  CHECK(parse_ip("::ffff:192.0.2.1")->is_v4_mapped());
  CHECK_FALSE(parse_ip("::ffff:192.0.2.1")->is_v4());
  for (const char* bad : {"", "1.2.3", "1.2.3.4 ", "[::1]", "fe80::1%eth0", "1:2:3:4:5:6:7:8:9",
                          "2001:db8::7::1", "gggg::1", ":", "2001:db8:0:0:0:0:0:0:7",
                          "::ffff:1.2.3.256", "1234567890123456789012345678901234567890123456::"})
    CHECK(round_trip(bad) == "(refused)");
  CHECK(IpAddress::from_v4(*parse_ipv4("10.1.2.3")).v4() == parse_ipv4("10.1.2.3"));
  CHECK(parse_ip("::1") != parse_ip("0.0.0.1"));
}

TEST_CASE("endpoints: a.b.c.d:port and [v6]:port", "[address]") {
  auto v4 = parse_ip_endpoint("192.0.2.7:5060");
  REQUIRE(v4);
  CHECK(format_ip_endpoint(*v4) == "192.0.2.7:5060");
  auto v6 = parse_ip_endpoint("[2001:DB8::7]:40000");
  REQUIRE(v6);
  CHECK(v6->port == 40000);
  CHECK(format_ip_endpoint(*v6) == "[2001:db8::7]:40000");
  CHECK(parse_ip_endpoint("[::ffff:192.0.2.1]:1")->ip.is_v4_mapped());
  for (const char* bad : {"2001:db8::7:40000", "[192.0.2.7]:5060", "[2001:db8::7]",
                          "[2001:db8::7]:", "[2001:db8::7]:65536", "[2001:db8::7]40000",
                          "192.0.2.7", "192.0.2.7:", "192.0.2.7:-1", "[::1]:+5", ""})
    CHECK_FALSE(parse_ip_endpoint(bad));
}

TEST_CASE("public routability covers IPv6's special ranges", "[address]") {
  CHECK(routable("2a00:1450:4001:80b::200e"));
  CHECK(routable("64:ff9b::192.0.2.1"));  // the well-known NAT64 prefix is global
  for (const char* special :
       {"::", "::1", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::7", "2001::1",
        "2002:c000:0201::1", "100::1", "64:ff9b:1::1", "3fff::1", "fec0::1"})
    CHECK_FALSE(routable(special));
  // IPv4-mapped addresses are judged as the IPv4 address.
  CHECK_FALSE(routable("::ffff:10.0.0.1"));
  CHECK(routable("::ffff:8.8.8.8"));
  CHECK_FALSE(routable("10.0.0.1"));
  CHECK(is_publicly_routable(*parse_ip("::ffff:10.0.0.1"), {*parse_cidr("10.0.0.0/8")}));
}

TEST_CASE("socket addresses of either family convert both ways", "[address]") {
  for (const char* text : {"192.0.2.1:5004", "[2001:db8::1]:5004", "[::ffff:192.0.2.1]:9"}) {
    const auto ep = *parse_ip_endpoint(text);
    const SocketAddress sa = SocketAddress::of(ep);
    CHECK(sa.len == (ep.ip.is_v4() ? sizeof(sockaddr_in) : sizeof(sockaddr_in6)));
    CHECK(sa.endpoint() == ep);
    CHECK(format_ip_endpoint(sa.endpoint()) == text);
    CHECK(sa.same_as(SocketAddress::of(ep)));
  }
  // The same bytes in another family are another address.
  CHECK_FALSE(SocketAddress::of(*parse_ip_endpoint("[::ffff:192.0.2.1]:9"))
                  .same_as(SocketAddress::of(*parse_ip_endpoint("192.0.2.1:9"))));
  CHECK(parse_ip("::")->is_any());
  CHECK(parse_ip("0.0.0.0")->is_any());
  CHECK_FALSE(parse_ip("::1")->is_any());
  CHECK(parse_family_digit("6") == IpAddress::Family::V6);
  CHECK_FALSE(parse_family_digit("46"));
}
