// The relay's state file (relay/state_journal.h, relay/session_state.h): the
// JSON codec of a session's state, counter checkpoints, the journal's line
// format and every reason a file is refused, the writer's rewrite/append
// cycle on a real file, and PortPool::reserve() used by the restore.
#include <unistd.h>
#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "relay/counter_table.h"
#include "relay/port_pool.h"
#include "relay/state_journal.h"

using namespace mp;
using namespace mp::relay;

namespace {

SessionState sample_session() {
  SessionState s;
  s.call_id = std::string("call-\xff\x01-\"quoted\"", 17);
  s.call_id += '\0';
  s.call_id += "tail";
  s.from_tag = "ft";
  s.to_tag = "tt";
  s.from_uri = "alice@example.com";
  s.to_uri = "bob@example.net";
  s.caller_ua = "Caller UA";
  s.callee_ua = "";
  s.username = "alice";
  s.strict_latching = true;
  s.owner = 101;
  s.created = 1796340000.25;
  s.start_wall = 1796340001.5;
  s.cseq = std::pair<int64_t, int64_t>{2, 1};
  s.previous_cseq = std::pair<int64_t, int64_t>{1, 0};
  OfferState o1{1, 0, 0, {0}};
  OfferState o2{2, 1, 0, {0, 1}};
  s.offers = {o1, o2};
  StreamState a;
  a.media_type = "audio";
  a.status = "active";
  a.alive = true;
  a.rtp_port = {40000, 40002};
  a.created = 1796340000.5;
  a.confirmed = 1796340001.5;
  a.start_wall = 1796340001.5;
  a.last_activity = 1796340009.75;
  a.codec = {"G711u", "Unknown"};
  a.party[0].known = true;
  a.party[0].ip = *parse_ipv4("192.0.2.1");
  a.party[0].port = 5000;
  a.party[0].direction = 1;
  a.party[0].signaling_ip = *parse_ipv4("192.0.2.1");
  a.leg[0][0].learned = true;
  a.leg[0][0].remote = *parse_endpoint("198.51.100.7:61000");
  a.leg[0][0].has_ssrc = true;
  a.leg[0][0].ssrc = 0xdeadbeef;
  a.leg[0][0].epoch = 3;
  a.leg[0][0].packets = 12345678901ull;
  a.leg[0][0].in_kernel = true;
  a.leg[0][0].kernel_live_packets = 99;
  a.leg[1][1].has_obsolete = true;
  a.leg[1][1].obsolete = *parse_endpoint("203.0.113.9:9");
  StreamState v = a;
  v.media_type = "video";
  v.alive = false;
  v.status = "rejected";
  v.rtp_port = {0, 0};
  v.end_wall = 1796340002.0;
  s.streams = {a, v};
  return s;
}

StateIdentity identity() {
  StateIdentity id;
  id.relay_ip = *parse_ipv4("192.0.2.10");
  id.port_start = 40000;
  id.port_end = 40100;
  id.nft_table = "mediaproxy";
  return id;
}

std::string file_with(const std::string& records) {
  return identity().header() + "\n" + records;
}

}  // namespace

TEST_CASE("a session's state survives its JSON byte for byte", "[relay][state]") {
  const SessionState s = sample_session();
  const std::string json = session_state_to_json(s);
  SessionState back;
  std::string error;
  REQUIRE(session_state_from_json(json, back, error));
  CHECK(back.call_id == s.call_id);
  CHECK(back.streams.size() == 2);
  CHECK(back.streams[0].leg[0][0].remote == s.streams[0].leg[0][0].remote);
  CHECK(back.streams[0].leg[0][0].packets == 12345678901ull);
  CHECK(back.streams[0].leg[0][0].ssrc == 0xdeadbeef);
  CHECK(back.streams[0].leg[0][0].in_kernel);
  CHECK(back.streams[0].leg[1][1].has_obsolete);
  CHECK_FALSE(back.streams[0].leg[1][0].learned);
  CHECK(back.offers[1].streams == std::vector<size_t>{0, 1});
  CHECK(*back.strict_latching);
  CHECK(session_state_to_json(back) == json);  // the whole record round-trips
}

