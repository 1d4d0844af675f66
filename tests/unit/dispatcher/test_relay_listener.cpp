// Unit tests of the dispatcher's relay listener and TLS relay link
// (src/dispatcher/relay_listener.cpp): a scripted fake relay, a real TLS
// client connection on 127.0.0.1 with the sample certificates, talks to a
// RelayListener in front of a real Dispatcher. Covers the query of the
// relay's calls at connect (sessions_from pages, `sessions` for a relay
// without them), the byte-exact command format, replies matched by sequence
// number, ping/pong, command timeouts and the timed-out state, the `remove`
// of a session created by a late `update` reply, expiry reports, refused
// certificates, bad lines and replacement of a relay's connection, and
// call-ids of any bytes through `sessions` and expiry reports.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <deque>
#include <optional>
#include <string>

#include "../tls/tls_test_support.h"
#include "common/json_writer.h"
#include "dispatcher/dispatcher.h"
#include "dispatcher/relay_listener.h"
#include "protocol/request.h"

namespace {

// What the dispatcher asks a relay that has just connected: its calls, 200 at
// a time (sessions_from, sequence 0).
const std::string kAskSessions = "sessions_from 0\r\nafter: 0\r\nlimit: 200\r\n\r\n";

// The reason of a failure, where a case does not look at it.
std::string ignored;

using mp::tls::Role;
using mp::tls::test::load_ok;
using mp::tls::test::settings_for;
using FakeRelay = mp::tls::test::Endpoint;

// A port that was free a moment ago on 127.0.0.1.
uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  socklen_t len = sizeof sa;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  ::close(fd);
  return ntohs(sa.sin_port);
}

mp::protocol::Request module_update(const std::string& call_id, const std::string& type,
                                    const std::string& to_tag = "") {
  mp::protocol::Request r;
  r.command = "update";
  r.headers = {{"type", type},
               {"dialog_id", "1234:5678"},
               {"call_id", call_id},
               {"cseq", "101"},
               {"from_uri", "alice@example.com"},
               {"to_uri", "bob@example.net"},
               {"from_tag", "9fxced76sl"}};
  if (!to_tag.empty()) r.headers.push_back({"to_tag", to_tag});
  r.headers.push_back({"media", "audio:10.0.0.23:49170:sendrecv:ice=no"});
  return r;
}

struct Fixture {
  mp::tls::test::QuietLog quiet;
  mp::tls::test::Loop loop;
  mp::DispatcherConfig cfg;
  std::optional<mp::dispatcher::Dispatcher> dispatcher;
  std::optional<mp::dispatcher::RelayListener> listener;
  std::deque<FakeRelay> relays;  // outlive the test body: teardown closes them
  sockaddr_in address{};

  explicit Fixture(double relay_timeout = 0.2, int recover_interval = 60) {
    cfg.relay_timeout = relay_timeout;
    cfg.relay_recover_interval = recover_interval;
    dispatcher.emplace(loop.get(), cfg);
    listener.emplace(loop.get(), *dispatcher, load_ok(settings_for(Role::Server, "dispatcher")),
                     mp::tls::Passport(), cfg);
    const uint16_t port = free_port();
    std::string error;
    REQUIRE(listener->listen(mp::Endpoint{*mp::parse_ipv4("127.0.0.1"), port}, error));
    uv_ip4_addr("127.0.0.1", port, &address);
  }
  ~Fixture() {
    listener->close();
    dispatcher->close();
    std::vector<FakeRelay*> all;
    for (auto& r : relays) all.push_back(&r);
    mp::tls::test::shut_down(loop, all);
    uv_run(loop.get(), UV_RUN_NOWAIT);
    listener.reset();
    dispatcher.reset();
  }

  // A new fake relay connecting with certificate `cert`.
  FakeRelay& connect(const std::string& cert = "relay") {
    FakeRelay& relay = relays.emplace_back();
    relay.make(loop.get(), load_ok(settings_for(Role::Client, cert)));
    REQUIRE(relay.conn->connect(reinterpret_cast<const sockaddr*>(&address), ignored));
    return relay;
  }
  // Waits until the relay has received `text`, then forgets what it received.
  bool expect(FakeRelay& relay, const std::string& text, uint64_t ms = 2000) {
    const bool ok = loop.run_until([&] { return relay.data.size() >= text.size(); }, ms);
    INFO("received: " << relay.data);
    CHECK(ok);
    CHECK(relay.data == text);
    const bool same = relay.data == text;
    relay.data.clear();
    return same;
  }
  // Sends a module request and waits for its reply.
  std::string handle(const mp::protocol::Request& req, FakeRelay* answer_from = nullptr,
                     const std::string& answer = "") {
    std::optional<std::string> reply;
    dispatcher->handle(req, [&](std::string r) { reply = std::move(r); });
    if (answer_from) {
      REQUIRE(loop.run_until([&] { return !answer_from->data.empty() || reply.has_value(); }));
      if (!reply) answer_from->conn->write(answer);
    }
    REQUIRE(loop.run_until([&] { return reply.has_value(); }));
    return *reply;
  }
};

}  // namespace

