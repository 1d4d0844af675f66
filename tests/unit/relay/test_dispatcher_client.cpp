// Unit tests for relay::DispatcherClient (relay/dispatcher_client.h): a real
// RelayEngine behind the client, talking real TLS over 127.0.0.1 to a scripted
// fake dispatcher (a listener plus tls::Connection in server mode with the
// sample certificates in certs/). Covers the command/reply exchange of spec
// B.10 (sessions, update, remove), unknown and malformed commands, a command
// line that is not "<name> <seq>", ping/pong (also a pong arriving in pieces
// right before a command), expired reports, reconnecting after the
// dispatcher drops the link with the session still bound to that dispatcher,
// and refusing a dispatcher certificate from another CA.
#include "relay/dispatcher_client.h"

#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

#include "../tls/tls_test_support.h"
#include "common/address.h"
#include "relay/relay_engine.h"

namespace {

// The reason of a failure, where a case does not look at it.
std::string ignored;

using mp::relay::DispatcherClient;
using mp::relay::RelayEngine;
namespace tt = mp::tls::test;

// A scripted dispatcher: accepts every connection with its own endpoint.
struct FakeDispatcher {
  std::shared_ptr<const mp::tls::TlsContext> ctx;
  std::vector<std::unique_ptr<tt::Endpoint>> accepted;
  std::unique_ptr<tt::Listener> listener;

  FakeDispatcher(uv_loop_t* loop, const mp::tls::TlsSettings& settings) {
    ctx = tt::load_ok(settings);
    listener = std::make_unique<tt::Listener>(loop, [this, loop](uv_stream_t* s) {
      auto e = std::make_unique<tt::Endpoint>();
      e->make(loop, ctx);
      e->conn->accept(s, ignored);
      accepted.push_back(std::move(e));
    });
  }

  mp::Endpoint endpoint() const {
    return mp::Endpoint::from_sockaddr(*reinterpret_cast<const sockaddr_in*>(listener->address()));
  }
  tt::Endpoint& last() { return *accepted.back(); }
};

struct Fixture {
  tt::Loop loop;
  mp::RelayConfig cfg;
  std::unique_ptr<RelayEngine> engine;
  std::unique_ptr<FakeDispatcher> dispatcher;
  std::unique_ptr<DispatcherClient> client;
  int pings = 0;

  explicit Fixture(const mp::tls::TlsSettings& dispatcher_settings) {
    cfg.port_start = 47000;
    cfg.port_end = 47100;
    cfg.keepalive_interval = 1;
    cfg.reconnect_delay = 1;
    engine = std::make_unique<RelayEngine>(loop.get(), cfg, *mp::parse_ipv4("127.0.0.1"));
    dispatcher = std::make_unique<FakeDispatcher>(loop.get(), dispatcher_settings);
    auto relay_ctx = tt::load_ok(tt::settings_for(mp::tls::Role::Client, "relay"));
    client =
        std::make_unique<DispatcherClient>(loop.get(), *engine, relay_ctx, mp::tls::Passport(), cfg,
                                           std::vector<mp::Endpoint>{dispatcher->endpoint()});
    engine->set_expired_sink(
        [this](uint64_t owner, const std::string& json) { client->deliver_expired(owner, json); });
  }

  ~Fixture() {
    client->close();
    loop.run_until(
        [&] {
          for (auto& e : dispatcher->accepted)
            if (!e->is_closed()) return false;
          return client->connected_count() == 0;
        },
        3000);
    client.reset();
    std::vector<tt::Endpoint*> eps;
    for (auto& e : dispatcher->accepted) eps.push_back(e.get());
    tt::shut_down(loop, eps);
    engine->close();
    dispatcher.reset();
    loop.run_until([] { return false; }, 50);
    // tt::Loop's destructor runs the loop dry and checks every handle closed.
  }

  bool wait_connected(size_t connections, uint64_t timeout_ms = 3000) {
    return loop.run_until(
        [&] {
          return dispatcher->accepted.size() >= connections && dispatcher->last().connected > 0 &&
                 client->connected_count() == 1;
        },
        timeout_ms);
  }

  // Next line the relay sent on `e` (without CRLF), skipping and counting
  // pings; empty if none arrived in time. (run_until evaluates its condition
  // once more at the end, so the condition only drops pings, which is
  // idempotent.)
  std::string next_line(tt::Endpoint& e, uint64_t timeout_ms = 2000) {
    auto ready = [&] {
      while (e.data.rfind("ping\r\n", 0) == 0) {
        e.data.erase(0, 6);
        ++pings;
      }
      return e.data.find("\r\n") != std::string::npos;
    };
    if (!loop.run_until(ready, timeout_ms)) return {};
    const size_t eol = e.data.find("\r\n");
    std::string line = e.data.substr(0, eol);
    e.data.erase(0, eol + 2);
    return line;
  }

  std::string ask(const std::string& wire) {
    dispatcher->last().conn->write(wire);
    return next_line(dispatcher->last());
  }
};

const std::string kUpdate =
    "update 1\r\n"
    "type: request\r\n"
    "call_id: call-dc-1\r\n"
    "cseq: 101\r\n"
    "from_uri: alice@example.com\r\n"
    "to_uri: bob@example.net\r\n"
    "from_tag: tag-a\r\n"
    "user_agent: test UA\r\n"
    "signaling_ip: 127.0.0.1\r\n"
    "media: audio:127.0.0.1:5000:sendrecv:ice=no\r\n"
    "\r\n";

}  // namespace

