// Tests of the in-kernel forwarder (src/kernel/nft_forwarder.h) against the
// real kernel, with real UDP traffic.
//
// Owns a three-namespace topology built for the run (sender, relay, receiver,
// as in shared/notes/platform-findings.md) and every assertion about the
// forwarder: packets of the latched source reach the receiver from
// relay_ip:relay_out_port with valid IP and UDP checksums (verified byte by
// byte on an AF_PACKET capture, with checksum offloads switched off so the
// kernel computes and checks them in software), other sources reach the
// userspace socket instead, counters equal what was sent, replace and remove
// behave, forwarding needs no net.ipv4.ip_forward and bypasses the relay's IP
// stack (the TTL drops by one, a gateway is used as next hop), add() refuses
// destinations the kernel cannot send to (local, broadcast, unroutable, an
// interface the chain does not hook) with a reason, the ruleset (table netdev,
// the ingress chain on every non-loopback interface, fwd_map with counters,
// one rule) has the documented shape, the elements carry the rewrite and the
// way out of their rule, 10,000 rules install in batches (timed), the table
// is deleted by the destructor and reclaimed by create(), adopted by adopt()
// while a sender keeps sending one datagram per millisecond (none missed, none
// to userspace, counters include what was forwarded while no forwarder
// existed), never touched when another relay's, replaced when not in the
// expected shape, adopted rules follow route changes (also those made while
// no forwarder ran), probe() explains a missing CAP_NET_ADMIN, and changes
// made behind the forwarder's back are healed.
//
// Needs root (creates network namespaces); exits 77 (skipped) otherwise. The
// tests run in a child process; the parent deletes the namespaces however the
#include "harness.h"

// ====================================================================== tests

TEST_CASE("probe succeeds with CAP_NET_ADMIN and leaves nothing behind") {
  InNs in(g_topo.rly_fd);
  std::string why;
  CHECK(NftForwarder::probe(why));
  INFO(why);
  CHECK(why.empty());
  std::string out = nft("list tables");
  CHECK(out.find("mediaproxy_probe") == std::string::npos);
}

TEST_CASE("without CAP_NET_ADMIN probe() and create() say so") {
  std::string why = without_net_admin([] {
    std::string w;
    return NftForwarder::probe(w) ? std::string("probe succeeded") : w;
  });
  INFO(why);
  CHECK(why.find("CAP_NET_ADMIN") != std::string::npos);
  std::string error = without_net_admin([] {
    std::string e;
    return NftForwarder::create("mpk_nocap", kRelayIp, std::nullopt, e)
               ? std::string("create succeeded")
               : e;
  });
  INFO(error);
  CHECK(error.find("CAP_NET_ADMIN") != std::string::npos);
  CHECK_FALSE(table_exists("mpk_nocap"));
}

TEST_CASE("forwarding needs no ip_forward and bypasses the relay's IP stack") {
  // One destination on the relay's link, one behind a gateway (the callee
  // namespace's second address, which answers ARP only for its own
  // addresses, so a packet sent to the destination itself as next hop would
  // not arrive).
  const Ipv4 far_ip = *mp::parse_ipv4("10.200.3.5");
  const Ipv4 gateway = kCallee2Ip;
  FarNetwork far_net("10.200.2.3");
  {
    InNs in(g_topo.rly_fd);
    REQUIRE(write_file("/proc/sys/net/ipv4/ip_forward", "0"));
    std::string why;
    CHECK(NftForwarder::probe(why));
    INFO(why);
    CHECK(why.empty());
  }
  auto fwd = make("mpk_nofwd");
  Sock relay_a = udp(g_topo.rly_fd, kRelayIp, 45000);
  Sock relay_b = udp(g_topo.rly_fd, kRelayIp, 45004);
  Sock caller = udp(g_topo.snd_fd, kCallerIp, 4400);
  Sock caller2 = udp(g_topo.snd_fd, kCallerIp, 4401);
  Sock callee = udp(g_topo.rcv_fd, kCalleeIp, 5400);
  Sock far = udp(g_topo.rcv_fd, far_ip, 5402);
  Sock cap_rcv = capture(g_topo.rcv_fd, "eth0");
  std::string why;
  const uint32_t near_id =
      fwd->add(rule({kCallerIp, 4400}, 45000, 45002, {kCalleeIp, 5400}), why).value_or(0);
  INFO(why);
  CHECK(near_id != 0);
  const uint32_t far_id =
      fwd->add(rule({kCallerIp, 4401}, 45004, 45006, {far_ip, 5402}), why).value_or(0);
  INFO(why);
  CHECK(far_id != 0);
  std::string error;
  REQUIRE(fwd->commit(nullptr, error));
  auto elems = nft_fwd_elements("mpk_nofwd");
  CHECK(elems.size() == 2);
  CHECK(elems["10.200.1.2 . 4400 . 45000"].value ==
        fwd_value(45002, {kCalleeIp, 5400}, kCalleeIp, "vc"));
  CHECK(elems["10.200.1.2 . 4401 . 45004"].value ==
        fwd_value(45006, {far_ip, 5402}, gateway, "vc"));

  const long in_before = snmp(g_topo.rly_fd, "Ip", "InReceives");
  const long forw_before = snmp(g_topo.rly_fd, "Ip", "ForwDatagrams");
  REQUIRE(in_before >= 0);
  REQUIRE(forw_before >= 0);
  int ttl = 17;
  REQUIRE(setsockopt(caller.fd, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl) == 0);
  REQUIRE(setsockopt(caller2.fd, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl) == 0);
  const uint64_t near_bytes = send_burst(caller, {kRelayIp, 45000}, 40, "near");
  const uint64_t far_bytes = send_burst(caller2, {kRelayIp, 45004}, 40, "far");
  auto got = drain(callee);
  CHECK(got.size() == 40);
  for (const auto& d : got) CHECK(d.from == Endpoint{kRelayIp, 45002});
  auto got_far = drain(far);
  CHECK(got_far.size() == 40);
  for (const auto& d : got_far) CHECK(d.from == Endpoint{kRelayIp, 45006});
  CHECK(drain(relay_a, 50).empty());
  CHECK(drain(relay_b, 50).empty());
  {
    InNs in(g_topo.rly_fd);
    FILE* f = std::fopen("/proc/sys/net/ipv4/ip_forward", "re");
    REQUIRE(f);
    char buf[16] = {};
    CHECK(std::fgets(buf, sizeof buf, f) != nullptr);
    std::fclose(f);
    CHECK(std::string(buf) == "0\n");  // still off while all that was forwarded
  }
  // The relay's IP stack saw none of it (the ingress hook comes before it);
  // a few stray packets are tolerated, not 80.
  const long in_delta = snmp(g_topo.rly_fd, "Ip", "InReceives") - in_before;
  CHECK(in_delta < 8);
  CHECK(snmp(g_topo.rly_fd, "Ip", "ForwDatagrams") == forw_before);
  // fwd decrements the TTL, as routing would.
  size_t near_seen = 0, far_seen = 0;
  for (const auto& c : captured_udp(cap_rcv)) {
    if (c.src == Endpoint{kRelayIp, 45002}) {
      ++near_seen;
      CHECK(c.dst == Endpoint{kCalleeIp, 5400});
    } else if (c.src == Endpoint{kRelayIp, 45006}) {
      ++far_seen;
      CHECK(c.dst == Endpoint{far_ip, 5402});
    } else {
      continue;
    }
    CHECK(c.ttl == 16);
    CHECK(c.ip_csum_ok);
    CHECK(c.udp_csum_ok);
  }
  CHECK(near_seen == 40);
  CHECK(far_seen == 40);
  auto cnt = counters(*fwd);
  CHECK(cnt[near_id].packets == 40);
  CHECK(cnt[near_id].bytes == near_bytes);
  CHECK(cnt[far_id].packets == 40);
  CHECK(cnt[far_id].bytes == far_bytes);
}

