// The network of the kernel forwarding tests (part of harness.h): three
// namespaces, sender, relay and receiver, joined by two veth links with IPv4
// and IPv6 addresses on each, checksum offloads off and IP forwarding off in
// the relay. Traffic only ever flows inside the namespaces. Also: running a
// shell command, entering a namespace for a scope (InNs), a far network
// behind a gateway (FarNetwork) and undoing a change however a test ends
// (Undo). main.cpp calls topology_up() and topology_down() around the Catch2
// session.
#pragma once

#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "common/address.h"
#include "common/ip_address.h"

using mp::IpAddress;
using mp::Ipv4;

namespace kt {

struct Topology {
  std::string snd, rly, rcv;  // namespace names
  int snd_fd = -1, rly_fd = -1, rcv_fd = -1;
  int home_fd = -1;  // the namespace we started in
};
inline Topology g_topo;

inline const Ipv4 kRelayIp = *mp::parse_ipv4("10.200.0.1");
inline const Ipv4 kCallerIp = *mp::parse_ipv4("10.200.1.2");
inline const Ipv4 kThirdIp = *mp::parse_ipv4("10.200.1.3");
inline const Ipv4 kCalleeIp = *mp::parse_ipv4("10.200.2.2");
inline const Ipv4 kCallee2Ip = *mp::parse_ipv4("10.200.2.3");
// The same parties over IPv6 (ULA, added with nodad: usable at once).
inline const IpAddress kRelayIp6 = *mp::parse_ip("fd00:200::1");
inline const IpAddress kCallerIp6 = *mp::parse_ip("fd00:200:1::2");
inline const IpAddress kThirdIp6 = *mp::parse_ip("fd00:200:1::3");
inline const IpAddress kCalleeIp6 = *mp::parse_ip("fd00:200:2::2");
inline const IpAddress kCallee2Ip6 = *mp::parse_ip("fd00:200:2::3");
// A link-local address of the callee namespace (a gateway for IPv6 tests).
inline const IpAddress kCalleeLinkLocal = *mp::parse_ip("fe80::2:2");

// Runs a shell command; returns its exit status and output (stdout+stderr).
inline int run(const std::string& cmd, std::string* out = nullptr) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
  int st = pclose(p);
  if (out) *out = text;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// Inside namespace `fd` for the lifetime of the object (this thread only).
class InNs {
 public:
  explicit InNs(int fd) {
    if (setns(fd, CLONE_NEWNET) != 0) FAIL("setns: " << strerror(errno));
  }
  ~InNs() { setns(g_topo.home_fd, CLONE_NEWNET); }
  InNs(const InNs&) = delete;
  InNs& operator=(const InNs&) = delete;
};

// Switches the checksum offloads of `dev` (in the current namespace) off, so
// that senders compute UDP checksums in software and receivers verify them
// (or, with on = true, transmit offload back on).
inline bool offloads_off(const char* dev, bool on = false) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  bool ok = true;
  for (uint32_t cmd : {ETHTOOL_STXCSUM, ETHTOOL_SRXCSUM}) {
    if (on && cmd == ETHTOOL_SRXCSUM) continue;
    ethtool_value ev{cmd, on ? 1u : 0u};
    ifreq ifr{};
    std::snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", dev);
    ifr.ifr_data = reinterpret_cast<char*>(&ev);
    if (ioctl(fd, SIOCETHTOOL, &ifr) != 0) ok = false;
  }
  close(fd);
  return ok;
}

inline bool write_file(const char* path, const char* text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = write(fd, text, strlen(text)) == static_cast<ssize_t>(strlen(text));
  close(fd);
  return ok;
}

inline void topology_down() {
  for (const std::string& n : {g_topo.snd, g_topo.rly, g_topo.rcv})
    if (!n.empty()) run("ip netns del " + n);
}

