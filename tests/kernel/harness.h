// Shared by the kernel forwarding tests (test_nft_forwarder.cpp for IPv4,
// test_nft_forwarder6.cpp for IPv6): the three-namespace topology (sender,
// relay, receiver; IPv4 and IPv6 addresses on each link), UDP sockets of
// either family, AF_PACKET captures with checksum verification, `nft`
// listings of the forwarder's maps, and small helpers to make, adopt and
// fill forwarders. Header-only (inline); main.cpp builds and removes the
// topology around the Catch2 session.
#pragma once
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// child ends. Traffic only ever flows inside the namespaces.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/ethtool.h>
#include <linux/if_packet.h>
#include <linux/sockios.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <rapidjson/document.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/address.h"
#include "common/ip_address.h"
#include "common/log.h"
#include "kernel/nft_forwarder.h"
#include "kernel/nft_ruleset.h"

using mp::Endpoint;
using mp::IpAddress;
using mp::IpEndpoint;
using mp::Ipv4;
using mp::kernel::AdoptedRule;
using mp::kernel::Counters;
using mp::kernel::ForwardRule;
using mp::kernel::NftForwarder;

namespace kt {

// ---------------------------------------------------------------- topology

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

// ---------------------------------------------------------------- sockets

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

// ---------------------------------------------------------------- nft state

inline std::string nft(const std::string& args, int* status = nullptr) {
  std::string out;
  int st = run("ip netns exec " + g_topo.rly + " nft " + args, &out);
  if (status) *status = st;
  return out;
}

// The JSON document of `nft -j <args>`: its line of output. (nft also writes
// errors about the rule it cannot print, "fwd statement has no output
// expression", which `nft()` mixes in.)
inline std::string nft_json(const std::string& args) {
  std::string out = nft("-j " + args);
  size_t at = out.find("{\"nftables\"");
  if (at == std::string::npos) return out;
  size_t end = out.find('\n', at);
  return out.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

inline bool table_exists(const std::string& table) {
  std::string out = nft("list tables");
  return out.find("table netdev " + table + "\n") != std::string::npos;
}

// One element of fwd_map as nft shows it.
struct NftElement {
  // "relay ip:new sport -> new daddr:new dport via next hop dev interface"
  std::string value;
  bool has_counter = false;
  uint64_t packets = 0;
  uint64_t bytes = 0;
};

// What fwd_map's value for a rule leaving from relay port `out_port` towards
// `to` through next hop `via` on interface `dev` reads as in NftElement.
inline std::string fwd_value(uint16_t out_port, Endpoint to, Ipv4 via, const std::string& dev) {
  return mp::format_endpoint({kRelayIp, out_port}) + " -> " + mp::format_endpoint(to) + " via " +
         mp::format_ipv4(via) + " dev " + dev;
}

// Elements of `map` (fwd_map or fwd6_map) per `nft -j list table`, "saddr . sport . dport" ->
// value and counter. The value is a concatenation that nft prints as
// [saddr, daddr, "a.b.c.d", next hop, interface name]: the third member is
// the new source and destination ports (network order) printed as an
// address, the last the interface index resolved to a name.
inline std::map<std::string, NftElement> nft_fwd_elements(const std::string& table,
                                                          const std::string& map = "fwd_map") {
  std::map<std::string, NftElement> out;
  std::string json = nft_json("list table netdev " + table);
  rapidjson::Document doc;
  doc.Parse(json.c_str());
  if (doc.HasParseError() || !doc.HasMember("nftables")) FAIL("nft -j output: " << json);
  for (const auto& item : doc["nftables"].GetArray()) {
    if (!item.HasMember("map")) continue;
    const auto& m = item["map"];
    if (std::string(m["name"].GetString()) != map || !m.HasMember("elem")) continue;
    for (const auto& e : m["elem"].GetArray()) {
      // [ {"elem": {"val": {"concat": [ip, sport, dport]}, "counter": {...}}},
      //   {"concat": [saddr, daddr, ports, next hop, interface]} ]
      const auto& elem = e[0]["elem"];
      const auto& key = elem["val"]["concat"];
      std::string k = std::string(key[0].GetString()) + " . " + std::to_string(key[1].GetInt()) +
                      " . " + std::to_string(key[2].GetInt());
      NftElement& el = out[k];
      if (elem.HasMember("counter")) {
        el.has_counter = true;
        el.packets = elem["counter"]["packets"].GetUint64();
        el.bytes = elem["counter"]["bytes"].GetUint64();
      }
      if (!e[1].IsObject() || !e[1].HasMember("concat") || e[1]["concat"].Size() != 5)
        FAIL("unexpected fwd_map value in nft -j output: " << json);
      const auto& v = e[1]["concat"];
      // An interface index nft cannot name would be printed as a number.
      auto text = [](const rapidjson::Value& x) {
        return x.IsString()  ? std::string(x.GetString())
               : x.IsInt64() ? std::to_string(x.GetInt64())
                             : std::string("?");
      };
      auto ports = mp::parse_ipv4(text(v[2]));
      if (!ports) FAIL("ports of fwd_map value not printed as an address: " << json);
      uint8_t b[4];
      std::memcpy(b, &ports->be, 4);
      el.value = text(v[0]) + ":" + std::to_string(b[0] << 8 | b[1]) + " -> " + text(v[1]) + ":" +
                 std::to_string(b[2] << 8 | b[3]) + " via " + text(v[3]) + " dev " + text(v[4]);
    }
  }
  return out;
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

inline std::map<uint32_t, Counters> counters(NftForwarder& f) {
  std::map<uint32_t, Counters> out;
  std::string error;
  REQUIRE(f.read_counters([&](uint32_t id, const Counters& c) { out[id] = c; }, error));
  return out;
}

struct Finals {
  std::map<uint32_t, Counters> by_id;
  size_t calls = 0;
  auto sink() {
    return [this](uint32_t id, const Counters& c) {
      by_id[id] = c;
      ++calls;
    };
  }
};

inline std::unique_ptr<NftForwarder> make(const std::string& table,
                                          std::optional<IpAddress> relay_ip6 = std::nullopt) {
  InNs in(g_topo.rly_fd);
  std::string error;
  auto f = NftForwarder::create(table, kRelayIp, relay_ip6, error);
  INFO(error);
  REQUIRE(f);
  return f;
}

inline double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Runs `fn` in a child process without CAP_NET_ADMIN (inside the relay
// namespace); returns what it wrote.
inline std::string without_net_admin(const std::function<std::string()>& fn) {
  int p[2];
  REQUIRE(pipe2(p, O_CLOEXEC) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(p[0]);
    std::string text;
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    if (setns(g_topo.rly_fd, CLONE_NEWNET) != 0 || syscall(SYS_capget, &hdr, data) != 0) {
      text = "setup failed";
    } else {
      const uint32_t bit = 1u << (CAP_NET_ADMIN % 32);
      data[CAP_NET_ADMIN / 32].effective &= ~bit;
      data[CAP_NET_ADMIN / 32].permitted &= ~bit;
      data[CAP_NET_ADMIN / 32].inheritable &= ~bit;
      text = syscall(SYS_capset, &hdr, data) == 0 ? fn() : "capset failed";
    }
    ssize_t w = write(p[1], text.data(), text.size());
    _exit(w < 0 ? 1 : 0);
  }
  close(p[1]);
  std::string out;
  char buf[1024];
  ssize_t n;
  while ((n = read(p[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(p[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  return out;
}

inline IpEndpoint ip_endpoint(Endpoint ep) {
  return IpEndpoint{IpAddress::from_v4(ep.ip), ep.port};
}

inline ForwardRule rule(IpEndpoint from, uint16_t in, uint16_t out, IpEndpoint to) {
  ForwardRule r;
  r.from = from;
  r.relay_in_port = in;
  r.relay_out_port = out;
  r.to = to;
  return r;
}

// add() of a rule the test expects the kernel to take: its id, or 0 after a
// failed check that shows the reason.
inline uint32_t add_ok(NftForwarder& fwd, const ForwardRule& r) {
  std::string error;
  const std::optional<uint32_t> id = fwd.add(r, error);
  INFO(error);
  CHECK(id);
  return id.value_or(0);
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

inline bool same_rule(const ForwardRule& a, const ForwardRule& b) {
  return a.from == b.from && a.relay_in_port == b.relay_in_port &&
         a.relay_out_port == b.relay_out_port && a.to == b.to;
}

inline std::unique_ptr<NftForwarder> adopt(const std::string& table,
                                           std::vector<AdoptedRule>& adopted, std::string& error,
                                           Ipv4 relay_ip = kRelayIp,
                                           std::optional<IpAddress> relay_ip6 = std::nullopt) {
  InNs in(g_topo.rly_fd);
  return NftForwarder::adopt(table, relay_ip, relay_ip6, adopted, error);
}

}  // namespace kt

using namespace kt;
