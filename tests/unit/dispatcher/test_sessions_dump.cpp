// The streamed management `sessions` answer (dispatcher/sessions_dump.cpp),
// with fake relays in front of a real Dispatcher on a uv loop: the answer is
// byte for byte the join of every relay's array, whether relays page with
// `sessions_from` or only know `sessions`; a relay that fails contributes
// what it listed; the dump writes nothing while the client has no room and
// continues on drained(); one batch is produced per loop iteration; a
// cancelled dump writes nothing more.
#include <uv.h>
#include <catch2/catch.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dispatcher/dispatcher.h"
#include "dispatcher/sessions_dump.h"
#include "protocol/session_batch.h"

using mp::dispatcher::SessionsDump;

namespace {

// The reason of a failure, where a case does not look at it.
std::string ignored;

class FakeRelay final : public mp::dispatcher::RelayLink {
 public:
  enum class Kind { Paging, Legacy, FailsAfterFirstBatch };
  FakeRelay(Kind kind, std::vector<std::string> objects) : kind_(kind), objects_(objects) {}

  void send(const std::string& command, const std::vector<mp::protocol::Header>& headers,
            ReplyCallback on_reply) override {
    commands.push_back(command);
    if (command == "sessions") {
      std::string out = "[";
      for (size_t i = 0; i < objects_.size(); ++i) out += (i ? ", " : "") + objects_[i];
      on_reply(out + "]");
      return;
    }
    if (kind_ == Kind::Legacy) {
      on_reply(std::string("error"));
      return;
    }
    if (kind_ == Kind::FailsAfterFirstBatch && served_ > 0) {
      on_reply(std::nullopt);
      return;
    }
    auto q = mp::protocol::parse_sessions_from(headers, ignored);
    REQUIRE(q);
    std::string objs;
    size_t i = q->after;
    for (size_t n = 0; i < objects_.size() && n < q->limit; ++i, ++n)
      objs += (n ? ", " : "") + objects_[i];
    ++served_;
    on_reply(mp::protocol::format_sessions_batch({i < objects_.size(), i, objs}));
  }
  void on_expired(ExpiredCallback) override {}
  std::string relay_ip() const override { return "192.0.2.1"; }
  bool usable() const override { return true; }
  void mark_halting() override {}

  std::vector<std::string> commands;

 private:
  Kind kind_;
  std::vector<std::string> objects_;
  size_t served_ = 0;
};

std::vector<std::string> objects(const std::string& prefix, size_t n) {
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i)
    out.push_back("{\"call_id\": \"" + prefix + std::to_string(i) + "\", \"streams\": []}");
  return out;
}

std::string joined(const std::vector<std::vector<std::string>>& relays) {
  std::string out = "[";
  bool first = true;
  for (const auto& r : relays)
    for (const auto& o : r) {
      out += (first ? "" : ", ") + o;
      first = false;
    }
  return out + "]\r\n";
}

struct Fixture {
  uv_loop_t loop;
  std::optional<mp::dispatcher::Dispatcher> dispatcher;
  std::string text;
  bool room = true;
  bool finished = false;

  Fixture() {
    uv_loop_init(&loop);
    dispatcher.emplace(&loop, mp::DispatcherConfig{});
  }
  ~Fixture() {
    dispatcher->close();
    uv_run(&loop, UV_RUN_DEFAULT);
    dispatcher.reset();
    uv_loop_close(&loop);
  }
  std::shared_ptr<SessionsDump> start() {
    SessionsDump::Output out;
    out.write = [this](std::string_view t) {
      text += t;
      return true;
    };
    out.has_room = [this] { return room; };
    out.finished = [this] { finished = true; };
    return SessionsDump::start(&loop, *dispatcher, std::move(out));
  }
  // Loop iterations until finished (at most `limit`).
  int run(int limit = 1000) {
    int n = 0;
    while (!finished && n < limit) {
      uv_run(&loop, UV_RUN_NOWAIT);
      ++n;
    }
    return n;
  }
};

}  // namespace

TEST_CASE("no relay: the answer is []", "[sessions_dump]") {
  Fixture f;
  auto d = f.start();
  f.run(10);
  CHECK(f.finished);
  CHECK(f.text == "[]\r\n");
}

