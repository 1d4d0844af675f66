// Unit tests for the IPv4 helpers (common/address.h): dotted-quad, endpoint,
// CIDR and port parsing, formatting, sockaddr conversion and the "publicly
// routable" test of spec D.5.
#include <arpa/inet.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "common/address.h"

using namespace mp;

namespace {

Ipv4 ip(const char* text) {
  auto parsed = parse_ipv4(text);
  REQUIRE(parsed);
  return *parsed;
}

}  // namespace

TEST_CASE("parse_ipv4 accepts dotted quads", "[address]") {
  CHECK(parse_ipv4("0.0.0.0")->be == 0);
  CHECK(parse_ipv4("0.0.0.0")->is_any());
  CHECK(parse_ipv4("192.0.2.5")->host_order() == 0xc0000205u);
  CHECK(parse_ipv4("255.255.255.255")->host_order() == 0xffffffffu);
  CHECK(parse_ipv4("10.0.0.23")->be == inet_addr("10.0.0.23"));
  CHECK(parse_ipv4("1.2.3.4") == Ipv4::from_host_order(0x01020304u));
}

TEST_CASE("parse_ipv4 rejects everything else", "[address]") {
  const char* bad[] = {"",         "1",         "1.2.3",      "1.2.3.4.5",  "1.2.3.",
                       ".1.2.3",   "1..2.3",    "256.0.0.1",  "1.2.3.256",  "1.2.3.4 ",
                       " 1.2.3.4", "+1.2.3.4",  "1.2.3.-4",   "1.2.3.4/24", "1.2.3.4:5",
                       "a.b.c.d",  "1.2.3.0x1", "1.2.3.1000", "::1",        "1.2.3.4\n",
                       "1.2.3.\0", "999.1.1.1", "1.2.3.4.",   "localhost",  "1,2,3,4"};
  for (const char* text : bad) {
    INFO("input: " << text);
    CHECK_FALSE(parse_ipv4(text));
  }
  CHECK_FALSE(parse_ipv4(std::string_view("1.2.3.4\0", 8)));
}

TEST_CASE("format_ipv4 round-trips", "[address]") {
  for (const char* text : {"0.0.0.0", "192.0.2.5", "255.255.255.255", "10.0.0.23", "1.2.3.4"})
    CHECK(format_ipv4(ip(text)) == text);
  CHECK(format_ipv4(Ipv4{}) == "0.0.0.0");
}

TEST_CASE("format_ipv4 writes what inet_ntop writes", "[address]") {
  // Every octet value in every position, against the C library.
  for (uint32_t v = 0; v < 256; ++v) {
    for (int shift : {0, 8, 16, 24}) {
      const Ipv4 a = Ipv4::from_host_order((v << shift) | (shift == 0 ? 0x0a000000u : 7u));
      char expected[INET_ADDRSTRLEN];
      in_addr in{a.be};
      REQUIRE(inet_ntop(AF_INET, &in, expected, sizeof expected));
      CHECK(format_ipv4(a) == expected);
    }
  }
}

TEST_CASE("parse_port", "[address]") {
  CHECK(parse_port("0") == uint16_t{0});
  CHECK(parse_port("40000") == uint16_t{40000});
  CHECK(parse_port("65535") == uint16_t{65535});
  CHECK_FALSE(parse_port("65536"));
  CHECK_FALSE(parse_port("99999"));
  CHECK_FALSE(parse_port("100000"));
  CHECK_FALSE(parse_port(""));
  CHECK_FALSE(parse_port("-1"));
  CHECK_FALSE(parse_port("+1"));
  CHECK_FALSE(parse_port(" 1"));
  CHECK_FALSE(parse_port("1 "));
  CHECK_FALSE(parse_port("1/1"));
  CHECK_FALSE(parse_port("0x10"));
  CHECK_FALSE(parse_port("12a"));
  CHECK_FALSE(parse_port("18446744073709551617"));
}

TEST_CASE("parse_endpoint / format_endpoint", "[address]") {
  auto ep = parse_endpoint("203.0.113.7:62000");
  REQUIRE(ep);
  CHECK(ep->ip == ip("203.0.113.7"));
  CHECK(ep->port == 62000);
  CHECK(format_endpoint(*ep) == "203.0.113.7:62000");
  CHECK(parse_endpoint("0.0.0.0:0")->empty());
  CHECK_FALSE(parse_endpoint("203.0.113.7"));
  CHECK_FALSE(parse_endpoint("203.0.113.7:"));
  CHECK_FALSE(parse_endpoint(":5"));
  CHECK_FALSE(parse_endpoint("203.0.113.7:65536"));
  CHECK_FALSE(parse_endpoint("203.0.113.7:1:2"));
  CHECK_FALSE(parse_endpoint("host:5060"));
  CHECK_FALSE(parse_endpoint(""));
}

