// The relay's data path receiving through one socket per family
// (relay/media_pump.h with relay/tproxy_socket.h and kernel/nft_tproxy.h)
// against the real kernel, in the harness's namespaces: with the tproxy
// rule, datagrams for every port of the range are read from the one socket
// and reach the owner of the port they were sent to, with the sender's
// address; the per-port sockets read nothing; a port without a socket, or
// whose socket was closed, is not steered, nor is a port another program's
// socket holds; without the rule the per-port sockets take over. IPv4 and IPv6, with and without
// io_uring.
#include <uv.h>

#include <chrono>
#include <map>

#include "harness.h"
#include "kernel/nft_tproxy.h"
#include "relay/media_pump.h"
#include "relay/media_socket.h"
#include "relay/tproxy_socket.h"

using mp::IpEndpoint;
using mp::kernel::NftTproxy;
using mp::relay::MediaPump;
using mp::relay::MediaSocket;
using mp::relay::MediaSocketOwner;

namespace {

constexpr uint16_t kLo = 41000;
constexpr uint16_t kHi = 41999;
const char* kTable = "mp_tproxy_pump";

struct Recorder final : MediaSocketOwner {
  std::map<int, std::vector<std::pair<IpEndpoint, std::string>>> got;
  size_t total = 0;
  void on_datagram(int tag, const mp::SocketAddress& from, const uint8_t* data,
                   size_t len) override {
    got[tag].emplace_back(from.endpoint(), std::string(reinterpret_cast<const char*>(data), len));
    ++total;
  }
  void on_send_failed(int, size_t) override {}
};

// A relay's pump in the relay namespace, with `ports` sockets on `relay`
// (tag = index) and, with `tproxy`, the tproxy socket and rule.
struct Relay {
  uv_loop_t loop;
  MediaPump* pump = nullptr;
  Recorder rec;
  std::vector<MediaSocket*> sockets;
  std::unique_ptr<NftTproxy> table;
  IpEndpoint bound;

  Relay(const IpAddress& relay, int ports, bool batched, bool tproxy) {
    InNs in(g_topo.rly_fd);
    uv_loop_init(&loop);
    std::string error;
    pump = MediaPump::create(&loop, error);
    REQUIRE(pump != nullptr);
    if (batched) REQUIRE(pump->use_batched_io(error));
    for (int i = 0; i < ports; ++i) {
      int err = 0;
      MediaSocket* s =
          MediaSocket::open(pump, IpEndpoint(relay, static_cast<uint16_t>(kLo + i)), &rec, i, err);
      REQUIRE(s != nullptr);
      sockets.push_back(s);
    }
    if (!tproxy) return;
    REQUIRE(pump->set_ports_transparent(true, error));
    const int fd = mp::relay::open_tproxy_socket(relay, kLo, kHi, bound, error);
    INFO(error);
    REQUIRE(fd >= 0);
    CHECK((bound.port < kLo || bound.port > kHi));
    const bool v6 = relay.is_v6();
    table = NftTproxy::create(kTable, kRelayIp, v6 ? 0 : bound.port,
                              v6 ? std::optional<IpAddress>(relay) : std::nullopt,
                              v6 ? bound.port : 0, kLo, kHi, error);
    INFO(error);
    REQUIRE(table != nullptr);
    REQUIRE(pump->add_tproxy_socket(fd, bound, error));
    CHECK(pump->tproxy_sockets() == 1);
  }
  ~Relay() {
    for (MediaSocket* s : sockets)
      if (s) s->close();
    pump->close();
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    InNs in(g_topo.rly_fd);
    table.reset();
  }
  // Runs the loop until `want` datagrams have reached owners, or 3 s.
  void run_until(size_t want) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (rec.total < want && std::chrono::steady_clock::now() < deadline)
      uv_run(&loop, UV_RUN_NOWAIT);
  }
  // Runs the loop for `ms` (nothing more is expected).
  void run_for(int ms) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < end) uv_run(&loop, UV_RUN_NOWAIT);
  }
};

// A UDP socket of `ip`'s family bound to ip:port in namespace `ns`.
Sock udp_any(int ns, const IpAddress& ip, uint16_t port) {
  InNs in(ns);
  const int family = ip.is_v6() ? AF_INET6 : AF_INET;
  Sock s(socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  const mp::SocketAddress sa = mp::SocketAddress::of(IpEndpoint(ip, port));
  REQUIRE(bind(s.fd, &sa.sa, sa.len) == 0);
  return s;
}

void send_any(const Sock& s, const IpEndpoint& to, const std::string& data) {
  const mp::SocketAddress sa = mp::SocketAddress::of(to);
  REQUIRE(sendto(s.fd, data.data(), data.size(), 0, &sa.sa, sa.len) ==
          static_cast<ssize_t>(data.size()));
}

}  // namespace