TEST_CASE("a route change moves installed rules to the new next hop, counters continue") {
  // 10.200.3.5 first behind a gateway that does not exist (10.200.2.9: no
  // ARP answer, the packets are lost), then behind the callee namespace's
  // second address. Without follow_network() the rule would keep sending to
  // the dead gateway.
  const Ipv4 far_ip = *mp::parse_ipv4("10.200.3.5");
  FarNetwork far_net("10.200.2.9");
  std::string out;
  auto fwd = make("mpk_reroute");
  REQUIRE(fwd->network_change_fd() >= 0);
  Sock relay_a = udp(g_topo.rly_fd, kRelayIp, 47000);
  Sock caller = udp(g_topo.snd_fd, kCallerIp, 4700);
  Sock far = udp(g_topo.rcv_fd, far_ip, 5700);
  std::string why, error;
  const auto added = fwd->add(rule({kCallerIp, 4700}, 47000, 47002, {far_ip, 5700}), why);
  INFO(why);
  REQUIRE(added);
  const uint32_t id = *added;
  REQUIRE(fwd->commit(nullptr, error));
  size_t moved = 99;
  REQUIRE(fwd->follow_network(moved, error));  // the setup's own route changes: nothing moves
  CHECK(moved == 0);
  CHECK(nft_fwd_elements("mpk_reroute")["10.200.1.2 . 4700 . 47000"].value ==
        fwd_value(47002, {far_ip, 5700}, *mp::parse_ipv4("10.200.2.9"), "vc"));
  const uint64_t lost_bytes = send_burst(caller, {kRelayIp, 47000}, 10, "dead gateway");
  CHECK(drain(far).empty());

  REQUIRE(run("ip -n " + g_topo.rly + " route replace 10.200.3.0/24 via 10.200.2.3", &out) == 0);
  REQUIRE(fwd->follow_network(moved, error));
  INFO(error);
  CHECK(moved == 1);
  CHECK(nft_fwd_elements("mpk_reroute")["10.200.1.2 . 4700 . 47000"].value ==
        fwd_value(47002, {far_ip, 5700}, kCallee2Ip, "vc"));
  const uint64_t bytes = send_burst(caller, {kRelayIp, 47000}, 20, "new gateway");
  auto got = drain(far);
  CHECK(got.size() == 20);
  for (const auto& d : got) CHECK(d.from == Endpoint{kRelayIp, 47002});
  CHECK(drain(relay_a, 50).empty());
  // Same id; its counters go on from the ten packets counted before.
  auto cnt = counters(*fwd);
  CHECK(cnt[id].packets == 30);
  CHECK(cnt[id].bytes == lost_bytes + bytes);
  // Nothing changed since: nothing moves.
  REQUIRE(fwd->follow_network(moved, error));
  CHECK(moved == 0);
}

TEST_CASE("add() refuses destinations the kernel cannot send to, with a reason") {
  auto fwd = make("mpk_refuse");
  Sock relay_a = udp(g_topo.rly_fd, kRelayIp, 46000);
  Sock caller = udp(g_topo.snd_fd, kCallerIp, 4500);
  struct Refused {
    const char* to;
    const char* reason;
  };
  const Refused refused[] = {
      {"10.200.0.1", "it is an address of this host"},  // the relay address itself
      {"10.200.2.1", "it is an address of this host"},  // the relay's address on vc
      {"10.200.2.255", "it is a broadcast address"},
      {"192.0.2.1", "no route"},  // the relay namespace has no default route
  };
  for (const Refused& r : refused) {
    std::string why;
    const auto id =
        fwd->add(rule({kCallerIp, 4500}, 46000, 46002, {*mp::parse_ipv4(r.to), 5000}), why);
    INFO("to " << r.to << ": " << why);
    CHECK_FALSE(id);
    CHECK(why.find(r.to) != std::string::npos);
    CHECK(why.find(r.reason) != std::string::npos);
  }

  // An interface created after the forwarder: its route is fine, but the
  // ingress chain does not hook it.
  Undo undo{[] { run("ip -n " + g_topo.rly + " link del mpkv0"); }};
  std::string out;
  for (const char* c : {"link add mpkv0 type veth peer name mpkv1", "link set mpkv0 up",
                        "link set mpkv1 up", "addr add 10.200.9.1/24 dev mpkv0"}) {
    INFO(out);
    REQUIRE(run("ip -n " + g_topo.rly + " " + std::string(c), &out) == 0);
  }
  std::string why;
  CHECK_FALSE(
      fwd->add(rule({kCallerIp, 4500}, 46000, 46002, {*mp::parse_ipv4("10.200.9.2"), 5000}), why));
  INFO(why);
  CHECK(why.find("10.200.9.2") != std::string::npos);
  CHECK(why.find("did not exist when forwarding started") != std::string::npos);

  // Nothing was queued: the stream stays in userspace.
  std::string error;
  Finals finals;
  REQUIRE(fwd->commit(finals.sink(), error));
  CHECK(finals.calls == 0);
  CHECK(fwd->installed() == 0);
  CHECK(nft_fwd_elements("mpk_refuse").empty());
  send_burst(caller, {kRelayIp, 46000}, 3, "refused");
  CHECK(drain(relay_a).size() == 3);
  // And a reachable destination is still accepted.
  why.clear();
  CHECK(fwd->add(rule({kCallerIp, 4500}, 46000, 46002, {kCalleeIp, 5000}), why));
  CHECK(why.empty());

  // Once the forwarder follows the link change, the new interface is hooked
  // and its destinations are accepted.
  size_t moved = 0;
  REQUIRE(fwd->follow_network(moved, error));
  INFO(error);
  CHECK(nft("list chain netdev mpk_refuse ingress").find("mpkv0") != std::string::npos);
  why.clear();
  CHECK(
      fwd->add(rule({kCallerIp, 4501}, 46004, 46006, {*mp::parse_ipv4("10.200.9.2"), 5000}), why));
  CHECK(why.empty());
}

TEST_CASE("create() rejects names nft could not print back") {
  InNs in(g_topo.rly_fd);
  std::string error;
  CHECK(NftForwarder::create("bad name", kRelayIp, std::nullopt, error) == nullptr);
  CHECK(error.find("table name") != std::string::npos);
  CHECK(NftForwarder::create("mpk_noip", Ipv4{}, std::nullopt, error) == nullptr);
}