TEST_CASE("unset values are left out of a record and read back unset", "[relay][state]") {
  // A call just offered: most of its record is unset. Unset values are not
  // written (a record is written at every change of every call), and what
  // is missing reads back as unset: the reader's defaults, which older
  // versions share, so files of either version are read by the other.
  SessionState s;
  s.call_id = "c";
  s.from_tag = "f";
  s.created = 1796340000.25;
  StreamState a;
  a.media_type = "audio";
  a.status = "unselected";
  a.rtp_port = {40000, 0};
  a.created = 1796340000.5;
  a.last_activity = 1796340000.5;
  a.codec = {"Unknown", "Unknown"};
  s.streams = {a};
  const std::string json = session_state_to_json(s);
  for (const char* absent : {"null", "username", "strict", "owner", "\"start\"", "ended", "cseq",
                             "confirmed", "first_media", "hold_since", "wait", "alive", "\"ls\""})
    CHECK(json.find(absent) == std::string::npos);
  SessionState back;
  std::string error;
  REQUIRE(session_state_from_json(json, back, error));
  CHECK_FALSE(back.username);
  CHECK_FALSE(back.strict_latching);
  CHECK_FALSE(back.start_wall);
  CHECK_FALSE(back.cseq);
  CHECK(back.owner == 0);
  CHECK_FALSE(back.streams[0].alive);
  CHECK_FALSE(back.streams[0].confirmed);
  CHECK_FALSE(back.streams[0].first_media);
  CHECK(back.streams[0].hold_since == 0);
  CHECK(back.streams[0].timeout_wait == 0);
  CHECK(back.streams[0].leg[0][0].last_seen == 0);
  CHECK(session_state_to_json(back) == json);

  // A record of the previous version, which wrote them as nulls, zeros and
  // false, reads back the same.
  std::string old = json;
  old.insert(old.size() - 1,
             ", \"username\": null, \"strict\": null, \"start\": null, "
             "\"ended\": null, \"cseq\": null, \"prev_cseq\": null");
  REQUIRE(session_state_from_json(old, back, error));
  CHECK(session_state_to_json(back) == json);
}

TEST_CASE("an IPv6 and a bridged stream keep their families and addresses", "[relay][state]") {
  SessionState s = sample_session();
  s.streams[0].family = {mp::IpAddress::Family::V6, mp::IpAddress::Family::V6};
  s.streams[1].family = {mp::IpAddress::Family::V4, mp::IpAddress::Family::V6};
  s.streams[0].party[0].ip = *mp::parse_ip("2001:db8::5");
  s.streams[0].party[0].signaling_ip = *mp::parse_ip("2001:db8::9");
  s.streams[0].leg[0][0].remote = *mp::parse_ip_endpoint("[2001:db8::5]:6000");
  const std::string json = session_state_to_json(s);
  CHECK(json.find("\"[2001:db8::5]:6000\"") != std::string::npos);
  SessionState back;
  std::string error;
  REQUIRE(session_state_from_json(json, back, error));
  CHECK(back.streams[0].family == s.streams[0].family);
  CHECK(back.streams[1].family == s.streams[1].family);
  CHECK(back.streams[0].party[0].ip == s.streams[0].party[0].ip);
  CHECK(back.streams[0].leg[0][0].remote == s.streams[0].leg[0][0].remote);
  CHECK(session_state_to_json(back) == json);
  // A family other than 4 or 6 is refused.
  std::string bad = json;
  bad.replace(bad.find("\"families\": [6, 6]"), 18, "\"families\": [6, 5]");
  CHECK_FALSE(session_state_from_json(bad, back, error));
}

TEST_CASE("a session with values as long as the module socket allows round-trips",
          "[relay][state]") {
  // A module request line may be 16384 bytes: a From URI of 16000.
  SessionState s = sample_session();
  s.from_uri = "sip:" + std::string(16000, 'u') + "@example.com";
  s.caller_ua = std::string(8000, 'a');
  SessionState back;
  std::string error;
  REQUIRE(session_state_from_json(session_state_to_json(s), back, error));
  CHECK(back.from_uri == s.from_uri);
  CHECK(back.caller_ua == s.caller_ua);
  // Beyond any value a session can hold: refused, and the message says why.
  s.from_uri = std::string(70000, 'u');
  CHECK_FALSE(session_state_from_json(session_state_to_json(s), back, error));
  CHECK(error.find("'from_uri' is longer than") != std::string::npos);
}

TEST_CASE("a session record that does not check out is refused", "[relay][state]") {
  const std::string good = session_state_to_json(sample_session());
  SessionState out;
  std::string error;
  auto refused = [&](std::string text, const std::string& why) {
    INFO(text);
    CHECK_FALSE(session_state_from_json(text, out, error));
    CHECK(error.find(why) != std::string::npos);
  };
  refused("[]", "not a JSON object");
  refused(good.substr(0, good.size() - 1), "not a JSON object");
  std::string s = good;
  s.replace(s.find("\"ports\": [40000"), 15, "\"ports\": [40001");
  refused(s, "even port");
  s = good;
  s.replace(s.find("\"streams\": [0, 1]"), 17, "\"streams\": [0, 7]");
  refused(s, "does not exist");
  s = good;
  s.replace(s.find("\"dir\": 1"), 8, "\"dir\": 9");
  refused(s, "'dir'");
  s = good;
  s.replace(s.find("198.51.100.7:61000"), 18, "198.51.100.7:99999");
  refused(s, "'r'");
  s = good;
  s.replace(s.find("\"cseq\": [2, 1]"), 14, "\"cseq\": [5, 5]");
  refused(s, "no offer");
}

