// Offer/answer state machine of the relay (spec D.3, D.9, D.10), driven
// through RelayEngine::handle() exactly as the dispatcher drives it, with
// real UDP sockets on 127.0.0.1.
#include <uv.h>
#include <catch2/catch.hpp>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "relay/relay_engine.h"

using mp::relay::RelayEngine;

namespace {

struct Fixture {
  uv_loop_t loop;
  std::unique_ptr<RelayEngine> engine;
  std::vector<std::string> expired;
  int next_port_base;

  explicit Fixture(int start = 46000, int end = 46200) {
    uv_loop_init(&loop);
    mp::RelayConfig cfg;
    cfg.port_start = start;
    cfg.port_end = end;
    engine = std::make_unique<RelayEngine>(&loop, cfg, *mp::parse_ipv4("127.0.0.1"));
    engine->set_expired_sink([this](uint64_t, const std::string& j) { expired.push_back(j); });
  }
  ~Fixture() {
    engine->close();
    uv_run(&loop, UV_RUN_DEFAULT);
    engine.reset();
    uv_loop_close(&loop);
  }

  std::string update(const std::string& type, int cseq, const std::string& from_tag,
                     const std::string& to_tag, const std::string& media) {
    mp::protocol::RelayCommand c;
    c.name = "update";
    c.headers = {{"type", type},
                 {"call_id", "call-1"},
                 {"cseq", std::to_string(cseq)},
                 {"from_uri", "a@x"},
                 {"to_uri", "b@y"},
                 {"from_tag", from_tag},
                 {"user_agent", "UA-" + from_tag + "-" + type},
                 {"signaling_ip", "127.0.0.1"}};
    if (!to_tag.empty()) c.headers.push_back({"to_tag", to_tag});
    if (!media.empty()) c.headers.push_back({"media", media});
    return engine->handle(c, 7);
  }
  std::string remove(const std::string& from_tag, const std::string& to_tag) {
    mp::protocol::RelayCommand c;
    c.name = "remove";
    c.headers = {{"call_id", "call-1"}, {"from_tag", from_tag}, {"to_tag", to_tag}};
    return engine->handle(c, 7);
  }
  std::string sessions() {
    mp::protocol::RelayCommand c;
    c.name = "sessions";
    return engine->handle(c, 7);
  }
};

std::vector<int> ports_of(const std::string& reply) {
  std::istringstream in(reply);
  std::string ip;
  in >> ip;
  REQUIRE(ip == "127.0.0.1");
  std::vector<int> out;
  int p;
  while (in >> p) out.push_back(p);
  return out;
}

const char* kCallerAudio = "audio:127.0.0.1:5000:sendrecv:ice=no";
const char* kCalleeAudio = "audio:127.0.0.2:6000:sendrecv:ice=no";

}  // namespace

TEST_CASE("first offer gets callee-facing ports, its answer caller-facing ones", "[session]") {
  Fixture f;
  auto offer = ports_of(f.update("request", 1, "A", "", kCallerAudio));
  REQUIRE(offer == std::vector<int>{46002});  // caller pair 46000 first, callee pair 46002
  auto answer = ports_of(f.update("reply", 1, "A", "B", kCalleeAudio));
  REQUIRE(answer == std::vector<int>{46000});
  CHECK(f.engine->session_count() == 1);
  CHECK(f.engine->stream_count() == 1);
}

TEST_CASE("retransmitted offer and answer get identical replies", "[session]") {
  Fixture f;
  auto r1 = f.update("request", 1, "A", "", kCallerAudio);
  auto r2 = f.update("request", 1, "A", "", kCallerAudio);
  CHECK(r1 == r2);
  // A retransmitted INVITE is not an answer: the call has not started.
  CHECK(f.sessions().find("\"start_time\": null") != std::string::npos);
  auto a1 = f.update("reply", 1, "A", "B", kCalleeAudio);
  auto a2 = f.update("reply", 1, "A", "B", kCalleeAudio);
  CHECK(a1 == a2);
  CHECK(f.sessions().find("\"start_time\": null") == std::string::npos);
}