TEST_CASE("paging, legacy and empty relays join byte for byte, one batch per iteration",
          "[sessions_dump]") {
  Fixture f;
  const auto a = objects("a", 2 * SessionsDump::kBatchSessions + 5);
  const auto b = objects("b", 3);
  FakeRelay ra(FakeRelay::Kind::Paging, a), empty(FakeRelay::Kind::Paging, {}),
      rb(FakeRelay::Kind::Legacy, b);
  f.dispatcher->add_relay(&ra);
  f.dispatcher->add_relay(&empty);
  f.dispatcher->add_relay(&rb);
  auto d = f.start();
  CHECK(f.text == "[");  // nothing more before the loop runs
  const int iterations = f.run();
  REQUIRE(f.finished);
  CHECK(f.text == joined({a, b}));
  CHECK(ra.commands.size() == 3);
  CHECK(rb.commands == std::vector<std::string>{"sessions_from", "sessions"});
  CHECK(iterations >= 6);  // 3 + 1 + 2 batches, each in its own iteration
}

TEST_CASE("a relay that stops answering contributes what it listed", "[sessions_dump]") {
  Fixture f;
  const auto a = objects("a", SessionsDump::kBatchSessions + 1);
  const auto b = objects("b", 2);
  FakeRelay ra(FakeRelay::Kind::FailsAfterFirstBatch, a), rb(FakeRelay::Kind::Paging, b);
  f.dispatcher->add_relay(&ra);
  f.dispatcher->add_relay(&rb);
  auto d = f.start();
  f.run();
  REQUIRE(f.finished);
  const std::vector<std::string> listed(a.begin(), a.begin() + SessionsDump::kBatchSessions);
  CHECK(f.text == joined({listed, b}));
}

TEST_CASE("a relay removed during the dump is skipped", "[sessions_dump]") {
  Fixture f;
  const auto a = objects("a", 2 * SessionsDump::kBatchSessions);
  const auto b = objects("b", 2);
  FakeRelay ra(FakeRelay::Kind::Paging, a), rb(FakeRelay::Kind::Paging, b);
  f.dispatcher->add_relay(&ra);
  f.dispatcher->add_relay(&rb);
  auto d = f.start();
  while (ra.commands.empty()) uv_run(&f.loop, UV_RUN_NOWAIT);
  f.dispatcher->remove_relay(&ra);
  f.run();
  REQUIRE(f.finished);
  const std::vector<std::string> listed(a.begin(), a.begin() + SessionsDump::kBatchSessions);
  CHECK(f.text == joined({listed, b}));
}

TEST_CASE("no room: the dump waits for drained() and says since when", "[sessions_dump]") {
  Fixture f;
  const auto a = objects("a", 3 * SessionsDump::kBatchSessions);
  FakeRelay ra(FakeRelay::Kind::Paging, a);
  f.dispatcher->add_relay(&ra);
  auto d = f.start();
  uv_run(&f.loop, UV_RUN_NOWAIT);
  REQUIRE(ra.commands.size() == 1);
  f.room = false;
  for (int i = 0; i < 10; ++i) uv_run(&f.loop, UV_RUN_NOWAIT);
  CHECK(ra.commands.size() == 1);  // asked nothing more while the client is full
  CHECK(d->waiting_since() != 0);
  const size_t written = f.text.size();
  f.room = true;
  d->drained();
  f.run();
  REQUIRE(f.finished);
  CHECK(f.text.size() > written);
  CHECK(f.text == joined({a}));
  CHECK(d->waiting_since() == 0);
}

TEST_CASE("a cancelled dump writes nothing more and never finishes", "[sessions_dump]") {
  Fixture f;
  FakeRelay ra(FakeRelay::Kind::Paging, objects("a", 3 * SessionsDump::kBatchSessions));
  f.dispatcher->add_relay(&ra);
  auto d = f.start();
  uv_run(&f.loop, UV_RUN_NOWAIT);
  const std::string so_far = f.text;
  d->cancel();
  for (int i = 0; i < 10; ++i) uv_run(&f.loop, UV_RUN_NOWAIT);
  CHECK(f.text == so_far);
  CHECK_FALSE(f.finished);
  CHECK(d->done());
}