TEST_CASE("latched streams are forwarded in the kernel with valid checksums") {
  auto fwd = make("mpk_fwd");
  CHECK(table_exists("mpk_fwd"));
  // Userspace sockets of the relay, bound like the relay binds them.
  Sock relay_a = udp(g_topo.rly_fd, kRelayIp, 40000);
  Sock relay_b = udp(g_topo.rly_fd, kRelayIp, 40002);
  Sock relay_c = udp(g_topo.rly_fd, kRelayIp, 40004);
  Sock caller = udp(g_topo.snd_fd, kCallerIp, 4000);
  Sock caller_other_port = udp(g_topo.snd_fd, kCallerIp, 4001);
  Sock third = udp(g_topo.snd_fd, kThirdIp, 4000);
  Sock callee = udp(g_topo.rcv_fd, kCalleeIp, 5000);
  Sock callee2 = udp(g_topo.rcv_fd, kCallee2Ip, 5002);
  Sock cap_rcv = capture(g_topo.rcv_fd, "eth0");
  Sock cap_snd = capture(g_topo.snd_fd, "eth0");
  const long csum_errors_before = udp_csum_errors(g_topo.rcv_fd);

  const Endpoint relay_in{kRelayIp, 40000};
  const Endpoint relay_out{kRelayIp, 40002};
  uint32_t a2b = add_ok(*fwd, rule({kCallerIp, 4000}, 40000, 40002, {kCalleeIp, 5000}));
  uint32_t b2a = add_ok(*fwd, rule({kCalleeIp, 5000}, 40002, 40000, {kCallerIp, 4000}));
  CHECK(a2b != 0);
  CHECK(b2a != 0);
  CHECK(a2b != b2a);
  std::string error;
  Finals finals;
  REQUIRE(fwd->commit(finals.sink(), error));
  CHECK(finals.calls == 0);
  CHECK(fwd->installed() == 2);

  // Caller -> relay:40000 arrives at the callee from relay:40002.
  const uint64_t a_bytes = send_burst(caller, relay_in, 50, "a2b");
  auto got = drain(callee);
  REQUIRE(got.size() == 50);
  for (size_t i = 0; i < got.size(); ++i) {
    CHECK(got[i].from == relay_out);
    CHECK(got[i].data.rfind("a2b#" + std::to_string(i) + ":", 0) == 0);
  }
  CHECK(drain(relay_a, 50).empty());  // userspace saw nothing of the latched peer
  // Callee -> relay:40002 arrives at the caller from relay:40000.
  const uint64_t b_bytes = send_burst(callee, relay_out, 30, "b2a");
  auto back = drain(caller);
  REQUIRE(back.size() == 30);
  for (const auto& d : back) CHECK(d.from == relay_in);
  CHECK(drain(relay_b, 50).empty());

  // Checksums as they arrived on the wire, in both directions.
  auto wire = captured_udp(cap_rcv);
  auto wire_back = captured_udp(cap_snd);
  size_t seen = 0;
  for (const auto& c : wire) {
    if (c.src != relay_out) continue;
    ++seen;
    CHECK(c.dst == Endpoint{kCalleeIp, 5000});
    CHECK(c.ip_csum_ok);
    CHECK(c.udp_csum_ok);
  }
  CHECK(seen == 50);
  size_t seen_back = 0;
  for (const auto& c : wire_back) {
    if (c.src != relay_in) continue;
    ++seen_back;
    CHECK(c.ip_csum_ok);
    CHECK(c.udp_csum_ok);
  }
  CHECK(seen_back == 30);
  CHECK(udp_csum_errors(g_topo.rcv_fd) == csum_errors_before);
  std::printf("[kernel] forwarded 50 + 30 packets; checksums verified on %zu + %zu captured\n",
              seen, seen_back);

  // Counters are per direction, IP-layer bytes.
  auto cnt = counters(*fwd);
  REQUIRE(cnt.size() == 2);
  CHECK(cnt[a2b].packets == 50);
  CHECK(cnt[a2b].bytes == a_bytes);
  CHECK(cnt[b2a].packets == 30);
  CHECK(cnt[b2a].bytes == b_bytes);

  // A sender without UDP checksums (checksum 0): the rewrite leaves it 0.
  int one = 1;
  REQUIRE(setsockopt(caller.fd, SOL_SOCKET, SO_NO_CHECK, &one, sizeof one) == 0);
  const uint64_t a_total_bytes = a_bytes + send_burst(caller, relay_in, 5, "nocsum");
  int zero = 0;
  REQUIRE(setsockopt(caller.fd, SOL_SOCKET, SO_NO_CHECK, &zero, sizeof zero) == 0);
  CHECK(drain(callee).size() == 5);
  size_t zero_csum = 0;
  for (const auto& c : captured_udp(cap_rcv))
    if (c.src == relay_out && c.udp_csum == 0 && c.ip_csum_ok) ++zero_csum;
  CHECK(zero_csum == 5);
  cnt = counters(*fwd);
  CHECK(cnt[a2b].packets == 55);
  CHECK(cnt[a2b].bytes == a_total_bytes);

  // Another port of the same address, and another address: not forwarded.
  send_burst(caller_other_port, relay_in, 5, "other-port");
  send_burst(third, relay_in, 5, "third");
  auto user = drain(relay_a);
  REQUIRE(user.size() == 10);
  size_t from_other_port = 0, from_third = 0;
  for (const auto& d : user) {
    if (d.from == Endpoint{kCallerIp, 4001}) ++from_other_port;
    if (d.from == Endpoint{kThirdIp, 4000}) ++from_third;
  }
  CHECK(from_other_port == 5);
  CHECK(from_third == 5);
  CHECK(drain(callee, 50).empty());
  CHECK(counters(*fwd)[a2b].packets == 55);

  // Re-adding the key replaces the rule atomically; the old id's final
  // counters are reported.
  uint32_t a2c = add_ok(*fwd, rule({kCallerIp, 4000}, 40000, 40004, {kCallee2Ip, 5002}));
  REQUIRE(fwd->commit(finals.sink(), error));
  INFO(error);
  REQUIRE(finals.by_id.count(a2b) == 1);
  CHECK(finals.by_id[a2b].packets == 55);
  CHECK(finals.by_id[a2b].bytes == a_total_bytes);
  CHECK(fwd->installed() == 2);
  const uint64_t c_bytes = send_burst(caller, relay_in, 10, "a2c");
  auto got2 = drain(callee2);
  REQUIRE(got2.size() == 10);
  for (const auto& d : got2) CHECK(d.from == Endpoint{kRelayIp, 40004});
  CHECK(drain(callee, 50).empty());
  cnt = counters(*fwd);
  CHECK(cnt.count(a2b) == 0);
  CHECK(cnt[a2c].packets == 10);
  CHECK(cnt[a2c].bytes == c_bytes);
  auto elems = nft_fwd_elements("mpk_fwd");
  CHECK(elems.size() == 2);
  CHECK(elems["10.200.1.2 . 4000 . 40000"].value ==
        fwd_value(40004, {kCallee2Ip, 5002}, kCallee2Ip, "vc"));
  CHECK(elems["10.200.2.2 . 5000 . 40002"].value ==
        fwd_value(40000, {kCallerIp, 4000}, kCallerIp, "vs"));
  // The element counters are the ones read_counters() reports.
  CHECK(elems["10.200.1.2 . 4000 . 40000"].has_counter);
  CHECK(elems["10.200.1.2 . 4000 . 40000"].packets == cnt[a2c].packets);
  CHECK(elems["10.200.1.2 . 4000 . 40000"].bytes == cnt[a2c].bytes);
  CHECK(elems["10.200.2.2 . 5000 . 40002"].packets == cnt[b2a].packets);
  CHECK(elems["10.200.2.2 . 5000 . 40002"].bytes == cnt[b2a].bytes);

  // remove() reports final counters and stops kernel forwarding.
  fwd->remove(a2c);
  REQUIRE(fwd->commit(finals.sink(), error));
  REQUIRE(finals.by_id.count(a2c) == 1);
  CHECK(finals.by_id[a2c].packets == 10);
  CHECK(finals.by_id[a2c].bytes == c_bytes);
  CHECK(fwd->installed() == 1);
  send_burst(caller, relay_in, 5, "after-remove");
  CHECK(drain(relay_a).size() == 5);  // back to userspace
  CHECK(drain(callee2, 50).empty());
  CHECK(drain(relay_c, 50).empty());
  elems = nft_fwd_elements("mpk_fwd");
  CHECK(elems.size() == 1);
  CHECK(elems.count("10.200.2.2 . 5000 . 40002") == 1);
  CHECK(elems.count("10.200.1.2 . 4000 . 40000") == 0);

  // The destructor deletes the table.
  fwd.reset();
  CHECK_FALSE(table_exists("mpk_fwd"));
  send_burst(callee, relay_out, 3, "after-delete");
  CHECK(drain(relay_b).size() == 3);
  CHECK(drain(caller, 50).empty());
}

