// The tproxy receive socket's helpers (relay/tproxy_socket.h): the original
// destination port read from a received datagram's control messages (IPv4,
// IPv6, absent, cut short, after other messages), and, where the process
// may (CAP_NET_ADMIN), a socket opened on 127.0.0.1 that reports the
// destination of what it receives and is recognised as a tproxy socket
// while a plain one is not.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <cerrno>
#include <cstring>
#include <string>

#include "relay/tproxy_socket.h"

using mp::IpEndpoint;
using mp::relay::is_tproxy_socket;
using mp::relay::open_tproxy_socket;
using mp::relay::original_destination_port;

namespace {

// A received message's control area with the given messages.
struct Control {
  alignas(cmsghdr) char buf[256] = {};
  msghdr h{};
  cmsghdr* next = nullptr;
  Control() {
    h.msg_control = buf;
    h.msg_controllen = sizeof buf;
    next = CMSG_FIRSTHDR(&h);
  }
  void add(int level, int type, const void* data, size_t len) {
    next->cmsg_level = level;
    next->cmsg_type = type;
    next->cmsg_len = CMSG_LEN(len);
    std::memcpy(CMSG_DATA(next), data, len);
    const size_t used = static_cast<size_t>(reinterpret_cast<char*>(next) - buf) + CMSG_SPACE(len);
    h.msg_controllen = used;
    next = reinterpret_cast<cmsghdr*>(buf + used);
  }
};

}  // namespace

TEST_CASE("the original destination port comes from IP_ORIGDSTADDR or IPV6_ORIGDSTADDR") {
  SECTION("IPv4") {
    Control c;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(40002);
    c.add(SOL_IP, IP_ORIGDSTADDR, &a, sizeof a);
    CHECK(original_destination_port(c.h) == 40002);
  }
  SECTION("IPv6, after another control message") {
    Control c;
    int ttl = 64;
    c.add(SOL_IPV6, IPV6_HOPLIMIT, &ttl, sizeof ttl);
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(59999);
    c.add(SOL_IPV6, IPV6_ORIGDSTADDR, &a, sizeof a);
    CHECK(original_destination_port(c.h) == 59999);
  }
  SECTION("none, or cut short: 0") {
    Control c;
    int ttl = 64;
    c.add(SOL_IP, IP_TTL, &ttl, sizeof ttl);
    CHECK(original_destination_port(c.h) == 0);
    Control short_one;
    uint16_t half = htons(40000);
    short_one.add(SOL_IP, IP_ORIGDSTADDR, &half, sizeof half);
    CHECK(original_destination_port(short_one.h) == 0);
    msghdr empty{};
    CHECK(original_destination_port(empty) == 0);
  }
}

TEST_CASE("a tproxy socket reports where its datagrams were sent, and is told from a plain one") {
  const mp::IpAddress lo = *mp::parse_ip("127.0.0.1");
  IpEndpoint bound;
  std::string error;
  const int fd = open_tproxy_socket(lo, 40000, 40999, bound, error);
  if (fd < 0) {
    // Without CAP_NET_ADMIN the reason says so.
    CHECK(error.find("CAP_NET_ADMIN") != std::string::npos);
    return;
  }
  CHECK(bound.ip == lo);
  CHECK(bound.port != 0);
  IpEndpoint seen;
  CHECK(is_tproxy_socket(fd, seen));
  CHECK(seen == bound);

  const int plain = socket(AF_INET, SOCK_DGRAM, 0);
  REQUIRE(plain >= 0);
  CHECK_FALSE(is_tproxy_socket(plain, seen));
  const mp::SocketAddress to = mp::SocketAddress::of(bound);
  REQUIRE(sendto(plain, "x", 1, 0, &to.sa, to.len) == 1);

  char data[16];
  iovec iov{data, sizeof data};
  alignas(cmsghdr) char control[mp::relay::kOriginalDestinationSpace];
  msghdr h{};
  h.msg_iov = &iov;
  h.msg_iovlen = 1;
  h.msg_control = control;
  h.msg_controllen = sizeof control;
  pollfd p{fd, POLLIN, 0};
  REQUIRE(poll(&p, 1, 2000) == 1);
  REQUIRE(recvmsg(fd, &h, 0) == 1);
  CHECK(original_destination_port(h) == bound.port);
  close(plain);
  close(fd);
}
