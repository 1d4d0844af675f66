// The traffic of the kernel forwarding tests (part of harness.h): UDP
// sockets bound inside a namespace, sending, bursts and a paced sender in its
// own thread (Pacer), draining what arrives, AF_PACKET captures that verify
// the IP and UDP checksums of what the relay put on the wire, and the UDP
// counters of a namespace's /proc/net/snmp.
#pragma once

#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/address.h"
#include "harness_topology.h"

using mp::Endpoint;
using mp::Ipv4;

namespace kt {

struct Sock {
  int fd = -1;
  Sock() = default;
  explicit Sock(int f) : fd(f) {}
  ~Sock() {
    if (fd >= 0) close(fd);
  }
  Sock(Sock&& o) noexcept : fd(o.fd) { o.fd = -1; }
  Sock(const Sock&) = delete;
  Sock& operator=(const Sock&) = delete;
};

// A UDP socket bound to ip:port inside namespace `ns`.
inline Sock udp(int ns, Ipv4 ip, uint16_t port) {
  InNs in(ns);
  Sock s(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in sa = Endpoint{ip, port}.to_sockaddr();
  if (bind(s.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
    FAIL("bind " << mp::format_endpoint({ip, port}) << ": " << strerror(errno));
  return s;
}

inline void send_to(const Sock& s, Endpoint to, const std::string& data) {
  sockaddr_in sa = to.to_sockaddr();
  ssize_t n =
      sendto(s.fd, data.data(), data.size(), 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  REQUIRE(n == static_cast<ssize_t>(data.size()));
}

struct Datagram {
  Endpoint from;
  std::string data;
};

// Everything `s` receives until it has been idle for `idle_ms`.
inline std::vector<Datagram> drain(const Sock& s, int idle_ms = 150) {
  std::vector<Datagram> got;
  for (int i = 0; i < 100000; ++i) {
    pollfd p{s.fd, POLLIN, 0};
    if (poll(&p, 1, idle_ms) <= 0) break;
    char buf[2048];
    sockaddr_in from{};
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(s.fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &fl);
    if (n < 0) break;
    got.push_back({Endpoint::from_sockaddr(from), std::string(buf, static_cast<size_t>(n))});
  }
  return got;
}

// Sends `count` numbered datagrams of varying size; returns the IP-layer bytes.
inline uint64_t send_burst(const Sock& s, Endpoint to, int count, const std::string& tag) {
  uint64_t bytes = 0;
  for (int i = 0; i < count; ++i) {
    std::string d = tag + "#" + std::to_string(i) + ":";
    d.resize(d.size() + static_cast<size_t>(17 * i % 180), 'x');
    send_to(s, to, d);
    bytes += d.size() + 28;  // IPv4 + UDP headers
  }
  return bytes;
}

// An AF_PACKET capture of IPv4 arriving on `dev` in namespace `ns`.
inline Sock capture(int ns, const char* dev) {
  InNs in(ns);
  Sock s(socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_IP)));
  REQUIRE(s.fd >= 0);
  sockaddr_ll ll{};
  ll.sll_family = AF_PACKET;
  ll.sll_protocol = htons(ETH_P_IP);
  ll.sll_ifindex = static_cast<int>(if_nametoindex(dev));
  REQUIRE(bind(s.fd, reinterpret_cast<sockaddr*>(&ll), sizeof ll) == 0);
  return s;
}

inline uint32_t sum16(const uint8_t* p, size_t n, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (n & 1) sum += static_cast<uint32_t>(p[n - 1] << 8);
  return sum;
}
inline uint16_t fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

struct Captured {
  Endpoint src, dst;
  bool ip_csum_ok = false;
  bool udp_csum_ok = false;
  bool udp_csum_partial = false;  // holds the pseudo-header sum (CHECKSUM_PARTIAL)
  uint16_t udp_csum = 0;
  int ttl = -1;
};

// UDP packets received (not sent) on a capture socket, checksums verified.
inline std::vector<Captured> captured_udp(const Sock& s) {
  std::vector<Captured> out;
  for (int i = 0; i < 100000; ++i) {
    uint8_t pkt[2048];
    sockaddr_ll ll{};
    socklen_t len = sizeof ll;
    ssize_t n = recvfrom(s.fd, pkt, sizeof pkt, 0, reinterpret_cast<sockaddr*>(&ll), &len);
    if (n < 0) break;
    if (ll.sll_pkttype == PACKET_OUTGOING || n < 28) continue;
    size_t ihl = static_cast<size_t>(pkt[0] & 0x0f) * 4;
    if ((pkt[0] >> 4) != 4 || pkt[9] != IPPROTO_UDP || static_cast<size_t>(n) < ihl + 8) continue;
    size_t total = static_cast<size_t>(pkt[2] << 8 | pkt[3]);
    if (total > static_cast<size_t>(n)) continue;
    Captured c;
    uint32_t saddr, daddr;
    std::memcpy(&saddr, pkt + 12, 4);
    std::memcpy(&daddr, pkt + 16, 4);
    const uint8_t* udph = pkt + ihl;
    c.src = Endpoint{Ipv4{saddr}, static_cast<uint16_t>(udph[0] << 8 | udph[1])};
    c.dst = Endpoint{Ipv4{daddr}, static_cast<uint16_t>(udph[2] << 8 | udph[3])};
    c.ip_csum_ok = fold(sum16(pkt, ihl)) == 0xffff;
    c.ttl = pkt[8];
    size_t ulen = total - ihl;
    uint32_t pseudo = sum16(pkt + 12, 8) + IPPROTO_UDP + static_cast<uint32_t>(ulen);
    c.udp_csum = static_cast<uint16_t>(udph[6] << 8 | udph[7]);
    c.udp_csum_ok = c.udp_csum != 0 && fold(sum16(udph, ulen, pseudo)) == 0xffff;
    c.udp_csum_partial = fold(pseudo) == c.udp_csum;
    out.push_back(c);
  }
  return out;
}

// Counter `field` of protocol `proto` ("Ip", "Udp") in /proc/net/snmp of the
// namespace `ns`; -1 if there is none.
inline long snmp(int ns, const std::string& proto, const std::string& field) {
  InNs in(ns);
  FILE* f = std::fopen("/proc/thread-self/net/snmp", "re");
  if (!f) return -1;
  char a[2048], b[2048];
  long result = -1;
  const std::string head = proto + ":";
  while (std::fgets(a, sizeof a, f)) {
    if (std::strncmp(a, head.c_str(), head.size()) != 0 || !std::fgets(b, sizeof b, f)) continue;
    std::istringstream names(a), values(b);
    std::string name, value;
    while (names >> name && values >> value)
      if (name == field) result = std::stol(value);
    break;
  }
  std::fclose(f);
  return result;
}

inline long udp_csum_errors(int ns) {
  return snmp(ns, "Udp", "InCsumErrors");
}

// Sends a numbered datagram ("seq N") from `from` to `to` every `period`, in
// its own thread, until finish(); counts what it sent.
class Pacer {
 public:
  Pacer(const Sock& from, Endpoint to, std::chrono::microseconds period)
      : thread_([this, fd = from.fd, to, period] {
          const sockaddr_in sa = to.to_sockaddr();
          auto next = std::chrono::steady_clock::now();
          while (!stop_) {
            const std::string d = "seq " + std::to_string(sent_.load());
            if (sendto(fd, d.data(), d.size(), 0, reinterpret_cast<const sockaddr*>(&sa),
                       sizeof sa) == static_cast<ssize_t>(d.size())) {
              bytes_ += d.size() + 28;  // IPv4 + UDP headers
              ++sent_;
            } else {
              ++errors_;
            }
            next += period;
            std::this_thread::sleep_until(next);
          }
        }) {}
  ~Pacer() { finish(); }
  Pacer(const Pacer&) = delete;
  Pacer& operator=(const Pacer&) = delete;

  uint32_t sent() const { return sent_; }
  uint64_t bytes() const { return bytes_; }
  uint32_t errors() const { return errors_; }
  void finish() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<uint32_t> sent_{0};
  std::atomic<uint64_t> bytes_{0};
  std::atomic<uint32_t> errors_{0};
  std::thread thread_;
};

inline void sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

inline double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace kt