TEST_CASE("checksum offload (CHECKSUM_PARTIAL) packets keep a correct partial checksum") {
  // A sender on a veth with transmit offload (a container on the relay host):
  // its packets carry only the pseudo-header sum, to be completed by
  // whichever device finally transmits them (here the relay's egress veth,
  // whose offload is off, completes it in software). After the rewrite the
  // partial sum must be that of the new pseudo-header, untouched by the port
  // changes, or the completed checksum is wrong.
  auto fwd = make("mpk_partial");
  Sock caller = udp(g_topo.snd_fd, kCallerIp, 4300);
  Sock callee = udp(g_topo.rcv_fd, kCalleeIp, 5300);
  Sock cap_rcv = capture(g_topo.rcv_fd, "eth0");
  add_ok(*fwd, rule({kCallerIp, 4300}, 44000, 44002, {kCalleeIp, 5300}));
  std::string error;
  REQUIRE(fwd->commit(nullptr, error));
  {
    InNs in(g_topo.snd_fd);
    REQUIRE(offloads_off("eth0", true));
  }
  send_burst(caller, {kRelayIp, 44000}, 5, "partial");
  {
    InNs in(g_topo.snd_fd);
    REQUIRE(offloads_off("eth0"));
  }
  CHECK(drain(callee).size() == 5);
  size_t partial = 0, complete = 0;
  for (const auto& c : captured_udp(cap_rcv)) {
    if (c.src != Endpoint{kRelayIp, 44002}) continue;
    CHECK(c.ip_csum_ok);
    CHECK((c.udp_csum_partial || c.udp_csum_ok));
    if (c.udp_csum_ok)
      ++complete;
    else if (c.udp_csum_partial)
      ++partial;
  }
  CHECK(partial + complete == 5);
}

TEST_CASE("the ruleset has the documented shape") {
  // nft cannot print the rule back in a loadable form (a map value written in
  // two slices), so this checks what matters instead: the table, the chain
  // on every non-loopback interface, the map with counters, and the one rule
  // expression by expression as netlink carries it.
  auto fwd = make("mpk_shape");
  add_ok(*fwd, rule({kCallerIp, 4000}, 40000, 40002, {kCalleeIp, 5000}));
  std::string error;
  REQUIRE(fwd->commit(nullptr, error));
  std::string text = nft("list table netdev mpk_shape");
  INFO(text);
  CHECK(text.rfind("table netdev mpk_shape {\n", 0) == 0);
  CHECK(text.find("comment \"mediaproxy relay 10.200.0.1: in-kernel forwarding of latched media "
                  "streams\"") != std::string::npos);
  CHECK(text.find("map fwd_map {") != std::string::npos);
  CHECK(text.find("type ipv4_addr . ipv4_addr . ipv4_addr : ipv4_addr . ipv4_addr . "
                  "ipv4_addr . ipv4_addr . iface_index\n\t\tcounter\n") != std::string::npos);
  // key: caller . relay . ports 4000, 40000 (15.160.156.64); value: relay .
  // callee . ports 40002, 5000 (156.66.19.136) . next hop . interface
  CHECK(text.find("10.200.1.2 . 10.200.0.1 . 15.160.156.64 counter packets 0 bytes 0 : "
                  "10.200.0.1 . 10.200.2.2 . 156.66.19.136 . 10.200.2.2 . \"vc\"") !=
        std::string::npos);
  // The chain hooks exactly the non-loopback interfaces: vs and vc, not lo.
  const std::string hook = "type filter hook ingress devices = { ";
  size_t h = text.find(hook);
  REQUIRE(h != std::string::npos);
  size_t h_end = text.find(" } priority filter; policy accept;", h);
  REQUIRE(h_end != std::string::npos);
  std::string devices = text.substr(h + hook.size(), h_end - h - hook.size());
  CHECK((devices == "vc, vs" || devices == "vs, vc"));
  CHECK(text.find("chain ingress {") != std::string::npos);
  CHECK(text.find("chain ", text.find("chain ingress {") + 1) == std::string::npos);  // one chain

  // Exactly one map, one chain, one rule (with its comment) per nft -j.
  std::string json = nft_json("list table netdev mpk_shape");
  rapidjson::Document doc;
  doc.Parse(json.c_str());
  INFO(json);
  REQUIRE_FALSE(doc.HasParseError());
  size_t maps = 0, sets = 0, chains = 0, rules = 0;
  for (const auto& item : doc["nftables"].GetArray()) {
    if (item.HasMember("set")) ++sets;
    if (item.HasMember("chain")) {
      ++chains;
      const auto& c = item["chain"];
      CHECK(std::string(c["name"].GetString()) == "ingress");
      CHECK(std::string(c["type"].GetString()) == "filter");
      CHECK(std::string(c["hook"].GetString()) == "ingress");
      CHECK(c["prio"].GetInt() == 0);
      CHECK(std::string(c["policy"].GetString()) == "accept");
    }
    if (item.HasMember("rule")) {
      ++rules;
      const auto& r = item["rule"];
      CHECK(std::string(r["chain"].GetString()) == "ingress");
      REQUIRE(r.HasMember("comment"));
      CHECK(std::string(r["comment"].GetString()) ==
            "mediaproxy: rewrite and send out packets of latched peers");
    }
    if (item.HasMember("map")) {
      ++maps;
      const auto& m = item["map"];
      CHECK(std::string(m["name"].GetString()) == "fwd_map");
      REQUIRE(m.HasMember("stmt"));  // the per-element counter
      REQUIRE(m["stmt"].IsArray());
      REQUIRE(m["stmt"].Size() == 1);
      CHECK(m["stmt"][0].HasMember("counter"));
    }
  }
  CHECK(maps == 1);
  CHECK(sets == 0);
  CHECK(chains == 1);
  CHECK(rules == 1);

  // The rule as netlink expressions (nft --debug=netlink). The kernel
  // reports 32-bit registers that start a 128-bit one by the 128-bit name:
  // NFT_REG32_00 reads back as reg 1 and NFT_REG32_04 as reg 2; NFT_REG32_02
  // and _03 as reg 10 and 11. Bytes 6..9 of the IP header (flags and offset,
  // TTL, protocol) masked with 3f ff 00 ff must be 00 00 00 11: UDP, not a
  // fragment.
  std::string expressions = nft("--debug=netlink list chain netdev mpk_shape ingress");
  INFO(expressions);
  const std::string expected =
      "  [ meta load protocol => reg 1 ]\n"
      "  [ cmp eq reg 1 0x00000008 ]\n"
      "  [ payload load 4b @ network header + 6 => reg 1 ]\n"
      "  [ bitwise reg 1 = ( reg 1 & 0xff00ff3f ) ^ 0x00000000 ]\n"
      "  [ cmp eq reg 1 0x11000000 ]\n"
      "  [ payload load 8b @ network header + 12 => reg 1 ]\n"
      "  [ payload load 4b @ transport header + 0 => reg 10 ]\n"
      "  [ lookup reg 1 set fwd_map dreg 1 0x0 ]\n"
      "  [ payload write reg 10 => 4b @ transport header + 0 csum_type 0 csum_off 0 "
      "csum_flags 0x1 ]\n"
      "  [ payload write reg 1 => 8b @ network header + 12 csum_type 1 csum_off 10 "
      "csum_flags 0x1 ]\n"
      "  [ fwd sreg_dev 2 sreg_addr 11 nfproto 2 ]\n";
  CHECK(expressions.find(expected) != std::string::npos);
  // Nothing else: exactly 11 expressions in the listing.
  size_t n_expr = 0;
  for (size_t at = expressions.find("\n  [ "); at != std::string::npos;
       at = expressions.find("\n  [ ", at + 1))
    ++n_expr;
  CHECK(n_expr == 11);

  fwd.reset();
  CHECK_FALSE(table_exists("mpk_shape"));
}