TEST_CASE("through the tproxy socket, every port's datagrams reach their owner") {
  const bool v6 = GENERATE(false, true);
  const bool batched = GENERATE(false, true);
  const IpAddress relay = v6 ? kRelayIp6 : IpAddress(kRelayIp);
  const IpAddress caller = v6 ? kCallerIp6 : IpAddress(kCallerIp);
  CAPTURE(v6, batched);
  constexpr int kPorts = 40;
  constexpr int kRounds = 5;
  Relay r(relay, kPorts, batched, true);
  Sock phone = udp_any(g_topo.snd_fd, caller, 6000);
  // Interleaved, as RTP arrives: one datagram per port in turn.
  for (int round = 0; round < kRounds; ++round)
    for (int i = 0; i < kPorts; ++i)
      send_any(phone, IpEndpoint(relay, static_cast<uint16_t>(kLo + i)),
               "r" + std::to_string(round) + "p" + std::to_string(i));
  r.run_until(kPorts * kRounds);
  REQUIRE(r.rec.total == kPorts * kRounds);
  for (int i = 0; i < kPorts; ++i) {
    const auto& got = r.rec.got[i];
    REQUIRE(got.size() == kRounds);
    for (int round = 0; round < kRounds; ++round) {
      CHECK(got[static_cast<size_t>(round)].second ==
            "r" + std::to_string(round) + "p" + std::to_string(i));
      CHECK(got[static_cast<size_t>(round)].first == IpEndpoint(caller, 6000));
    }
  }
  // All of it came through the one socket: the per-port ones read nothing.
  CHECK(r.pump->tproxy_received() == kPorts * kRounds);
  CHECK(r.pump->received() == kPorts * kRounds);
  CHECK(r.pump->tproxy_unclaimed() == 0);

  SECTION("a port without a socket, or whose socket closed, is not steered") {
    r.sockets[3]->close();
    r.sockets[3] = nullptr;
    send_any(phone, IpEndpoint(relay, static_cast<uint16_t>(kLo + 3)), "closed");
    send_any(phone, IpEndpoint(relay, static_cast<uint16_t>(kLo + kPorts + 1)), "none");
    send_any(phone, IpEndpoint(relay, static_cast<uint16_t>(kLo + 4)), "open");
    r.run_until(kPorts * kRounds + 1);
    r.run_for(100);
    CHECK(r.rec.total == kPorts * kRounds + 1);
    CHECK(r.rec.got[4].back().second == "open");
    // The rule found no transparent socket: the stack dropped them.
    CHECK(r.pump->tproxy_received() == kPorts * kRounds + 1);
    CHECK(r.pump->tproxy_unclaimed() == 0);
  }
  SECTION("port sockets made plain again are not steered") {
    std::string error;
    {
      InNs in(g_topo.rly_fd);
      REQUIRE(r.pump->set_ports_transparent(false, error));
    }
    send_any(phone, IpEndpoint(relay, static_cast<uint16_t>(kLo + 8)), "plain");
    r.run_until(kPorts * kRounds + 1);
    CHECK(r.rec.got[8].back().second == "plain");
    CHECK(r.pump->tproxy_received() == kPorts * kRounds);  // read by the port's own socket
    CHECK(r.pump->received() == kPorts * kRounds + 1);
  }
  SECTION("a port socket opened after the rule is steered too") {
    int err = 0;
    MediaSocket* late;
    {
      InNs in(g_topo.rly_fd);
      late = MediaSocket::open(r.pump, IpEndpoint(relay, static_cast<uint16_t>(kLo + kPorts + 3)),
                               &r.rec, kPorts + 3, err);
    }
    REQUIRE(late != nullptr);
    r.sockets.push_back(late);
    send_any(phone, IpEndpoint(relay, static_cast<uint16_t>(kLo + kPorts + 3)), "late");
    r.run_until(kPorts * kRounds + 1);
    CHECK(r.rec.got[kPorts + 3].back().second == "late");
    CHECK(r.pump->tproxy_received() == kPorts * kRounds + 1);
  }
  SECTION("another program's socket on a port of the range keeps its datagrams") {
    // An unconnected socket on the relay's address, as a SIP client on the
    // relay's host binds an ephemeral port that falls into the range.
    Sock other = udp_any(g_topo.rly_fd, relay, static_cast<uint16_t>(kLo + kPorts + 2));
    send_any(phone, IpEndpoint(relay, static_cast<uint16_t>(kLo + kPorts + 2)), "not yours");
    send_any(phone, IpEndpoint(relay, static_cast<uint16_t>(kLo + 5)), "yours");
    r.run_until(kPorts * kRounds + 1);
    CHECK(r.rec.got[5].back().second == "yours");
    pollfd p{other.fd, POLLIN, 0};
    REQUIRE(poll(&p, 1, 3000) == 1);
    char buf[64];
    const ssize_t n = recv(other.fd, buf, sizeof buf, MSG_DONTWAIT);
    CHECK(std::string(buf, static_cast<size_t>(std::max<ssize_t>(n, 0))) == "not yours");
    CHECK(r.pump->tproxy_received() == kPorts * kRounds + 1);
    CHECK(r.pump->tproxy_unclaimed() == 0);
  }
  SECTION("without the rule, each port's socket receives again") {
    {
      InNs in(g_topo.rly_fd);
      r.table.reset();
    }
    send_any(phone, IpEndpoint(relay, static_cast<uint16_t>(kLo + 7)), "direct");
    r.run_until(kPorts * kRounds + 1);
    CHECK(r.rec.total == kPorts * kRounds + 1);
    CHECK(r.rec.got[7].back().second == "direct");
    CHECK(r.pump->tproxy_received() == kPorts * kRounds);
    CHECK(r.pump->received() == kPorts * kRounds + 1);
  }
  SECTION("released for a successor, the socket keeps what arrives") {
    auto handed = r.pump->release_tproxy_sockets();
    REQUIRE(handed.size() == 1);
    CHECK(handed[0].first == r.bound);
    CHECK(r.pump->tproxy_sockets() == 0);
    send_any(phone, IpEndpoint(relay, static_cast<uint16_t>(kLo + 9)), "queued");
    r.run_for(100);
    CHECK(r.rec.total == kPorts * kRounds);  // not read here any more
    IpEndpoint bound;
    CHECK(mp::relay::is_tproxy_socket(handed[0].second, bound));
    CHECK(bound == r.bound);
    char buf[64];
    const ssize_t n = recv(handed[0].second, buf, sizeof buf, MSG_DONTWAIT);
    CHECK(std::string(buf, static_cast<size_t>(std::max<ssize_t>(n, 0))) == "queued");
  }
}