TEST_CASE("dispatcher client serves commands, keepalive and reconnects", "[relay][dispatcher]") {
  tt::QuietLog quiet;
  Fixture f(tt::settings_for(mp::tls::Role::Server, "dispatcher"));
  f.client->start();
  REQUIRE(f.wait_connected(1));

  // Spec B.10: the dispatcher's first command.
  CHECK(f.ask("sessions 0\r\n\r\n") == "0 []");

  // update creates a session on a port of the configured range.
  const std::string reply = f.ask(kUpdate);
  REQUIRE(reply.rfind("1 127.0.0.1 ", 0) == 0);
  const int port = std::stoi(reply.substr(12));
  CHECK(port >= 47000);
  CHECK(port <= 47100);

  // Unknown command, malformed header, command line that is not "<name> <seq>".
  CHECK(f.ask("bogus 2\r\n\r\n") == "2 error");
  CHECK(f.ask("remove 3\r\nno separator here\r\n\r\n") == "3 error");
  CHECK(f.ask("summary\r\n\r\nsummary 4 extra\r\n\r\nsummary 5\r\n\r\n").rfind("5 {", 0) == 0);

  // Several commands in one chunk: replies in arrival order.
  f.dispatcher->last().conn->write("bogus 6\r\n\r\nsessions 7\r\n\r\n");
  CHECK(f.next_line(f.dispatcher->last()) == "6 error");
  CHECK(f.next_line(f.dispatcher->last()).rfind("7 [{", 0) == 0);

  // Keepalive: a ping within keepalive_interval; pongs (one arriving in
  // pieces, right before a command) are consumed, never taken as a command.
  REQUIRE(
      f.loop.run_until([&] { return f.dispatcher->last().data.rfind("ping\r\n", 0) == 0; }, 1600));
  f.dispatcher->last().data.erase(0, 6);
  f.dispatcher->last().conn->write("po");
  f.loop.run_until([] { return false; }, 20);
  CHECK(f.ask("ng\r\npong\r\nsummary 8\r\n\r\n").rfind("8 {", 0) == 0);

  // Expired reports go to the owning dispatcher; unknown owners are dropped.
  f.client->deliver_expired(DispatcherClient::kFirstOwner, "{\"call_id\": \"x\"}");
  f.client->deliver_expired(DispatcherClient::kFirstOwner + 7, "{}");
  CHECK(f.next_line(f.dispatcher->last()) == "expired {\"call_id\": \"x\"}");

  // The dispatcher drops the link: the relay comes back (reconnect_delay 1 s
  // since the link lasted under 5 s) and the session is still there and
  // still bound to this dispatcher entry.
  f.dispatcher->last().conn->close("dispatcher restart");
  REQUIRE(f.loop.run_until([&] { return f.client->connected_count() == 0; }, 1000));
  REQUIRE(f.wait_connected(2, 2500));
  const std::string sessions = f.ask("sessions 0\r\n\r\n");
  CHECK(sessions.rfind("0 [{", 0) == 0);
  CHECK(sessions.find("call-dc-1") != std::string::npos);
  const std::string removed =
      f.ask("remove 1\r\ncall_id: call-dc-1\r\nfrom_tag: tag-a\r\nto_tag: tag-b\r\n\r\n");
  CHECK(removed.rfind("1 {", 0) == 0);
  CHECK(removed.find("\"call_id\": \"call-dc-1\"") != std::string::npos);
  CHECK(f.engine->session_count() == 0);
  CHECK(f.ask("remove 2\r\ncall_id: call-dc-1\r\nfrom_tag: tag-a\r\n\r\n") == "2 error");
}

TEST_CASE("dispatcher client drops the link on an over-long line", "[relay][dispatcher]") {
  tt::QuietLog quiet;
  Fixture f(tt::settings_for(mp::tls::Role::Server, "dispatcher"));
  f.client->start();
  REQUIRE(f.wait_connected(1));
  f.dispatcher->last().conn->write("update 1\r\ncall_id: " +
                                   std::string(mp::protocol::kMaxRelayLineAtRelay, 'x'));
  REQUIRE(f.loop.run_until([&] { return f.dispatcher->last().is_closed(); }, 2000));
  CHECK(f.dispatcher->last().data.find("1 ") == std::string::npos);
}

TEST_CASE("dispatcher client refuses a dispatcher certificate from another CA and retries",
          "[relay][dispatcher]") {
  tt::QuietLog quiet;
  // The fake dispatcher presents a certificate signed by other-ca.pem.
  Fixture f(tt::settings_for(mp::tls::Role::Server, "relay-otherca", "other-ca.pem", ""));
  f.client->start();
  // First attempt refused; another one reconnect_delay (1 s) later.
  REQUIRE(f.loop.run_until([&] { return f.dispatcher->accepted.size() >= 2; }, 2500));
  REQUIRE(f.loop.run_until([&] { return f.dispatcher->accepted[0]->is_closed(); }, 1000));
  CHECK(f.client->connected_count() == 0);
  for (auto& e : f.dispatcher->accepted) {
    CHECK(e->connected == 0);
    CHECK(e->data.empty());
  }
}