TEST_CASE("relay link: sessions, update, ping, timeout and orphan cleanup",
          "[dispatcher][relay_listener]") {
  Fixture f;
  FakeRelay& relay = f.connect();
  REQUIRE(f.expect(relay, kAskSessions));
  CHECK(f.listener->relay_count() == 1);

  // Not usable before `sessions` is answered: the module gets an error and
  // nothing reaches the relay.
  CHECK(f.handle(module_update("early@x", "request")) == "error");
  CHECK(relay.data.empty());

  relay.conn->write("0 end {\"call_id\": \"old@x\", \"from_tag\": \"a\"}\r\n");
  REQUIRE(f.loop.run_until([&] { return f.dispatcher->session_count() == 1; }));

  // An update reaches the relay byte for byte and its reply comes back.
  std::optional<std::string> reply;
  f.dispatcher->handle(module_update("3c26700d2b0f@10.0.0.23", "request"),
                       [&](std::string r) { reply = std::move(r); });
  REQUIRE(f.expect(relay,
                   "update 1\r\ntype: request\r\ndialog_id: 1234:5678\r\n"
                   "call_id: 3c26700d2b0f@10.0.0.23\r\ncseq: 101\r\n"
                   "from_uri: alice@example.com\r\nto_uri: bob@example.net\r\n"
                   "from_tag: 9fxced76sl\r\nmedia: audio:10.0.0.23:49170:sendrecv:ice=no\r\n\r\n"));
  relay.conn->write("1 127.0.0.1 40002\r\n");
  REQUIRE(f.loop.run_until([&] { return reply.has_value(); }));
  CHECK(*reply == "127.0.0.1 40002");
  CHECK(f.dispatcher->session_count() == 2);

  // Keepalive.
  relay.conn->write("ping\r\n");
  REQUIRE(f.expect(relay, "pong\r\n"));

  // Expiry report for the adopted call: its record goes away.
  relay.conn->write("expired {\"call_id\": \"old@x\", \"start_time\": null, \"streams\": []}\r\n");
  REQUIRE(f.loop.run_until([&] { return f.dispatcher->session_count() == 1; }));

  // An unanswered update times out within relay_timeout.
  const uint64_t started = uv_now(f.loop.get());
  reply.reset();
  f.dispatcher->handle(module_update("late@x", "reply", "tt2"),
                       [&](std::string r) { reply = std::move(r); });
  REQUIRE(f.loop.run_until([&] { return reply.has_value(); }, 2000));
  CHECK(*reply == "error");
  const uint64_t took = uv_now(f.loop.get()) - started;
  CHECK(took >= 190);
  CHECK(took < 1000);
  REQUIRE(relay.data.rfind("update 2\r\n", 0) == 0);
  relay.data.clear();

  // Timed out: no new sessions go to this relay.
  CHECK(f.handle(module_update("new@x", "request")) == "error");
  CHECK(relay.data.empty());

  // The late, successful answer is followed by a remove of that session.
  relay.conn->write("2 127.0.0.1 40000\r\n");
  REQUIRE(f.expect(relay,
                   "remove 3\r\ncall_id: late@x\r\nfrom_tag: 9fxced76sl\r\nto_tag: tt2\r\n\r\n"));
  relay.conn->write("3 {\"call_id\": \"late@x\"}\r\n");  // ignored

  // A ping clears the timed-out state.
  relay.conn->write("ping\r\n");
  REQUIRE(f.expect(relay, "pong\r\n"));
  reply.reset();
  f.dispatcher->handle(module_update("new@x", "request"),
                       [&](std::string r) { reply = std::move(r); });
  REQUIRE(f.loop.run_until([&] { return relay.data.find("\r\n\r\n") != std::string::npos; }));
  CHECK(relay.data.rfind("update 4\r\n", 0) == 0);
  relay.data.clear();
  relay.conn->write("4 127.0.0.1 40004\r\n");
  REQUIRE(f.loop.run_until([&] { return reply.has_value(); }));
  CHECK(*reply == "127.0.0.1 40004");

  // An error reply for an unknown sequence number is ignored; the link lives.
  relay.conn->write("77 error\r\n");
  relay.conn->write("ping\r\n");
  REQUIRE(f.expect(relay, "pong\r\n"));
  CHECK(f.listener->relay_count() == 1);
}

