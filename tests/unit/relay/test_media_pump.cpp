// The relay's data path (relay/media_pump.h) over real UDP sockets on
// 127.0.0.1: bounded passes, nothing lost between passes, sockets closed in
// the middle of a pass, refused sends reported to their owner, and passes
// on a timer while datagrams keep coming (coalescing); each test
// with io_uring and with one system call per socket.
#include <arpa/inet.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "relay/media_pump.h"
#include "relay/media_socket.h"

using mp::Endpoint;
using mp::relay::MediaPump;
using mp::relay::MediaSocket;
using mp::relay::MediaSocketOwner;

namespace {

struct Recorder final : MediaSocketOwner {
  std::function<void(int tag, const uint8_t* data, size_t len)> on_packet;
  std::vector<int> per_tag;
  std::vector<int> failed_cookies;
  explicit Recorder(size_t tags) : per_tag(tags, 0) {}
  void on_datagram(int tag, const mp::SocketAddress&, const uint8_t* data, size_t len) override {
    ++per_tag[static_cast<size_t>(tag)];
    if (on_packet) on_packet(tag, data, len);
  }
  void on_send_failed(int cookie, size_t) override { failed_cookies.push_back(cookie); }
};

struct Loop {
  uv_loop_t loop;
  MediaPump* pump = nullptr;
  // batched: reads and writes through io_uring (use_batched_io), else one
  // system call per socket; every test runs both ways.
  explicit Loop(bool batched) {
    uv_loop_init(&loop);
    std::string error;
    pump = MediaPump::create(&loop, error);
    REQUIRE(pump != nullptr);
    if (batched) {
      INFO(error);
      REQUIRE(pump->use_batched_io(error));
    }
    CHECK(pump->batched_io() == batched);
  }
  ~Loop() {
    pump->close();
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
};

Endpoint local(uint16_t port) {
  return Endpoint{*mp::parse_ipv4("127.0.0.1"), port};
}

// Sends `count` datagrams to each port from one plain socket.
void blast(const std::vector<uint16_t>& ports, int count) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  REQUIRE(fd >= 0);
  char payload[172] = {};
  for (int i = 0; i < count; ++i)
    for (uint16_t p : ports) {
      sockaddr_in to = local(p).to_sockaddr();
      REQUIRE(sendto(fd, payload, sizeof payload, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) ==
              static_cast<ssize_t>(sizeof payload));
    }
  close(fd);
}

int total(const Recorder& r) {
  int n = 0;
  for (int c : r.per_tag) n += c;
  return n;
}

}  // namespace

TEST_CASE("a pass reads at most its budget and the rest arrives on later loop turns") {
  Loop l(GENERATE(false, true));
  constexpr int kSockets = 200;
  constexpr int kEach = 20;
  Recorder rec(kSockets);
  std::vector<MediaSocket*> sockets;
  std::vector<uint16_t> ports;
  for (int i = 0; i < kSockets; ++i) {
    int err = 0;
    uint16_t port = static_cast<uint16_t>(47000 + i);
    MediaSocket* s = MediaSocket::open(l.pump, local(port), &rec, i, err);
    REQUIRE(s != nullptr);
    sockets.push_back(s);
    ports.push_back(port);
  }
  blast(ports, kEach);

  // One loop turn runs one pass.
  uv_run(&l.loop, UV_RUN_NOWAIT);
  const int after_first = total(rec);
  CHECK(after_first > 0);
  CHECK(after_first <= static_cast<int>(MediaPump::kPassBudget + MediaPump::kBatch));
  CHECK(l.pump->passes() == 1);

  int largest_pass = after_first;
  for (int turn = 0; turn < 100 && total(rec) < kSockets * kEach; ++turn) {
    const int before = total(rec);
    uv_run(&l.loop, UV_RUN_NOWAIT);
    largest_pass = std::max(largest_pass, total(rec) - before);
  }
  CHECK(total(rec) == kSockets * kEach);
  CHECK(largest_pass <= static_cast<int>(MediaPump::kPassBudget + MediaPump::kBatch));
  CHECK(l.pump->passes() > 1);
  for (int i = 0; i < kSockets; ++i) CHECK(rec.per_tag[static_cast<size_t>(i)] == kEach);
  CHECK(l.pump->received() == static_cast<uint64_t>(kSockets * kEach));
  for (MediaSocket* s : sockets) s->close();
}