TEST_CASE("create() reclaims a table left behind") {
  // A forwarder that "crashed": its table stays, with an element in it.
  {
    auto lost = make("mpk_reclaim");
    add_ok(*lost, rule({kCallerIp, 4000}, 40000, 40002, {kCalleeIp, 5000}));
    std::string error;
    REQUIRE(lost->commit(nullptr, error));
    (void)lost.release();  // leaked on purpose: no destructor, like kill -9
  }
  REQUIRE(table_exists("mpk_reclaim"));
  REQUIRE(nft_fwd_elements("mpk_reclaim").size() == 1);
  auto fwd = make("mpk_reclaim");
  CHECK(nft_fwd_elements("mpk_reclaim").empty());
  CHECK(fwd->installed() == 0);
  fwd.reset();
  CHECK_FALSE(table_exists("mpk_reclaim"));

  // A table of that name with other contents altogether: a chain that would
  // drop everything arriving on vs.
  int st = 0;
  nft("add table netdev mpk_reclaim2", &st);
  REQUIRE(st == 0);
  nft("add chain netdev mpk_reclaim2 junk "
      "'{ type filter hook ingress device \"vs\" priority 0; policy drop; }'",
      &st);
  REQUIRE(st == 0);
  auto fwd2 = make("mpk_reclaim2");
  CHECK(nft("list table netdev mpk_reclaim2").find("junk") == std::string::npos);
  Sock relay_a = udp(g_topo.rly_fd, kRelayIp, 40100);
  Sock caller = udp(g_topo.snd_fd, kCallerIp, 4010);
  send_burst(caller, {kRelayIp, 40100}, 2, "reclaimed");
  CHECK(drain(relay_a).size() == 2);
  fwd2.reset();
  CHECK_FALSE(table_exists("mpk_reclaim2"));
}

TEST_CASE("adopt() takes over a previous process's table without missing a packet") {
  // A sender keeps sending one datagram per millisecond through the rule
  // while the forwarder that installed it goes away leaving its table, no
  // forwarder exists for 100 ms, and a new one adopts the table.
  Sock relay_a = udp(g_topo.rly_fd, kRelayIp, 40200);
  Sock relay_b = udp(g_topo.rly_fd, kRelayIp, 40202);
  Sock caller = udp(g_topo.snd_fd, kCallerIp, 4200);
  Sock callee = udp(g_topo.rcv_fd, kCalleeIp, 5200);
  const ForwardRule a2b = rule({kCallerIp, 4200}, 40200, 40202, {kCalleeIp, 5200});
  const ForwardRule b2a = rule({kCalleeIp, 5200}, 40202, 40200, {kCallerIp, 4200});
  // Room for every datagram of the run (about 300), read only at the end.
  const int rcvbuf = 4 << 20;
  REQUIRE(setsockopt(callee.fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) == 0);
  const long overflows = snmp(g_topo.rcv_fd, "Udp", "RcvbufErrors");
  std::string error;
  auto old = make("mpk_adopt");
  add_ok(*old, a2b);
  add_ok(*old, b2a);
  REQUIRE(old->commit(nullptr, error));

  Pacer pacer(caller, {kRelayIp, 40200}, std::chrono::microseconds(1000));
  sleep_ms(100);
  old->keep_table_on_exit(true);
  old.reset();  // the old process is gone; its table forwards on
  const uint32_t sent_at_exit = pacer.sent();
  sleep_ms(100);
  std::vector<AdoptedRule> adopted;
  const uint32_t sent_before_adopt = pacer.sent();
  const auto t0 = std::chrono::steady_clock::now();
  auto fwd = adopt("mpk_adopt", adopted, error);
  const double adopt_ms = ms_since(t0);
  const uint32_t sent_after_adopt = pacer.sent();
  INFO(error);
  REQUIRE(fwd);
  sleep_ms(100);
  pacer.finish();
  const uint32_t sent = pacer.sent();
  CHECK(pacer.errors() == 0);

  // Every datagram reached the callee exactly once, rewritten; none fell
  // through to the userspace socket.
  std::vector<Datagram> got = drain(callee);
  std::vector<int> seen(sent, 0);
  size_t wrong = 0;
  for (const Datagram& d : got) {
    const unsigned long n = std::stoul(d.data.substr(4));
    if (n < sent && d.from == Endpoint{kRelayIp, 40202})
      ++seen[n];
    else
      ++wrong;
  }
  const size_t missed = static_cast<size_t>(std::count(seen.begin(), seen.end(), 0));
  const size_t to_userspace = drain(relay_a, 50).size();
  std::printf(
      "[kernel] adoption under load: sent %u (%u before the old forwarder went, %u with no "
      "forwarder, %u during and after adopt()), received %zu, missed %zu, to userspace %zu; "
      "adopt() %.1f ms\n",
      sent, sent_at_exit, sent_before_adopt - sent_at_exit, sent - sent_before_adopt, got.size(),
      missed, to_userspace, adopt_ms);
  CHECK(sent >= 200);
  CHECK(snmp(g_topo.rcv_fd, "Udp", "RcvbufErrors") == overflows);
  CHECK(missed == 0);
  CHECK(wrong == 0);
  CHECK(got.size() == sent);
  CHECK(to_userspace == 0);

  // The rules come back as installed, with fresh ids and the counters of
  // their elements, which went on counting while no forwarder existed.
  REQUIRE(adopted.size() == 2);
  CHECK(fwd->installed() == 2);
  const bool first_is_a2b = adopted[0].rule.from == a2b.from;
  const AdoptedRule& ra = adopted[first_is_a2b ? 0 : 1];
  const AdoptedRule& rb = adopted[first_is_a2b ? 1 : 0];
  CHECK(same_rule(ra.rule, a2b));
  CHECK(same_rule(rb.rule, b2a));
  CHECK(ra.id != 0);
  CHECK(rb.id != 0);
  CHECK(ra.id != rb.id);
  CHECK(ra.counters.packets > sent_at_exit);
  CHECK(ra.counters.packets <= sent_after_adopt);
  CHECK(rb.counters.packets == 0);
  // read_counters() counts on from there: everything sent.
  auto cnt = counters(*fwd);
  CHECK(cnt[ra.id].packets == sent);
  CHECK(cnt[ra.id].bytes == pacer.bytes());

  // The adopted reverse rule forwards too.
  send_burst(callee, {kRelayIp, 40202}, 5, "back");
  auto back = drain(caller);
  CHECK(back.size() == 5);
  for (const auto& d : back) CHECK(d.from == Endpoint{kRelayIp, 40200});
  CHECK(drain(relay_b, 50).empty());

  // remove() of an adopted id reports its final counters and deletes its element.
  Finals finals;
  fwd->remove(ra.id);
  REQUIRE(fwd->commit(finals.sink(), error));
  CHECK(finals.calls == 1);
  CHECK(finals.by_id[ra.id].packets == sent);
  CHECK(finals.by_id[ra.id].bytes == pacer.bytes());
  CHECK(nft_fwd_elements("mpk_adopt").size() == 1);
  CHECK(counters(*fwd)[rb.id].packets == 5);
  // New rules get ids that do not collide with adopted ones.
  const uint32_t id = add_ok(*fwd, rule({kCallerIp, 4201}, 40200, 40202, {kCalleeIp, 5200}));
  CHECK(id != 0);
  CHECK(id != rb.id);
  fwd.reset();  // keep_table_on_exit() is per forwarder: this one deletes its table
  CHECK_FALSE(table_exists("mpk_adopt"));
}

TEST_CASE("adopt() with no table left behind is create()") {
  std::vector<AdoptedRule> adopted{AdoptedRule{}};
  std::string error;
  REQUIRE_FALSE(table_exists("mpk_adopt_new"));
  auto fwd = adopt("mpk_adopt_new", adopted, error);
  INFO(error);
  REQUIRE(fwd);
  CHECK(adopted.empty());
  CHECK(fwd->installed() == 0);
  // The same table as create() makes.
  auto made = make("mpk_adopt_cmp");
  std::string listing = nft("list table netdev mpk_adopt_new");
  std::string reference = nft("list table netdev mpk_adopt_cmp");
  reference.replace(reference.find("mpk_adopt_cmp"), 13, "mpk_adopt_new");
  CHECK(listing == reference);
  made.reset();
  // And it forwards.
  Sock relay_a = udp(g_topo.rly_fd, kRelayIp, 40210);
  Sock caller = udp(g_topo.snd_fd, kCallerIp, 4210);
  Sock callee = udp(g_topo.rcv_fd, kCalleeIp, 5210);
  REQUIRE(add_ok(*fwd, rule({kCallerIp, 4210}, 40210, 40212, {kCalleeIp, 5210})) != 0);
  REQUIRE(fwd->commit(nullptr, error));
  send_burst(caller, {kRelayIp, 40210}, 5, "new");
  CHECK(drain(callee).size() == 5);
  CHECK(drain(relay_a, 50).empty());
  fwd.reset();
  CHECK_FALSE(table_exists("mpk_adopt_new"));
}

