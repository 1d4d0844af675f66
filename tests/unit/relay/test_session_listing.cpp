// The relay's sessions list in batches (relay/session_listing.cpp), driven
// through RelayEngine::handle() as a dispatcher drives it: `sessions_from`
// pages through the table in creation order, the joined batches are byte for
// byte the `sessions` array, and sessions created or removed between batches
// neither break the cursor nor get listed twice.
#include <uv.h>
#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

#include "protocol/session_batch.h"
#include "relay/relay_engine.h"

using mp::relay::RelayEngine;

namespace {

// The reason of a failure, where a case does not look at it.
std::string ignored;

struct Fixture {
  uv_loop_t loop;
  std::unique_ptr<RelayEngine> engine;

  Fixture() {
    uv_loop_init(&loop);
    mp::RelayConfig cfg;
    cfg.port_start = 46200;
    cfg.port_end = 46400;
    engine = std::make_unique<RelayEngine>(&loop, cfg, *mp::parse_ipv4("127.0.0.1"));
  }
  ~Fixture() {
    engine->close();
    uv_run(&loop, UV_RUN_DEFAULT);
    engine.reset();
    uv_loop_close(&loop);
  }

  std::string offer(const std::string& call_id) {
    mp::protocol::RelayCommand c;
    c.name = "update";
    c.headers = {{"type", "request"},
                 {"call_id", call_id},
                 {"cseq", "1"},
                 {"from_uri", "a@x"},
                 {"to_uri", "b@y"},
                 {"from_tag", "f-" + call_id},
                 {"user_agent", "UA"},
                 {"signaling_ip", "127.0.0.1"},
                 {"media", "audio:127.0.0.2:5000:sendrecv:ice=no"}};
    return engine->handle(c, 7);
  }
  std::string remove(const std::string& call_id) {
    mp::protocol::RelayCommand c;
    c.name = "remove";
    c.headers = {{"call_id", call_id}, {"from_tag", "f-" + call_id}};
    return engine->handle(c, 7);
  }
  std::string command(const std::string& name, std::vector<mp::protocol::Header> headers = {}) {
    mp::protocol::RelayCommand c;
    c.name = name;
    c.headers = std::move(headers);
    return engine->handle(c, 7);
  }
  std::string batch(uint64_t after, size_t limit) {
    return command(std::string(mp::protocol::kSessionsFromCommand),
                   mp::protocol::sessions_from_headers({after, limit}));
  }
  // Pages through the table `limit` at a time; the objects joined as `sessions` joins them.
  std::string page_through(size_t limit, size_t* batches = nullptr) {
    std::string joined;
    uint64_t after = 0;
    for (size_t n = 1; n <= 1000; ++n) {
      const std::string payload = batch(after, limit);
      auto b = mp::protocol::parse_sessions_batch(payload, ignored);
      REQUIRE(b);
      if (!b->objects.empty()) joined += (joined.empty() ? "" : ", ") + std::string(b->objects);
      if (!b->more) {
        if (batches) *batches = n;
        return "[" + joined + "]";
      }
      REQUIRE(b->cursor > after);
      after = b->cursor;
    }
    FAIL("the cursor never reached the end");
    return {};
  }
};

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("an empty relay lists nothing, in one batch", "[session_listing]") {
  Fixture f;
  CHECK(f.batch(0, 10) == "end");
  CHECK(f.command("sessions") == "[]");
}

TEST_CASE("batches join into exactly the sessions array, in creation order", "[session_listing]") {
  Fixture f;
  for (int i = 0; i < 7; ++i) REQUIRE(f.offer("call-" + std::to_string(i)) != "error");
  const std::string whole = f.command("sessions");
  for (int i = 0; i < 6; ++i)
    CHECK(whole.find("\"call-" + std::to_string(i) + "\"") <
          whole.find("\"call-" + std::to_string(i + 1) + "\""));
  size_t batches = 0;
  CHECK(f.page_through(3, &batches) == whole);
  CHECK(batches == 3);  // 3 + 3 + 1
  CHECK(f.page_through(7, &batches) == whole);
  CHECK(batches == 1);
  CHECK(f.page_through(1000, &batches) == whole);
  const std::string first = f.batch(0, 2);
  CHECK(first.rfind("more ", 0) == 0);
  CHECK(count_of(first, "\"call_id\"") == 2);
}

TEST_CASE("sessions removed or created between batches keep the cursor valid",
          "[session_listing]") {
  Fixture f;
  for (int i = 0; i < 6; ++i) REQUIRE(f.offer("call-" + std::to_string(i)) != "error");
  auto b = mp::protocol::parse_sessions_batch(f.batch(0, 2), ignored);
  REQUIRE(b);
  REQUIRE(b->more);
  const uint64_t cursor = b->cursor;
  REQUIRE(f.remove("call-1").front() == '{');  // listed already
  REQUIRE(f.remove("call-2").front() == '{');  // right after the cursor
  REQUIRE(f.offer("call-new") != "error");
  const std::string rest = f.batch(cursor, 100);
  CHECK(rest.rfind("end ", 0) == 0);
  CHECK(count_of(rest, "\"call_id\"") == 4);  // 3, 4, 5 and the new one
  CHECK(rest.find("\"call-2\"") == std::string::npos);
  CHECK(rest.find("\"call-1\"") == std::string::npos);
  CHECK(rest.find("\"call-3\"") < rest.find("\"call-new\""));
}

TEST_CASE("a malformed sessions_from is answered error", "[session_listing]") {
  Fixture f;
  REQUIRE(f.offer("call-0") != "error");
  CHECK(f.command("sessions_from") == "error");
  CHECK(f.command("sessions_from", {{"after", "x"}, {"limit", "1"}}) == "error");
}