TEST_CASE("a socket closed during a pass is neither read nor freed before the pass ends") {
  Loop l(GENERATE(false, true));
  Recorder rec(2);
  int err = 0;
  MediaSocket* a = MediaSocket::open(l.pump, local(47300), &rec, 0, err);
  MediaSocket* b = MediaSocket::open(l.pump, local(47301), &rec, 1, err);
  REQUIRE(a != nullptr);
  REQUIRE(b != nullptr);
  // Whichever is read first closes both: the other's already fetched event
  // must then be skipped (ASan would see a use after free otherwise).
  rec.on_packet = [&](int, const uint8_t*, size_t) {
    if (a) a->close();
    if (b) b->close();
    a = b = nullptr;
  };
  blast({47300, 47301}, 3);
  for (int turn = 0; turn < 50 && total(rec) == 0; ++turn) uv_run(&l.loop, UV_RUN_NOWAIT);
  uv_run(&l.loop, UV_RUN_NOWAIT);
  CHECK(total(rec) == 1);
  CHECK(a == nullptr);
}

TEST_CASE("with coalescing, a busy pump reads on a timer and goes back to readiness when quiet") {
  Loop l(GENERATE(false, true));
  // Long enough that no loop turn of this test reaches the timer by chance.
  constexpr uint64_t kPeriod = 200'000'000;
  std::string error;
  REQUIRE(l.pump->set_coalesce(kPeriod, error));
  Recorder rec(1);
  int err = 0;
  MediaSocket* s = MediaSocket::open(l.pump, local(47320), &rec, 0, err);
  REQUIRE(s != nullptr);
  const auto run_until = [&](const std::function<bool()>& done) {
    const uint64_t deadline = uv_hrtime() + 5'000'000'000ull;
    while (!done() && uv_hrtime() < deadline) uv_run(&l.loop, UV_RUN_ONCE);
  };

  // After a quiet spell the first datagram is read at once...
  blast({47320}, 1);
  uv_run(&l.loop, UV_RUN_NOWAIT);
  CHECK(total(rec) == 1);
  CHECK(l.pump->coalescing());
  // ...the next ones wait for the timer, and one pass takes them all.
  blast({47320}, 3);
  uv_run(&l.loop, UV_RUN_NOWAIT);
  CHECK(total(rec) == 1);
  const uint64_t passes = l.pump->passes();
  run_until([&] { return total(rec) == 4; });
  CHECK(total(rec) == 4);
  CHECK(l.pump->passes() == passes + 1);
  // A period without datagrams: back to passes on readiness.
  run_until([&] { return !l.pump->coalescing(); });
  CHECK_FALSE(l.pump->coalescing());
  blast({47320}, 1);
  uv_run(&l.loop, UV_RUN_NOWAIT);
  CHECK(total(rec) == 5);
  // Turned off while the timer runs: readiness at once.
  CHECK(l.pump->coalescing());
  REQUIRE(l.pump->set_coalesce(0, error));
  CHECK_FALSE(l.pump->coalescing());
  blast({47320}, 2);
  uv_run(&l.loop, UV_RUN_NOWAIT);
  CHECK(total(rec) == 7);
  s->close();
}

