// The accounting stage (accounting/accounting.h) with scripted backends (a
// stand-in for a database or RADIUS server that the test controls): records
// of unanswered calls are skipped, a failing backend is retried without
// losing order, a refused record is set aside in the rejected file, and a
// blocked backend does not hold up the other one.
#include <catch2/catch.hpp>

#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "accounting/accounting.h"

using namespace mp::accounting;

namespace {

struct StageDir {
  std::string path;
  StageDir() {
    char tmpl[] = "/tmp/mp-acct-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~StageDir() {
    std::string cmd = "rm -rf '" + path + "'";
    if (system(cmd.c_str()) != 0) {
    }
  }
};

// A backend whose answers the test scripts: `failures` Retry answers first,
// `refuse` call-ids are Rejected, and while `blocked` deliver() waits.
class ScriptedBackend : public Backend {
 public:
  explicit ScriptedBackend(std::string name) : name_(std::move(name)) {}
  std::string_view name() const override { return name_; }
  DeliveryResult start() override { return {Delivery::Stored, ""}; }
  DeliveryResult deliver(const SessionRecord& r) override {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [this] { return !blocked; });
    ++attempts;
    if (failures > 0) {
      --failures;
      return {Delivery::Retry, "scripted outage"};
    }
    if (r.call_id == refuse) return {Delivery::Rejected, "scripted refusal"};
    stored.push_back(r.call_id);
    cv.notify_all();
    return {Delivery::Stored, ""};
  }
  // Waits (bounded) until `n` records are stored.
  bool wait_stored(size_t n, double seconds = 10) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::duration<double>(seconds),
                       [&] { return stored.size() >= n; });
  }
  void set_blocked(bool b) {
    std::lock_guard<std::mutex> lock(mu);
    blocked = b;
    cv.notify_all();
  }

  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> stored;
  int failures = 0;
  int attempts = 0;
  bool blocked = false;
  std::string refuse;

 private:
  std::string name_;
};

std::string record(const std::string& call_id, bool answered = true) {
  return "{\"call_id\": \"" + call_id + "\", \"from_tag\": \"f\", \"to_tag\": \"t\", " +
         "\"start_time\": " + (answered ? "1700000000.5" : "null") + ", \"streams\": []}";
}

}  // namespace

TEST_CASE("answered records reach the backend in order; unanswered ones are not accounted",
          "[accounting]") {
  StageDir dir;
  auto b = std::make_unique<ScriptedBackend>("database");
  ScriptedBackend* backend = b.get();
  std::vector<std::unique_ptr<Backend>> list;
  list.push_back(std::move(b));
  Accounting stage(std::move(list), dir.path, 100);
  std::string error;
  REQUIRE(stage.start(error));
  stage.submit(record("a"));
  stage.submit(record("never-answered", false));
  stage.submit(record("b"));
  REQUIRE(backend->wait_stored(2));
  stage.close();
  CHECK(backend->stored == std::vector<std::string>{"a", "b"});
  mp::metrics::Exposition e;
  stage.write_metrics(e);
  CHECK(e.text().find("mediaproxy_accounting_records_total{backend=\"database\",result="
                      "\"stored\"} 2") != std::string::npos);
  CHECK(e.text().find("mediaproxy_accounting_unanswered_total 1") != std::string::npos);
}

TEST_CASE("a failing backend is retried and loses nothing, in order", "[accounting]") {
  StageDir dir;
  auto b = std::make_unique<ScriptedBackend>("radius");
  ScriptedBackend* backend = b.get();
  backend->failures = 2;  // two backoffs: 1 s, then 2 s
  std::vector<std::unique_ptr<Backend>> list;
  list.push_back(std::move(b));
  Accounting stage(std::move(list), dir.path, 100);
  std::string error;
  REQUIRE(stage.start(error));
  for (const char* id : {"r1", "r2", "r3"}) stage.submit(record(id));
  REQUIRE(backend->wait_stored(3, 15));
  stage.close();
  CHECK(backend->stored == std::vector<std::string>{"r1", "r2", "r3"});
  CHECK(backend->attempts == 5);
}

TEST_CASE("a refused record is kept in the rejected file and the queue moves on", "[accounting]") {
  StageDir dir;
  auto b = std::make_unique<ScriptedBackend>("database");
  ScriptedBackend* backend = b.get();
  backend->refuse = "bad";
  std::vector<std::unique_ptr<Backend>> list;
  list.push_back(std::move(b));
  Accounting stage(std::move(list), dir.path, 100);
  std::string error;
  REQUIRE(stage.start(error));
  stage.submit(record("bad"));
  stage.submit("not json at all");
  stage.submit(record("good"));
  REQUIRE(backend->wait_stored(1));
  stage.close();
  std::ifstream in(dir.path + "/accounting-database.rejected");
  std::ostringstream ss;
  ss << in.rdbuf();
  CHECK(ss.str() == record("bad") + "\nnot json at all\n");
  CHECK(backend->stored == std::vector<std::string>{"good"});
}

TEST_CASE("a blocked backend holds up neither the caller nor the other backend", "[accounting]") {
  StageDir dir;
  auto slow_b = std::make_unique<ScriptedBackend>("database");
  auto fast_b = std::make_unique<ScriptedBackend>("radius");
  ScriptedBackend* slow = slow_b.get();
  ScriptedBackend* fast = fast_b.get();
  slow->set_blocked(true);
  std::vector<std::unique_ptr<Backend>> list;
  list.push_back(std::move(slow_b));
  list.push_back(std::move(fast_b));
  Accounting stage(std::move(list), dir.path, 10);
  std::string error;
  REQUIRE(stage.start(error));
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 50; ++i) stage.submit(record("c" + std::to_string(i)));
  const double submit_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(submit_s < 0.5);
  REQUIRE(fast->wait_stored(50));
  CHECK(slow->stored.empty());
  slow->set_blocked(false);
  REQUIRE(slow->wait_stored(50));
  stage.close();
  CHECK(slow->stored.size() == 50);
  CHECK(slow->stored.front() == "c0");
  CHECK(slow->stored.back() == "c49");
}