TEST_CASE("relay link: a relay's calls are learnt page by page, or at once from an old relay",
          "[dispatcher][relay_listener]") {
  Fixture f;
  FakeRelay& relay = f.connect();
  REQUIRE(f.expect(relay, kAskSessions));
  relay.conn->write("0 more 7 {\"call_id\": \"p1@x\"}, {\"call_id\": \"p2@x\"}\r\n");
  REQUIRE(f.expect(relay, "sessions_from 1\r\nafter: 7\r\nlimit: 200\r\n\r\n"));
  // Not ready until the last page: the module still gets an error.
  CHECK(f.dispatcher->session_count() == 0);
  relay.conn->write("1 end {\"call_id\": \"p3@x\"}\r\n");
  REQUIRE(f.loop.run_until([&] { return f.dispatcher->session_count() == 3; }));
  CHECK(f.dispatcher->has_session("p1@x"));
  CHECK(f.dispatcher->has_session("p3@x"));
}

TEST_CASE("relay link: a relay without sessions_from is asked sessions at once",
          "[dispatcher][relay_listener]") {
  Fixture f;
  FakeRelay& old = f.connect();
  REQUIRE(f.expect(old, kAskSessions));
  old.conn->write("0 error\r\n");
  REQUIRE(f.expect(old, "sessions 1\r\n\r\n"));
  old.conn->write("1 [{\"call_id\": \"o1@x\"}, {\"call_id\": \"o2@x\"}]\r\n");
  REQUIRE(f.loop.run_until([&] { return f.dispatcher->session_count() == 2; }));
  CHECK(f.dispatcher->has_session("o1@x"));
}

TEST_CASE("relay link: a page that is not a batch of sessions closes the link",
          "[dispatcher][relay_listener]") {
  Fixture f;
  FakeRelay& relay = f.connect();
  REQUIRE(f.expect(relay, kAskSessions));
  relay.conn->write("0 more 3 {\"call_id\": \r\n");  // cut JSON
  REQUIRE(f.loop.run_until([&] { return relay.is_closed(); }));
  CHECK(f.dispatcher->session_count() == 0);
}

TEST_CASE("relay link: call-ids with any bytes are adopted and expired byte-exact",
          "[dispatcher][relay_listener]") {
  Fixture f;
  FakeRelay& relay = f.connect();
  REQUIRE(f.expect(relay, kAskSessions));
  const std::string nul("held\0nul@x", 10);
  const std::string high = "held\xff\xfe\x80@x";
  const std::string mixed = "\xc3\xa9\xc3\x28\xed\xb3\xbf\x1b\n@x";
  // The relay writes its records with JsonWriter (json_quote).
  relay.conn->write("0 end {\"call_id\": " + mp::json_quote(nul) + "}, {\"call_id\": " +
                    mp::json_quote(high) + "}, {\"call_id\": " + mp::json_quote(mixed) + "}\r\n");
  REQUIRE(f.loop.run_until([&] { return f.dispatcher->session_count() == 3; }));
  CHECK(f.dispatcher->has_session(nul));
  CHECK(f.dispatcher->has_session(high));
  CHECK(f.dispatcher->has_session(mixed));

  // A new call with such bytes reaches the relay unchanged.
  const std::string fresh = "new\xff\0@x";
  std::optional<std::string> reply;
  f.dispatcher->handle(module_update(fresh, "request"),
                       [&](std::string r) { reply = std::move(r); });
  REQUIRE(f.loop.run_until([&] { return relay.data.find("\r\n\r\n") != std::string::npos; }));
  CHECK(relay.data.find("\r\ncall_id: " + fresh + "\r\n") != std::string::npos);
  relay.data.clear();
  relay.conn->write("1 127.0.0.1 40002\r\n");
  REQUIRE(f.loop.run_until([&] { return reply.has_value(); }));
  CHECK(f.dispatcher->session_count() == 4);

  // Each expiry report finds its call: the table empties.
  size_t left = 4;
  for (const std::string& id : {nul, high, mixed, fresh}) {
    relay.conn->write("expired {\"call_id\": " + mp::json_quote(id) +
                      ", \"start_time\": null, \"streams\": []}\r\n");
    --left;
    REQUIRE(f.loop.run_until([&] { return f.dispatcher->session_count() == left; }));
    CHECK_FALSE(f.dispatcher->has_session(id));
  }
}