TEST_CASE("a datagram the kernel refuses to send is reported to its owner with its cookie") {
  Loop l(GENERATE(false, true));
  Recorder rec(1);
  int err = 0;
  MediaSocket* s = MediaSocket::open(l.pump, local(47310), &rec, 0, err);
  REQUIRE(s != nullptr);
  // UDP to port 0 is refused by sendmsg (EINVAL), deterministically.
  const mp::SocketAddress nowhere = mp::SocketAddress::of(local(0));
  rec.on_packet = [&](int, const uint8_t* data, size_t len) {
    s->forward(nowhere, data, len, &rec, 42);
  };
  blast({47310}, 5);
  for (int turn = 0; turn < 50 && total(rec) < 5; ++turn) uv_run(&l.loop, UV_RUN_NOWAIT);
  CHECK(total(rec) == 5);
  CHECK(rec.failed_cookies == std::vector<int>(5, 42));
  CHECK(l.pump->send_failures() == 5);
  s->close();
}

TEST_CASE("datagrams forwarded in a pass leave in order") {
  Loop l(GENERATE(false, true));
  Recorder rec(1);
  int err = 0;
  MediaSocket* s = MediaSocket::open(l.pump, local(47320), &rec, 0, err);
  REQUIRE(s != nullptr);
  int sink = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in sink_addr = local(47321).to_sockaddr();
  const mp::SocketAddress sink_to = mp::SocketAddress::of(local(47321));
  REQUIRE(bind(sink, reinterpret_cast<sockaddr*>(&sink_addr), sizeof sink_addr) == 0);
  rec.on_packet = [&](int, const uint8_t* data, size_t len) {
    s->forward(sink_to, data, len, &rec, 0);
  };
  int src = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in to = local(47320).to_sockaddr();
  for (uint8_t i = 0; i < 40; ++i)
    REQUIRE(sendto(src, &i, 1, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) == 1);
  for (int turn = 0; turn < 50 && total(rec) < 40; ++turn) uv_run(&l.loop, UV_RUN_NOWAIT);
  REQUIRE(total(rec) == 40);
  for (uint8_t i = 0; i < 40; ++i) {
    uint8_t got = 0xff;
    REQUIRE(recv(sink, &got, 1, MSG_DONTWAIT) == 1);
    CHECK(got == i);
  }
  CHECK(rec.failed_cookies.empty());
  close(src);
  close(sink);
  s->close();
}

TEST_CASE("through the raw socket, datagrams leave from their own port, checksummed") {
  // The loopback path verifies UDP checksums of raw-socket packets: a wrong
  // one would be dropped, and the count below would fall short.
  Loop l(GENERATE(false, true));
  std::string why;
  if (!l.pump->use_raw_send(why)) {
    WARN("no raw socket here (" << why << "): not tested");
    return;
  }
  CHECK(l.pump->raw_send());
  Recorder rec(2);
  int err = 0;
  MediaSocket* s[2] = {MediaSocket::open(l.pump, local(47360), &rec, 0, err),
                       MediaSocket::open(l.pump, local(47362), &rec, 1, err)};
  REQUIRE(s[0] != nullptr);
  REQUIRE(s[1] != nullptr);
  int sink = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in sink_addr = local(47365).to_sockaddr();
  REQUIRE(bind(sink, reinterpret_cast<sockaddr*>(&sink_addr), sizeof sink_addr) == 0);
  const mp::SocketAddress sink_to = mp::SocketAddress::of(local(47365));
  rec.on_packet = [&](int tag, const uint8_t* data, size_t len) {
    s[tag]->forward(sink_to, data, len, &rec, tag);
  };
  // Alternating sockets and odd and even lengths: no two datagrams in a row
  // could share a GSO send, so every one takes the raw path.
  int src = socket(AF_INET, SOCK_DGRAM, 0);
  const int kCount = 30;
  for (int i = 0; i < kCount; ++i) {
    std::vector<uint8_t> d(static_cast<size_t>(160 + i), static_cast<uint8_t>(i));
    sockaddr_in to = local(i % 2 ? 47362 : 47360).to_sockaddr();
    REQUIRE(sendto(src, d.data(), d.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) ==
            static_cast<ssize_t>(d.size()));
  }
  for (int turn = 0; turn < 50 && total(rec) < kCount; ++turn) uv_run(&l.loop, UV_RUN_NOWAIT);
  REQUIRE(total(rec) == kCount);
  std::vector<int> got_from_port[2];
  for (int i = 0; i < kCount; ++i) {
    uint8_t buf[512];
    sockaddr_in from{};
    socklen_t from_len = sizeof from;
    const ssize_t n = recvfrom(sink, buf, sizeof buf, MSG_DONTWAIT,
                               reinterpret_cast<sockaddr*>(&from), &from_len);
    REQUIRE(n == 160 + buf[0]);
    CHECK(buf[n - 1] == buf[0]);
    CHECK(from.sin_addr.s_addr == htonl(0x7f000001));
    got_from_port[buf[0] % 2].push_back(ntohs(from.sin_port));
  }
  CHECK(got_from_port[0] == std::vector<int>(kCount / 2, 47360));
  CHECK(got_from_port[1] == std::vector<int>(kCount / 2, 47362));
  CHECK(rec.failed_cookies.empty());
  close(src);
  close(sink);
  s[0]->close();
  s[1]->close();
}

