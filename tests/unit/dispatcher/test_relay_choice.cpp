// Which relay the dispatcher gives a new call (dispatcher.cpp, candidates()),
// with fake relay links in front of a real Dispatcher: the least loaded
// relay, by live sessions counted exactly as calls are placed, removed,
// expire or lose their relay, never by a scan of the table per request; a
// relay that refuses a call hands it to the next one.
#include <uv.h>
#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dispatcher/dispatcher.h"

using mp::dispatcher::Dispatcher;
using mp::dispatcher::RelayLink;

namespace {

// Answers at once: an update with a port, a remove with an empty record.
class FakeRelay final : public RelayLink {
 public:
  explicit FakeRelay(std::string ip) : ip_(std::move(ip)) {}

  void send(const std::string& command, const std::vector<mp::protocol::Header>& headers,
            ReplyCallback on_reply) override {
    std::string call_id;
    for (const auto& h : headers)
      if (h.name == "call_id") call_id = h.value;
    if (command == "update") {
      if (refuse) {
        on_reply(std::string("error"));
        return;
      }
      calls.push_back(call_id);
      on_reply(ip_ + " 40000");
    } else if (command == "remove") {
      on_reply(std::string("{\"call_id\": \"" + call_id + "\", \"streams\": []}"));
    } else {
      on_reply(std::nullopt);
    }
  }
  void on_expired(ExpiredCallback cb) override { expired_ = std::move(cb); }
  std::string relay_ip() const override { return ip_; }
  bool usable() const override { return true; }
  void mark_halting() override {}

  // The relay reports the end of a call (no traffic), as a relay link would;
  // `answered`: it had started (the dispatcher then keeps an expired record).
  void expire(const std::string& call_id, bool answered = false) {
    expired_("{\"call_id\": \"" + call_id + "\", \"from_tag\": \"f\", " +
             (answered ? "\"start_time\": 1700000000, " : "") + "\"streams\": []}");
  }

  bool refuse = false;
  std::vector<std::string> calls;  // updates it accepted, in order

 private:
  std::string ip_;
  ExpiredCallback expired_;
};

struct Fixture {
  // Expected warnings (refused calls) and session-ended lines stay out of the output.
  mp::log::Level saved_level = mp::log::level();
  uv_loop_t loop;
  std::optional<Dispatcher> dispatcher;
  FakeRelay a{"192.0.2.1"}, b{"192.0.2.2"};

  Fixture() {
    mp::log::set_level(mp::log::Level::Critical);
    uv_loop_init(&loop);
    dispatcher.emplace(&loop, mp::DispatcherConfig{});
    dispatcher->add_relay(&a);
    dispatcher->add_relay(&b);
  }
  ~Fixture() {
    dispatcher->close();
    uv_run(&loop, UV_RUN_DEFAULT);
    dispatcher.reset();
    uv_loop_close(&loop);
    mp::log::set_level(saved_level);
  }

  std::string send(const std::string& command, const std::string& call_id) {
    mp::protocol::Request req;
    req.command = command;
    req.headers = {{"call_id", call_id}, {"from_tag", "f"}, {"dialog_id", "d:" + call_id}};
    if (command == "update")
      req.headers.insert(req.headers.end(), {{"type", "request"}, {"cseq", "1"}});
    std::string reply = "none";
    dispatcher->handle(std::move(req), [&reply](std::string r) { reply = std::move(r); });
    return reply;
  }
  // The relay that took a new call.
  const char* place(const std::string& call_id) {
    const size_t before_a = a.calls.size();
    REQUIRE(send("update", call_id).find(" 40000") != std::string::npos);
    return a.calls.size() > before_a ? "a" : "b";
  }
};

}  // namespace

TEST_CASE("relay choice: new calls go to the relay with fewer live sessions", "[dispatcher]") {
  Fixture f;
  // Alternates while the loads are equal.
  std::map<std::string, int> placed;
  for (int i = 0; i < 6; ++i) ++placed[f.place("c" + std::to_string(i))];
  CHECK(placed["a"] == 3);
  CHECK(placed["b"] == 3);
  CHECK(f.dispatcher->load_of(&f.a) == 3);
  CHECK(f.dispatcher->load_of(&f.b) == 3);

  // Three of a's calls end: the next three new calls go to a at once (the
  // counts follow every end; no recount is waited for).
  int removed = 0;
  for (const std::string& id : std::vector<std::string>(f.a.calls)) {
    if (removed == 3) break;
    CHECK(f.send("remove", id) == "removed");
    ++removed;
  }
  CHECK(f.dispatcher->load_of(&f.a) == 0);
  for (int i = 0; i < 3; ++i) CHECK(std::string(f.place("n" + std::to_string(i))) == "a");
  CHECK(f.dispatcher->load_of(&f.a) == 3);

  // A call of b that its relay reports ended (unanswered: forgotten) counts off too.
  f.b.expire(f.b.calls.front());
  CHECK(f.dispatcher->load_of(&f.b) == 2);
  CHECK(std::string(f.place("after-expiry")) == "b");

  // Re-INVITEs of a live call do not count it twice.
  CHECK(f.send("update", "after-expiry").find(" 40000") != std::string::npos);
  CHECK(f.dispatcher->load_of(&f.b) == 3);
  CHECK(f.dispatcher->live_session_count() == 6);

  // An answered call that expires keeps its record (for the proxy's remove)
  // but no longer counts, once however often it is reported.
  const std::string answered = f.b.calls.back();
  f.b.expire(answered, true);
  f.b.expire(answered, true);
  CHECK(f.dispatcher->load_of(&f.b) == 2);
  CHECK(f.dispatcher->session_count() == 6);
  CHECK(f.dispatcher->live_session_count() == 5);
  CHECK(f.send("remove", answered) == "removed");
  CHECK(f.dispatcher->session_count() == 5);
  CHECK(f.dispatcher->live_session_count() == 5);
  CHECK(f.dispatcher->load_of(&f.b) == 2);
}

TEST_CASE("relay choice: a relay that refuses passes the call on and counts nothing",
          "[dispatcher]") {
  Fixture f;
  f.a.refuse = true;
  for (int i = 0; i < 4; ++i) CHECK(std::string(f.place("r" + std::to_string(i))) == "b");
  CHECK(f.dispatcher->load_of(&f.a) == 0);
  CHECK(f.dispatcher->load_of(&f.b) == 4);
  f.a.refuse = false;
  for (int i = 0; i < 4; ++i) CHECK(std::string(f.place("s" + std::to_string(i))) == "a");

  // A relay that goes away takes its count with it.
  f.dispatcher->remove_relay(&f.b);
  CHECK(f.dispatcher->load_of(&f.b) == 0);
  CHECK(f.dispatcher->load_of(&f.a) == 4);
}