TEST_CASE("another relay's table is neither replaced nor adopted") {
  // The table of the relay at 10.200.0.1 (kRelayIp), left running by it.
  Sock caller = udp(g_topo.snd_fd, kCallerIp, 4300);
  Sock callee = udp(g_topo.rcv_fd, kCalleeIp, 5300);
  const ForwardRule theirs_rule = rule({kCallerIp, 4300}, 40300, 40302, {kCalleeIp, 5300});
  std::string error;
  {
    auto theirs = make("mpk_theirs");
    add_ok(*theirs, theirs_rule);
    REQUIRE(theirs->commit(nullptr, error));
    theirs->keep_table_on_exit(true);
  }
  const std::string before = nft("list table netdev mpk_theirs");
  // A second instance, relay address 10.200.0.9, configured with the same nft_table.
  const Ipv4 other = *mp::parse_ipv4("10.200.0.9");
  std::vector<AdoptedRule> adopted;
  {
    InNs in(g_topo.rly_fd);
    CHECK_FALSE(NftForwarder::create("mpk_theirs", other, std::nullopt, error));
  }
  INFO(error);
  CHECK(error.find("belongs to the relay at 10.200.0.1") != std::string::npos);
  CHECK(error.find("set a different nft_table for the relay at 10.200.0.9") != std::string::npos);
  error.clear();
  CHECK_FALSE(adopt("mpk_theirs", adopted, error, other));
  CHECK(error.find("belongs to the relay at 10.200.0.1") != std::string::npos);
  CHECK(error.find("set a different nft_table") != std::string::npos);
  CHECK(adopted.empty());
  // Untouched: the same table, its element still forwarding.
  CHECK(nft("list table netdev mpk_theirs") == before);
  CHECK(nft_fwd_elements("mpk_theirs").size() == 1);
  send_burst(caller, {kRelayIp, 40300}, 3, "theirs");
  CHECK(drain(callee).size() == 3);
  // Its owner can still adopt it.
  auto fwd = adopt("mpk_theirs", adopted, error);
  REQUIRE(fwd);
  REQUIRE(adopted.size() == 1);
  CHECK(same_rule(adopted[0].rule, theirs_rule));
  CHECK(adopted[0].counters.packets == 3);
}

TEST_CASE("adopt() replaces a table that is not ours in the expected shape") {
  std::vector<AdoptedRule> adopted;
  std::string error;
  Sock relay_a = udp(g_topo.rly_fd, kRelayIp, 40400);
  Sock caller = udp(g_topo.snd_fd, kCallerIp, 4400);
  Sock callee = udp(g_topo.rcv_fd, kCalleeIp, 5400);
  const std::string ours =
      "comment \"mediaproxy relay 10.200.0.1: in-kernel forwarding of latched "
      "media streams\"";
  // Replaced tables: the table is ours in the shape create() makes and
  // forwards as it should; nothing of what was there is adopted.
  auto check_replaced = [&](const std::string& table) {
    INFO(table);
    auto fwd = adopt(table, adopted, error);
    INFO(error);
    REQUIRE(fwd);
    CHECK(adopted.empty());
    CHECK(fwd->installed() == 0);
    CHECK(nft_fwd_elements(table).empty());
    std::string text = nft("list table netdev " + table);
    CHECK(text.find(ours) != std::string::npos);
    CHECK(text.find("type ipv4_addr . ipv4_addr . ipv4_addr : ipv4_addr . ipv4_addr . "
                    "ipv4_addr . ipv4_addr . iface_index\n\t\tcounter\n") != std::string::npos);
    CHECK(text.find("junk") == std::string::npos);
    REQUIRE(add_ok(*fwd, rule({kCallerIp, 4400}, 40400, 40402, {kCalleeIp, 5400})) != 0);
    REQUIRE(fwd->commit(nullptr, error));
    send_burst(caller, {kRelayIp, 40400}, 3, table);
    CHECK(drain(callee).size() == 3);
    CHECK(drain(relay_a, 50).empty());
  };
  int st = 0;
  // 1. No comment at all (made by hand).
  nft("add table netdev mpk_odd", &st);
  REQUIRE(st == 0);
  check_replaced("mpk_odd");
  // 2. The fixed comment of older versions, which names no relay.
  nft("add table netdev mpk_old '{ comment \"mediaproxy: in-kernel forwarding of latched media "
      "streams\"; }'",
      &st);
  REQUIRE(st == 0);
  check_replaced("mpk_old");
  // 3. Our comment, but a fwd_map of another type, with an element, made with nft.
  nft("add table netdev mpk_shape2 '{ " + ours + "; }'", &st);
  REQUIRE(st == 0);
  nft("add map netdev mpk_shape2 fwd_map '{ type ipv4_addr : ipv4_addr; counter; }'", &st);
  REQUIRE(st == 0);
  nft("add element netdev mpk_shape2 fwd_map '{ 10.200.1.2 : 10.200.2.2 }'", &st);
  REQUIRE(st == 0);
  nft("add chain netdev mpk_shape2 junk '{ type filter hook ingress device \"vs\" priority 0; "
      "policy drop; }'",
      &st);
  REQUIRE(st == 0);
  check_replaced("mpk_shape2");
  // 4. A table of ours whose rule was flushed by hand, elements still in it.
  {
    auto f = make("mpk_norule");
    REQUIRE(add_ok(*f, rule({kCallerIp, 4401}, 40400, 40402, {kCalleeIp, 5400})) != 0);
    REQUIRE(f->commit(nullptr, error));
    f->keep_table_on_exit(true);
  }
  nft("flush chain netdev mpk_norule ingress", &st);
  REQUIRE(st == 0);
  REQUIRE(nft_fwd_elements("mpk_norule").size() == 1);
  check_replaced("mpk_norule");
  // 5. A table of ours whose map holds an element another relay address wrote.
  {
    auto f = make("mpk_alien");
    f->keep_table_on_exit(true);
  }
  // (key: caller . relay 10.200.0.9 . ports 4402 and 40400)
  nft("add element netdev mpk_alien fwd_map '{ 10.200.1.2 . 10.200.0.9 . 17.50.157.208 : "
      "10.200.0.9 . 10.200.2.2 . 0.0.0.0 . 10.200.2.2 . \"vc\" }'",
      &st);
  REQUIRE(st == 0);
  check_replaced("mpk_alien");
  // 6. The same with only the key naming the other address.
  {
    auto f = make("mpk_alien_key");
    f->keep_table_on_exit(true);
  }
  nft("add element netdev mpk_alien_key fwd_map '{ 10.200.1.2 . 10.200.0.9 . 17.50.157.208 : "
      "10.200.0.1 . 10.200.2.2 . 0.0.0.0 . 10.200.2.2 . \"vc\" }'",
      &st);
  REQUIRE(st == 0);
  check_replaced("mpk_alien_key");
}