TEST_CASE("through the IPv6 raw socket, datagrams leave from their own port, checksummed") {
  Loop l(GENERATE(false, true));
  std::string why;
  if (!l.pump->use_raw_send(why)) {
    WARN("no raw socket here (" << why << "): not tested");
    return;
  }
  const mp::IpAddress loop6 = *mp::parse_ip("::1");
  Recorder rec(1);
  int err = 0;
  MediaSocket* s = MediaSocket::open(l.pump, mp::IpEndpoint{loop6, 47370}, &rec, 0, err);
  if (!s) {
    WARN("no IPv6 loopback here: not tested");
    return;
  }
  int sink = socket(AF_INET6, SOCK_DGRAM, 0);
  const mp::SocketAddress sink_to = mp::SocketAddress::of(mp::IpEndpoint{loop6, 47371});
  REQUIRE(bind(sink, &sink_to.sa, sink_to.len) == 0);
  rec.on_packet = [&](int, const uint8_t* data, size_t len) {
    s->forward(sink_to, data, len, &rec, 0);
  };
  // Lengths change every datagram: each goes alone, through the raw socket.
  int src = socket(AF_INET6, SOCK_DGRAM, 0);
  const mp::SocketAddress to = mp::SocketAddress::of(mp::IpEndpoint{loop6, 47370});
  const int kCount = 12;
  for (int i = 0; i < kCount; ++i) {
    std::vector<uint8_t> d(static_cast<size_t>(160 + i), static_cast<uint8_t>(i));
    REQUIRE(sendto(src, d.data(), d.size(), 0, &to.sa, to.len) == static_cast<ssize_t>(d.size()));
  }
  for (int turn = 0; turn < 50 && total(rec) < kCount; ++turn) uv_run(&l.loop, UV_RUN_NOWAIT);
  REQUIRE(total(rec) == kCount);
  for (int i = 0; i < kCount; ++i) {
    uint8_t buf[512];
    sockaddr_in6 from{};
    socklen_t from_len = sizeof from;
    const ssize_t n = recvfrom(sink, buf, sizeof buf, MSG_DONTWAIT,
                               reinterpret_cast<sockaddr*>(&from), &from_len);
    REQUIRE(n == 160 + buf[0]);
    CHECK(buf[0] == i);
    CHECK(ntohs(from.sin6_port) == 47370);
  }
  CHECK(rec.failed_cookies.empty());
  close(src);
  close(sink);
  s->close();
}