TEST_CASE("re-INVITE with the same SDP keeps the ports", "[session]") {
  Fixture f;
  auto o1 = f.update("request", 1, "A", "", kCallerAudio);
  auto a1 = f.update("reply", 1, "A", "B", kCalleeAudio);
  auto o2 = f.update("request", 2, "A", "B", kCallerAudio);
  auto a2 = f.update("reply", 2, "A", "B", kCalleeAudio);
  CHECK(o1 == o2);
  CHECK(a1 == a2);
  CHECK(f.engine->stream_count() == 1);
}

TEST_CASE("re-INVITE from the callee gets caller-facing ports, its reply callee-facing",
          "[session]") {
  Fixture f;
  auto o1 = ports_of(f.update("request", 1, "A", "", kCallerAudio));
  auto a1 = ports_of(f.update("reply", 1, "A", "B", kCalleeAudio));
  // In-dialog request from the callee: From tag B, To tag A, own CSeq space.
  auto o2 = ports_of(f.update("request", 1, "B", "A", kCalleeAudio));
  auto a2 = ports_of(f.update("reply", 1, "B", "A", kCallerAudio));
  CHECK(o2 == a1);
  CHECK(a2 == o1);
  CHECK(f.engine->stream_count() == 1);
}

TEST_CASE("offerer changing its address gets a new stream; old one closes at the answer",
          "[session]") {
  Fixture f;
  auto o1 = ports_of(f.update("request", 1, "A", "", kCallerAudio));
  f.update("reply", 1, "A", "B", kCalleeAudio);
  auto o2 = ports_of(f.update("request", 2, "A", "B", "audio:127.0.0.1:5100:sendrecv:ice=no"));
  CHECK(o2 != o1);
  CHECK(f.engine->stream_count() == 2);  // old one survives until the answer
  f.update("reply", 2, "A", "B", kCalleeAudio);
  CHECK(f.engine->stream_count() == 1);
  auto s = f.sessions();
  CHECK(s.find("\"status\": \"closed\"") != std::string::npos);
  CHECK(s.find("\"status\": \"active\"") != std::string::npos);
}

TEST_CASE("hold with sendonly and with 0.0.0.0 keeps ports; resume is active again", "[session]") {
  Fixture f;
  auto o1 = f.update("request", 1, "A", "", kCallerAudio);
  f.update("reply", 1, "A", "B", kCalleeAudio);
  auto hold = f.update("request", 2, "A", "B", "audio:127.0.0.1:5000:sendonly:ice=no");
  CHECK(hold == o1);
  f.update("reply", 2, "A", "B", "audio:127.0.0.2:6000:recvonly:ice=no");
  CHECK(f.sessions().find("\"status\": \"on hold\"") != std::string::npos);
  auto old_hold = f.update("request", 3, "A", "B", "audio:0.0.0.0:5000:sendrecv:ice=no");
  CHECK(old_hold == o1);
  f.update("reply", 3, "A", "B", kCalleeAudio);
  CHECK(f.sessions().find("\"status\": \"on hold\"") != std::string::npos);
  auto resume = f.update("request", 4, "A", "B", kCallerAudio);
  CHECK(resume == o1);
  f.update("reply", 4, "A", "B", kCalleeAudio);
  CHECK(f.sessions().find("\"status\": \"active\"") != std::string::npos);
  CHECK(f.engine->stream_count() == 1);
}

TEST_CASE("two streams; the answer rejects video with port 0", "[session]") {
  Fixture f;
  auto o = ports_of(
      f.update("request", 1, "A", "",
               "audio:127.0.0.1:5000:sendrecv:ice=no,video:127.0.0.1:5002:sendrecv:ice=no"));
  REQUIRE(o.size() == 2);
  CHECK(o[0] != 0);
  CHECK(o[1] != 0);
  auto a =
      ports_of(f.update("reply", 1, "A", "B",
                        "audio:127.0.0.2:6000:sendrecv:ice=no,video:127.0.0.2:0:sendrecv:ice=no"));
  REQUIRE(a.size() == 2);
  CHECK(a[0] != 0);
  CHECK(a[1] == 0);
  CHECK(f.sessions().find("\"status\": \"rejected\"") != std::string::npos);
  CHECK(f.engine->stream_count() == 1);
}

