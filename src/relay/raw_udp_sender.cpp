// Implementation of the raw-socket IPv4 sends (raw_udp_sender.h).
#include "relay/raw_udp_sender.h"

#include <netinet/ip.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace mp::relay {

namespace {

// The Internet checksum's one's-complement sum, taken over little-endian
// 16-bit words eight bytes at a time: the sum is the same in either byte
// order, byte-swapped, so the caller swaps the folded result once. `acc`
// carries on a previous sum (not folded).
static_assert(std::endian::native == std::endian::little, "add_words reads little-endian words");
uint64_t add_words(const uint8_t* p, size_t n, uint64_t acc) {
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    acc += (w & 0xffffffffu) + (w >> 32);  // two words per half; carries fold later
  }
  for (; n >= 2; p += 2, n -= 2) {
    uint16_t w;
    std::memcpy(&w, p, 2);
    acc += w;
  }
  if (n) acc += p[0];  // a last odd byte is the high byte of a big-endian word
  return acc;
}

uint16_t fold(uint64_t acc) {
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return static_cast<uint16_t>(acc);
}

// A small number from a /proc/sys file (the default TTL or hop limit of new
// sockets), or `fallback`.
uint8_t sysctl_u8(const char* path, int fallback) {
  int v = fallback;
  if (FILE* f = std::fopen(path, "re")) {
    if (std::fscanf(f, "%d", &v) != 1 || v < 1 || v > 255) v = fallback;
    std::fclose(f);
  }
  return static_cast<uint8_t>(v);
}

// The UDP header after the IP header, with the checksum over `pseudo` (the
// pseudo-header's sum, not folded), the UDP header and the payload.
void write_udp(uint8_t* udp, uint16_t from_port, uint16_t to_port_network, const uint8_t* payload,
               size_t len, uint64_t pseudo) {
  const auto udp_len = static_cast<uint16_t>(len + 8);
  udp[0] = static_cast<uint8_t>(from_port >> 8);
  udp[1] = static_cast<uint8_t>(from_port);
  std::memcpy(udp + 2, &to_port_network, 2);
  udp[4] = static_cast<uint8_t>(udp_len >> 8);
  udp[5] = static_cast<uint8_t>(udp_len);
  udp[6] = udp[7] = 0;
  uint64_t acc = add_words(udp, 8, pseudo);
  acc = add_words(payload, len, acc);
  uint16_t sum = __builtin_bswap16(static_cast<uint16_t>(~fold(acc)));
  if (sum == 0) sum = 0xffff;  // 0 would mean "no checksum"
  udp[6] = static_cast<uint8_t>(sum >> 8);
  udp[7] = static_cast<uint8_t>(sum);
}

}  // namespace

std::unique_ptr<RawUdpSender> RawUdpSender::open(std::string& error) {
  // IPPROTO_RAW: send-only (it receives nothing) and the headers are ours
  // (IPv6 too, since Linux 4.5).
  const int fd4 = ::socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_RAW);
  if (fd4 < 0) {
    error = std::string("no raw socket: ") + std::strerror(errno);
    return nullptr;
  }
  const int fd6 = ::socket(AF_INET6, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_RAW);
  return std::unique_ptr<RawUdpSender>(
      new RawUdpSender(fd4, fd6, sysctl_u8("/proc/sys/net/ipv4/ip_default_ttl", 64),
                       sysctl_u8("/proc/sys/net/ipv6/conf/default/hop_limit", 64)));
}

RawUdpSender::~RawUdpSender() {
  ::close(fd4_);
  if (fd6_ >= 0) ::close(fd6_);
}

size_t RawUdpSender::write_headers(uint8_t out[kMaxHeaderBytes], const IpEndpoint& from,
                                   const SocketAddress& to, const uint8_t* payload, size_t len,
                                   uint8_t hop_limit) {
  const auto udp_len = static_cast<uint16_t>(len + 8);
  // The pseudo-header's protocol and length words enter byte-swapped, as
  // add_words reads words.
  if (from.ip.is_v4()) {
    const auto total = static_cast<uint16_t>(len + kHeaderBytes4);
    uint8_t* ip = out;
    ip[0] = 0x45;  // version 4, 5 words of header
    ip[1] = 0;     // DSCP/ECN, as a UDP socket without IP_TOS
    ip[2] = static_cast<uint8_t>(total >> 8);
    ip[3] = static_cast<uint8_t>(total);
    ip[4] = ip[5] = 0;  // identifier: the kernel picks one
    ip[6] = 0x40;       // don't fragment
    ip[7] = 0;
    ip[8] = hop_limit;
    ip[9] = IPPROTO_UDP;
    ip[10] = ip[11] = 0;  // header checksum: the kernel's
    std::memcpy(ip + 12, from.ip.bytes.data(), 4);
    std::memcpy(ip + 16, &to.v4.sin_addr, 4);
    const uint64_t pseudo =
        add_words(ip + 12, 8, __builtin_bswap16(IPPROTO_UDP)) + __builtin_bswap16(udp_len);
    write_udp(out + 20, from.port, to.v4.sin_port, payload, len, pseudo);
    return kHeaderBytes4;
  }
  uint8_t* ip = out;
  ip[0] = 0x60;  // version 6, traffic class 0, no flow label
  ip[1] = ip[2] = ip[3] = 0;
  ip[4] = static_cast<uint8_t>(udp_len >> 8);  // payload length: UDP header and data
  ip[5] = static_cast<uint8_t>(udp_len);
  ip[6] = IPPROTO_UDP;
  ip[7] = hop_limit;
  std::memcpy(ip + 8, from.ip.bytes.data(), 16);
  std::memcpy(ip + 24, &to.v6.sin6_addr, 16);
  const uint64_t pseudo =
      add_words(ip + 8, 32, __builtin_bswap16(IPPROTO_UDP)) + __builtin_bswap16(udp_len);
  write_udp(out + 40, from.port, to.v6.sin6_port, payload, len, pseudo);
  return kHeaderBytes6;
}

void RawUdpSender::send(bool v6, mmsghdr* msgs, unsigned count,
                        void (*failed)(unsigned, int, void*), void* arg) {
  const int fd = v6 ? fd6_ : fd4_;
  unsigned done = 0;
  while (done < count) {
    const int n = ::sendmmsg(fd, msgs + done, count - done, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<unsigned>(n);
      continue;
    }
    failed(done, n < 0 ? errno : EIO, arg);  // message `done` was refused
    ++done;
  }
}

}  // namespace mp::relay
