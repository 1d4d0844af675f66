// Unit tests of the hang-up client (src/dispatcher/hangup_client.cpp): a
// private libuv loop and a datagram socket bound by the test that plays the
// proxy (OpenSIPS mi_datagram or Kamailio jsonrpcs) and answers each request
// as the test case scripts it. Covers the request bytes and the reply socket
// (path, mode), replies matched by id (result, error, a reply for another
// id), a plain "<code> <text>" reply with one and with two requests waiting,
// the 3 s timeout, a burst beyond the proxy's socket queue (sent in order
// from the backlog) and a queue that stays full (unsent), an absent or dead
// proxy socket (unsent), a dialog id of a proxy kind that is switched off,
// the bound on waiting requests, and the counters of
// mediaproxy_hangup_requests_total.
#include <rapidjson/document.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "../tls/tls_test_support.h"
#include "dispatcher/hangup_client.h"
#include "metrics/exposition.h"

namespace {

using mp::tls::test::Loop;
using mp::tls::test::QuietLog;
using mp::tls::test::TempDir;

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  REQUIRE(path.size() < sizeof sa.sun_path);
  std::memcpy(sa.sun_path, path.data(), path.size());
  return sa;
}

// The proxy's datagram socket. Every request is recorded; `answer` returns
// the datagrams to send back (to the sender's address, as the proxies do).
class FakeProxy {
 public:
  using Answer = std::function<std::vector<std::string>(const std::string& request)>;
  FakeProxy(uv_loop_t* loop, const std::string& path, Answer answer)
      : h_(new Handle), answer_(std::move(answer)) {
    h_->fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    REQUIRE(h_->fd >= 0);
    sockaddr_un sa = unix_address(path);
    REQUIRE(::bind(h_->fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(uv_poll_init(loop, &h_->poll, h_->fd) == 0);
    h_->poll.data = this;
    uv_poll_start(&h_->poll, UV_READABLE,
                  [](uv_poll_t* p, int, int) { static_cast<FakeProxy*>(p->data)->on_readable(); });
  }
  ~FakeProxy() {
    uv_close(reinterpret_cast<uv_handle_t*>(&h_->poll), [](uv_handle_t* h) {
      auto* handle = reinterpret_cast<Handle*>(h);
      ::close(handle->fd);
      delete handle;
    });
  }
  std::vector<std::string> requests;
  std::vector<std::string> senders;

 private:
  struct Handle {
    uv_poll_t poll;
    int fd = -1;
  };
  void on_readable() {
    char buf[65536];
    sockaddr_un from{};
    socklen_t len = sizeof from;
    const ssize_t n =
        ::recvfrom(h_->fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
    if (n < 0) return;
    requests.emplace_back(buf, static_cast<size_t>(n));
    senders.emplace_back(from.sun_path);
    for (const std::string& reply : answer_(requests.back()))
      ::sendto(h_->fd, reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
  }
  Handle* h_;
  Answer answer_;
};

// The "id" of a JSON-RPC request.
std::string id_of(const std::string& request) {
  rapidjson::Document d;
  d.Parse(request.c_str());
  REQUIRE((!d.HasParseError() && d.IsObject() && d.HasMember("id") && d["id"].IsString()));
  return d["id"].GetString();
}

struct Fixture {
  QuietLog quiet;
  TempDir dir;
  Loop loop;
  std::string runtime;
  std::string proxy_path;
  std::optional<mp::dispatcher::HangupClient> client;

  // `kind`: which socket_path names the fake proxy ("opensips" or
  // "kamailio"); the other one is off unless `other` names a path.
  explicit Fixture(const std::string& kind, const std::string& other = "") {
    runtime = dir.file("run");
    REQUIRE(::mkdir(runtime.c_str(), 0755) == 0);
    proxy_path = dir.file("proxy.sock");
    mp::HangupConfig cfg;
    cfg.opensips_socket = kind == "opensips" ? proxy_path : other;
    cfg.kamailio_socket = kind == "kamailio" ? proxy_path : other;
    client.emplace(loop.get(), cfg, runtime);
    std::string error;
    INFO(error);
    REQUIRE(client->start(error));
  }
  ~Fixture() {
    client->close();
    uv_run(loop.get(), UV_RUN_NOWAIT);
  }
  std::string metrics() const {
    mp::metrics::Exposition e;
    client->write_metrics(e);
    return e.text();
  }
  // The counter's value, or -1 when there is no such line.
  double count(const std::string& proxy, const std::string& result) const {
    const std::string key =
        "mediaproxy_hangup_requests_total{proxy=\"" + proxy + "\",result=\"" + result + "\"} ";
    const std::string text = metrics();
    const size_t at = text.find(key);
    if (at == std::string::npos) return -1;
    return std::stod(text.substr(at + key.size()));
  }
  bool wait_for(const std::string& proxy, const std::string& result, double n,
                uint64_t timeout_ms = 2000) {
    return loop.run_until([&] { return count(proxy, result) == n; }, timeout_ms);
  }
};

}  // namespace

TEST_CASE("OpenSIPS: dlg_end_dlg answered with a result counts ok", "[hangup]") {
  Fixture f("opensips");
  FakeProxy proxy(f.loop.get(), f.proxy_path, [](const std::string& req) {
    return std::vector<std::string>{"{\"jsonrpc\":\"2.0\",\"result\":\"OK\",\"id\":\"" +
                                    id_of(req) + "\"}"};
  });
  // reply socket: <runtime>/opensips.sock, writable for a proxy of another user
  struct stat st {};
  REQUIRE(::stat((f.runtime + "/opensips.sock").c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 0777) == 0666);
  CHECK(f.count("opensips", "ok") == 0);
  CHECK(f.count("kamailio", "ok") == -1);  // off: no lines

  f.client->hang_up("11751849276301", "call-1@example.com");
  REQUIRE(f.wait_for("opensips", "ok", 1));
  REQUIRE(proxy.requests.size() == 1);
  const std::string id = id_of(proxy.requests[0]);
  CHECK(proxy.requests[0] ==
        "{\"jsonrpc\": \"2.0\", \"id\": \"" + id +
            "\", \"method\": \"dlg_end_dlg\", \"params\": [\"0ba.d833dc03\"]}");
  CHECK(id.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(proxy.senders[0] == f.runtime + "/opensips.sock");
  CHECK(f.count("opensips", "error") == 0);
  CHECK(f.count("opensips", "timeout") == 0);
  CHECK(f.count("opensips", "unsent") == 0);
}

TEST_CASE("Kamailio: dlg.end_dlg answered with an error counts error", "[hangup]") {
  Fixture f("kamailio");
  FakeProxy proxy(f.loop.get(), f.proxy_path, [](const std::string& req) {
    // first a reply for some other request, then the real one
    return std::vector<std::string>{
        "{\"jsonrpc\":\"2.0\",\"result\":{},\"id\":\"not-ours\"}",
        "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":404,\"message\":\"Dialog not found\"},\"id\":\"" +
            id_of(req) + "\"}"};
  });
  f.client->hang_up("438:10795", "call-2");
  REQUIRE(f.wait_for("kamailio", "error", 1));
  REQUIRE(proxy.requests.size() == 1);
  CHECK(proxy.requests[0].find("\"method\": \"dlg.end_dlg\", \"params\": [438, 10795]}") !=
        std::string::npos);
  CHECK(proxy.senders[0] == f.runtime + "/kamailio.sock");
  CHECK(f.count("kamailio", "ok") == 0);
  CHECK(f.count("opensips", "ok") == -1);
}

TEST_CASE("Kamailio: an empty-object result counts ok", "[hangup]") {
  Fixture f("kamailio");
  FakeProxy proxy(f.loop.get(), f.proxy_path, [](const std::string& req) {
    return std::vector<std::string>{
        "{\n\t\"jsonrpc\":\t\"2.0\",\n\t\"result\":\t{},\n\t\"id\":\t\"" + id_of(req) + "\"\n}\n"};
  });
  f.client->hang_up("1:2", "call-3");
  REQUIRE(f.wait_for("kamailio", "ok", 1));
}

TEST_CASE("a plain '<code> <text>' reply goes to the only waiting request", "[hangup]") {
  Fixture f("opensips");
  FakeProxy proxy(f.loop.get(), f.proxy_path,
                  [](const std::string&) { return std::vector<std::string>{"400 Parse_error"}; });
  f.client->hang_up("42", "call-4");
  REQUIRE(f.wait_for("opensips", "error", 1));
}

TEST_CASE("no answer: timeout after 3 s; a plain reply with two waiting is ignored", "[hangup]") {
  Fixture f("opensips");
  FakeProxy proxy(f.loop.get(), f.proxy_path, [](const std::string&) {
    return std::vector<std::string>{"500 Internal error"};
  });
  // Both requests are on the proxy's queue before it reads either, so each
  // plain reply arrives while two requests wait.
  f.client->hang_up("1", "call-5a");
  f.client->hang_up("2", "call-5b");
  const uint64_t t0 = uv_hrtime();
  REQUIRE(f.loop.run_until([&] { return proxy.requests.size() == 2; }, 1000));
  f.loop.run_until([] { return false; }, 500);
  CHECK(f.count("opensips", "error") == 0);
  CHECK(f.count("opensips", "timeout") == 0);
  REQUIRE(f.wait_for("opensips", "timeout", 2, 4000));
  const double waited = static_cast<double>(uv_hrtime() - t0) / 1e9;
  CHECK(waited >= 2.9);
  CHECK(waited < 3.9);
  CHECK(f.count("opensips", "error") == 0);
}

TEST_CASE("a burst beyond the proxy's socket queue is sent in order as it drains", "[hangup]") {
  Fixture f("kamailio");
  FakeProxy proxy(f.loop.get(), f.proxy_path, [](const std::string& req) {
    return std::vector<std::string>{"{\"jsonrpc\":\"2.0\",\"result\":{},\"id\":\"" + id_of(req) +
                                    "\"}"};
  });
  // net.unix.max_dgram_qlen (10 by default) is far below 100: most wait in
  // the backlog while the loop does not run
  for (int i = 0; i < 100; ++i) f.client->hang_up("7:" + std::to_string(i), "call-burst");
  CHECK(f.count("kamailio", "unsent") == 0);
  REQUIRE(f.wait_for("kamailio", "ok", 100));
  REQUIRE(proxy.requests.size() == 100);
  for (int i = 0; i < 100; ++i)
    CHECK(proxy.requests[i].find("[7, " + std::to_string(i) + "]") != std::string::npos);
}

TEST_CASE("a socket queue that stays full: unsent after 3 s, the sent ones time out", "[hangup]") {
  Fixture f("opensips");
  // bound, never read
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_un sa = unix_address(f.proxy_path);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  for (int i = 0; i < 40; ++i) f.client->hang_up(std::to_string(i), "call-full");
  REQUIRE(f.loop.run_until(
      [&] { return f.count("opensips", "unsent") + f.count("opensips", "timeout") == 40; }, 4500));
  CHECK(f.count("opensips", "unsent") >= 20);
  CHECK(f.count("opensips", "timeout") >= 5);
  ::close(fd);
}

TEST_CASE("absent proxy socket: unsent, never fatal", "[hangup]") {
  Fixture f("kamailio", "/nonexistent/opensips/socket");
  // nothing bound at proxy_path: ENOENT
  f.client->hang_up("438:10795", "call-6");
  CHECK(f.count("kamailio", "unsent") == 1);
  f.client->hang_up("5299989648942", "call-6b");
  CHECK(f.count("opensips", "unsent") == 1);
  // a socket file that nobody reads any more: ECONNREFUSED
  {
    FakeProxy gone(f.loop.get(), f.proxy_path,
                   [](const std::string&) { return std::vector<std::string>{}; });
  }
  f.loop.run_until([] { return false; }, 50);
  f.client->hang_up("438:10796", "call-6c");
  CHECK(f.count("kamailio", "unsent") == 2);
  CHECK(f.count("kamailio", "timeout") == 0);
}

TEST_CASE("dialog ids of a switched-off proxy or of no proxy are not sent", "[hangup]") {
  Fixture f("kamailio");
  FakeProxy proxy(f.loop.get(), f.proxy_path,
                  [](const std::string&) { return std::vector<std::string>{}; });
  f.client->hang_up("5299989648942", "call-7");  // OpenSIPS: off
  f.client->hang_up("not a dialog id\n", "call-7b");
  f.client->hang_up("", "call-7c");
  f.loop.run_until([] { return false; }, 100);
  CHECK(proxy.requests.empty());
  for (const char* r : {"ok", "error", "timeout", "unsent"}) CHECK(f.count("kamailio", r) == 0);
}

TEST_CASE("waiting requests are bounded; close() forgets them", "[hangup]") {
  Fixture f("opensips");
  FakeProxy proxy(f.loop.get(), f.proxy_path,
                  [](const std::string&) { return std::vector<std::string>{}; });
  // The proxy's socket queue holds few datagrams (net.unix.max_dgram_qlen):
  // let it read each request before the next.
  for (int i = 0; i < 300; ++i) {
    f.client->hang_up(std::to_string(i), "call-8");
    uv_run(f.loop.get(), UV_RUN_NOWAIT);
  }
  CHECK(proxy.requests.size() == 256);
  CHECK(f.count("opensips", "unsent") == 300 - 256);
  f.client->close();
  f.client->hang_up("1", "after close");  // ignored
  f.loop.run_until([] { return false; }, 50);
  CHECK(f.count("opensips", "timeout") == 0);
  CHECK(f.count("opensips", "unsent") == 300 - 256);
  // the reply socket is gone with the client
  struct stat st {};
  CHECK(::stat((f.runtime + "/opensips.sock").c_str(), &st) != 0);
}

TEST_CASE("start() fails when the runtime directory cannot hold the socket", "[hangup]") {
  QuietLog quiet;
  Loop loop;
  mp::HangupConfig cfg;
  cfg.kamailio_socket = "/run/kamailio/kamailio_rpc.sock";
  cfg.opensips_socket.clear();
  mp::dispatcher::HangupClient client(loop.get(), cfg, "/nonexistent-mediaproxy-runtime");
  std::string error;
  CHECK_FALSE(client.start(error));
  CHECK(error.find("/nonexistent-mediaproxy-runtime/kamailio.sock") != std::string::npos);
  client.close();
}