TEST_CASE("Endpoint sockaddr conversion", "[address]") {
  Endpoint ep{ip("198.51.100.20"), 3456};
  sockaddr_in sa = ep.to_sockaddr();
  CHECK(sa.sin_family == AF_INET);
  CHECK(sa.sin_port == htons(3456));
  CHECK(sa.sin_addr.s_addr == inet_addr("198.51.100.20"));
  CHECK(Endpoint::from_sockaddr(sa) == ep);
  CHECK(Endpoint::from_sockaddr(sa) != Endpoint{ip("198.51.100.20"), 3457});
  CHECK_FALSE(ep.empty());
  CHECK(Endpoint{}.empty());
}

TEST_CASE("parse_cidr and Cidr::contains", "[address]") {
  auto net = parse_cidr("10.0.0.0/8");
  REQUIRE(net);
  CHECK(net->prefix == 8);
  CHECK(net->contains(ip("10.255.1.2")));
  CHECK_FALSE(net->contains(ip("11.0.0.0")));

  auto host = parse_cidr("192.0.2.5");
  REQUIRE(host);
  CHECK(host->prefix == 32);
  CHECK(host->contains(ip("192.0.2.5")));
  CHECK_FALSE(host->contains(ip("192.0.2.4")));

  auto all = parse_cidr("0.0.0.0/0");
  REQUIRE(all);
  CHECK(all->contains(ip("255.255.255.255")));
  CHECK(all->contains(ip("1.2.3.4")));

  auto odd = parse_cidr("100.64.0.0/10");
  REQUIRE(odd);
  CHECK(odd->contains(ip("100.127.255.255")));
  CHECK_FALSE(odd->contains(ip("100.128.0.0")));
  CHECK_FALSE(odd->contains(ip("100.63.255.255")));

  // Host bits set in the network address are ignored by contains().
  auto sloppy = parse_cidr("10.1.2.3/8");
  REQUIRE(sloppy);
  CHECK(sloppy->contains(ip("10.200.0.1")));

  CHECK_FALSE(parse_cidr("10.0.0.0/33"));
  CHECK_FALSE(parse_cidr("10.0.0.0/"));
  CHECK_FALSE(parse_cidr("10.0.0.0/-1"));
  CHECK_FALSE(parse_cidr("10.0.0.0/8/8"));
  CHECK_FALSE(parse_cidr("10.0.0/8"));
  CHECK_FALSE(parse_cidr(""));
}

TEST_CASE("is_publicly_routable follows the D.5 special ranges", "[address]") {
  const std::vector<Cidr> none;
  const char* special[] = {"0.1.2.3",    "10.0.0.23",       "100.64.0.1",    "100.127.255.254",
                           "127.0.0.1",  "169.254.1.1",     "172.16.0.1",    "172.31.255.255",
                           "192.0.0.9",  "192.0.2.5",       "192.88.99.1",   "192.168.1.1",
                           "198.18.0.1", "198.19.255.255",  "198.51.100.20", "203.0.113.7",
                           "224.0.0.1",  "239.255.255.255", "240.0.0.1",     "255.255.255.255"};
  for (const char* text : special) {
    INFO(text);
    CHECK_FALSE(is_publicly_routable(ip(text), none));
  }
  const char* routable[] = {"1.1.1.1",        "8.8.8.8",     "100.63.255.255",  "100.128.0.0",
                            "172.15.255.255", "172.32.0.0",  "192.0.1.1",       "192.0.3.1",
                            "192.88.98.1",    "192.169.0.1", "198.17.255.255",  "198.20.0.0",
                            "198.51.101.1",   "203.0.114.1", "223.255.255.255", "11.0.0.1"};
  for (const char* text : routable) {
    INFO(text);
    CHECK(is_publicly_routable(ip(text), none));
  }
}

TEST_CASE("is_publicly_routable honours routable_private_ranges", "[address]") {
  std::vector<Cidr> extra{*parse_cidr("10.0.0.0/8"), *parse_cidr("192.168.5.0/24")};
  CHECK(is_publicly_routable(ip("10.1.2.3"), extra));
  CHECK(is_publicly_routable(ip("192.168.5.9"), extra));
  CHECK_FALSE(is_publicly_routable(ip("192.168.6.9"), extra));
  CHECK_FALSE(is_publicly_routable(ip("127.0.0.1"), extra));
}
