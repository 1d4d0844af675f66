// The in-kernel forwarder's map elements and table comment, byte for byte
// (kernel/nft_elements.h, kernel/nft_ruleset.h): the layouts the ingress
// rules' registers expect for IPv4 (fwd_map) and IPv6 (fwd6_map), their
// decoding back (adopt() relies on it), and the comment that tells whose
// table it is, in the older IPv4-only form and with an IPv6 address.
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "kernel/nft_elements.h"
#include "kernel/nft_ruleset.h"

using namespace mp;
using namespace mp::kernel::detail;

namespace {
IpAddress ip(const char* text) {
  auto a = parse_ip(text);
  REQUIRE(a);
  return *a;
}
std::vector<uint8_t> bytes(const uint8_t* p, uint32_t n) {
  return std::vector<uint8_t>(p, p + n);
}
}  // namespace

TEST_CASE("fwd_map keys and values have the IPv4 register layout", "[nft]") {
  const FwdKey k = make_fwd_key(RuleKey{ip("10.200.1.2"), 4000, 40000}, ip("10.200.0.1"));
  REQUIRE(k.len == kFwdKeyLen);
  // source address . relay address . sport . dport as they lie in the
  // headers (two loads fill the key), network order
  CHECK(bytes(k.bytes, k.len) ==
        std::vector<uint8_t>{10, 200, 1, 2, 10, 200, 0, 1, 0x0f, 0xa0, 0x9c, 0x40});
  IpAddress relay;
  const auto key = parse_fwd_key(k.bytes, k.len, &relay);
  REQUIRE(key);
  CHECK(*key == RuleKey{ip("10.200.1.2"), 4000, 40000});
  CHECK(relay == ip("10.200.0.1"));

  const FwdValue v = make_fwd_value(
      FwdTarget{ip("10.200.0.1"), ip("10.200.2.2"), 40002, 5000, ip("10.200.2.9"), 0x01020304});
  REQUIRE(v.len == kFwdValueLen);
  std::vector<uint8_t> want{10, 200, 0, 1, 10, 200, 2, 2, 0x9c, 0x42, 0x13, 0x88, 10, 200, 2, 9};
  uint32_t ifindex = 0x01020304;  // host order, as fwd reads it
  uint8_t host_order[4];
  std::memcpy(host_order, &ifindex, sizeof host_order);
  for (uint8_t byte : host_order) want.push_back(byte);
  CHECK(bytes(v.bytes, v.len) == want);
  const auto back = parse_fwd_value(v.bytes, v.len);
  REQUIRE(back);
  CHECK(back->saddr == ip("10.200.0.1"));
  CHECK(back->daddr == ip("10.200.2.2"));
  CHECK(back->sport == 40002);
  CHECK(back->dport == 5000);
  CHECK(back->next_hop == ip("10.200.2.9"));
  CHECK(back->ifindex == 0x01020304u);
}