TEST_CASE("each datagram is handed over with its sender and length; oversized ones are dropped") {
  // Two receiving sockets, so that rounds find more than one ready (with
  // io_uring, a lone ready socket is read with recvmmsg).
  Loop l(GENERATE(false, true));
  struct Seen final : MediaSocketOwner {
    std::vector<std::pair<uint16_t, size_t>> got[2];  // per socket: sender port, length
    void on_datagram(int tag, const mp::SocketAddress& from, const uint8_t*, size_t len) override {
      REQUIRE(from.sa.sa_family == AF_INET);
      CHECK(from.len == sizeof(sockaddr_in));
      CHECK(ntohl(from.v4.sin_addr.s_addr) == 0x7f000001);
      got[tag].emplace_back(ntohs(from.v4.sin_port), len);
    }
    void on_send_failed(int, size_t) override {}
  } seen;
  int err = 0;
  MediaSocket* a = MediaSocket::open(l.pump, local(47330), &seen, 0, err);
  MediaSocket* b = MediaSocket::open(l.pump, local(47334), &seen, 1, err);
  REQUIRE(a != nullptr);
  REQUIRE(b != nullptr);
  std::vector<int> senders;
  std::vector<std::pair<uint16_t, size_t>> sent;
  static unsigned char big[MediaPump::kMaxDatagram + 100];
  sockaddr_in to[2] = {local(47330).to_sockaddr(), local(47334).to_sockaddr()};
  for (uint16_t i = 0; i < 3; ++i) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in from = local(static_cast<uint16_t>(47331 + i)).to_sockaddr();
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) == 0);
    senders.push_back(fd);
  }
  // sender 0: 100 bytes; sender 1: too large (dropped); sender 2: exactly the largest
  const size_t lengths[] = {100, MediaPump::kMaxDatagram + 1, MediaPump::kMaxDatagram};
  for (int round = 0; round < 4; ++round)
    for (size_t i = 0; i < 3; ++i) {
      for (const sockaddr_in& t : to)
        REQUIRE(sendto(senders[i], big, lengths[i], 0, reinterpret_cast<const sockaddr*>(&t),
                       sizeof t) == static_cast<ssize_t>(lengths[i]));
      if (i != 1) sent.emplace_back(static_cast<uint16_t>(47331 + i), lengths[i]);
    }
  for (int turn = 0; turn < 50 && l.pump->received() < 24; ++turn) uv_run(&l.loop, UV_RUN_NOWAIT);
  CHECK(l.pump->received() == 24);  // all read, the oversized ones not handed over
  CHECK(seen.got[0] == sent);
  CHECK(seen.got[1] == sent);
  for (int fd : senders) close(fd);
  a->close();
  b->close();
}

TEST_CASE("datagrams of mixed lengths forwarded in one batch arrive whole and in order") {
  // Runs of equal length go out as one segmented (GSO) send: the receiver
  // must still see every datagram with its own length. With raw sends, the
  // datagrams between the runs must not overtake them.
  Loop l(GENERATE(false, true));
  if (GENERATE(false, true)) {
    std::string why;
    if (!l.pump->use_raw_send(why)) {
      WARN("no raw socket here (" << why << "): raw sends not tested");
      return;
    }
  }
  Recorder rec(1);
  int err = 0;
  MediaSocket* s = MediaSocket::open(l.pump, local(47330), &rec, 0, err);
  REQUIRE(s != nullptr);
  int sink = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in sink_addr = local(47331).to_sockaddr();
  const mp::SocketAddress sink_to = mp::SocketAddress::of(local(47331));
  REQUIRE(bind(sink, reinterpret_cast<sockaddr*>(&sink_addr), sizeof sink_addr) == 0);
  rec.on_packet = [&](int, const uint8_t* data, size_t len) {
    s->forward(sink_to, data, len, &rec, 0);
  };
  const std::vector<size_t> lengths = {172, 172, 172, 172, 50,  172, 172, 200,
                                       200, 12,  172, 172, 200, 300, 172, 172};
  int src = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in to = local(47330).to_sockaddr();
  for (size_t i = 0; i < lengths.size(); ++i) {
    std::vector<uint8_t> d(lengths[i], static_cast<uint8_t>(i));
    REQUIRE(sendto(src, d.data(), d.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) ==
            static_cast<ssize_t>(d.size()));
  }
  for (int turn = 0; turn < 50 && total(rec) < static_cast<int>(lengths.size()); ++turn)
    uv_run(&l.loop, UV_RUN_NOWAIT);
  REQUIRE(total(rec) == static_cast<int>(lengths.size()));
  for (size_t i = 0; i < lengths.size(); ++i) {
    uint8_t buf[512];
    ssize_t n = recv(sink, buf, sizeof buf, MSG_DONTWAIT);
    REQUIRE(n == static_cast<ssize_t>(lengths[i]));
    CHECK(buf[0] == static_cast<uint8_t>(i));
    CHECK(buf[n - 1] == static_cast<uint8_t>(i));
  }
  CHECK(rec.failed_cookies.empty());
  CHECK(l.pump->send_failures() == 0);
  close(src);
  close(sink);
  s->close();
}

