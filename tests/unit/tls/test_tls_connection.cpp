// Unit tests for tls::Connection (tls/connection.h): real TLS handshakes over
// 127.0.0.1 on a private libuv loop with the sample certificates in certs/.
// Covers mutual authentication and data both ways (large payloads, many small
// writes, writes before the handshake, orderly close), refused peers (other
// CA, expired, revoked, passport, host name), plain TCP on either side,
// garbage, handshake and connect timeouts, the output limit against a peer
// that never reads, streaming with on_drain, and periodic re-verification
// after a CRL reload.
#include <catch2/catch.hpp>
#include <random>
#include <string>

#include "tls/connection.h"
#include "tls_test_support.h"

using namespace mp::tls;
using namespace mp::tls::test;

namespace {

// The reason of a failure, where a case does not look at it.
std::string ignored;

std::string pattern(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

Passport passport(std::string_view text) {
  std::string error;
  auto p = Passport::parse(text, error);
  INFO(error);
  REQUIRE(p);
  return *p;
}

// A TLS (or plain) server on 127.0.0.1 that wraps every accepted connection.
struct Server {
  uv_loop_t* loop;
  std::shared_ptr<const TlsContext> ctx;
  ConnectionOptions options;
  Endpoint endpoint;  // the most recent connection
  int accepted = 0;
  Listener listener;

  Server(uv_loop_t* l, std::shared_ptr<const TlsContext> c, ConnectionOptions o = {})
      : loop(l), ctx(std::move(c)), options(std::move(o)), listener(l, [this](uv_stream_t* s) {
          ++accepted;
          endpoint.make(loop, ctx, options);
          endpoint.conn->accept(s, ignored);
        }) {}
};

ConnectionOptions quick(uint64_t handshake_ms = 3000) {
  ConnectionOptions o;
  o.handshake_timeout_ms = handshake_ms;
  o.close_timeout_ms = 500;
  return o;
}

// Runs a client with `client_ctx` against `server` until both sides are
// connected (a plain client: until it is connected and the server accepted)
// or one side closed.
void handshake(Loop& loop, Server& server, Endpoint& client,
               std::shared_ptr<const TlsContext> client_ctx, ConnectionOptions opt = quick()) {
  bool plain_client = client_ctx == nullptr;
  client.make(loop.get(), std::move(client_ctx), std::move(opt));
  REQUIRE(client.conn->connect(server.listener.address(), ignored));
  loop.run_until([&] {
    bool server_side = server.endpoint.connected > 0 || (plain_client && server.accepted > 0);
    return (client.connected && server_side) || server.endpoint.is_closed() || client.is_closed();
  });
}

}  // namespace

TEST_CASE("TLS: mutual authentication and data both ways", "[tls][connection]") {
  Loop loop;
  QuietLog quiet;
  Server server(loop.get(), load_ok(settings_for(Role::Server, "dispatcher")), quick());
  Endpoint client;
  client.make(loop.get(), load_ok(settings_for(Role::Client, "relay")), quick());
  // Written before connecting: delivered first, once the handshake is done.
  CHECK(client.conn->write("early\n"));
  REQUIRE(client.conn->connect(server.listener.address(), ignored));
  CHECK(client.conn->state() == Connection::State::Connecting);
  REQUIRE(loop.run_until([&] { return server.endpoint.connected && client.connected; }));

  Endpoint& srv = server.endpoint;
  CHECK(format_subject(srv.subject) ==
        "O=mediaproxy TEST ONLY, OU=MediaProxy, CN=mediaproxy test relay");
  CHECK(format_subject(client.subject) ==
        "O=mediaproxy TEST ONLY, OU=MediaProxy, CN=mediaproxy test dispatcher");
  CHECK(srv.conn->peer_subject() == srv.subject);
  CHECK(srv.conn->is_tls());
  CHECK(srv.conn->is_open());
  CHECK_THAT(srv.conn->protocol_description(), Catch::StartsWith("TLSv1.2 TLS-ECDHE-"));
  CHECK_THAT(srv.conn->peer_address(), Catch::StartsWith("127.0.0.1:"));
  CHECK(srv.conn->peer_sockaddr().ss_family == AF_INET);
  const auto* listen_addr = reinterpret_cast<const sockaddr_in*>(server.listener.address());
  CHECK(client.conn->peer_address() == "127.0.0.1:" + std::to_string(ntohs(listen_addr->sin_port)));

  // A payload well over 64 KiB (several TLS records, several uv reads) and
  // many small writes, in both directions at once.
  const std::string big_up = pattern(200 * 1024 + 17, 1);
  const std::string big_down = pattern(300 * 1024 + 5, 2);
  std::string small_up, small_down;
  CHECK(client.conn->write(big_up));
  CHECK(srv.conn->write(big_down));
  for (int i = 0; i < 1000; ++i) {
    std::string up = "up " + std::to_string(i) + "\r\n";
    std::string down = "down " + std::to_string(i) + "\r\n";
    small_up += up;
    small_down += down;
    CHECK(client.conn->write(up));
    CHECK(srv.conn->write(down));
  }
  const std::string want_up = "early\n" + big_up + small_up;
  const std::string want_down = big_down + small_down;
  REQUIRE(loop.run_until(
      [&] { return srv.data.size() >= want_up.size() && client.data.size() >= want_down.size(); }));
  CHECK(srv.data == want_up);
  CHECK(client.data == want_down);
  REQUIRE(loop.run_until([&] { return client.drains > 0 && srv.drains > 0; }));
  CHECK(client.conn->queued_bytes() == 0);

  // Orderly close from the client: the server sees the peer's close_notify.
  client.conn->close("done");
  CHECK(client.conn->state() == Connection::State::Closing);
  CHECK_FALSE(client.conn->write("too late"));
  client.conn->close("again");  // no effect
  REQUIRE(loop.run_until([&] { return client.is_closed() && srv.is_closed(); }));
  CHECK(client.reason == "done");
  CHECK(srv.reason == "closed by peer");
  CHECK(client.closed == 1);
  CHECK(srv.closed == 1);
  CHECK(client.conn->state() == Connection::State::Closed);
}

TEST_CASE("TLS: replies written just before close reach the peer", "[tls][connection]") {
  Loop loop;
  QuietLog quiet;
  Server server(loop.get(), load_ok(settings_for(Role::Server, "dispatcher")), quick());
  // The management "quit" pattern: answer, then close from inside on_data.
  server.endpoint.after_data = [](Endpoint& e, std::string_view) {
    if (e.data.find("quit\r\n") == std::string::npos) return;
    e.conn->write(std::string(100000, 'x'));
    e.conn->write("bye\r\n");
    e.conn->close("client quit");
  };
  Endpoint client;
  handshake(loop, server, client, load_ok(settings_for(Role::Client, "relay")));
  REQUIRE(client.connected);
  client.conn->write("quit\r\n");
  REQUIRE(loop.run_until([&] { return client.is_closed() && server.endpoint.is_closed(); }));
  CHECK(client.data == std::string(100000, 'x') + "bye\r\n");
  CHECK(client.reason == "closed by peer");
  CHECK(server.endpoint.reason == "client quit");
}

TEST_CASE("TLS: streaming a large answer with on_drain stays under the output limit",
          "[tls][connection]") {
  Loop loop;
  QuietLog quiet;
  ConnectionOptions opt = quick();
  opt.max_queued_bytes = 256 * 1024;
  Server server(loop.get(), load_ok(settings_for(Role::Server, "dispatcher")), opt);
  const std::string chunk = pattern(64 * 1024, 3);
  const int chunks = 64;  // 4 MiB in total, 16 times the limit
  int sent = 0;
  auto next = [&](Endpoint& e) {
    while (sent < chunks && e.conn->queued_bytes() < 128 * 1024) {
      CHECK(e.conn->write(chunk));
      ++sent;
    }
  };
  server.endpoint.after_connect = next;
  Endpoint client;
  handshake(loop, server, client, load_ok(settings_for(Role::Client, "relay")));
  REQUIRE(server.endpoint.connected);
  // Continue after every drain. A drain may already have come while the
  // handshake finished (the kernel takes megabytes on loopback), so count the
  // drains acted on instead of sampling the counter before each wait.
  int handled = 0;
  while (sent < chunks || client.data.size() < chunk.size() * chunks) {
    REQUIRE(loop.run_until([&] {
      return server.endpoint.drains > handled || client.data.size() >= chunk.size() * chunks ||
             server.endpoint.is_closed();
    }));
    REQUIRE_FALSE(server.endpoint.is_closed());
    handled = server.endpoint.drains;
    next(server.endpoint);
  }
  CHECK(handled >= 1);
  CHECK(client.data.size() == chunk.size() * chunks);
  CHECK(client.data.compare(0, chunk.size(), chunk) == 0);
  CHECK(server.endpoint.conn->is_open());
  shut_down(loop, {&client, &server.endpoint});
}

TEST_CASE("TLS: plain TCP mode has the same interface", "[tls][connection]") {
  Loop loop;
  QuietLog quiet;
  Server server(loop.get(), nullptr, quick());
  server.endpoint.after_data = [](Endpoint& e, std::string_view d) { e.conn->write(d); };  // echo
  Endpoint client;
  handshake(loop, server, client, nullptr);
  REQUIRE(client.connected == 1);
  REQUIRE(server.endpoint.connected == 1);
  CHECK(client.subject.empty());
  CHECK_FALSE(client.conn->is_tls());
  CHECK(client.conn->protocol_description() == "plain TCP");
  const std::string big = pattern(150 * 1024, 4);
  client.conn->write(big);
  REQUIRE(loop.run_until([&] { return client.data.size() >= big.size(); }));
  CHECK(client.data == big);
  // reverify() is a no-op without TLS.
  auto ctx = load_ok(settings_for(Role::Server, "dispatcher"));
  CHECK(server.endpoint.conn->reverify(*ctx));
  server.endpoint.conn->close("bye");
  REQUIRE(loop.run_until([&] { return client.is_closed() && server.endpoint.is_closed(); }));
  CHECK(client.reason == "closed by peer");
  CHECK(server.endpoint.reason == "bye");
}

TEST_CASE("TLS: passports are checked after the handshake", "[tls][connection]") {
  Loop loop;
  QuietLog quiet;
  auto server_ctx = load_ok(settings_for(Role::Server, "dispatcher"));
  auto client_ctx = load_ok(settings_for(Role::Client, "relay"));

  SECTION("matching passports on both sides") {
    ConnectionOptions sopt = quick();
    sopt.passport = passport("O:mediaproxy TEST ONLY, CN:*relay");
    Server server(loop.get(), server_ctx, sopt);
    ConnectionOptions copt = quick();
    copt.passport = passport("OU:Media*, CN:*dispatcher");
    Endpoint client;
    handshake(loop, server, client, client_ctx, copt);
    CHECK(client.connected == 1);
    CHECK(server.endpoint.connected == 1);
    shut_down(loop, {&client, &server.endpoint});
  }
  SECTION("the server refuses a relay outside its passport") {
    ConnectionOptions sopt = quick();
    sopt.passport = passport("CN:*dispatcher");
    Server server(loop.get(), server_ctx, sopt);
    Endpoint client;
    handshake(loop, server, client, client_ctx);
    REQUIRE(loop.run_until([&] { return server.endpoint.is_closed() && client.is_closed(); }));
    CHECK(server.endpoint.connected == 0);
    CHECK(server.endpoint.reason ==
          "peer certificate 'O=mediaproxy TEST ONLY, OU=MediaProxy, CN=mediaproxy test relay' "
          "does not match the passport 'CN:*dispatcher': CN 'mediaproxy test relay' does not "
          "match '*dispatcher'");
  }
  SECTION("the relay refuses a dispatcher outside its passport") {
    Server server(loop.get(), server_ctx, quick());
    ConnectionOptions copt = quick();
    copt.passport = passport("O:AG Projects");
    Endpoint client;
    handshake(loop, server, client, client_ctx, copt);
    REQUIRE(loop.run_until([&] { return server.endpoint.is_closed() && client.is_closed(); }));
    CHECK(client.connected == 0);
    CHECK_THAT(client.reason, Catch::Contains("does not match the passport 'O:AG Projects'"));
  }
}

TEST_CASE("TLS: the client can require the server's host name", "[tls][connection]") {
  Loop loop;
  QuietLog quiet;
  Server server(loop.get(), load_ok(settings_for(Role::Server, "dispatcher")), quick());
  auto client_ctx = load_ok(settings_for(Role::Client, "relay"));
  SECTION("name in the certificate") {
    ConnectionOptions opt = quick();
    opt.server_name = "localhost";
    Endpoint client;
    handshake(loop, server, client, client_ctx, opt);
    CHECK(client.connected == 1);
    CHECK(client.conn->reverify(*client_ctx));
    shut_down(loop, {&client, &server.endpoint});
  }
  SECTION("another name") {
    ConnectionOptions opt = quick();
    opt.server_name = "dispatcher.example.org";
    Endpoint client;
    handshake(loop, server, client, client_ctx, opt);
    REQUIRE(loop.run_until([&] { return server.endpoint.is_closed() && client.is_closed(); }));
    CHECK(client.connected == 0);
    CHECK_THAT(client.reason, Catch::Contains("is not issued for the expected host name"));
  }
}

TEST_CASE("TLS: certificates the CA did not sign, expired or revoked are refused",
          "[tls][connection]") {
  Loop loop;
  QuietLog quiet;
  auto server_ctx = load_ok(settings_for(Role::Server, "dispatcher"));
  const std::string relay_subject =
      "'O=mediaproxy TEST ONLY, OU=MediaProxy, CN=mediaproxy test relay'";

  SECTION("relay certificate from another CA") {
    Server server(loop.get(), server_ctx, quick());
    Endpoint client;
    handshake(loop, server, client, load_ok(settings_for(Role::Client, "relay-otherca")));
    REQUIRE(loop.run_until([&] { return server.endpoint.is_closed() && client.is_closed(); }));
    CHECK(server.endpoint.connected == 0);
    CHECK(client.connected == 0);
    CHECK(server.endpoint.reason ==
          "peer certificate refused: certificate " + relay_subject +
              " is not signed by a trusted CA (issuer 'O=mediaproxy TEST ONLY, OU=MediaProxy, "
              "CN=mediaproxy TEST ONLY other CA')");
    CHECK(client.reason ==
          "peer refused the handshake: unknown CA (our certificate is not signed by a CA it "
          "trusts)");
  }
  SECTION("dispatcher certificate from another CA") {
    TlsSettings s = settings_for(Role::Server, "relay-otherca");
    Server server(loop.get(), load_ok(s), quick());
    Endpoint client;
    handshake(loop, server, client, load_ok(settings_for(Role::Client, "relay")));
    REQUIRE(loop.run_until([&] { return server.endpoint.is_closed() && client.is_closed(); }));
    CHECK(client.connected == 0);
    CHECK_THAT(client.reason, Catch::StartsWith("peer certificate refused: certificate"));
    CHECK_THAT(client.reason, Catch::Contains("is not signed by a trusted CA"));
    CHECK_THAT(server.endpoint.reason, Catch::Contains("unknown CA"));
  }
  SECTION("expired relay certificate") {
    Server server(loop.get(), server_ctx, quick());
    TlsSettings s = settings_for(Role::Client, "relay-expired");
    s.allow_invalid_own_cert = true;
    Endpoint client;
    handshake(loop, server, client, load_ok(s));
    REQUIRE(loop.run_until([&] { return server.endpoint.is_closed() && client.is_closed(); }));
    CHECK(server.endpoint.connected == 0);
    CHECK(server.endpoint.reason == "peer certificate refused: certificate " + relay_subject +
                                        " expired on 2021-01-01 00:00:00 UTC");
    CHECK_THAT(client.reason, Catch::StartsWith("peer refused the handshake: certificate expired"));
  }
  SECTION("revoked relay certificate") {
    Server server(loop.get(), server_ctx, quick());
    Endpoint client;
    handshake(loop, server, client, load_ok(settings_for(Role::Client, "relay-revoked")));
    REQUIRE(loop.run_until([&] { return server.endpoint.is_closed() && client.is_closed(); }));
    CHECK(server.endpoint.connected == 0);
    CHECK_THAT(server.endpoint.reason, Catch::StartsWith("peer certificate refused: certificate " +
                                                         relay_subject + " (serial "));
    CHECK_THAT(server.endpoint.reason, Catch::EndsWith(") is revoked by the CRL"));
    CHECK_THAT(client.reason, Catch::StartsWith("peer refused the handshake: certificate revoked"));
  }
  // The server keeps serving after refusals.
  Server server(loop.get(), server_ctx, quick());
  Endpoint good;
  handshake(loop, server, good, load_ok(settings_for(Role::Client, "relay")));
  CHECK(good.connected == 1);
  shut_down(loop, {&good, &server.endpoint});
}

TEST_CASE("TLS: re-verification after a CRL reload drops a revoked peer", "[tls][connection]") {
  Loop loop;
  QuietLog quiet;
  TempDir dir;
  for (const char* f : {"ca.pem", "dispatcher.crt", "dispatcher.key"}) dir.copy(f, f);
  dir.copy("crl-empty.pem", "crl.pem");
  std::shared_ptr<const TlsContext> server_ctx =
      load_ok(TlsSettings::from_certs_path(dir.path.string(), "dispatcher", Role::Server));

  Server server(loop.get(), server_ctx, quick());
  Endpoint client;
  handshake(loop, server, client, load_ok(settings_for(Role::Client, "relay-revoked")));
  REQUIRE(server.endpoint.connected == 1);  // the old CRL does not list it yet
  CHECK(server.endpoint.conn->reverify(*server_ctx));

  dir.copy("crl.pem", "crl.pem");
  std::string error;
  REQUIRE(reload_if_changed(server_ctx, error) == ReloadResult::Reloaded);
  CHECK_FALSE(server.endpoint.conn->reverify(*server_ctx));
  REQUIRE(loop.run_until([&] { return server.endpoint.is_closed() && client.is_closed(); }));
  CHECK_THAT(server.endpoint.reason,
             Catch::StartsWith("peer certificate no longer accepted: certificate "));
  CHECK_THAT(server.endpoint.reason, Catch::EndsWith("is revoked by the CRL"));
  CHECK(client.reason == "closed by peer");
}

TEST_CASE("TLS: a plain TCP client is closed with a reason", "[tls][connection]") {
  Loop loop;
  QuietLog quiet;
  Server server(loop.get(), load_ok(settings_for(Role::Server, "dispatcher")), quick());
  Endpoint client;
  handshake(loop, server, client, nullptr);  // plain: "connected" at once
  REQUIRE(client.connected == 1);
  client.conn->write("summary\r\n");
  REQUIRE(loop.run_until([&] { return server.endpoint.is_closed() && client.is_closed(); }));
  CHECK(server.endpoint.connected == 0);
  CHECK(server.endpoint.reason == "not TLS: the peer sent 'summary\\r\\n' (a plain TCP client?)");
  CHECK(client.data.empty());
}

TEST_CASE("TLS: a TLS client meeting a plain TCP server", "[tls][connection]") {
  Loop loop;
  QuietLog quiet;
  Server server(loop.get(), nullptr, quick());
  server.endpoint.after_data = [](Endpoint& e, std::string_view) { e.conn->write("error\r\n"); };
  Endpoint client;
  handshake(loop, server, client, load_ok(settings_for(Role::Client, "relay")));
  REQUIRE(loop.run_until([&] { return client.is_closed(); }));
  CHECK(client.connected == 0);
  CHECK(client.reason == "not TLS: the peer sent 'error\\r\\n' (a plain TCP server?)");
  shut_down(loop, {&client, &server.endpoint});
}

TEST_CASE("TLS: garbage instead of a handshake", "[tls][connection]") {
  Loop loop;
  QuietLog quiet;
  auto server_ctx = load_ok(settings_for(Role::Server, "dispatcher"));
  std::string random = pattern(4096, 5);
  random[0] = 22;
  std::string oversized_record = std::string("\x16\x03\x03\xff\xff", 5) + std::string(1000, '\0');
  std::string fake_hello = std::string("\x16\x03\x01\x00\x40", 5) + pattern(64, 6);
  std::string flood(1024 * 1024, '\x16');
  std::string binary = pattern(100, 7);
  binary[0] = 0;
  for (const std::string* junk : {&random, &oversized_record, &fake_hello, &flood, &binary}) {
    Server server(loop.get(), server_ctx, quick());
    Endpoint client;
    handshake(loop, server, client, nullptr);
    REQUIRE(client.connected == 1);
    client.conn->write(*junk);
    REQUIRE(loop.run_until([&] { return server.endpoint.is_closed() && client.is_closed(); }));
    CHECK(server.endpoint.connected == 0);
    CHECK_FALSE(server.endpoint.reason.empty());
    INFO(server.endpoint.reason);
    CHECK_THAT(server.endpoint.reason, Catch::StartsWith("TLS handshake failed") ||
                                           Catch::StartsWith("not TLS") ||
                                           Catch::StartsWith("peer"));
  }
  // Still serving.
  Server server(loop.get(), server_ctx, quick());
  Endpoint good;
  handshake(loop, server, good, load_ok(settings_for(Role::Client, "relay")));
  CHECK(good.connected == 1);
  shut_down(loop, {&good, &server.endpoint});
}

TEST_CASE("TLS: handshake and connect timeouts", "[tls][connection]") {
  Loop loop;
  QuietLog quiet;
  SECTION("a client that never starts the handshake") {
    Server server(loop.get(), load_ok(settings_for(Role::Server, "dispatcher")), quick(100));
    Endpoint client;
    handshake(loop, server, client, nullptr);
    REQUIRE(loop.run_until([&] { return server.endpoint.is_closed() && client.is_closed(); }));
    CHECK(server.endpoint.reason == "TLS handshake not completed within 100 ms");
  }
  SECTION("a server that never answers") {
    uv_tcp_t* silent = nullptr;  // accepted, never answered; freed by its close callback
    Listener listener(loop.get(), [&](uv_stream_t* s) {
      silent = new uv_tcp_t;
      uv_tcp_init(loop.get(), silent);
      CHECK(uv_accept(s, reinterpret_cast<uv_stream_t*>(silent)) == 0);
    });
    Endpoint client;
    client.make(loop.get(), load_ok(settings_for(Role::Client, "relay")), quick(100));
    REQUIRE(client.conn->connect(listener.address(), ignored));
    REQUIRE(loop.run_until([&] { return client.is_closed(); }));
    CHECK(client.reason == "TLS handshake not completed within 100 ms");
    REQUIRE(silent);
    uv_close(reinterpret_cast<uv_handle_t*>(silent),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  }
  SECTION("nobody listening") {
    sockaddr_in closed_port;
    {
      Listener gone(loop.get(), [](uv_stream_t*) {});
      closed_port = *reinterpret_cast<const sockaddr_in*>(gone.address());
    }
    uv_run(loop.get(), UV_RUN_NOWAIT);
    Endpoint client;
    client.make(loop.get(), load_ok(settings_for(Role::Client, "relay")), quick(1000));
    REQUIRE(client.conn->connect(reinterpret_cast<const sockaddr*>(&closed_port), ignored));
    REQUIRE(loop.run_until([&] { return client.is_closed(); }));
    CHECK(client.reason ==
          "cannot connect to " + client.conn->peer_address() + ": connection refused");
  }
}

TEST_CASE("TLS: a peer that never reads hits the output limit", "[tls][connection]") {
  Loop loop;
  QuietLog quiet;
  ConnectionOptions opt = quick();
  opt.max_queued_bytes = 256 * 1024;
  Server server(loop.get(), load_ok(settings_for(Role::Server, "dispatcher")), opt);
  const std::string chunk = pattern(64 * 1024, 8);
  size_t written = 0;
  bool refused = false;
  server.endpoint.after_connect = [&](Endpoint& e) {
    // Keep writing as a careless producer would; the kernel buffers fill up,
    // then libuv's queue, then the limit closes the connection.
    for (int i = 0; i < 4096; ++i) {
      if (!e.conn->write(chunk)) {
        refused = true;
        break;
      }
      written += chunk.size();
    }
  };
  Endpoint client;
  client.after_connect = [](Endpoint& e) { e.conn->pause_reading(); };
  handshake(loop, server, client, load_ok(settings_for(Role::Client, "relay")));
  REQUIRE(loop.run_until([&] { return server.endpoint.is_closed(); }));
  CHECK(refused);
  CHECK(written < 4096 * chunk.size());
  CHECK_THAT(server.endpoint.reason, Catch::StartsWith("peer is not reading: "));
  CHECK_THAT(server.endpoint.reason, Catch::EndsWith("bytes of output waiting (limit 262144)"));
  CHECK_FALSE(server.endpoint.conn->write("more"));
  shut_down(loop, {&client, &server.endpoint});
}

TEST_CASE("TLS: pause and resume reading", "[tls][connection]") {
  Loop loop;
  QuietLog quiet;
  Server server(loop.get(), load_ok(settings_for(Role::Server, "dispatcher")), quick());
  Endpoint client;
  handshake(loop, server, client, load_ok(settings_for(Role::Client, "relay")));
  REQUIRE(client.connected == 1);
  client.conn->pause_reading();
  server.endpoint.conn->write("while paused\n");
  loop.run_until([] { return false; }, 50);
  CHECK(client.data.empty());
  client.conn->resume_reading();
  CHECK(client.data.empty());  // delivered from the loop, not from inside resume_reading()
  REQUIRE(loop.run_until([&] { return client.data == "while paused\n"; }));
  shut_down(loop, {&client, &server.endpoint});
}

TEST_CASE("TLS: detach, role mismatch and unused connections", "[tls][connection]") {
  Loop loop;
  QuietLog quiet;
  auto server_ctx = load_ok(settings_for(Role::Server, "dispatcher"));
  auto client_ctx = load_ok(settings_for(Role::Client, "relay"));
  {
    // Never started: no handles, no callbacks, nothing to clean up.
    Endpoint idle;
    idle.make(loop.get(), client_ctx);
    idle.conn->close("unused");
    CHECK(idle.closed == 0);
  }
  Server server(loop.get(), server_ctx, quick());
  Endpoint wrong;
  wrong.make(loop.get(), server_ctx);  // a server context cannot connect
  std::string error;
  CHECK_FALSE(wrong.conn->connect(server.listener.address(), error));
  CHECK(error == uv_strerror(UV_EINVAL));
  REQUIRE(loop.run_until([&] { return wrong.is_closed(); }));
  CHECK(wrong.reason == "TLS context is for a server; cannot connect with it");

  Endpoint client;
  handshake(loop, server, client, client_ctx);
  REQUIRE(client.connected == 1);
  client.conn->detach();
  server.endpoint.conn->close("bye");
  REQUIRE(loop.run_until([&] { return client.conn->state() == Connection::State::Closed; }));
  CHECK(client.closed == 0);  // detached: no callbacks
  CHECK(server.endpoint.closed == 1);
}