TEST_CASE("answer with fewer streams rejects the surplus", "[session]") {
  Fixture f;
  f.update("request", 1, "A", "",
           "audio:127.0.0.1:5000:sendrecv:ice=no,video:127.0.0.1:5002:sendrecv:ice=no");
  auto a = ports_of(f.update("reply", 1, "A", "B", kCalleeAudio));
  REQUIRE(a.size() == 2);
  CHECK(a[1] == 0);
}

TEST_CASE("media_index answers one stream and leaves the others alone", "[session]") {
  Fixture f;
  auto extra = [&f](const std::string& type, int cseq, const std::string& to_tag,
                    const std::string& media, const std::string& index) {
    mp::protocol::RelayCommand c;
    c.name = "update";
    c.headers = {{"type", type},        {"call_id", "call-1"}, {"cseq", std::to_string(cseq)},
                 {"from_uri", "a@x"},   {"to_uri", "b@y"},     {"from_tag", "A"},
                 {"user_agent", "UA"},  {"to_tag", to_tag},    {"media", media},
                 {"media_index", index}};
    return f.engine->handle(c, 7);
  };
  auto o = ports_of(
      f.update("request", 1, "A", "",
               "audio:127.0.0.1:5000:sendrecv:ice=no,audio:127.0.0.1:5002:sendrecv:ice=no"));
  REQUIRE(o.size() == 2);
  // Stream 2 answered first: stream 1 is neither rejected nor changed.
  auto a2 = ports_of(extra("reply", 1, "B", "audio:127.0.0.2:6002:sendrecv:ice=no", "2"));
  REQUIRE(a2.size() == 2);
  CHECK(a2[0] != 0);
  CHECK(a2[1] != 0);
  CHECK(f.engine->stream_count() == 2);
  CHECK(f.sessions().find("rejected") == std::string::npos);
  auto a1 = ports_of(extra("reply", 1, "B", "audio:127.0.0.2:6000:sendrecv:ice=no", "1"));
  CHECK(a1 == a2);
  CHECK(f.sessions().find("rejected") == std::string::npos);
  // Out of range, zero, or more than one item: errors that change nothing.
  CHECK(extra("reply", 1, "B", "audio:127.0.0.2:6004:sendrecv:ice=no", "3") == "error");
  CHECK(extra("reply", 1, "B", "audio:127.0.0.2:6004:sendrecv:ice=no", "0") == "error");
  CHECK(extra("reply", 1, "B", kCalleeAudio + std::string(",") + kCalleeAudio, "1") == "error");
  CHECK(f.engine->stream_count() == 2);
}

TEST_CASE("query reports one session's counters and time to live", "[session]") {
  Fixture f;
  f.update("request", 1, "A", "", kCallerAudio);
  f.update("reply", 1, "A", "B", kCalleeAudio);
  mp::protocol::RelayCommand q;
  q.name = "query";
  q.headers = {{"call_id", "call-1"}, {"from_tag", "A"}, {"to_tag", "B"}};
  const std::string r = f.engine->handle(q, 7);
  CHECK(r.find("\"ttl\": 90") != std::string::npos);
  CHECK(r.find("\"caller_packets\": 0") != std::string::npos);
  q.headers = {{"call_id", "other"}, {"from_tag", "A"}};
  CHECK(f.engine->handle(q, 7) == "error");
}

TEST_CASE("offered port 0 gets port 0 and allocates nothing", "[session]") {
  Fixture f;
  const size_t free_before = f.engine->ports().free_count();
  auto o =
      ports_of(f.update("request", 1, "A", "",
                        "audio:127.0.0.1:5000:sendrecv:ice=no,video:127.0.0.1:0:sendrecv:ice=no"));
  REQUIRE(o.size() == 2);
  CHECK(o[1] == 0);
  CHECK(f.engine->ports().free_count() == free_before - 2);
}