TEST_CASE("a closed socket stays bound as its port's idle socket and is taken back") {
  Loop l(GENERATE(false, true));
  l.pump->set_idle_capacity(1);
  Recorder first(1), second(1);
  int err = 0;
  MediaSocket* a = MediaSocket::open(l.pump, local(47900), &first, 0, err);
  REQUIRE(a != nullptr);
  const int fd = a->fd();
  a->close();
  CHECK(l.pump->idle_count() == 1);
  // Datagrams reaching the idle port belong to no call: read and dropped.
  blast({47900}, 3);
  uv_run(&l.loop, UV_RUN_NOWAIT);
  CHECK(total(first) == 0);
  // Queued since the last pass when the port is taken again: no syscall is
  // spent draining it, so the new owner reads them, exactly as it would read
  // datagrams sent a moment later.
  blast({47900}, 2);
  MediaSocket* b = MediaSocket::open(l.pump, local(47900), &second, 0, err);
  REQUIRE(b != nullptr);
  CHECK(b->fd() == fd);
  CHECK(l.pump->idle_count() == 0);
  uv_run(&l.loop, UV_RUN_NOWAIT);
  CHECK(total(second) == 2);
  blast({47900}, 4);
  uv_run(&l.loop, UV_RUN_NOWAIT);
  CHECK(total(second) == 6);
  // Over capacity, a closed socket really closes.
  MediaSocket* c = MediaSocket::open(l.pump, local(47902), &second, 0, err);
  REQUIRE(c != nullptr);
  b->close();
  c->close();
  CHECK(l.pump->idle_count() == 1);
}

TEST_CASE("parked sockets give way when descriptors run out") {
  Loop l(GENERATE(false, true));
  l.pump->set_idle_capacity(1000);
  Recorder owner(1);
  int err = 0;
  // 40 ports used once and parked.
  for (uint16_t i = 0; i < 40; ++i) {
    MediaSocket* s = MediaSocket::open(l.pump, local(48000 + 2 * i), &owner, 0, err);
    REQUIRE(s != nullptr);
    s->close();
  }
  REQUIRE(l.pump->idle_count() == 40);
  // Only 10 more descriptors may be opened from here.
  rlimit saved{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &saved) == 0);
  int probe = ::dup(0);
  REQUIRE(probe >= 0);
  ::close(probe);
  rlimit tight = saved;
  tight.rlim_cur = static_cast<rlim_t>(probe) + 10;
  REQUIRE(setrlimit(RLIMIT_NOFILE, &tight) == 0);
  // 30 streams on ports never used: the parked sockets make room.
  std::vector<MediaSocket*> live;
  for (uint16_t i = 0; i < 30; ++i) {
    MediaSocket* s = MediaSocket::open(l.pump, local(49000 + 2 * i), &owner, 0, err);
    CHECK(s != nullptr);
    if (s) live.push_back(s);
  }
  REQUIRE(setrlimit(RLIMIT_NOFILE, &saved) == 0);
  CHECK(live.size() == 30);
  CHECK(l.pump->idle_count() < 40);
  for (MediaSocket* s : live) s->close();
}
