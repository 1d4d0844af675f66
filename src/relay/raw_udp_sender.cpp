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

// The system's default TTL for new sockets (net.ipv4.ip_default_ttl).
uint8_t default_ttl() {
  int ttl = 64;
  if (FILE* f = std::fopen("/proc/sys/net/ipv4/ip_default_ttl", "re")) {
    if (std::fscanf(f, "%d", &ttl) != 1 || ttl < 1 || ttl > 255) ttl = 64;
    std::fclose(f);
  }
  return static_cast<uint8_t>(ttl);
}

}  // namespace

std::unique_ptr<RawUdpSender> RawUdpSender::open(std::string& error) {
  // IPPROTO_RAW: send-only (it receives nothing) and the headers are ours.
  const int fd = ::socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_RAW);
  if (fd < 0) {
    error = std::string("no raw socket: ") + std::strerror(errno);
    return nullptr;
  }
  return std::unique_ptr<RawUdpSender>(new RawUdpSender(fd, default_ttl()));
}

RawUdpSender::~RawUdpSender() {
  ::close(fd_);
}

void RawUdpSender::write_headers(uint8_t out[kHeaderBytes], const IpEndpoint& from,
                                 const sockaddr_in& to, const uint8_t* payload, size_t len,
                                 uint8_t ttl) {
  const auto total = static_cast<uint16_t>(len + kHeaderBytes);
  const auto udp_len = static_cast<uint16_t>(len + 8);
  uint8_t* ip = out;
  ip[0] = 0x45;  // version 4, 5 words of header
  ip[1] = 0;     // DSCP/ECN, as a UDP socket without IP_TOS
  ip[2] = static_cast<uint8_t>(total >> 8);
  ip[3] = static_cast<uint8_t>(total);
  ip[4] = ip[5] = 0;  // identifier: the kernel picks one
  ip[6] = 0x40;       // don't fragment
  ip[7] = 0;
  ip[8] = ttl;
  ip[9] = IPPROTO_UDP;
  ip[10] = ip[11] = 0;  // header checksum: the kernel's
  std::memcpy(ip + 12, from.ip.bytes.data(), 4);
  std::memcpy(ip + 16, &to.sin_addr, 4);
  uint8_t* udp = out + 20;
  udp[0] = static_cast<uint8_t>(from.port >> 8);
  udp[1] = static_cast<uint8_t>(from.port);
  std::memcpy(udp + 2, &to.sin_port, 2);
  udp[4] = static_cast<uint8_t>(udp_len >> 8);
  udp[5] = static_cast<uint8_t>(udp_len);
  udp[6] = udp[7] = 0;
  // Pseudo-header (addresses, protocol, length), UDP header, payload; the
  // protocol and length words enter byte-swapped, as add_words reads words.
  uint64_t acc = add_words(ip + 12, 8, __builtin_bswap16(IPPROTO_UDP));
  acc += __builtin_bswap16(udp_len);
  acc = add_words(udp, 8, acc);
  acc = add_words(payload, len, acc);
  uint16_t sum = __builtin_bswap16(static_cast<uint16_t>(~fold(acc)));
  if (sum == 0) sum = 0xffff;  // 0 would mean "no checksum"
  udp[6] = static_cast<uint8_t>(sum >> 8);
  udp[7] = static_cast<uint8_t>(sum);
}

void RawUdpSender::send(mmsghdr* msgs, unsigned count, void (*failed)(unsigned, int, void*),
                        void* arg) {
  unsigned done = 0;
  while (done < count) {
    const int n = ::sendmmsg(fd_, msgs + done, count - done, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<unsigned>(n);
      continue;
    }
    failed(done, n < 0 ? errno : EIO, arg);  // message `done` was refused
    ++done;
  }
}

}  // namespace mp::relay
