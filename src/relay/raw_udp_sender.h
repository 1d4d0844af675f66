// Userspace forwarding's IPv4 sends through one raw socket.
//
// A forwarded datagram must leave from the relay port its receiver talks to
// (symmetric RTP, latching), so the pump sends it through that port's UDP
// socket: one sendmsg per datagram and socket, each paying the UDP socket's
// own work, and, because every media socket is in the pump's epoll set,
// a wake-up of that socket's wait queue when the kernel releases the sent
// buffer (two interrupt-flag restores, costly in a VM). An IPPROTO_RAW
// socket sends a datagram whose IP and UDP headers we write ourselves, from
// any port of the relay's address, and belongs to no epoll set: a pass's
// datagrams for every stream leave with one sendmmsg() on it. Measured with
// bench/ab_packet.sh: 6% less relay CPU per packet (7 of 8 pairs).
//
// The headers are those the UDP socket would have written: the socket's
// own address and port as source, don't-fragment set (as UDP sockets set it
// below the path MTU), the system's default TTL, the kernel filling in the
// IP identifier and header checksum, and the UDP checksum computed here.
// IPv4 only; needs CAP_NET_RAW (open() fails without it, and the pump keeps
// its per-socket sends). A datagram the raw path refuses for its size
// (EMSGSIZE: larger than the route's MTU, which the UDP socket would have
// fragmented) is the caller's to send through its socket.
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
  static constexpr size_t kHeaderBytes = 28;

  // nullptr with the reason (no CAP_NET_RAW, a seccomp filter...).
  static std::unique_ptr<RawUdpSender> open(std::string& error);
  ~RawUdpSender();
  RawUdpSender(const RawUdpSender&) = delete;
  RawUdpSender& operator=(const RawUdpSender&) = delete;

  // Whether a datagram from `from` to `to` of `len` bytes can go this way:
  // IPv4 both, a source address that is not 0.0.0.0, at most kMaxPayload.
  static constexpr size_t kMaxPayload = 1400;
  static bool suits(const IpEndpoint& from, const SocketAddress& to, size_t len) {
    return len <= kMaxPayload && from.ip.is_v4() && !from.ip.is_any() && to.sa.sa_family == AF_INET;
  }

  // Writes the IPv4 and UDP headers of one datagram into `out` (pure).
  static void write_headers(uint8_t out[kHeaderBytes], const IpEndpoint& from,
                            const sockaddr_in& to, const uint8_t* payload, size_t len, uint8_t ttl);

  // Sends `count` prepared messages (each: headers, then payload; msg_name
  // the destination) with as few sendmmsg() calls as it takes. A refused
  // message is reported to `failed(index, errno, arg)` and the rest go on.
  void send(mmsghdr* msgs, unsigned count, void (*failed)(unsigned, int, void*), void* arg);

  uint8_t ttl() const { return ttl_; }

 private:
  RawUdpSender(int fd, uint8_t ttl) : fd_(fd), ttl_(ttl) {}
  int fd_;
  uint8_t ttl_;
};

}  // namespace mp::relay
