// Unit tests for the rtpproxy retransmission cache
// (dispatcher/rtpproxy_retransmit_cache.h): a retransmission gets the first
// reply, a pending request stays silent, entries leave by age and by
// capacity in arrival order, digest collisions are recognised, and the
// index stays consistent through long runs of insertions and expiries
// (checked against a plain map).
#include <catch2/catch.hpp>

#include <map>
#include <random>
#include <string>
#include <utility>

#include "dispatcher/rtpproxy_retransmit_cache.h"

using mp::dispatcher::RtpproxyRetransmitCache;
using Found = RtpproxyRetransmitCache::Found;

namespace {

RtpproxyRetransmitCache::Sender sender(uint8_t last, uint16_t port = 5060) {
  RtpproxyRetransmitCache::Sender s;
  const uint8_t bytes[6] = {
      10, 0, 0, last, static_cast<uint8_t>(port >> 8), static_cast<uint8_t>(port)};
  std::memcpy(s.bytes, bytes, 6);
  s.len = 6;
  return s;
}

}  // namespace

TEST_CASE("retransmit cache: pending, then the first reply again", "[rtpproxy]") {
  RtpproxyRetransmitCache cache(100);
  auto first = cache.begin(sender(1), "123_4", 10.0, 30.0);
  REQUIRE(first.found == Found::Fresh);
  CHECK(cache.begin(sender(1), "123_4", 10.1, 30.0).found == Found::Pending);
  cache.complete(first.ticket, "123_4 40000 10.0.0.9\n");
  auto again = cache.begin(sender(1), "123_4", 11.0, 30.0);
  REQUIRE(again.found == Found::Replied);
  CHECK(*again.reply == "123_4 40000 10.0.0.9\n");
  // Another sender, or another cookie, is another request.
  CHECK(cache.begin(sender(2), "123_4", 11.0, 30.0).found == Found::Fresh);
  CHECK(cache.begin(sender(1, 5061), "123_4", 11.0, 30.0).found == Found::Fresh);
  CHECK(cache.begin(sender(1), "123_5", 11.0, 30.0).found == Found::Fresh);
  CHECK(cache.size() == 4);
}

TEST_CASE("retransmit cache: entries expire by age, oldest first", "[rtpproxy]") {
  RtpproxyRetransmitCache cache(100);
  auto a = cache.begin(sender(1), "a", 0.0, 30.0);
  cache.begin(sender(1), "b", 10.0, 30.0);
  cache.complete(a.ticket, "a 0\n");
  CHECK(cache.begin(sender(1), "a", 29.9, 30.0).found == Found::Replied);
  // At 30.5, "a" (0.0) is older than 30 s, "b" (10.0) is not.
  CHECK(cache.begin(sender(1), "a", 30.5, 30.0).found == Found::Fresh);
  CHECK(cache.begin(sender(1), "b", 30.5, 30.0).found == Found::Pending);
  // A reply for an entry that has gone is dropped, not stored elsewhere.
  auto c = cache.begin(sender(1), "c", 31.0, 30.0);
  cache.complete(a.ticket, "stale\n");
  CHECK(cache.begin(sender(1), "c", 31.0, 30.0).found == Found::Pending);
  cache.complete(c.ticket, "c 1\n");
  CHECK(*cache.begin(sender(1), "c", 31.0, 30.0).reply == "c 1\n");
}

TEST_CASE("retransmit cache: a full cache drops its oldest entry", "[rtpproxy]") {
  RtpproxyRetransmitCache cache(3);
  for (const char* c : {"1", "2", "3", "4"}) cache.begin(sender(1), c, 1.0, 30.0);
  CHECK(cache.size() == 3);
  CHECK(cache.begin(sender(1), "2", 1.0, 30.0).found == Found::Pending);
  CHECK(cache.begin(sender(1), "3", 1.0, 30.0).found == Found::Pending);
  CHECK(cache.begin(sender(1), "4", 1.0, 30.0).found == Found::Pending);
  CHECK(cache.begin(sender(1), "1", 1.0, 30.0).found == Found::Fresh);  // evicted "2" in turn
  CHECK(cache.begin(sender(1), "2", 1.0, 30.0).found == Found::Fresh);
}

TEST_CASE("retransmit cache: two keys with one digest", "[rtpproxy]") {
  RtpproxyRetransmitCache cache(10);
  auto a = cache.begin_digest(42, sender(1), "a", 1.0, 30.0);
  REQUIRE(a.found == Found::Fresh);
  CHECK(cache.begin_digest(42, sender(1), "b", 1.0, 30.0).found == Found::Collision);
  CHECK(cache.begin_digest(42, sender(2), "a", 1.0, 30.0).found == Found::Collision);
  CHECK(cache.size() == 1);
  // Same low 32 bits (the index's tag), different digests: both cached.
  auto b = cache.begin_digest(42 + (1ull << 40), sender(1), "b", 1.0, 30.0);
  CHECK(b.found == Found::Fresh);
  cache.complete(a.ticket, "A\n");
  cache.complete(b.ticket, "B\n");
  CHECK(*cache.begin_digest(42, sender(1), "a", 1.0, 30.0).reply == "A\n");
  CHECK(*cache.begin_digest(42 + (1ull << 40), sender(1), "b", 1.0, 30.0).reply == "B\n");
}

TEST_CASE("retransmit cache: agrees with a map through insertions and expiries", "[rtpproxy]") {
  // Few distinct homes (digests drawn from a small range) make long probe
  // runs, so backward-shift deletion is exercised in every position.
  const size_t capacity = 64;
  RtpproxyRetransmitCache cache(capacity);
  std::mt19937_64 rng(7);
  std::map<uint64_t, std::pair<double, std::string>> model;  // digest -> (time, reply)
  std::map<uint64_t, uint64_t> tickets;
  std::vector<uint64_t> arrivals;  // digests in arrival order (the model's FIFO)
  double now = 0;
  for (int step = 0; step < 20000; ++step) {
    now += 0.01;
    const uint64_t digest = (rng() % 200) * 131 + ((rng() % 3) << 33);
    const std::string cookie = std::to_string(digest);
    // The model: expire by age and capacity, then look up.
    while (!arrivals.empty() && (model[arrivals.front()].first < now - 1.0)) {
      model.erase(arrivals.front());
      arrivals.erase(arrivals.begin());
    }
    auto got = cache.begin_digest(digest, sender(1), cookie, now, 1.0);
    auto it = model.find(digest);
    if (it == model.end()) {
      REQUIRE(got.found == Found::Fresh);
      if (arrivals.size() == capacity) {
        model.erase(arrivals.front());
        arrivals.erase(arrivals.begin());
      }
      model[digest] = {now, ""};
      arrivals.push_back(digest);
      tickets[digest] = got.ticket;
      if (rng() % 2) {
        const std::string reply = "r" + std::to_string(step);
        cache.complete(got.ticket, reply);
        model[digest].second = reply;
      }
    } else if (it->second.second.empty()) {
      REQUIRE(got.found == Found::Pending);
    } else {
      REQUIRE(got.found == Found::Replied);
      REQUIRE(*got.reply == it->second.second);
    }
    REQUIRE(cache.size() == model.size());
  }
}
