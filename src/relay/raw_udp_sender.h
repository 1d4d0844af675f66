// Userspace forwarding's sends through raw sockets, one per IP version.
//
// A forwarded datagram must leave from the relay port its receiver talks to
// (symmetric RTP, latching), so the pump sends it through that port's UDP
// socket: one sendmsg per datagram and socket, each paying the UDP socket's
// own work, and, because every media socket is in the pump's epoll set,
// a wake-up of that socket's wait queue when the kernel releases the sent
// buffer (two interrupt-flag restores, costly in a VM). An IPPROTO_RAW
// socket sends a datagram whose IP and UDP headers we write ourselves, from
// any port of the relay's address, and belongs to no epoll set: a pass's
// datagrams for every stream leave with one sendmmsg() per IP version.
// Measured with bench/ab_packet.sh: 7.5% less relay CPU per packet.
//
// The headers are those the UDP socket would have written: the socket's
// own address and port as source, the system's default TTL or hop limit, a
// UDP checksum computed here; IPv4 with don't-fragment set (as UDP sockets
// set it below the path MTU) and the kernel filling in the identifier and
// header checksum; IPv6 without a flow label. Needs CAP_NET_RAW (open()
// fails without it, and the pump keeps its per-socket sends). A datagram
// the raw path refuses for its size (EMSGSIZE: larger than the route's
// MTU, which the UDP socket would have fragmented) is the caller's to send
// through its socket.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/ip_address.h"

namespace mp::relay {

class RawUdpSender {
 public:
  // IP and UDP header bytes in front of each datagram.
  static constexpr size_t kHeaderBytes4 = 28;
  static constexpr size_t kHeaderBytes6 = 48;
  static constexpr size_t kMaxHeaderBytes = kHeaderBytes6;
  // Larger datagrams go through their socket.
  static constexpr size_t kMaxPayload = 1400;

  // nullptr with the reason (no CAP_NET_RAW, a seccomp filter...). An
  // IPv6 raw socket the kernel refuses (IPv6 disabled) leaves IPv6 on the
  // sockets' path.
  static std::unique_ptr<RawUdpSender> open(std::string& error);
  ~RawUdpSender();
  RawUdpSender(const RawUdpSender&) = delete;
  RawUdpSender& operator=(const RawUdpSender&) = delete;

  // Whether a datagram from `from` to `to` of `len` bytes can go this way:
  // one IP version on both ends, a source address that is not the
  // unspecified one, at most kMaxPayload bytes.
  bool suits(const IpEndpoint& from, const SocketAddress& to, size_t len) const {
    if (len > kMaxPayload || from.ip.is_any()) return false;
    if (from.ip.is_v4()) return to.sa.sa_family == AF_INET;
    return fd6_ >= 0 && to.sa.sa_family == AF_INET6;
  }

  // Writes the headers of one datagram into `out` (pure); returns their
  // length (kHeaderBytes4 or kHeaderBytes6, by the family of `from`).
  static size_t write_headers(uint8_t out[kMaxHeaderBytes], const IpEndpoint& from,
                              const SocketAddress& to, const uint8_t* payload, size_t len,
                              uint8_t hop_limit);
  uint8_t hop_limit(bool v6) const { return v6 ? hop_limit6_ : ttl4_; }

  // Sends `count` prepared messages of one IP version (each: headers, then
  // payload; msg_name the destination) with as few sendmmsg() calls as it
  // takes. A refused message is reported to `failed(index, errno, arg)` and
  // the rest go on.
  void send(bool v6, mmsghdr* msgs, unsigned count, void (*failed)(unsigned, int, void*),
            void* arg);

 private:
  RawUdpSender(int fd4, int fd6, uint8_t ttl4, uint8_t hop_limit6)
      : fd4_(fd4), fd6_(fd6), ttl4_(ttl4), hop_limit6_(hop_limit6) {}
  int fd4_;
  int fd6_;  // -1: IPv6 goes through the sockets
  uint8_t ttl4_;
  uint8_t hop_limit6_;
};

}  // namespace mp::relay
