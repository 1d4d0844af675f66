// Implementation of the relay's tproxy receive socket (tproxy_socket.h).
#include "relay/tproxy_socket.h"

#include <netinet/in.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mp::relay {

namespace {
// One socket takes what every port's socket took: room for ~10k RTP
// datagrams (a few tens of ms of a busy relay's input) while the loop is
// busy elsewhere. SO_RCVBUFFORCE passes net.core.rmem_max (CAP_NET_ADMIN,
// which IP_TRANSPARENT needs anyway).
constexpr int kReceiveBuffer = 16 * 1024 * 1024;
// Ports the kernel picks come from net.ipv4.ip_local_port_range, which
// usually overlaps the media ports: tries before one inside is accepted.
constexpr int kBindTries = 16;

int transparent_level(int family) {
  return family == AF_INET6 ? SOL_IPV6 : SOL_IP;
}
int transparent_option(int family) {
  return family == AF_INET6 ? IPV6_TRANSPARENT : IP_TRANSPARENT;
}

std::string failure(const char* what, int err) {
  return std::string(what) + ": " + std::strerror(err) +
         (err == EPERM ? " (CAP_NET_ADMIN is needed)" : "");
}

int open_once(const IpAddress& ip, IpEndpoint& bound, std::string& error) {
  const int family = ip.is_v6() ? AF_INET6 : AF_INET;
  const int fd = ::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = failure("cannot open the tproxy receive socket", errno);
    return -1;
  }
  const int on = 1;
  if (::setsockopt(fd, transparent_level(family), transparent_option(family), &on, sizeof on) !=
      0) {
    error = failure("cannot make the receive socket transparent", errno);
    ::close(fd);
    return -1;
  }
  const int orig = family == AF_INET6 ? IPV6_RECVORIGDSTADDR : IP_RECVORIGDSTADDR;
  int size = kReceiveBuffer;
  if (::setsockopt(fd, transparent_level(family), orig, &on, sizeof on) != 0 ||
      (family == AF_INET6 && ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on) != 0)) {
    error = failure("cannot set up the tproxy receive socket", errno);
    ::close(fd);
    return -1;
  }
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  const SocketAddress sa = SocketAddress::of(IpEndpoint(ip, 0));
  SocketAddress got;
  got.len = sizeof got.v6;
  if (::bind(fd, &sa.sa, sa.len) != 0 || ::getsockname(fd, &got.sa, &got.len) != 0) {
    error = failure(("cannot bind the tproxy receive socket to " + format_ip(ip)).c_str(), errno);
    ::close(fd);
    return -1;
  }
  bound = got.endpoint();
  return fd;
}
}  // namespace

int open_tproxy_socket(const IpAddress& ip, uint16_t avoid_lo, uint16_t avoid_hi, IpEndpoint& bound,
                       std::string& error) {
  // A port inside the media range would cost that port pair (its bind
  // fails); another try usually lands outside.
  int kept = -1;
  for (int i = 0; i < kBindTries; ++i) {
    const int fd = open_once(ip, bound, error);
    if (fd < 0) break;
    if (bound.port < avoid_lo || bound.port > avoid_hi) {
      if (kept >= 0) ::close(kept);
      return fd;
    }
    if (kept >= 0) ::close(kept);
    kept = fd;
  }
  return kept;  // inside the range after all tries, or -1
}

bool is_tproxy_socket(int fd, IpEndpoint& bound) {
  SocketAddress got;
  got.len = sizeof got.v6;
  if (::getsockname(fd, &got.sa, &got.len) != 0) return false;
  const int family = got.sa.sa_family;
  if (family != AF_INET && family != AF_INET6) return false;
  for (int option : {transparent_option(family),
                     family == AF_INET6 ? IPV6_RECVORIGDSTADDR : IP_RECVORIGDSTADDR}) {
    int on = 0;
    socklen_t len = sizeof on;
    if (::getsockopt(fd, transparent_level(family), option, &on, &len) != 0 || !on) return false;
  }
  bound = got.endpoint();
  return true;
}

int make_transparent(int fd, int family, bool on) {
  const int value = on ? 1 : 0;
  if (::setsockopt(fd, transparent_level(family), transparent_option(family), &value,
                   sizeof value) != 0)
    return errno;
  return 0;
}

uint16_t original_destination_port(const msghdr& received) {
  if (!received.msg_control || received.msg_controllen < sizeof(cmsghdr)) return 0;
  for (const cmsghdr* c = CMSG_FIRSTHDR(&received); c;
       c = CMSG_NXTHDR(const_cast<msghdr*>(&received), const_cast<cmsghdr*>(c))) {
    if (c->cmsg_level == SOL_IP && c->cmsg_type == IP_ORIGDSTADDR &&
        c->cmsg_len >= CMSG_LEN(sizeof(sockaddr_in))) {
      sockaddr_in a;
      std::memcpy(&a, CMSG_DATA(c), sizeof a);
      return ntohs(a.sin_port);
    }
    if (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_ORIGDSTADDR &&
        c->cmsg_len >= CMSG_LEN(sizeof(sockaddr_in6))) {
      sockaddr_in6 a;
      std::memcpy(&a, CMSG_DATA(c), sizeof a);
      return ntohs(a.sin6_port);
    }
  }
  return 0;
}

}  // namespace mp::relay