TEST_CASE("counter checkpoints round-trip and only move counters forward", "[relay][state]") {
  SessionState s = sample_session();
  CounterCheckpoint c;
  c.streams.resize(2);
  c.streams[0].last_activity = 1796340019.5;
  c.streams[0].leg[0][0].packets = 12345678999ull;
  c.streams[0].leg[1][1].bytes = 77;
  const std::string text = counters_to_text(c);
  CounterCheckpoint back;
  std::string error;
  REQUIRE(counters_from_text(text, back, error));
  CHECK(counters_to_text(back) == text);
  apply_counters(s, back);
  CHECK(s.streams[0].leg[0][0].packets == 12345678999ull);
  CHECK(s.streams[0].leg[1][1].bytes == 77);
  CHECK(s.streams[0].last_activity == Approx(1796340019.5));
  CHECK_FALSE(counters_from_text("2 1 2 3", back, error));
  CHECK_FALSE(counters_from_text(text + " 5", back, error));
  CHECK_FALSE(counters_from_text("99 1", back, error));
  // A checkpoint taken before a re-INVITE added a stream does not apply.
  c.streams.resize(1);
  c.streams[0].leg[0][0].packets = 1;
  SessionState t = sample_session();
  apply_counters(t, c);
  CHECK(t.streams[0].leg[0][0].packets == 12345678901ull);
}

TEST_CASE("the journal's records replay in order", "[relay][state]") {
  SessionState a = sample_session(), b = sample_session();
  b.call_id = "second";
  CounterCheckpoint c;
  c.streams.resize(2);
  c.streams[0].leg[0][1].packets = 42;
  std::string lines;
  StateJournal::append_line(lines, 'S', 1, session_state_to_json(a));
  StateJournal::append_line(lines, 'S', 2, session_state_to_json(b));
  StateJournal::append_line(lines, 'C', 1, counters_to_text(c));
  StateJournal::append_line(lines, 'D', 2, "");
  StateJournal::append_line(lines, 'S', 3, session_state_to_json(b));
  LoadedState out;
  std::string error;
  REQUIRE(parse_state_file(file_with(lines), identity(), out, error));
  REQUIRE(out.sessions.size() == 2);
  CHECK(out.sessions.at(1).streams[0].leg[0][1].packets == 42);
  CHECK(out.sessions.at(3).call_id == "second");
  CHECK(out.last_id == 3);
  CHECK(out.lines == 5);

  // A record that replaces a session drops its earlier checkpoint.
  std::string again = lines;
  StateJournal::append_line(again, 'S', 1, session_state_to_json(a));
  REQUIRE(parse_state_file(file_with(again), identity(), out, error));
  CHECK(out.sessions.at(1).streams[0].leg[0][1].packets == 0);
}

TEST_CASE("a state file that is damaged or not ours is refused whole", "[relay][state]") {
  std::string lines;
  StateJournal::append_line(lines, 'S', 1, session_state_to_json(sample_session()));
  StateJournal::append_line(lines, 'D', 7, "");
  LoadedState out;
  std::string error;
  auto refused = [&](const std::string& text, const std::string& why) {
    CHECK_FALSE(parse_state_file(text, identity(), out, error));
    INFO(error);
    CHECK(error.find(why) != std::string::npos);
    CHECK(out.sessions.empty());
  };
  REQUIRE(parse_state_file(file_with(lines), identity(), out, error));
  refused("", "no header");
  refused("hello\n", "not a mediaproxy relay state file");
  StateIdentity other = identity();
  other.relay_ip = *parse_ipv4("192.0.2.11");
  refused(other.header() + "\n" + lines, "for another relay");
  other = identity();
  other.port_end = 40200;
  refused(other.header() + "\n" + lines, "for another relay");
  refused("mediaproxy-relay-state 2 192.0.2.10 40000:40100 mediaproxy\n", "another version");
  refused(file_with(lines.substr(0, lines.size() - 1)), "cut short");
  std::string flipped = lines;
  flipped[40] ^= 1;
  refused(file_with(flipped), "checksum mismatch");
  refused(file_with("deadbeef X 1\n"), "checksum mismatch");
  std::string unknown;
  StateJournal::append_line(unknown, 'X', 1, "");
  refused(file_with(unknown), "unknown record type");
  std::string zero;
  StateJournal::append_line(zero, 'D', 0, "");
  refused(file_with(zero), "no record id");
  std::string bad_json;
  StateJournal::append_line(bad_json, 'S', 1, "{\"call_id\": 5}");
  refused(file_with(bad_json), "session record");
}

