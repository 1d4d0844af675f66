// The live-upgrade channel (app/upgrade.h): a running process's
// UpgradeListener on a real uv loop and a new process's take_over() in a
// thread, over a real SOCK_SEQPACKET socket. What a successor would rely on:
// it gets the very sockets (a datagram queued before the hand-over is read
// from the descriptor it received), with their lines, in batches larger than
// one message holds; it goes on only after finish(); a peer that does not
// ask properly gets nothing; nothing listening gives a clear error.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>
#include <catch2/catch.hpp>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "app/upgrade.h"

using mp::app::HandedSocket;
using mp::app::UpgradeListener;

namespace {

std::string temp_dir() {
  char dir[] = "/tmp/mp-upgrade-XXXXXX";
  REQUIRE(mkdtemp(dir));
  return dir;
}

}  // namespace

TEST_CASE("hex round trip of unread request bytes", "[app][upgrade]") {
  const std::string bytes("update\r\ncall_id: \x00\xff\r\n", 22);
  std::string back;
  REQUIRE(mp::app::from_hex(mp::app::to_hex(bytes), back));
  CHECK(back == bytes);
  CHECK_FALSE(mp::app::from_hex("abc", back));
  CHECK_FALSE(mp::app::from_hex("zz", back));
}

TEST_CASE("a takeover hands over the very sockets, and goes on after finish()", "[app][upgrade]") {
  const std::string dir = temp_dir();
  const std::string path = dir + "/upgrade.sock";
  uv_loop_t loop;
  uv_loop_init(&loop);

  // 300 datagram socket pairs: more than one message's worth of descriptors.
  std::vector<int> ours, peers;
  for (int i = 0; i < 300; ++i) {
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == 0);
    ours.push_back(sv[0]);
    peers.push_back(sv[1]);
  }
  // Queued on socket 7 before the hand-over: the successor must read it.
  REQUIRE(send(peers[7], "queued", 6, 0) == 6);

  bool handed = false;
  UpgradeListener* listener_ptr = nullptr;
  UpgradeListener listener(
      &loop,
      [&] {
        std::vector<HandedSocket> out;
        for (size_t i = 0; i < ours.size(); ++i) {
          const int copy = dup(ours[i]);  // the old process closes its own afterwards
          out.push_back({"media 192.0.2.1:" + std::to_string(40000 + 2 * i), copy});
        }
        return out;
      },
      [&] {
        handed = true;
        listener_ptr->close();
      });
  listener_ptr = &listener;
  std::string error;
  REQUIRE(listener.listen(path, error));

  std::vector<HandedSocket> got;
  bool ok = false;
  std::atomic<bool> returned{false};
  std::string take_error;
  std::thread successor([&] {
    ok = mp::app::take_over(path, 10000, got, take_error);
    returned = true;
  });
  // The loop serves the takeover; then the old process would finish its
  // shutdown: the successor must still be waiting for "end".
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(handed);
  CHECK_FALSE(returned.load());  // the successor waits for "end"
  listener.finish();
  successor.join();
  INFO(take_error);
  REQUIRE(ok);
  REQUIRE(got.size() == 300);
  CHECK(got[0].what == "media 192.0.2.1:40000");
  CHECK(got[299].what == "media 192.0.2.1:40598");
  char buf[16] = {};
  REQUIRE(recv(got[7].fd, buf, sizeof buf, MSG_DONTWAIT) == 6);
  CHECK(std::string(buf, 6) == "queued");
  for (const HandedSocket& h : got) close(h.fd);
  for (int fd : ours) close(fd);
  for (int fd : peers) close(fd);
  uv_loop_close(&loop);
  rmdir(dir.c_str());
}

TEST_CASE("take_over() without a running process says so", "[app][upgrade]") {
  std::vector<HandedSocket> got;
  std::string error;
  CHECK_FALSE(mp::app::take_over("/tmp/mp-no-such-dir/upgrade.sock", 1000, got, error));
  CHECK(error.find("no running mediaproxy to take over from") != std::string::npos);
  CHECK(got.empty());
}

TEST_CASE("a peer that does not ask for a takeover gets nothing", "[app][upgrade]") {
  const std::string dir = temp_dir();
  const std::string path = dir + "/upgrade.sock";
  uv_loop_t loop;
  uv_loop_init(&loop);
  bool gathered = false;
  UpgradeListener listener(
      &loop,
      [&] {
        gathered = true;
        return std::vector<HandedSocket>{};
      },
      [] {});
  std::string error;
  REQUIRE(listener.listen(path, error));
  int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  REQUIRE(send(fd, "hello", 5, 0) == 5);
  char buf[8];
  // Served by the loop: the listener reads "hello" and closes the peer.
  for (int i = 0; i < 1000; ++i) {
    uv_run(&loop, UV_RUN_NOWAIT);
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 1) > 0) break;  // the listener answered (by closing)
  }
  CHECK(recv(fd, buf, sizeof buf, MSG_DONTWAIT) == 0);  // closed, nothing sent
  CHECK_FALSE(gathered);
  close(fd);
  listener.close();
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  rmdir(dir.c_str());
}
