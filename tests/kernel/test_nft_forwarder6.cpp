// IPv6 in the in-kernel forwarder (src/kernel/nft_forwarder.h), against the
// real kernel with real UDP traffic over the namespaces of harness.h.
//
// Owns every assertion about IPv6 streams: a forwarder made with an IPv6
// relay address forwards IPv6 UDP between the sender and receiver
// namespaces (the receiver's socket gets every datagram, from the relay's
// IPv6 address and port, with a UDP checksum that verifies byte by byte on
// a capture and no checksum error counted, hop limit one less, nothing
// reaching the relay's socket) and counts it per rule; IPv4 and IPv6 rules
// live side by side in one table and one id space (replace, remove, final
// counters); bridged IPv4-IPv6 rules, IPv6 rules without an IPv6 relay
// address and IPv6 destinations the kernel cannot send to are refused with
// a reason; adopt() keeps IPv6 rules with their counters, and replaces a
// table of the IPv4-only shape (older versions) or made for another IPv6
// address; IPv6 rules follow route changes, through a link-local gateway.
#include "harness.h"

namespace {

sockaddr_in6 to_sockaddr6(const IpEndpoint& ep) {
  sockaddr_in6 sa{};
  sa.sin6_family = AF_INET6;
  sa.sin6_port = htons(ep.port);
  std::memcpy(&sa.sin6_addr, ep.ip.bytes.data(), 16);
  return sa;
}

IpEndpoint from_sockaddr6(const sockaddr_in6& sa) {
  IpEndpoint ep;
  ep.ip.family = IpAddress::Family::V6;
  std::memcpy(ep.ip.bytes.data(), &sa.sin6_addr, 16);
  ep.port = ntohs(sa.sin6_port);
  return ep;
}

IpEndpoint ep6(const IpAddress& ip, uint16_t port) {
  return IpEndpoint{ip, port};
}

// A UDP socket bound to [ip]:port inside namespace `ns`.
Sock udp6(int ns, const IpAddress& ip, uint16_t port) {
  InNs in(ns);
  Sock s(socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in6 sa = to_sockaddr6({ip, port});
  if (bind(s.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
    FAIL("bind " << mp::format_ip_endpoint({ip, port}) << ": " << strerror(errno));
  return s;
}

struct Datagram6 {
  IpEndpoint from;
  std::string data;
};

// Everything `s` receives until it has been idle for `idle_ms`.
std::vector<Datagram6> drain6(const Sock& s, int idle_ms = 150) {
  std::vector<Datagram6> got;
  for (int i = 0; i < 100000; ++i) {
    pollfd p{s.fd, POLLIN, 0};
    if (poll(&p, 1, idle_ms) <= 0) break;
    char buf[2048];
    sockaddr_in6 from{};
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(s.fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &fl);
    if (n < 0) break;
    got.push_back({from_sockaddr6(from), std::string(buf, static_cast<size_t>(n))});
  }
  return got;
}

// Sends `count` numbered datagrams of varying size; returns the IP-layer bytes.
uint64_t send_burst6(const Sock& s, const IpEndpoint& to, int count, const std::string& tag) {
  const sockaddr_in6 sa = to_sockaddr6(to);
  uint64_t bytes = 0;
  for (int i = 0; i < count; ++i) {
    std::string d = tag + "#" + std::to_string(i) + ":";
    d.resize(d.size() + static_cast<size_t>(17 * i % 180), 'x');
    REQUIRE(sendto(s.fd, d.data(), d.size(), 0, reinterpret_cast<const sockaddr*>(&sa),
                   sizeof sa) == static_cast<ssize_t>(d.size()));
    bytes += d.size() + 48;  // IPv6 + UDP headers
  }
  return bytes;
}

// An AF_PACKET capture of IPv6 arriving on `dev` in namespace `ns`.
Sock capture6(int ns, const char* dev) {
  InNs in(ns);
  Sock s(socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_IPV6)));
  REQUIRE(s.fd >= 0);
  sockaddr_ll ll{};
  ll.sll_family = AF_PACKET;
  ll.sll_protocol = htons(ETH_P_IPV6);
  ll.sll_ifindex = static_cast<int>(if_nametoindex(dev));
  REQUIRE(bind(s.fd, reinterpret_cast<sockaddr*>(&ll), sizeof ll) == 0);
  return s;
}

struct Captured6 {
  IpEndpoint src, dst;
  bool udp_csum_ok = false;  // non-zero and verifies over the pseudo-header
  int hop_limit = -1;
};

// UDP packets (no extension headers) received on a capture socket.
std::vector<Captured6> captured_udp6(const Sock& s) {
  std::vector<Captured6> out;
  for (int i = 0; i < 100000; ++i) {
    uint8_t pkt[2048];
    sockaddr_ll ll{};
    socklen_t len = sizeof ll;
    ssize_t n = recvfrom(s.fd, pkt, sizeof pkt, 0, reinterpret_cast<sockaddr*>(&ll), &len);
    if (n < 0) break;
    if (ll.sll_pkttype == PACKET_OUTGOING || n < 48) continue;
    if ((pkt[0] >> 4) != 6 || pkt[6] != IPPROTO_UDP) continue;
    const size_t ulen = static_cast<size_t>(pkt[4] << 8 | pkt[5]);
    if (ulen + 40 > static_cast<size_t>(n) || ulen < 8) continue;
    Captured6 c;
    const uint8_t* udph = pkt + 40;
    c.src.ip.family = c.dst.ip.family = IpAddress::Family::V6;
    std::memcpy(c.src.ip.bytes.data(), pkt + 8, 16);
    std::memcpy(c.dst.ip.bytes.data(), pkt + 24, 16);
    c.src.port = static_cast<uint16_t>(udph[0] << 8 | udph[1]);
    c.dst.port = static_cast<uint16_t>(udph[2] << 8 | udph[3]);
    c.hop_limit = pkt[7];
    // Pseudo-header: both addresses, the UDP length, the next header.
    const uint32_t pseudo = sum16(pkt + 8, 32) + static_cast<uint32_t>(ulen) + IPPROTO_UDP;
    const uint16_t csum = static_cast<uint16_t>(udph[6] << 8 | udph[7]);
    c.udp_csum_ok = csum != 0 && fold(sum16(udph, ulen, pseudo)) == 0xffff;
    out.push_back(c);
  }
  return out;
}

// Udp6InCsumErrors of namespace `ns` (/proc/net/snmp6); -1 if absent.
long udp6_csum_errors(int ns) {
  InNs in(ns);
  FILE* f = std::fopen("/proc/thread-self/net/snmp6", "re");
  if (!f) return -1;
  char line[256];
  long result = -1;
  while (std::fgets(line, sizeof line, f)) {
    char name[128];
    long value;
    if (std::sscanf(line, "%127s %ld", name, &value) == 2 &&
        std::strcmp(name, "Udp6InCsumErrors") == 0)
      result = value;
  }
  std::fclose(f);
  return result;
}

// What fwd6_map's value for a rule leaving from relay port `out_port`
// towards `to` through `via` on `dev` reads as in NftElement.
std::string fwd6_value(uint16_t out_port, const IpEndpoint& to, const IpAddress& via,
                       const std::string& dev) {
  return mp::format_ip(kRelayIp6) + ":" + std::to_string(out_port) + " -> " + mp::format_ip(to.ip) +
         ":" + std::to_string(to.port) + " via " + mp::format_ip(via) + " dev " + dev;
}

std::unique_ptr<NftForwarder> make6(const std::string& table) {
  return make(table, kRelayIp6);
}

std::string refusal(NftForwarder& fwd, const ForwardRule& r) {
  std::string why;
  const auto id = fwd.add(r, why);
  return id ? std::string("accepted") : why;
}

}  // namespace

TEST_CASE("IPv6 streams are forwarded in the kernel with a valid UDP checksum") {
  auto fwd = make6("mpk6_fwd");
  Sock relay_in = udp6(g_topo.rly_fd, kRelayIp6, 50000);
  Sock relay_out = udp6(g_topo.rly_fd, kRelayIp6, 50002);
  Sock caller = udp6(g_topo.snd_fd, kCallerIp6, 4000);
  Sock callee = udp6(g_topo.rcv_fd, kCalleeIp6, 5000);
  const ForwardRule a2b_rule = rule(ep6(kCallerIp6, 4000), 50000, 50002, ep6(kCalleeIp6, 5000));
  const ForwardRule b2a_rule = rule(ep6(kCalleeIp6, 5000), 50002, 50000, ep6(kCallerIp6, 4000));
  const uint32_t a2b = add_ok(*fwd, a2b_rule);
  const uint32_t b2a = add_ok(*fwd, b2a_rule);
  std::string error;
  REQUIRE(fwd->commit(nullptr, error));
  CHECK(fwd->installed() == 2);

  // The element carries the rewrite and the way out (the receiver's link).
  auto elements = nft_fwd_elements("mpk6_fwd", "fwd6_map");
  const NftElement& el = elements["fd00:200:1::2 . 4000 . 50000"];
  CHECK(el.has_counter);
  CHECK(el.value == fwd6_value(50002, ep6(kCalleeIp6, 5000), kCalleeIp6, "vc"));
  CHECK(nft_fwd_elements("mpk6_fwd").empty());  // nothing in the IPv4 map

  const long csum_errors = udp6_csum_errors(g_topo.rcv_fd);
  Sock cap = capture6(g_topo.rcv_fd, "eth0");
  const uint64_t bytes = send_burst6(caller, ep6(kRelayIp6, 50000), 50, "a2b");
  auto got = drain6(callee);
  CHECK(got.size() == 50);
  for (const auto& d : got) CHECK(d.from == ep6(kRelayIp6, 50002));
  // What went on the wire: the new addresses and ports, a UDP checksum that
  // verifies, the hop limit one less than the sender's 64.
  const auto wire = captured_udp6(cap);
  size_t seen = 0;
  for (const auto& c : wire) {
    if (!(c.src == ep6(kRelayIp6, 50002))) continue;
    ++seen;
    CHECK(c.dst == ep6(kCalleeIp6, 5000));
    CHECK(c.udp_csum_ok);
    CHECK(c.hop_limit == 63);
  }
  CHECK(seen == 50);
  CHECK(udp6_csum_errors(g_topo.rcv_fd) == csum_errors);
  // Nothing reached the relay's own stack.
  CHECK(drain6(relay_in, 50).empty());

  // The other direction.
  const uint64_t back_bytes = send_burst6(callee, ep6(kRelayIp6, 50002), 30, "b2a");
  auto back = drain6(caller);
  CHECK(back.size() == 30);
  for (const auto& d : back) CHECK(d.from == ep6(kRelayIp6, 50000));
  CHECK(drain6(relay_out, 50).empty());

  // A source that is not latched goes to the userspace socket.
  Sock third = udp6(g_topo.snd_fd, kThirdIp6, 4000);
  send_burst6(third, ep6(kRelayIp6, 50000), 3, "third");
  auto to_user = drain6(relay_in);
  CHECK(to_user.size() == 3);
  for (const auto& d : to_user) CHECK(d.from == ep6(kThirdIp6, 4000));

  auto cnt = counters(*fwd);
  CHECK(cnt[a2b].packets == 50);
  CHECK(cnt[a2b].bytes == bytes);
  CHECK(cnt[b2a].packets == 30);
  CHECK(cnt[b2a].bytes == back_bytes);
  std::printf("[kernel] IPv6: forwarded 50 + 30 packets; UDP checksums verified on %zu captured\n",
              seen);

  // The chain holds both rules; the table names both addresses.
  const std::string listing = nft("list table netdev mpk6_fwd");
  CHECK(listing.find("map fwd6_map") != std::string::npos);
  CHECK(listing.find("type ipv6_addr . ipv6_addr . ipv4_addr : ipv6_addr . ipv6_addr . ipv4_addr "
                     ". ipv6_addr . iface_index") != std::string::npos);
  CHECK(listing.find("10.200.0.1 and fd00:200::1") != std::string::npos);

  Finals finals;
  fwd->remove(a2b);
  REQUIRE(fwd->commit(finals.sink(), error));
  CHECK(finals.by_id[a2b].packets == 50);
  CHECK(fwd->installed() == 1);
  send_burst6(caller, ep6(kRelayIp6, 50000), 4, "after remove");
  CHECK(drain6(relay_in).size() == 4);  // back to userspace
  CHECK(drain6(callee, 50).empty());
}

TEST_CASE("bridged IPv4-IPv6 streams and unsendable IPv6 rules are refused with a reason") {
  auto v4only = make("mpk6_nov6");
  std::string why =
      refusal(*v4only, rule(ep6(kCallerIp6, 4000), 50100, 50102, ep6(kCalleeIp6, 5000)));
  INFO(why);
  CHECK(why.find("without an IPv6 relay address") != std::string::npos);

  auto fwd = make6("mpk6_refuse");
  // Bridged, both ways.
  why = refusal(*fwd, rule(ip_endpoint({kCallerIp, 4000}), 50100, 50102, ep6(kCalleeIp6, 5000)));
  CHECK(why.rfind("IPv4⇄IPv6 bridged stream: stays in userspace", 0) == 0);
  CHECK(why.find("from 10.200.1.2:4000 to [fd00:200:2::2]:5000") != std::string::npos);
  why = refusal(*fwd, rule(ep6(kCalleeIp6, 5000), 50102, 50100, ip_endpoint({kCallerIp, 4000})));
  CHECK(why.find("IPv4⇄IPv6 bridged stream") != std::string::npos);
  // The relay's own address, no route, an IPv4-mapped address.
  why = refusal(*fwd, rule(ep6(kCallerIp6, 4000), 50100, 50102, ep6(kRelayIp6, 5000)));
  CHECK(why.find("address of this host") != std::string::npos);
  why = refusal(*fwd,
                rule(ep6(kCallerIp6, 4000), 50100, 50102, ep6(*mp::parse_ip("fd00:999::1"), 5000)));
  CHECK(why.find("cannot send to fd00:999::1") != std::string::npos);
  why = refusal(*fwd, rule(ep6(kCallerIp6, 4000), 50100, 50102,
                           ep6(*mp::parse_ip("::ffff:10.200.2.2"), 5000)));
  CHECK(why.find("IPv4-mapped") != std::string::npos);
  std::string error;
  REQUIRE(fwd->commit(nullptr, error));
  CHECK(fwd->installed() == 0);
  CHECK(nft_fwd_elements("mpk6_refuse", "fwd6_map").empty());

  // An IPv6 relay address must be one.
  {
    InNs in(g_topo.rly_fd);
    CHECK_FALSE(NftForwarder::create("mpk6_bad", kRelayIp, *mp::parse_ip("::"), error));
    CHECK(error.find("IPv6 address") != std::string::npos);
    CHECK_FALSE(NftForwarder::create("mpk6_bad", kRelayIp, IpAddress::from_v4(kRelayIp), error));
  }
  CHECK_FALSE(table_exists("mpk6_bad"));
}

TEST_CASE("IPv4 and IPv6 rules coexist in one table and one id space") {
  auto fwd = make6("mpk6_both");
  Sock caller4 = udp(g_topo.snd_fd, kCallerIp, 4500);
  Sock callee4 = udp(g_topo.rcv_fd, kCalleeIp, 5500);
  Sock caller6 = udp6(g_topo.snd_fd, kCallerIp6, 4500);
  Sock callee6 = udp6(g_topo.rcv_fd, kCalleeIp6, 5500);
  Sock callee6b = udp6(g_topo.rcv_fd, kCallee2Ip6, 5502);
  // The same ports and relay ports in both families: different keys.
  const uint32_t id4 = add_ok(*fwd, rule({kCallerIp, 4500}, 50200, 50202, {kCalleeIp, 5500}));
  const uint32_t id6 =
      add_ok(*fwd, rule(ep6(kCallerIp6, 4500), 50200, 50202, ep6(kCalleeIp6, 5500)));
  CHECK(id4 != id6);
  std::string error;
  REQUIRE(fwd->commit(nullptr, error));
  CHECK(fwd->installed() == 2);
  const uint64_t b4 = send_burst(caller4, {kRelayIp, 50200}, 10, "v4");
  const uint64_t b6 = send_burst6(caller6, ep6(kRelayIp6, 50200), 12, "v6");
  CHECK(drain(callee4).size() == 10);
  CHECK(drain6(callee6).size() == 12);
  auto cnt = counters(*fwd);
  CHECK(cnt.size() == 2);
  CHECK((cnt[id4].packets == 10 && cnt[id4].bytes == b4));
  CHECK((cnt[id6].packets == 12 && cnt[id6].bytes == b6));

  // Replacing the IPv6 rule (same key, new destination) reports the old id
  // with its counters; the IPv4 rule is untouched.
  Finals finals;
  const uint32_t id6b =
      add_ok(*fwd, rule(ep6(kCallerIp6, 4500), 50200, 50204, ep6(kCallee2Ip6, 5502)));
  REQUIRE(fwd->commit(finals.sink(), error));
  CHECK(finals.calls == 1);
  CHECK(finals.by_id[id6].packets == 12);
  send_burst6(caller6, ep6(kRelayIp6, 50200), 5, "v6 replaced");
  auto got = drain6(callee6b);
  CHECK(got.size() == 5);
  for (const auto& d : got) CHECK(d.from == ep6(kRelayIp6, 50204));
  CHECK(drain6(callee6, 50).empty());
  send_burst(caller4, {kRelayIp, 50200}, 3, "v4 still");
  CHECK(drain(callee4).size() == 3);

  // Removing both in one commit: both reported, the maps are empty.
  fwd->remove(id4);
  fwd->remove(id6b);
  REQUIRE(fwd->commit(finals.sink(), error));
  CHECK(finals.calls == 3);
  CHECK(finals.by_id[id4].packets == 13);
  CHECK(finals.by_id[id6b].packets == 5);
  CHECK(fwd->installed() == 0);
  CHECK(nft_fwd_elements("mpk6_both").empty());
  CHECK(nft_fwd_elements("mpk6_both", "fwd6_map").empty());
}

TEST_CASE("adopt() keeps IPv6 rules and their counters") {
  Sock caller6 = udp6(g_topo.snd_fd, kCallerIp6, 4600);
  Sock callee6 = udp6(g_topo.rcv_fd, kCalleeIp6, 5600);
  Sock relay_in = udp6(g_topo.rly_fd, kRelayIp6, 50300);
  const ForwardRule r6 = rule(ep6(kCallerIp6, 4600), 50300, 50302, ep6(kCalleeIp6, 5600));
  const ForwardRule r4 = rule({kCallerIp, 4600}, 50300, 50302, {kCalleeIp, 5600});
  uint64_t bytes = 0;
  {
    auto old = make6("mpk6_adopt");
    add_ok(*old, r6);
    add_ok(*old, r4);
    std::string error;
    REQUIRE(old->commit(nullptr, error));
    bytes += send_burst6(caller6, ep6(kRelayIp6, 50300), 5, "before");
    old->keep_table_on_exit(true);
  }
  // No forwarder: the kernel forwards on.
  bytes += send_burst6(caller6, ep6(kRelayIp6, 50300), 3, "between");
  CHECK(drain6(callee6).size() == 8);

  std::vector<AdoptedRule> adopted;
  std::string error;
  auto fwd = adopt("mpk6_adopt", adopted, error, kRelayIp, kRelayIp6);
  INFO(error);
  REQUIRE(fwd);
  REQUIRE(adopted.size() == 2);
  const AdoptedRule& a6 = adopted[0].rule.from.ip.is_v4() ? adopted[1] : adopted[0];
  const AdoptedRule& a4 = adopted[0].rule.from.ip.is_v4() ? adopted[0] : adopted[1];
  CHECK(same_rule(a6.rule, r6));
  CHECK(same_rule(a4.rule, r4));
  CHECK(a6.counters.packets == 8);
  CHECK(a6.counters.bytes == bytes);
  CHECK(fwd->installed() == 2);

  bytes += send_burst6(caller6, ep6(kRelayIp6, 50300), 2, "after");
  auto got = drain6(callee6);
  CHECK(got.size() == 2);
  for (const auto& d : got) CHECK(d.from == ep6(kRelayIp6, 50302));
  CHECK(drain6(relay_in, 50).empty());
  auto cnt = counters(*fwd);
  CHECK(cnt[a6.id].packets == 10);
  CHECK(cnt[a6.id].bytes == bytes);
  Finals finals;
  fwd->remove(a6.id);
  REQUIRE(fwd->commit(finals.sink(), error));
  CHECK(finals.by_id[a6.id].packets == 10);
}

TEST_CASE("adopt() replaces a table of the IPv4-only shape or of another IPv6 address") {
  Sock caller6 = udp6(g_topo.snd_fd, kCallerIp6, 4700);
  Sock callee6 = udp6(g_topo.rcv_fd, kCalleeIp6, 5700);
  {
    // What versions before IPv6 made: one map, one rule, a comment naming
    // only the IPv4 address.
    auto old = make("mpk6_old");
    add_ok(*old, rule({kCallerIp, 4700}, 50400, 50402, {kCalleeIp, 5700}));
    std::string error;
    REQUIRE(old->commit(nullptr, error));
    old->keep_table_on_exit(true);
  }
  std::vector<AdoptedRule> adopted;
  std::string error;
  {
    auto fwd = adopt("mpk6_old", adopted, error, kRelayIp, kRelayIp6);
    INFO(error);
    REQUIRE(fwd);
    CHECK(adopted.empty());  // replaced: its streams are handed over again
    CHECK(fwd->installed() == 0);
    const std::string listing = nft("list table netdev mpk6_old");
    CHECK(listing.find("map fwd6_map") != std::string::npos);
    CHECK(listing.find("10.200.0.1 and fd00:200::1") != std::string::npos);
    // The replaced table forwards IPv6.
    add_ok(*fwd, rule(ep6(kCallerIp6, 4700), 50400, 50402, ep6(kCalleeIp6, 5700)));
    REQUIRE(fwd->commit(nullptr, error));
    send_burst6(caller6, ep6(kRelayIp6, 50400), 4, "replaced");
    CHECK(drain6(callee6).size() == 4);
    fwd->keep_table_on_exit(true);
  }
  {
    // Made for another IPv6 address: replaced too.
    auto fwd = adopt("mpk6_old", adopted, error, kRelayIp, *mp::parse_ip("fd00:200::9"));
    INFO(error);
    REQUIRE(fwd);
    CHECK(adopted.empty());
    CHECK(nft("list table netdev mpk6_old").find("fd00:200::9") != std::string::npos);
    fwd->keep_table_on_exit(true);
  }
  // And one with an IPv6 map adopted by a relay without IPv6: replaced by
  // the IPv4-only shape.
  auto fwd = adopt("mpk6_old", adopted, error, kRelayIp, std::nullopt);
  REQUIRE(fwd);
  CHECK(adopted.empty());
  CHECK(nft("list table netdev mpk6_old").find("fwd6_map") == std::string::npos);
}

TEST_CASE("IPv6 rules follow route changes, through a link-local gateway") {
  // fd00:200:3::5 on the callee namespace's loopback, first routed from the
  // relay via a link-local gateway that does not exist (no neighbour
  // answer: the packets are lost), then via the callee namespace's
  // link-local address.
  const IpAddress far_ip = *mp::parse_ip("fd00:200:3::5");
  std::string out;
  REQUIRE(run("ip -n " + g_topo.rcv + " addr add fd00:200:3::5/128 dev lo nodad", &out) == 0);
  REQUIRE(run("ip -n " + g_topo.rly + " route add fd00:200:3::/64 via fe80::dead dev vc", &out) ==
          0);
  Undo undo{[] {
    run("ip -n " + g_topo.rly + " route del fd00:200:3::/64");
    run("ip -n " + g_topo.rcv + " addr del fd00:200:3::5/128 dev lo");
  }};
  auto fwd = make6("mpk6_reroute");
  REQUIRE(fwd->network_change_fd() >= 0);
  Sock caller6 = udp6(g_topo.snd_fd, kCallerIp6, 4800);
  Sock far = udp6(g_topo.rcv_fd, far_ip, 5800);
  const uint32_t id = add_ok(*fwd, rule(ep6(kCallerIp6, 4800), 50500, 50502, ep6(far_ip, 5800)));
  std::string error;
  REQUIRE(fwd->commit(nullptr, error));
  size_t moved = 99;
  REQUIRE(fwd->follow_network(moved, error));  // the setup's own changes: nothing moves
  CHECK(moved == 0);
  CHECK(nft_fwd_elements("mpk6_reroute", "fwd6_map")["fd00:200:1::2 . 4800 . 50500"].value ==
        fwd6_value(50502, ep6(far_ip, 5800), *mp::parse_ip("fe80::dead"), "vc"));
  const uint64_t lost = send_burst6(caller6, ep6(kRelayIp6, 50500), 5, "dead gateway");
  CHECK(drain6(far).empty());

  REQUIRE(run("ip -n " + g_topo.rly + " route replace fd00:200:3::/64 via fe80::2:2 dev vc",
              &out) == 0);
  REQUIRE(fwd->follow_network(moved, error));
  INFO(error);
  CHECK(moved == 1);
  CHECK(nft_fwd_elements("mpk6_reroute", "fwd6_map")["fd00:200:1::2 . 4800 . 50500"].value ==
        fwd6_value(50502, ep6(far_ip, 5800), kCalleeLinkLocal, "vc"));
  const uint64_t bytes = send_burst6(caller6, ep6(kRelayIp6, 50500), 10, "link-local gateway");
  auto got = drain6(far);
  CHECK(got.size() == 10);
  for (const auto& d : got) CHECK(d.from == ep6(kRelayIp6, 50502));
  auto cnt = counters(*fwd);
  CHECK(cnt[id].packets == 15);  // same id, counting on
  CHECK(cnt[id].bytes == lost + bytes);
}