TEST_CASE("the journal file: rewrite, append, load", "[relay][state]") {
  char dir[] = "/tmp/mp-state-XXXXXX";
  REQUIRE(mkdtemp(dir));
  const std::string path = std::string(dir) + "/relay.state";
  LoadedState out;
  std::string error;
  CHECK_FALSE(StateJournal::load(path, identity(), out, error));
  CHECK(error.empty());  // no file: not an error worth a log line
  {
    StateJournal j;
    std::string content = identity().header() + "\n";
    StateJournal::append_line(content, 'S', 1, session_state_to_json(sample_session()));
    REQUIRE(j.rewrite(path, content, error));
    CHECK(j.base_size() == content.size());
    j.put_delete(1);
    SessionState b = sample_session();
    b.call_id = "b";
    j.put_session(2, session_state_to_json(b));
    REQUIRE(j.flush(error));
    CHECK(j.appended() > 0);
    CHECK_FALSE(j.has_pending());
  }
  REQUIRE(StateJournal::load(path, identity(), out, error));
  REQUIRE(out.sessions.size() == 1);
  CHECK(out.sessions.begin()->second.call_id == "b");
  CHECK(access((path + ".new").c_str(), F_OK) != 0);
  std::remove(path.c_str());
  rmdir(dir);
}

TEST_CASE("the port pool reserves the pairs a restart binds again", "[relay][state]") {
  PortPool pool(40000, 40010);  // 40000 .. 40008
  uint16_t bad = 0;
  CHECK_FALSE(pool.reserve({40002, 40003}, bad));
  CHECK(bad == 40003);
  CHECK_FALSE(pool.reserve({40002, 40002}, bad));
  CHECK_FALSE(pool.reserve({40010}, bad));
  CHECK(pool.free_count() == 5);  // nothing taken by a refused reservation
  REQUIRE(pool.reserve({40008, 40002}, bad));
  CHECK(pool.free_count() == 3);
  CHECK(*pool.allocate() == 40000);
  CHECK(*pool.allocate() == 40004);
  CHECK(*pool.allocate() == 40006);
  CHECK_FALSE(pool.allocate());
}

TEST_CASE("the counter table keeps slots across a reopen, for its own relay only",
          "[relay][state]") {
  char dir[] = "/tmp/mp-counters-XXXXXX";
  REQUIRE(mkdtemp(dir));
  const std::string path = std::string(dir) + "/relay.counters";
  std::string error;
  uint32_t index;
  {
    CounterTable t;
    REQUIRE(t.open(path, "relay A", 8, 100.0, error));
    t.release_unclaimed();
    index = t.acquire(77);
    REQUIRE(index != CounterTable::kNone);
    t.at(index)->leg[0][1].packets = 1234;
    t.at(index)->last_activity = 5.5;
    for (int i = 0; i < 7; ++i) CHECK(t.acquire(100 + i) != CounterTable::kNone);
    CHECK(t.acquire(200) == CounterTable::kNone);  // full
  }                                                // as after kill -9: nothing released
  {
    CounterTable t;
    REQUIRE(t.open(path, "relay A", 8, 200.0, error));
    CHECK(t.previous_clock_offset() == 100.0);
    CHECK(t.find(index, 78) == nullptr);  // another stream's id
    CounterSlot* s = t.find(index, 77);
    REQUIRE(s);
    CHECK(s->leg[0][1].packets == 1234);
    t.claim(index);
    CHECK(t.find(index, 77) == nullptr);  // claimed once
    t.release_unclaimed();
    // Seven slots free again, the claimed one kept.
    for (int i = 0; i < 7; ++i) CHECK(t.acquire(300 + i) != index);
    CHECK(t.acquire(400) == CounterTable::kNone);
  }
  {
    CounterTable t;
    REQUIRE(t.open(path, "relay B", 8, 300.0, error));  // not ours: emptied
    CHECK(t.find(index, 77) == nullptr);
    CHECK(t.previous_clock_offset() == 0);
    t.remove_file();
  }
  CHECK(access(path.c_str(), F_OK) != 0);
  rmdir(dir);
}