TEST_CASE("adopted rules follow route changes, also those made while no forwarder ran") {
  // 10.200.3.5 first behind a gateway that does not exist (10.200.2.9).
  const Ipv4 far_ip = *mp::parse_ipv4("10.200.3.5");
  FarNetwork far_net("10.200.2.9");
  Sock relay_a = udp(g_topo.rly_fd, kRelayIp, 47100);
  Sock caller = udp(g_topo.snd_fd, kCallerIp, 4710);
  Sock far = udp(g_topo.rcv_fd, far_ip, 5710);
  const ForwardRule to_far = rule({kCallerIp, 4710}, 47100, 47102, {far_ip, 5710});
  const std::string key = "10.200.1.2 . 4710 . 47100";
  std::string error, out;
  {
    auto old = make("mpk_readopt");
    REQUIRE(add_ok(*old, to_far) != 0);
    REQUIRE(old->commit(nullptr, error));
    old->keep_table_on_exit(true);
  }
  // While no forwarder runs: the route changes and an interface appears.
  REQUIRE(run("ip -n " + g_topo.rly + " route replace 10.200.3.0/24 via 10.200.2.3", &out) == 0);
  REQUIRE(run("ip -n " + g_topo.rly + " link add vx type veth peer name vy", &out) == 0);
  Undo undo{[] { run("ip -n " + g_topo.rly + " link del vx"); }};
  CHECK(nft_fwd_elements("mpk_readopt")[key].value ==
        fwd_value(47102, {far_ip, 5710}, *mp::parse_ipv4("10.200.2.9"), "vc"));

  std::vector<AdoptedRule> adopted;
  auto fwd = adopt("mpk_readopt", adopted, error);
  INFO(error);
  REQUIRE(fwd);
  REQUIRE(adopted.size() == 1);
  CHECK(same_rule(adopted[0].rule, to_far));
  const uint32_t id = adopted[0].id;
  // Moved to the route of now by adopt() itself; the new interfaces are hooked.
  CHECK(nft_fwd_elements("mpk_readopt")[key].value ==
        fwd_value(47102, {far_ip, 5710}, kCallee2Ip, "vc"));
  const std::string chain = nft("list chain netdev mpk_readopt ingress");
  INFO(chain);
  const size_t devices = chain.find("devices = {");
  REQUIRE(devices != std::string::npos);
  const std::string hooked = chain.substr(devices, chain.find('}', devices) - devices);
  CHECK(hooked.find(" vx") != std::string::npos);
  CHECK(hooked.find(" vy") != std::string::npos);
  send_burst(caller, {kRelayIp, 47100}, 10, "after adopt");
  CHECK(drain(far).size() == 10);

  // follow_network() moves the adopted rule like any other.
  size_t moved = 99;
  REQUIRE(fwd->follow_network(moved, error));  // nothing changed since adopt()
  CHECK(moved == 0);
  REQUIRE(run("ip -n " + g_topo.rly + " route replace 10.200.3.0/24 via 10.200.2.2", &out) == 0);
  REQUIRE(fwd->follow_network(moved, error));
  CHECK(moved == 1);
  CHECK(nft_fwd_elements("mpk_readopt")[key].value ==
        fwd_value(47102, {far_ip, 5710}, kCalleeIp, "vc"));
  send_burst(caller, {kRelayIp, 47100}, 10, "after the move");
  auto got = drain(far);
  CHECK(got.size() == 10);
  for (const auto& d : got) CHECK(d.from == Endpoint{kRelayIp, 47102});
  CHECK(drain(relay_a, 50).empty());
  CHECK(counters(*fwd)[id].packets == 20);  // same id, counters continue
}

TEST_CASE("queued changes: replace and remove before commit") {
  auto fwd = make("mpk_queue");
  std::string error;
  Finals finals;
  uint32_t a = add_ok(*fwd, rule({kCallerIp, 6000}, 41000, 41002, {kCalleeIp, 7000}));
  uint32_t b = add_ok(*fwd, rule({kCallerIp, 6000}, 41000, 41004, {kCalleeIp, 7002}));  // same key
  uint32_t c = add_ok(*fwd, rule({kCallerIp, 6002}, 41000, 41002, {kCalleeIp, 7000}));
  fwd->remove(c);
  fwd->remove(12345678);  // unknown: ignored
  REQUIRE(fwd->commit(finals.sink(), error));
  CHECK(finals.calls == 2);  // a (replaced before commit) and c, with zero counters
  CHECK(finals.by_id.count(a) == 1);
  CHECK(finals.by_id.count(c) == 1);
  CHECK(finals.by_id[a].packets == 0);
  CHECK(fwd->installed() == 1);
  auto elems = nft_fwd_elements("mpk_queue");
  REQUIRE(elems.size() == 1);
  CHECK(elems["10.200.1.2 . 6000 . 41000"].value ==
        fwd_value(41004, {kCalleeIp, 7002}, kCalleeIp, "vc"));  // b's, not a's
  // Replace then remove the replacement before commit: the installed rule goes.
  uint32_t d = add_ok(*fwd, rule({kCallerIp, 6000}, 41000, 41006, {kCalleeIp, 7004}));
  fwd->remove(d);
  finals = Finals{};
  REQUIRE(fwd->commit(finals.sink(), error));
  CHECK(finals.by_id.count(b) == 1);
  CHECK(finals.by_id.count(d) == 1);
  CHECK(fwd->installed() == 0);
  CHECK(nft_fwd_elements("mpk_queue").empty());
}

TEST_CASE("changes made behind the forwarder's back are healed") {
  auto fwd = make("mpk_heal");
  Sock relay_a = udp(g_topo.rly_fd, kRelayIp, 42000);
  Sock caller = udp(g_topo.snd_fd, kCallerIp, 4100);
  Sock caller2 = udp(g_topo.snd_fd, kCallerIp, 4101);
  Sock callee = udp(g_topo.rcv_fd, kCalleeIp, 5100);
  std::string error;
  Finals finals;
  uint32_t a = add_ok(*fwd, rule({kCallerIp, 4100}, 42000, 42002, {kCalleeIp, 5100}));
  // Two bystanders, so that the final counters of `a` are asked for by key.
  add_ok(*fwd, rule({kCallerIp, 4110}, 42000, 42002, {kCalleeIp, 5100}));
  add_ok(*fwd, rule({kCallerIp, 4111}, 42000, 42002, {kCalleeIp, 5100}));
  REQUIRE(fwd->commit(finals.sink(), error));
  send_burst(caller, {kRelayIp, 42000}, 4, "heal");
  REQUIRE(drain(callee).size() == 4);
  REQUIRE(counters(*fwd)[a].packets == 4);

  // Someone deletes our element by hand: remove() still succeeds (ENOENT on
  // the read by key, then on the deletion), reporting the last counters read.
  int st = 0;
  // (key: caller . relay . ports 4100 and 42000 as nft prints them)
  nft("delete element netdev mpk_heal fwd_map '{ 10.200.1.2 . 10.200.0.1 . 16.4.164.16 }'", &st);
  REQUIRE(st == 0);
  fwd->remove(a);
  CHECK(fwd->commit(finals.sink(), error));
  INFO(error);
  CHECK(finals.by_id[a].packets == 4);
  CHECK(fwd->installed() == 2);

  // Someone adds an element for a key we then install (EEXIST), in the same
  // batch as two good rules: all three end up installed, ours wins.
  // (Its value sends to the right place from the wrong ports 258 and 772.)
  std::string out =
      nft("add element netdev mpk_heal fwd_map '{ 10.200.1.2 . 10.200.0.1 . 16.5.164.16 : "
          "10.200.0.1 . 10.200.2.2 . 1.2.3.4 . 10.200.2.2 . \"vc\" }'",
          &st);
  INFO(out);
  REQUIRE(st == 0);
  REQUIRE(nft_fwd_elements("mpk_heal")["10.200.1.2 . 4101 . 42000"].value ==
          fwd_value(258, {kCalleeIp, 772}, kCalleeIp, "vc"));
  uint32_t b = add_ok(*fwd, rule({kCallerIp, 4101}, 42000, 42002, {kCalleeIp, 5100}));
  uint32_t c = add_ok(*fwd, rule({kCallerIp, 4102}, 42000, 42002, {kCalleeIp, 5100}));
  uint32_t d = add_ok(*fwd, rule({kCallerIp, 4103}, 42000, 42002, {kCalleeIp, 5100}));
  CHECK(fwd->commit(finals.sink(), error));
  INFO(error);
  CHECK(fwd->installed() == 5);
  auto elems = nft_fwd_elements("mpk_heal");
  CHECK(elems.size() == 5);
  const std::string ours = fwd_value(42002, {kCalleeIp, 5100}, kCalleeIp, "vc");
  CHECK(elems["10.200.1.2 . 4101 . 42000"].value == ours);
  CHECK(elems["10.200.1.2 . 4102 . 42000"].value == ours);
  CHECK(elems["10.200.1.2 . 4103 . 42000"].value == ours);
  send_burst(caller2, {kRelayIp, 42000}, 3, "healed");
  auto healed = drain(callee);
  CHECK(healed.size() == 3);
  for (const auto& h : healed) CHECK(h.from == Endpoint{kRelayIp, 42002});
  CHECK(drain(relay_a, 50).empty());
  auto cnt = counters(*fwd);
  CHECK(cnt[b].packets == 3);
  CHECK(cnt[c].packets == 0);
  CHECK(cnt[d].packets == 0);
}