TEST_CASE("answer of another media type is an error", "[session]") {
  Fixture f;
  f.update("request", 1, "A", "", kCallerAudio);
  CHECK(f.update("reply", 1, "A", "B", "video:127.0.0.2:6000:sendrecv:ice=no") == "error");
  // The session is untouched and can still be answered properly.
  CHECK(ports_of(f.update("reply", 1, "A", "B", kCalleeAudio)).size() == 1);
}

TEST_CASE("an update with an older CSeq is ignored but answered", "[session]") {
  Fixture f;
  f.update("request", 1, "A", "", kCallerAudio);
  f.update("reply", 1, "A", "B", kCalleeAudio);
  auto o2 = f.update("request", 2, "A", "B", kCallerAudio);
  auto late = f.update("request", 1, "A", "B", "audio:127.0.0.1:7000:sendrecv:ice=no");
  CHECK(f.engine->stream_count() == 1);
  (void)o2;
  (void)late;
}

TEST_CASE("reply without media for an unknown session is None and creates nothing", "[session]") {
  Fixture f;
  CHECK(f.update("reply", 1, "A", "B", "") == "None");
  CHECK(f.engine->session_count() == 0);
}

TEST_CASE("remove finds the session with swapped tags and reports statistics", "[session]") {
  Fixture f;
  f.update("request", 1, "A", "", kCallerAudio);
  f.update("reply", 1, "A", "B", kCalleeAudio);
  const size_t free_mid = f.engine->ports().free_count();
  std::string stats = f.remove("B", "A");
  CHECK(stats.rfind("{\"call_id\": \"call-1\", \"from_tag\": \"A\"", 0) == 0);
  CHECK(stats.find("\"to_tag\": \"B\"") != std::string::npos);
  CHECK(stats.find("\"caller_ua\": \"UA-A-request\", \"callee_ua\": \"UA-A-reply\"") !=
        std::string::npos);
  CHECK(f.engine->session_count() == 0);
  CHECK(f.engine->ports().free_count() == free_mid + 2);
  CHECK(f.remove("A", "B") == "error");
}

TEST_CASE("port exhaustion answers error and leaks nothing", "[session]") {
  Fixture f(46300, 46306);  // three pairs: one stream plus one spare pair
  const size_t total = f.engine->ports().free_count();
  REQUIRE(total == 3);
  auto two = f.update("request", 1, "A", "",
                      "audio:127.0.0.1:5000:sendrecv:ice=no,video:127.0.0.1:5002:sendrecv:ice=no");
  CHECK(two == "error");
  CHECK(f.engine->ports().free_count() == total);
  CHECK(f.engine->session_count() == 0);
  CHECK(ports_of(f.update("request", 1, "A", "", kCallerAudio)).size() == 1);
}

TEST_CASE("missing or malformed headers are errors", "[session]") {
  Fixture f;
  mp::protocol::RelayCommand c;
  c.name = "update";
  c.headers = {{"call_id", "x"}};
  CHECK(f.engine->handle(c, 1) == "error");
  CHECK(f.update("request", 1, "A", "", "audio:1.2.3:5000:sendrecv") == "error");
  c.name = "bogus";
  CHECK(f.engine->handle(c, 1) == "error");
}

TEST_CASE("halting refuses new sessions but serves existing ones", "[session]") {
  Fixture f;
  auto o = f.update("request", 1, "A", "", kCallerAudio);
  bool drained = false;
  f.engine->halt([&] { drained = true; });
  CHECK_FALSE(drained);
  mp::protocol::RelayCommand c;
  c.name = "update";
  c.headers = {{"type", "request"}, {"call_id", "other"},   {"cseq", "1"},
               {"from_uri", "a"},   {"to_uri", "b"},        {"from_tag", "X"},
               {"user_agent", "u"}, {"media", kCallerAudio}};
  CHECK(f.engine->handle(c, 7) == "halting");
  CHECK(f.update("request", 1, "A", "", kCallerAudio) == o);
  f.remove("A", "");
  CHECK(drained);
}
