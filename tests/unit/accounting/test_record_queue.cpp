// The accounting queue (accounting/record_queue.h): order, the memory bound
// with records waiting in the journal only, truncation once drained, and no
// loss across a clean restart or a crash (replayed, duplicates allowed).
#include <catch2/catch.hpp>

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "accounting/record_queue.h"

using mp::accounting::RecordQueue;

namespace {

struct QueueDir {
  std::string path;
  QueueDir() {
    char tmpl[] = "/tmp/mp-queue-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~QueueDir() {
    std::string cmd = "rm -rf '" + path + "'";
    if (system(cmd.c_str()) != 0) {
    }
  }
  std::string journal() const { return path + "/accounting-test.journal"; }
};

std::string file_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool exists(const std::string& path) {
  return access(path.c_str(), F_OK) == 0;
}

std::string rec(int i) {
  return "{\"call_id\": \"c" + std::to_string(i) + "\"}";
}

// Takes `n` records through next()/pop().
std::vector<std::string> drain(RecordQueue& q, size_t n) {
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) {
    auto r = q.next();
    REQUIRE(r);
    out.push_back(*r);
    q.pop();
  }
  return out;
}

std::vector<std::string> recs(int from, int to) {
  std::vector<std::string> out;
  for (int i = from; i < to; ++i) out.push_back(rec(i));
  return out;
}

}  // namespace

TEST_CASE("records come out in order and the journal empties once all are delivered",
          "[record_queue]") {
  QueueDir dir;
  RecordQueue q(dir.journal(), 100);
  std::string error;
  REQUIRE(q.open(error));
  for (int i = 0; i < 5; ++i) REQUIRE(q.push(rec(i)));
  CHECK(q.pending() == 5);
  CHECK(file_text(dir.journal()) ==
        rec(0) + "\n" + rec(1) + "\n" + rec(2) + "\n" + rec(3) + "\n" + rec(4) + "\n");
  // next() repeats the same record until it is popped.
  CHECK(*q.next() == rec(0));
  CHECK(*q.next() == rec(0));
  CHECK(drain(q, 5) == recs(0, 5));
  CHECK(q.pending() == 0);
  CHECK(q.journal_bytes() == 0);
  CHECK(file_text(dir.journal()).empty());
  q.close();
  CHECK_FALSE(exists(dir.journal()));  // nothing pending: no file left behind
}

TEST_CASE("beyond the memory bound records wait in the journal and keep their order",
          "[record_queue]") {
  QueueDir dir;
  RecordQueue q(dir.journal(), 4);
  std::string error;
  REQUIRE(q.open(error));
  for (int i = 0; i < 23; ++i) REQUIRE(q.push(rec(i)));
  CHECK(q.pending() == 23);
  CHECK(drain(q, 10) == recs(0, 10));
  // Pushes while records are still on disk only go behind them.
  for (int i = 23; i < 30; ++i) REQUIRE(q.push(rec(i)));
  CHECK(q.pending() == 20);
  CHECK(drain(q, 20) == recs(10, 30));
  CHECK(q.pending() == 0);
  CHECK(q.journal_bytes() == 0);
}

TEST_CASE("a clean stop keeps exactly the undelivered records for the next start",
          "[record_queue]") {
  QueueDir dir;
  std::string error;
  {
    RecordQueue q(dir.journal(), 3);
    REQUIRE(q.open(error));
    for (int i = 0; i < 8; ++i) REQUIRE(q.push(rec(i)));
    CHECK(drain(q, 2) == recs(0, 2));
    q.stop();
    CHECK_FALSE(q.next());
    q.close();
  }
  std::string expected;
  for (int i = 2; i < 8; ++i) expected += rec(i) + "\n";
  CHECK(file_text(dir.journal()) == expected);
  RecordQueue again(dir.journal(), 3);
  REQUIRE(again.open(error));
  CHECK(again.pending() == 6);
  REQUIRE(again.push(rec(8)));
  CHECK(drain(again, 7) == recs(2, 9));
}

TEST_CASE("after a crash every record still in the journal is replayed", "[record_queue]") {
  QueueDir dir;
  std::string error;
  {
    RecordQueue q(dir.journal(), 100);
    REQUIRE(q.open(error));
    for (int i = 0; i < 4; ++i) REQUIRE(q.push(rec(i)));
    drain(q, 1);
    // No stop()/close(): the process died here.
  }
  RecordQueue again(dir.journal(), 100);
  REQUIRE(again.open(error));
  // Delivered records since the last truncation come back too: backends
  // treat them as duplicates. Nothing is missing.
  CHECK(again.pending() == 4);
  CHECK(drain(again, 4) == recs(0, 4));
}

TEST_CASE("a line cut short by a crash is closed, never glued to the next record",
          "[record_queue]") {
  QueueDir dir;
  {
    std::ofstream out(dir.journal(), std::ios::binary);
    out << rec(0) << "\n{\"call_id\": \"cut";
  }
  RecordQueue q(dir.journal(), 100);
  std::string error;
  REQUIRE(q.open(error));
  REQUIRE(q.push(rec(1)));
  CHECK(q.pending() == 3);
  CHECK(drain(q, 3) == std::vector<std::string>{rec(0), "{\"call_id\": \"cut", rec(1)});
}

TEST_CASE("a journal that cannot be created is a start-up error", "[record_queue]") {
  RecordQueue q("/nonexistent-dir-for-mediaproxy/accounting-x.journal", 10);
  std::string error;
  CHECK_FALSE(q.open(error));
  CHECK(error.find("/nonexistent-dir-for-mediaproxy/accounting-x.journal") != std::string::npos);
}

TEST_CASE("stop() wakes a worker waiting for records or backing off", "[record_queue]") {
  QueueDir dir;
  RecordQueue q(dir.journal(), 10);
  std::string error;
  REQUIRE(q.open(error));
  std::thread waiter([&] { CHECK_FALSE(q.next()); });
  std::thread backoff([&] { CHECK_FALSE(q.wait_for(3600)); });
  q.stop();
  waiter.join();
  backoff.join();
}

TEST_CASE("next_batch() gives the oldest records in order and pop(n) takes them",
          "[record_queue]") {
  QueueDir dir;
  RecordQueue q(dir.journal(), 5);
  std::string error;
  REQUIRE(q.open(error));
  for (int i = 0; i < 12; ++i) REQUIRE(q.push(rec(i)));
  auto first = q.next_batch(3);
  REQUIRE(first);
  CHECK(*first == recs(0, 3));
  q.pop(2);                         // the third was not delivered: it comes first again
  auto second = q.next_batch(100);  // at most what memory holds (5)
  REQUIRE(second);
  CHECK(*second == recs(2, 7));
  q.pop(second->size());
  auto rest = q.next_batch(100);  // read back from the journal
  REQUIRE(rest);
  CHECK(*rest == recs(7, 12));
  q.pop(rest->size());
  CHECK(q.pending() == 0);
  CHECK(q.journal_bytes() == 0);
}