TEST_CASE("a table flushed behind the forwarder's back is rebuilt") {
  auto fwd = make("mpk_flush");
  Sock relay_a = udp(g_topo.rly_fd, kRelayIp, 43000);
  Sock caller = udp(g_topo.snd_fd, kCallerIp, 4200);
  Sock callee = udp(g_topo.rcv_fd, kCalleeIp, 5200);
  std::string error;
  Finals finals;
  uint32_t a = add_ok(*fwd, rule({kCallerIp, 4200}, 43000, 43002, {kCalleeIp, 5200}));
  uint32_t b = add_ok(*fwd, rule({kCallerIp, 4201}, 43000, 43002, {kCalleeIp, 5200}));
  REQUIRE(fwd->commit(finals.sink(), error));
  uint64_t bytes = send_burst(caller, {kRelayIp, 43000}, 6, "pre-flush");
  REQUIRE(drain(callee).size() == 6);
  REQUIRE(counters(*fwd)[a].packets == 6);

  int st = 0;
  nft("flush ruleset", &st);
  REQUIRE(st == 0);
  send_burst(caller, {kRelayIp, 43000}, 2, "flushed");
  CHECK(drain(relay_a).size() == 2);  // userspace meanwhile, not lost

  // Queued before the loss is noticed: the removal of b.
  fwd->remove(b);
  // read_counters() notices, rebuilds, and counts on from the last values.
  auto cnt = counters(*fwd);
  CHECK(table_exists("mpk_flush"));
  CHECK(cnt[a].packets == 6);
  CHECK(cnt.count(b) == 0);
  bytes += send_burst(caller, {kRelayIp, 43000}, 3, "rebuilt");
  CHECK(drain(callee).size() == 3);
  cnt = counters(*fwd);
  CHECK(cnt[a].packets == 9);
  CHECK(cnt[a].bytes == bytes);
  REQUIRE(fwd->commit(finals.sink(), error));
  CHECK(finals.by_id.count(b) == 1);
  CHECK(fwd->installed() == 1);

  // Noticed by commit() instead.
  nft("flush ruleset", &st);
  uint32_t c = add_ok(*fwd, rule({kCallerIp, 4202}, 43000, 43002, {kCalleeIp, 5200}));
  REQUIRE(fwd->commit(finals.sink(), error));
  INFO(error);
  CHECK(fwd->installed() == 2);
  auto elems = nft_fwd_elements("mpk_flush");
  CHECK(elems.size() == 2);
  CHECK(elems["10.200.1.2 . 4200 . 43000"].value ==
        fwd_value(43002, {kCalleeIp, 5200}, kCalleeIp, "vc"));
  CHECK(elems["10.200.1.2 . 4202 . 43000"].value ==
        fwd_value(43002, {kCalleeIp, 5200}, kCalleeIp, "vc"));
  CHECK(elems.count("10.200.1.2 . 4201 . 43000") == 0);  // b, removed meanwhile
  send_burst(caller, {kRelayIp, 43000}, 1, "rebuilt-again");
  CHECK(drain(callee).size() == 1);
  CHECK(counters(*fwd)[c].packets == 0);
  CHECK(counters(*fwd)[a].packets == 10);
}

TEST_CASE("10,000 rules install in batches, read in one dump") {
  auto fwd = make("mpk_scale");
  constexpr int kRules = 10000;
  std::vector<uint32_t> ids;
  ids.reserve(kRules);
  std::string error;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kRules; ++i) {
    Ipv4 src = Ipv4::from_host_order(0x0ac90000u + static_cast<uint32_t>(i / 100));  // 10.201.x.y
    ids.push_back(add_ok(*fwd, rule({src, static_cast<uint16_t>(10000 + i % 100)},
                                    static_cast<uint16_t>(30000 + 2 * (i % 10000)),
                                    static_cast<uint16_t>(50000 + i % 10000),
                                    {kCalleeIp, static_cast<uint16_t>(20000 + i % 30000)})));
  }
  REQUIRE(fwd->commit(nullptr, error));
  double install_ms = ms_since(t0);
  CHECK(fwd->installed() == kRules);

  t0 = std::chrono::steady_clock::now();
  size_t visited = 0;
  REQUIRE(fwd->read_counters([&](uint32_t, const Counters&) { ++visited; }, error));
  double dump_ms = ms_since(t0);
  CHECK(visited == kRules);

  // A few removals (GETSETELEM by key) ...
  Finals finals;
  t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 10; ++i) fwd->remove(ids[static_cast<size_t>(i)]);
  REQUIRE(fwd->commit(finals.sink(), error));
  double remove10_ms = ms_since(t0);
  CHECK(finals.calls == 10);
  // ... then 1,000 replacements and 5,000 removals in one commit (dump).
  t0 = std::chrono::steady_clock::now();
  for (int i = 10; i < 1010; ++i) {
    ForwardRule r = rule({Ipv4::from_host_order(0x0ac90000u + static_cast<uint32_t>(i / 100)),
                          static_cast<uint16_t>(10000 + i % 100)},
                         static_cast<uint16_t>(30000 + 2 * (i % 10000)), 60000, {kCallee2Ip, 9999});
    add_ok(*fwd, r);
  }
  for (int i = 1010; i < 6010; ++i) fwd->remove(ids[static_cast<size_t>(i)]);
  REQUIRE(fwd->commit(finals.sink(), error));
  double churn_ms = ms_since(t0);
  CHECK(finals.calls == 6010);
  CHECK(fwd->installed() == kRules - 10 - 5000);
  // 400 removals: GETSETELEM for 400 keys in one request.
  t0 = std::chrono::steady_clock::now();
  for (int i = 6010; i < 6410; ++i) fwd->remove(ids[static_cast<size_t>(i)]);
  REQUIRE(fwd->commit(finals.sink(), error));
  double remove400_ms = ms_since(t0);
  CHECK(finals.calls == 6410);
  CHECK(fwd->installed() == kRules - 10 - 5000 - 400);

  t0 = std::chrono::steady_clock::now();
  fwd.reset();
  double delete_ms = ms_since(t0);
  CHECK_FALSE(table_exists("mpk_scale"));
  std::printf(
      "[kernel] 10,000 rules (40,000 elements, batches of <= %zu): install %.1f ms; "
      "read_counters dump %.1f ms; remove 10 %.1f ms; replace 1,000 + remove 5,000 %.1f ms; "
      "remove 400 %.1f ms; delete table with 4,590 rules %.1f ms\n",
      NftForwarder::kMaxBatchElements, install_ms, dump_ms, remove10_ms, churn_ms, remove400_ms,
      delete_ms);
  CHECK(install_ms < 1000);
  CHECK(dump_ms < 500);
}
