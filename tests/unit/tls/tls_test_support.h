// Shared fixtures for the TLS unit tests: where the sample certificates are,
// a private libuv loop that runs until a condition holds (with a deadline so a
// broken test fails instead of hanging), a 127.0.0.1 listener on an ephemeral
// port, an endpoint that records every connection callback, a scratch
// directory, and a guard that keeps expected warnings out of the test output.
#pragma once

#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/log.h"
#include "tls/connection.h"
#include "tls/tls_context.h"

namespace mp::tls::test {

// The repository's certs/ directory: $MEDIAPROXY_CERTS_DIR, else found from
// this file's path (relative to the build directory that compiled it), tried
// from the working directory and from the test executable's build directory.
inline std::string certs_dir() {
  static const std::string dir = [] {
    auto ok = [](const std::string& d) {
      struct stat st;
      return ::stat((d + "/ca.pem").c_str(), &st) == 0;
    };
    if (const char* env = std::getenv("MEDIAPROXY_CERTS_DIR"); env && ok(env))
      return std::string(env);
    std::string here = __FILE__;
    here = here.substr(0, here.find_last_of('/'));
    std::string rel = here + "/../../../certs";
    if (rel[0] == '/' || ok(rel)) return rel;
    char exe[4096];
    ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
      std::string build(exe, static_cast<size_t>(n));
      build = build.substr(0, build.find_last_of('/'));  // <build>/tests/unit
      std::string candidate = build + "/../../" + rel;
      if (ok(candidate)) return candidate;
    }
    return rel;
  }();
  return dir;
}

inline std::string cert_path(const std::string& name) {
  return certs_dir() + "/" + name;
}

inline TlsSettings settings_for(Role role, const std::string& name,
                                const std::string& ca = "ca.pem",
                                const std::string& crl = "crl.pem") {
  TlsSettings s;
  s.role = role;
  s.ca_file = cert_path(ca);
  s.crl_file = crl.empty() ? std::string() : cert_path(crl);
  s.cert_file = cert_path(name + ".crt");
  s.key_file = cert_path(name + ".key");
  return s;
}

inline std::shared_ptr<const TlsContext> load_ok(const TlsSettings& s) {
  std::string error;
  auto ctx = TlsContext::load(s, error);
  INFO(error);
  REQUIRE(ctx);
  return ctx;
}

// A scratch directory removed at the end of the test.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char tmpl[] = "/tmp/mediaproxy-tls-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
  void copy(const std::string& from, const std::string& to) const {
    std::filesystem::copy_file(cert_path(from), path / to,
                               std::filesystem::copy_options::overwrite_existing);
  }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name, std::ios::binary | std::ios::trunc) << text;
  }
};

// Silences expected warnings (refused handshakes...) for the test's duration.
class QuietLog {
 public:
  QuietLog() : saved_(log::level()) { log::set_level(log::Level::Critical); }
  ~QuietLog() { log::set_level(saved_); }

 private:
  log::Level saved_;
};

class Loop {
 public:
  Loop() { uv_loop_init(&loop_); }
  ~Loop() {
    // Every test closes what it opened; run the close callbacks, then check.
    // A test that failed half-way may leave handles open: then give up after
    // a bounded wait instead of hanging the whole suite (the loop is leaked).
    const uint64_t deadline = uv_hrtime() + 2'000'000'000ull;
    while (uv_run(&loop_, UV_RUN_NOWAIT) != 0 && uv_hrtime() < deadline) usleep(1000);
    if (uv_loop_alive(&loop_)) {
      FAIL_CHECK("handles left open at the end of the test");
      return;
    }
    int r = uv_loop_close(&loop_);
    CHECK(r == 0);
  }
  uv_loop_t* get() { return &loop_; }

  // Runs the loop until `done` holds; false if `timeout_ms` passed first.
  bool run_until(const std::function<bool()>& done, uint64_t timeout_ms = 10000) {
    bool expired = false;
    uv_timer_t guard;
    uv_timer_init(&loop_, &guard);
    guard.data = &expired;
    uv_timer_start(
        &guard, [](uv_timer_t* t) { *static_cast<bool*>(t->data) = true; }, timeout_ms, 0);
    while (!done() && !expired) uv_run(&loop_, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&guard), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
    return done();
  }

 private:
  uv_loop_t loop_;
};

// A TCP listener on 127.0.0.1 with an ephemeral port. The handle lives on the
// heap and is freed by its close callback, so the object may go out of scope
// before the loop runs again.
class Listener {
 public:
  Listener(uv_loop_t* loop, std::function<void(uv_stream_t*)> on_connection)
      : tcp_(new uv_tcp_t), on_connection_(std::move(on_connection)) {
    uv_tcp_init(loop, tcp_);
    tcp_->data = this;
    sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    REQUIRE(uv_tcp_bind(tcp_, reinterpret_cast<sockaddr*>(&sa), 0) == 0);
    REQUIRE(uv_listen(reinterpret_cast<uv_stream_t*>(tcp_), 64, [](uv_stream_t* s, int status) {
              if (status == 0 && s->data) static_cast<Listener*>(s->data)->on_connection_(s);
            }) == 0);
    int len = sizeof sa;
    uv_tcp_getsockname(tcp_, reinterpret_cast<sockaddr*>(&sa), &len);
    address_ = sa;
  }
  ~Listener() {
    tcp_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(tcp_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  const sockaddr* address() const { return reinterpret_cast<const sockaddr*>(&address_); }

 private:
  uv_tcp_t* tcp_;
  sockaddr_in address_{};
  std::function<void(uv_stream_t*)> on_connection_;
};

// Records the callbacks of one Connection.
struct Endpoint {
  std::shared_ptr<Connection> conn;
  int connected = 0;
  Subject subject;
  std::string data;
  int drains = 0;
  int closed = 0;
  std::string reason;
  // Extra behaviour hooks.
  std::function<void(Endpoint&)> after_connect;
  std::function<void(Endpoint&, std::string_view)> after_data;

  ConnectionCallbacks callbacks() {
    ConnectionCallbacks cb;
    cb.on_connected = [this](const Subject& s) {
      ++connected;
      subject = s;
      if (after_connect) after_connect(*this);
    };
    cb.on_data = [this](std::string_view d) {
      data.append(d);
      if (after_data) after_data(*this, d);
    };
    cb.on_closed = [this](const std::string& r) {
      ++closed;
      reason = r;
    };
    cb.on_drain = [this] { ++drains; };
    return cb;
  }

  void make(uv_loop_t* loop, std::shared_ptr<const TlsContext> ctx, ConnectionOptions opt = {}) {
    conn = Connection::create(loop, std::move(ctx), callbacks(), std::move(opt));
  }

  bool is_closed() const { return closed > 0; }
};

// Closes whatever is still open and waits for the close callbacks.
inline void shut_down(Loop& loop, std::vector<Endpoint*> endpoints) {
  for (Endpoint* e : endpoints)
    if (e->conn && e->conn->state() != Connection::State::Idle && !e->is_closed())
      e->conn->abort("test over");
  loop.run_until([&] {
    for (Endpoint* e : endpoints)
      if (e->conn && e->conn->state() != Connection::State::Closed &&
          e->conn->state() != Connection::State::Idle)
        return false;
    return true;
  });
}

}  // namespace mp::tls::test
