// Unit tests for the raw-socket sends' headers (relay/raw_udp_sender.h):
// every field a UDP socket would have written, and a UDP checksum that
// verifies (the one's-complement sum over pseudo-header, UDP header and
// payload is 0xffff) for even and odd lengths; which datagrams suit the path.
#include <arpa/inet.h>

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "relay/raw_udp_sender.h"

using mp::relay::RawUdpSender;

namespace {

// The one's-complement sum over the pseudo-header (the `addresses` bytes at
// `h + at`, protocol, UDP length), the UDP header at `h + udp` (checksum
// included) and the payload: 0xffff when the checksum is right.
uint16_t verify_sum(const uint8_t* h, size_t at, size_t addresses, size_t udp,
                    const std::vector<uint8_t>& payload) {
  uint64_t acc = 0;
  auto add = [&](const uint8_t* p, size_t n) {
    for (size_t i = 0; i + 1 < n; i += 2) acc += static_cast<uint64_t>(p[i] << 8 | p[i + 1]);
    if (n % 2) acc += static_cast<uint64_t>(p[n - 1]) << 8;
  };
  add(h + at, addresses);
  acc += 17;
  acc += static_cast<uint64_t>(h[udp + 4] << 8 | h[udp + 5]);
  add(h + udp, 8);
  add(payload.data(), payload.size());
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return static_cast<uint16_t>(acc);
}

}  // namespace

TEST_CASE("raw sends: headers as the UDP socket would write them", "[relay]") {
  const mp::IpEndpoint from{*mp::parse_ip("192.0.2.10"), 40002};
  const auto to = mp::SocketAddress::of(mp::IpEndpoint{*mp::parse_ip("198.51.100.7"), 5004});
  for (size_t len : {size_t{172}, size_t{173}, size_t{1}, size_t{0}, RawUdpSender::kMaxPayload}) {
    std::vector<uint8_t> payload(len);
    for (size_t i = 0; i < len; ++i) payload[i] = static_cast<uint8_t>(i * 7 + len);
    uint8_t h[RawUdpSender::kMaxHeaderBytes];
    REQUIRE(RawUdpSender::write_headers(h, from, to, payload.data(), len, 61) ==
            RawUdpSender::kHeaderBytes4);
    INFO("payload of " << len << " bytes");
    CHECK(h[0] == 0x45);
    CHECK((h[2] << 8 | h[3]) == static_cast<int>(len + 28));
    CHECK(h[6] == 0x40);  // don't fragment
    CHECK(h[8] == 61);
    CHECK(h[9] == 17);
    CHECK((h[12] == 192 && h[13] == 0 && h[14] == 2 && h[15] == 10));
    CHECK((h[16] == 198 && h[17] == 51 && h[18] == 100 && h[19] == 7));
    CHECK((h[20] << 8 | h[21]) == 40002);
    CHECK((h[22] << 8 | h[23]) == 5004);
    CHECK((h[24] << 8 | h[25]) == static_cast<int>(len + 8));
    CHECK((h[26] | h[27]) != 0);  // a checksum, never "none"
    CHECK(verify_sum(h, 12, 8, 20, payload) == 0xffff);
  }
}

TEST_CASE("raw sends: IPv6 headers as the UDP socket would write them", "[relay]") {
  const mp::IpEndpoint from{*mp::parse_ip("2001:db8::10"), 40002};
  const auto to = mp::SocketAddress::of(mp::IpEndpoint{*mp::parse_ip("2001:db8:1::7"), 5004});
  for (size_t len : {size_t{172}, size_t{173}, size_t{1}, RawUdpSender::kMaxPayload}) {
    std::vector<uint8_t> payload(len);
    for (size_t i = 0; i < len; ++i) payload[i] = static_cast<uint8_t>(i * 13 + len);
    uint8_t h[RawUdpSender::kMaxHeaderBytes];
    REQUIRE(RawUdpSender::write_headers(h, from, to, payload.data(), len, 55) ==
            RawUdpSender::kHeaderBytes6);
    INFO("payload of " << len << " bytes");
    CHECK(h[0] == 0x60);
    CHECK((h[1] | h[2] | h[3]) == 0);  // no traffic class, no flow label
    CHECK((h[4] << 8 | h[5]) == static_cast<int>(len + 8));
    CHECK(h[6] == 17);
    CHECK(h[7] == 55);
    CHECK(std::memcmp(h + 8, from.ip.bytes.data(), 16) == 0);
    CHECK(std::memcmp(h + 24, &to.v6.sin6_addr, 16) == 0);
    CHECK((h[40] << 8 | h[41]) == 40002);
    CHECK((h[42] << 8 | h[43]) == 5004);
    CHECK((h[44] << 8 | h[45]) == static_cast<int>(len + 8));
    CHECK(verify_sum(h, 8, 32, 40, payload) == 0xffff);
  }
}

TEST_CASE("raw sends: one IP version end to end, a source address, up to the largest payload",
          "[relay]") {
  std::string why;
  auto raw = RawUdpSender::open(why);
  if (!raw) {
    WARN("no raw socket here (" << why << "): not tested");
    return;
  }
  const mp::IpEndpoint v4{*mp::parse_ip("192.0.2.10"), 40002};
  const mp::IpEndpoint any4{*mp::parse_ip("0.0.0.0"), 40002};
  const mp::IpEndpoint v6{*mp::parse_ip("2001:db8::1"), 40002};
  const auto to4 = mp::SocketAddress::of(mp::IpEndpoint{*mp::parse_ip("198.51.100.7"), 5004});
  const auto to6 = mp::SocketAddress::of(mp::IpEndpoint{*mp::parse_ip("2001:db8::2"), 5004});
  CHECK(raw->suits(v4, to4, 172));
  CHECK(raw->suits(v4, to4, RawUdpSender::kMaxPayload));
  CHECK_FALSE(raw->suits(v4, to4, RawUdpSender::kMaxPayload + 1));
  CHECK_FALSE(raw->suits(any4, to4, 172));  // the kernel would pick the source
  CHECK_FALSE(raw->suits(v4, to6, 172));    // a bridged stream stays on its sockets
  CHECK_FALSE(raw->suits(v6, to4, 172));
  CHECK(raw->suits(v6, to6, 172));  // with an IPv6 raw socket (IPv6 not disabled here)
}