TEST_CASE("a per-port socket is not taken for a tproxy socket") {
  InNs in(g_topo.rly_fd);
  Sock plain = udp(g_topo.rly_fd, kRelayIp, 41500);
  IpEndpoint bound;
  CHECK_FALSE(mp::relay::is_tproxy_socket(plain.fd, bound));
  // Transparent, as the relay's port sockets are when the rule is on.
  REQUIRE(mp::relay::make_transparent(plain.fd, AF_INET) == 0);
  CHECK_FALSE(mp::relay::is_tproxy_socket(plain.fd, bound));
}

TEST_CASE("the tproxy table of another relay instance is left alone") {
  InNs in(g_topo.rly_fd);
  const char* table = "mp_tproxy_owner";
  auto inet_table = [&] {
    return kt::nft("list tables").find(std::string("table inet ") + table + "\n") !=
           std::string::npos;
  };
  std::string error;
  auto first = NftTproxy::create(table, kRelayIp, 39000, std::nullopt, 0, kLo, kHi, error);
  INFO(error);
  REQUIRE(first != nullptr);
  REQUIRE(inet_table());
  // The same address with other ports: another instance on this host.
  auto second = NftTproxy::create(table, kRelayIp, 39001, std::nullopt, 0, 43000, 43999, error);
  CHECK(second == nullptr);
  CHECK(error.find("left alone") != std::string::npos);
  CHECK(error.find("set a different nft_table") != std::string::npos);
  CHECK_FALSE(NftTproxy::remove(table, kRelayIp, 43000, 43999, error));
  CHECK(kt::nft("list table inet " + std::string(table)).find("39000") != std::string::npos);
  // The same relay again (a start after a crash): replaced.
  auto again = NftTproxy::create(table, kRelayIp, 39002, std::nullopt, 0, kLo, kHi, error);
  INFO(error);
  REQUIRE(again != nullptr);
  CHECK(kt::nft("list table inet " + std::string(table)).find("39002") != std::string::npos);
  first->keep_table_on_exit(true);  // the table it made is gone already
  // A running instance with the same address and ports: its socket is bound.
  {
    Sock live = udp(g_topo.rly_fd, kRelayIp, 39002);
    InNs back(g_topo.rly_fd);  // udp() left for the home namespace
    auto twin = NftTproxy::create(table, kRelayIp, 39004, std::nullopt, 0, kLo, kHi, error);
    CHECK(twin == nullptr);
    CHECK(error.find("is running") != std::string::npos);
    CHECK_FALSE(NftTproxy::remove(table, kRelayIp, kLo, kHi, error));
    CHECK(kt::nft("list table inet " + std::string(table)).find("39002") != std::string::npos);
  }
  InNs still(g_topo.rly_fd);  // `back` left for the home namespace
  again.reset();
  CHECK_FALSE(inet_table());
  // A table that is not a relay's.
  kt::nft(std::string("add table inet ") + table);
  CHECK(NftTproxy::create(table, kRelayIp, 39003, std::nullopt, 0, kLo, kHi, error) == nullptr);
  CHECK(error.find("no comment") != std::string::npos);
  kt::nft(std::string("delete table inet ") + table);
}