inline bool topology_up(std::string& error) {
  std::string p = "mpk" + std::to_string(getpid());
  g_topo.snd = p + "-snd";
  g_topo.rly = p + "-rly";
  g_topo.rcv = p + "-rcv";
  const std::string& S = g_topo.snd;
  const std::string& R = g_topo.rly;
  const std::string& C = g_topo.rcv;
  // No duplicate address detection in the namespaces: every address,
  // link-local ones included, is usable as soon as it is added.
  auto no_dad = [](const std::string& ns) {
    return "ip netns exec " + ns +
           " sh -c 'echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad && "
           "echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad'";
  };
  const std::vector<std::string> cmds = {
      "ip netns add " + S,
      "ip netns add " + R,
      "ip netns add " + C,
      no_dad(S),
      no_dad(R),
      no_dad(C),
      "ip -n " + R + " link add vs type veth peer name eth0 netns " + S,
      "ip -n " + R + " link add vc type veth peer name eth0 netns " + C,
      "ip -n " + R + " addr add 10.200.1.1/24 dev vs",
      "ip -n " + R + " addr add 10.200.2.1/24 dev vc",
      "ip -n " + R + " addr add 10.200.0.1/32 dev lo",
      "ip -n " + R + " link set lo up",
      "ip -n " + R + " link set vs up",
      "ip -n " + R + " link set vc up",
      "ip -n " + S + " addr add 10.200.1.2/24 dev eth0",
      "ip -n " + S + " addr add 10.200.1.3/24 dev eth0",
      "ip -n " + S + " link set lo up",
      "ip -n " + S + " link set eth0 up",
      "ip -n " + S + " route add default via 10.200.1.1",
      "ip -n " + C + " addr add 10.200.2.2/24 dev eth0",
      "ip -n " + C + " addr add 10.200.2.3/24 dev eth0",
      "ip -n " + C + " link set lo up",
      "ip -n " + C + " link set eth0 up",
      "ip -n " + C + " route add default via 10.200.2.1",
      "ip -n " + R + " addr add fd00:200:1::1/64 dev vs nodad",
      "ip -n " + R + " addr add fd00:200:2::1/64 dev vc nodad",
      "ip -n " + R + " addr add fd00:200::1/128 dev lo nodad",
      "ip -n " + S + " addr add fd00:200:1::2/64 dev eth0 nodad",
      "ip -n " + S + " addr add fd00:200:1::3/64 dev eth0 nodad",
      "ip -n " + S + " route add default via fd00:200:1::1",
      "ip -n " + C + " addr add fd00:200:2::2/64 dev eth0 nodad",
      "ip -n " + C + " addr add fd00:200:2::3/64 dev eth0 nodad",
      "ip -n " + C + " addr add fe80::2:2/64 dev eth0 nodad",
      "ip -n " + C + " route add default via fd00:200:2::1",
  };
  for (const std::string& c : cmds) {
    std::string out;
    if (run(c, &out) != 0) {
      error = "`" + c + "` failed: " + out;
      return false;
    }
  }
  g_topo.home_fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  g_topo.snd_fd = open(("/run/netns/" + S).c_str(), O_RDONLY | O_CLOEXEC);
  g_topo.rly_fd = open(("/run/netns/" + R).c_str(), O_RDONLY | O_CLOEXEC);
  g_topo.rcv_fd = open(("/run/netns/" + C).c_str(), O_RDONLY | O_CLOEXEC);
  if (g_topo.home_fd < 0 || g_topo.snd_fd < 0 || g_topo.rly_fd < 0 || g_topo.rcv_fd < 0) {
    error = "cannot open the namespaces";
    return false;
  }
  struct Setup {
    int fd;
    std::vector<const char*> devs;
  };
  for (const Setup& s : {Setup{g_topo.snd_fd, {"eth0"}}, Setup{g_topo.rly_fd, {"vs", "vc"}},
                         Setup{g_topo.rcv_fd, {"eth0"}}}) {
    setns(s.fd, CLONE_NEWNET);
    for (const char* d : s.devs)
      if (!offloads_off(d)) {
        error = std::string("cannot switch checksum offloads off on ") + d;
        return false;
      }
    // The relay is not a router: the kernel path must not need IP forwarding.
    if (s.fd == g_topo.rly_fd && !write_file("/proc/sys/net/ipv4/ip_forward", "0")) {
      error = "cannot set net.ipv4.ip_forward in the relay namespace";
      return false;
    }
    setns(g_topo.home_fd, CLONE_NEWNET);
  }
  for (const std::string& ns : {S, R, C}) {
    std::string out;
    if (run("ip -n " + ns + " -6 addr show tentative", &out) != 0 || !out.empty()) {
      error = "IPv6 addresses still tentative in " + ns + ": " + out;
      return false;
    }
  }
  return true;
}

// Runs `fn` when it goes out of scope (undoes changes to the topology even
// when a REQUIRE fails).
struct Undo {
  std::function<void()> fn;
  ~Undo() {
    if (fn) fn();
  }
};

// 10.200.3.5 on the callee namespace's loopback, routed from the relay via
// `gateway` (an address on the relay-callee link). The callee namespace then
// answers ARP only for addresses of the interface asked (arp_ignore = 1), so
// a packet sent with the destination itself as next hop would not arrive.
// Undone when the object goes.
struct FarNetwork {
  explicit FarNetwork(const std::string& gateway) {
    std::string out;
    REQUIRE(run("ip -n " + g_topo.rly + " route add 10.200.3.0/24 via " + gateway, &out) == 0);
    REQUIRE(run("ip -n " + g_topo.rcv + " addr add 10.200.3.5/32 dev lo", &out) == 0);
    InNs in(g_topo.rcv_fd);
    REQUIRE(write_file("/proc/sys/net/ipv4/conf/eth0/arp_ignore", "1"));
  }
  ~FarNetwork() {
    run("ip -n " + g_topo.rly + " route del 10.200.3.0/24");
    run("ip -n " + g_topo.rcv + " addr del 10.200.3.5/32 dev lo");
    InNs in(g_topo.rcv_fd);
    write_file("/proc/sys/net/ipv4/conf/eth0/arp_ignore", "0");
  }
  FarNetwork(const FarNetwork&) = delete;
  FarNetwork& operator=(const FarNetwork&) = delete;
};

}  // namespace kt
