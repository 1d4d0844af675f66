// Unit tests for the raw-socket sends' headers (relay/raw_udp_sender.h):
// every field a UDP socket would have written, and a UDP checksum that
// verifies (the one's-complement sum over pseudo-header, UDP header and
// payload is 0xffff) for even and odd lengths; which datagrams suit the path.
#include <arpa/inet.h>

#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "relay/raw_udp_sender.h"

using mp::relay::RawUdpSender;

namespace {

uint16_t verify_sum(const uint8_t* h, const std::vector<uint8_t>& payload) {
  uint64_t acc = 0;
  auto add = [&](const uint8_t* p, size_t n) {
    for (size_t i = 0; i + 1 < n; i += 2) acc += static_cast<uint64_t>(p[i] << 8 | p[i + 1]);
    if (n % 2) acc += static_cast<uint64_t>(p[n - 1]) << 8;
  };
  add(h + 12, 8);                                    // source and destination addresses
  acc += 17;                                         // protocol
  acc += static_cast<uint64_t>(h[24] << 8 | h[25]);  // UDP length
  add(h + 20, 8);                                    // UDP header, checksum included
  add(payload.data(), payload.size());
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return static_cast<uint16_t>(acc);
}

}  // namespace

TEST_CASE("raw sends: headers as the UDP socket would write them", "[relay]") {
  const mp::IpEndpoint from{*mp::parse_ip("192.0.2.10"), 40002};
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(5004);
  inet_pton(AF_INET, "198.51.100.7", &to.sin_addr);
  for (size_t len : {size_t{172}, size_t{173}, size_t{1}, size_t{0}, RawUdpSender::kMaxPayload}) {
    std::vector<uint8_t> payload(len);
    for (size_t i = 0; i < len; ++i) payload[i] = static_cast<uint8_t>(i * 7 + len);
    uint8_t h[RawUdpSender::kHeaderBytes];
    RawUdpSender::write_headers(h, from, to, payload.data(), len, 61);
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
    CHECK(verify_sum(h, payload) == 0xffff);
  }
}

TEST_CASE("raw sends: IPv4 with a source address, up to the largest payload", "[relay]") {
  const mp::IpEndpoint v4{*mp::parse_ip("192.0.2.10"), 40002};
  const mp::IpEndpoint any4{*mp::parse_ip("0.0.0.0"), 40002};
  const mp::IpEndpoint v6{*mp::parse_ip("2001:db8::1"), 40002};
  const auto to4 = mp::SocketAddress::of(mp::IpEndpoint{*mp::parse_ip("198.51.100.7"), 5004});
  const auto to6 = mp::SocketAddress::of(mp::IpEndpoint{*mp::parse_ip("2001:db8::2"), 5004});
  CHECK(RawUdpSender::suits(v4, to4, 172));
  CHECK(RawUdpSender::suits(v4, to4, RawUdpSender::kMaxPayload));
  CHECK_FALSE(RawUdpSender::suits(v4, to4, RawUdpSender::kMaxPayload + 1));
  CHECK_FALSE(RawUdpSender::suits(any4, to4, 172));  // the kernel would pick the source
  CHECK_FALSE(RawUdpSender::suits(v6, to6, 172));
}