TEST_CASE("fwd6_map keys and values have the IPv6 register layout", "[nft]") {
  const FwdKey k = make_fwd_key(RuleKey{ip("fd00:200:1::2"), 4000, 40000}, ip("fd00:200::1"));
  REQUIRE(k.len == kFwd6KeyLen);
  std::vector<uint8_t> want{0xfd, 0, 0x02, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
                            0xfd, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  for (uint8_t b : {0x0f, 0xa0, 0x9c, 0x40}) want.push_back(b);
  CHECK(bytes(k.bytes, k.len) == want);
  IpAddress relay;
  const auto key = parse_fwd_key(k.bytes, k.len, &relay);
  REQUIRE(key);
  CHECK_FALSE(key->saddr.is_v4());
  CHECK(*key == RuleKey{ip("fd00:200:1::2"), 4000, 40000});
  CHECK(relay == ip("fd00:200::1"));

  const FwdValue v = make_fwd_value(
      FwdTarget{ip("fd00:200::1"), ip("fd00:200:2::2"), 40002, 5000, ip("fe80::2:2"), 7});
  REQUIRE(v.len == kFwd6ValueLen);
  // saddr (16) . daddr (16) . ports (4) . next hop (16) . ifindex (4): the
  // rule writes bytes 0..31 over the header's addresses, 32..35 over the
  // ports, and hands 36..51 and 52..55 to fwd.
  CHECK(std::memcmp(v.bytes, ip("fd00:200::1").bytes.data(), 16) == 0);
  CHECK(std::memcmp(v.bytes + 16, ip("fd00:200:2::2").bytes.data(), 16) == 0);
  CHECK(bytes(v.bytes + 32, 4) == std::vector<uint8_t>{0x9c, 0x42, 0x13, 0x88});
  CHECK(std::memcmp(v.bytes + 36, ip("fe80::2:2").bytes.data(), 16) == 0);
  uint32_t ifindex = 0;
  std::memcpy(&ifindex, v.bytes + 52, 4);
  CHECK(ifindex == 7u);
  const auto back = parse_fwd_value(v.bytes, v.len);
  REQUIRE(back);
  CHECK(back->saddr == ip("fd00:200::1"));
  CHECK(back->daddr == ip("fd00:200:2::2"));
  CHECK(back->next_hop == ip("fe80::2:2"));
  CHECK((back->sport == 40002 && back->dport == 5000 && back->ifindex == 7u));
}

TEST_CASE("keys and values of no known length are refused", "[nft]") {
  const uint8_t zeros[64] = {};
  for (uint32_t len : {0u, 4u, 11u, 13u, 16u, 24u, 35u, 37u, 40u, 64u})
    CHECK_FALSE(parse_fwd_key(zeros, len));
  for (uint32_t len : {0u, 12u, 19u, 21u, 24u, 55u, 57u, 64u})
    CHECK_FALSE(parse_fwd_value(zeros, len));
  CHECK(std::string(fwd_map_of(IpAddress::Family::V4)) == "fwd_map");
  CHECK(std::string(fwd_map_of(IpAddress::Family::V6)) == "fwd6_map");
}

TEST_CASE("rule keys of the two families never collide", "[nft]") {
  // 10.200.1.2 and ac8:102:: have the same 16 bytes in an IpAddress; only
  // the family tells them apart, and their elements live in different maps.
  const RuleKey v4{ip("10.200.1.2"), 4000, 40000};
  const RuleKey v6{ip("ac8:102::"), 4000, 40000};
  REQUIRE(v4.saddr.bytes == v6.saddr.bytes);
  CHECK_FALSE(v4 == v6);
  CHECK(make_fwd_key(v4, ip("10.200.0.1")).len != make_fwd_key(v6, ip("fd00:200::1")).len);
  CHECK(RuleKeyHash{}(v4) == RuleKeyHash{}(RuleKey{ip("10.200.1.2"), 4000, 40000}));
}

TEST_CASE("the table comment names the relay's addresses and decodes back", "[nft]") {
  const Ipv4 relay = *parse_ipv4("10.200.0.1");
  const RelayAddresses v4only{relay, std::nullopt};
  const RelayAddresses both{relay, ip("fd00:200::1")};
  // The IPv4-only form is the one of the versions before IPv6.
  CHECK(table_comment(v4only) ==
        "mediaproxy relay 10.200.0.1: in-kernel forwarding of latched media streams");
  CHECK(table_comment(both) ==
        "mediaproxy relay 10.200.0.1 and fd00:200::1: in-kernel forwarding of latched media "
        "streams");
  CHECK(table_owner(table_comment(v4only)) == v4only);
  CHECK(table_owner(table_comment(both)) == both);
  // The fixed comment of older versions names no relay; nor do others.
  CHECK_FALSE(table_owner("mediaproxy: in-kernel forwarding of latched media streams"));
  CHECK_FALSE(
      table_owner("mediaproxy relay 10.200.0.300: in-kernel forwarding of latched media "
                  "streams"));
  CHECK_FALSE(
      table_owner("mediaproxy relay 10.200.0.1 and 10.200.0.2: in-kernel forwarding of "
                  "latched media streams"));
  CHECK_FALSE(
      table_owner("mediaproxy relay 10.200.0.1 and fd00::zz: in-kernel forwarding of "
                  "latched media streams"));
  CHECK_FALSE(table_owner("mediaproxy relay 10.200.0.1"));
  CHECK_FALSE(table_owner(""));
}