TEST_CASE("relay link: a late error for a timed-out update sends no remove",
          "[dispatcher][relay_listener]") {
  Fixture f;
  FakeRelay& relay = f.connect();
  REQUIRE(f.expect(relay, kAskSessions));
  relay.conn->write("0 end\r\n");
  std::optional<std::string> reply;
  f.loop.run_until([] { return false; }, 50);  // let the answer arrive
  f.dispatcher->handle(module_update("x@x", "request"),
                       [&](std::string r) { reply = std::move(r); });
  REQUIRE(f.loop.run_until([&] { return reply.has_value(); }, 2000));
  CHECK(*reply == "error");
  CHECK(relay.data.rfind("update 1\r\n", 0) == 0);
  relay.data.clear();
  relay.conn->write("1 error\r\n");
  relay.conn->write("ping\r\n");
  REQUIRE(f.expect(relay, "pong\r\n"));
}

TEST_CASE("relay link: garbage from the relay closes only that link",
          "[dispatcher][relay_listener]") {
  Fixture f;
  FakeRelay& relay = f.connect();
  REQUIRE(f.expect(relay, kAskSessions));
  relay.conn->write("0 end\r\n");
  relay.conn->write("this is not a reply\r\n");  // "this" is not a sequence number
  REQUIRE(f.loop.run_until([&] { return relay.is_closed(); }));
  REQUIRE(f.loop.run_until([&] { return f.listener->relay_count() == 0; }));

  FakeRelay& again = f.connect();
  REQUIRE(f.expect(again, kAskSessions));
}

TEST_CASE("relay listener: a certificate from another CA is refused",
          "[dispatcher][relay_listener]") {
  Fixture f;
  FakeRelay& stranger = f.connect("relay-otherca");
  REQUIRE(f.loop.run_until([&] { return stranger.is_closed(); }));
  CHECK(stranger.connected == 0);
  CHECK(f.listener->relay_count() == 0);

  FakeRelay& relay = f.connect();
  REQUIRE(f.expect(relay, kAskSessions));
  CHECK(f.listener->relay_count() == 1);
}

TEST_CASE("relay listener: a new connection from the same IP replaces the old one",
          "[dispatcher][relay_listener]") {
  Fixture f(2.0);  // long timeout: the pending update must fail by replacement
  FakeRelay& first = f.connect();
  REQUIRE(f.expect(first, kAskSessions));
  first.conn->write("0 end\r\n");
  f.loop.run_until([] { return false; }, 50);

  std::optional<std::string> reply;
  f.dispatcher->handle(module_update("a@x", "request"),
                       [&](std::string r) { reply = std::move(r); });
  REQUIRE(f.loop.run_until([&] { return first.data.find("\r\n\r\n") != std::string::npos; }));
  CHECK(first.data.rfind("update 1\r\n", 0) == 0);

  const uint64_t started = uv_now(f.loop.get());
  FakeRelay& second = f.connect();
  REQUIRE(f.expect(second, kAskSessions));
  REQUIRE(f.loop.run_until([&] { return first.is_closed() && reply.has_value(); }));
  CHECK(*reply == "error");
  CHECK(uv_now(f.loop.get()) - started < 1500);
  CHECK(f.listener->relay_count() == 1);

  second.conn->write("0 end\r\n");
  f.loop.run_until([] { return false; }, 50);
  reply.reset();
  f.dispatcher->handle(module_update("b@x", "request"),
                       [&](std::string r) { reply = std::move(r); });
  REQUIRE(f.loop.run_until([&] { return second.data.find("\r\n\r\n") != std::string::npos; }));
  CHECK(second.data.rfind("update 1\r\n", 0) == 0);
  second.conn->write("1 127.0.0.1 40010\r\n");
  REQUIRE(f.loop.run_until([&] { return reply.has_value(); }));
  CHECK(*reply == "127.0.0.1 40010");
}

TEST_CASE("relay link: a timed-out relay that does not ping is dropped",
          "[dispatcher][relay_listener]") {
  Fixture f(0.1, 1);
  FakeRelay& relay = f.connect();
  REQUIRE(f.expect(relay, kAskSessions));
  const uint64_t started = uv_now(f.loop.get());
  // `sessions` is never answered: timed out, then closed after 1 s.
  REQUIRE(f.loop.run_until([&] { return relay.is_closed(); }, 3000));
  const uint64_t took = uv_now(f.loop.get()) - started;
  CHECK(took >= 1000);
  CHECK(took < 2500);
  REQUIRE(f.loop.run_until([&] { return f.listener->relay_count() == 0; }));
}
