// Unit tests for the dispatcher-to-relay codec (protocol/relay_link.h, spec
// B.2 / B.3 / B.10): commands, replies, expiry reports and keepalives, byte
// for byte against the spec's examples, plus malformed lines.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "protocol/relay_link.h"

using namespace mp::protocol;

namespace {

// The reason of a failure, where a case does not look at it.
std::string ignored;

// B.10, D->R "update 1" (to_tag and media_relay were dropped by the dispatcher).
const std::string kUpdate1 =
    "update 1\r\ntype: request\r\ndialog_id: 1234:5678\r\ncall_id: "
    "3c26700d2b0f@10.0.0.23\r\ncseq: 101\r\nfrom_uri: alice@example.com\r\nto_uri: "
    "bob@example.net\r\nfrom_tag: 9fxced76sl\r\nuser_agent: Blink 5.1.2\r\nsignaling_ip: "
    "203.0.113.7\r\nmedia: "
    "audio:10.0.0.23:49170:sendrecv:ice=no,video:10.0.0.23:51372:sendrecv:ice=no\r\n\r\n";

const std::string kRemove3 =
    "remove 3\r\ncall_id: 3c26700d2b0f@10.0.0.23\r\nfrom_tag: 9fxced76sl\r\nto_tag: "
    "8321234356\r\n\r\n";

// The module's A.11 request headers, in module order, including empty ones.
std::vector<Header> module_update_headers() {
  return {
      {"type", "request"},
      {"dialog_id", "1234:5678"},
      {"call_id", "3c26700d2b0f@10.0.0.23"},
      {"cseq", "101"},
      {"from_uri", "alice@example.com"},
      {"to_uri", "bob@example.net"},
      {"from_tag", "9fxced76sl"},
      {"to_tag", ""},
      {"user_agent", "Blink 5.1.2"},
      {"signaling_ip", "203.0.113.7"},
      {"media_relay", ""},
      {"media", "audio:10.0.0.23:49170:sendrecv:ice=no,video:10.0.0.23:51372:sendrecv:ice=no"},
  };
}

// Frames `bytes` with a relay-side RequestFramer and converts every request.
std::vector<RelayCommand> decode_commands(std::string_view bytes) {
  std::vector<RelayCommand> out;
  RequestFramer framer(kMaxRelayLineAtRelay);
  auto status = framer.feed(bytes, [&](ParseResult&& r) {
    REQUIRE(r.request);
    std::string error;
    auto cmd = to_relay_command(std::move(*r.request), error);
    INFO(error);
    REQUIRE(cmd);
    out.push_back(std::move(*cmd));
  });
  CHECK(status == RequestFramer::Status::Ok);
  CHECK(framer.pending_bytes() == 0);
  return out;
}

Request make_request(std::string command) {
  Request r;
  r.command = std::move(command);
  return r;
}

}  // namespace

TEST_CASE("serialize_command: B.10 byte-exact examples", "[relay_link]") {
  CHECK(serialize_command(RelayCommand{"sessions", 0, {}}) == "sessions 0\r\n\r\n");
  CHECK(serialize_command(RelayCommand{"summary", 7, {}}) == "summary 7\r\n\r\n");

  // Empty-valued headers are skipped, the rest keep their order.
  CHECK(serialize_command(RelayCommand{"update", 1, module_update_headers()}) == kUpdate1);

  RelayCommand remove{"remove",
                      3,
                      {{"call_id", "3c26700d2b0f@10.0.0.23"},
                       {"from_tag", "9fxced76sl"},
                       {"to_tag", "8321234356"}}};
  CHECK(serialize_command(remove) == kRemove3);
}

TEST_CASE("serialize_command then frame + to_relay_command round-trips", "[relay_link]") {
  std::vector<Header> kept;
  for (auto& h : module_update_headers())
    if (!h.value.empty()) kept.push_back(h);
  const std::vector<RelayCommand> commands{
      {"sessions", 0, {}},
      {"update", 1, kept},
      {"update", 2, {{"type", "reply"}, {"call_id", "c"}, {"call_id", "dup"}}},
      {"remove", 3, {{"call_id", "c"}, {"from_tag", "f"}}},
      {"summary", 18446744073709551615ull, {}},
  };
  std::string stream;
  for (auto& c : commands) stream += serialize_command(c);
  CHECK(decode_commands(stream) == commands);

  // Same, byte by byte.
  std::vector<RelayCommand> bytewise;
  RequestFramer framer(kMaxRelayLineAtRelay);
  for (char ch : stream) {
    REQUIRE(framer.feed(std::string_view(&ch, 1), [&](ParseResult&& r) {
      REQUIRE(r.request);
      auto cmd = to_relay_command(std::move(*r.request), ignored);
      REQUIRE(cmd);
      bytewise.push_back(std::move(*cmd));
    }) == RequestFramer::Status::Ok);
  }
  CHECK(bytewise == commands);
}

TEST_CASE("RelayCommandView::find reads what the command on the wire carries", "[relay_link]") {
  // The in-process link hands the dispatcher's headers over as they are,
  // empty values included; the relay must read what it would have read from
  // the serialised command, where they are left out.
  const std::vector<Header> headers{{"call_id", "c"}, {"to_tag", ""},     {"from_tag", "f1"},
                                    {"from_tag", ""}, {"media", "audio"}, {"call_id", "c2"},
                                    {"dialog_id", ""}};
  const RelayCommandView in_process{"update", 5, headers};
  const auto wire = decode_commands(serialize_command({"update", 5, headers}));
  REQUIRE(wire.size() == 1);
  const RelayCommandView from_wire = wire[0].view();
  for (const char* name : {"call_id", "to_tag", "from_tag", "media", "dialog_id", "absent"}) {
    INFO(name);
    const std::string* a = in_process.find(name);
    const std::string* b = from_wire.find(name);
    REQUIRE((a == nullptr) == (b == nullptr));
    if (a) CHECK(*a == *b);
  }
  CHECK(*in_process.find("call_id") == "c2");
  CHECK(*in_process.find("from_tag") == "f1");
  CHECK(in_process.find("to_tag") == nullptr);
}

TEST_CASE("decode the B.10 commands", "[relay_link]") {
  auto cmds = decode_commands("sessions 0\r\n\r\n" + kUpdate1 + kRemove3);
  REQUIRE(cmds.size() == 3);
  CHECK(cmds[0].name == "sessions");
  CHECK(cmds[0].seq == 0);
  CHECK(cmds[0].headers.empty());
  CHECK(cmds[1].name == "update");
  CHECK(cmds[1].seq == 1);
  CHECK(cmds[1].headers.size() == 10);
  CHECK(cmds[2].name == "remove");
  CHECK(cmds[2].seq == 3);
  CHECK(cmds[2].headers[2] == Header{"to_tag", "8321234356"});
}

TEST_CASE("to_relay_command: command line forms", "[relay_link]") {
  std::string error;
  SECTION("blank runs separate tokens like Python's split()") {
    auto cmd = to_relay_command(make_request("update \t 12 "), error);
    REQUIRE(cmd);
    CHECK(cmd->name == "update");
    CHECK(cmd->seq == 12);
  }
  SECTION("headers are moved over") {
    Request r = make_request("remove 5");
    r.headers = {{"call_id", "x"}};
    auto cmd = to_relay_command(std::move(r), error);
    REQUIRE(cmd);
    CHECK(cmd->headers == std::vector<Header>{{"call_id", "x"}});
  }
  SECTION("leading zeros are still decimal") {
    auto cmd = to_relay_command(make_request("update 007"), error);
    REQUIRE(cmd);
    CHECK(cmd->seq == 7);
  }
  SECTION("uint64 max") {
    auto cmd = to_relay_command(make_request("update 18446744073709551615"), error);
    REQUIRE(cmd);
    CHECK(cmd->seq == 18446744073709551615ull);
  }
  SECTION("bad command lines") {
    const char* bad[] = {"update",                        // one token
                         "",                              // none
                         "   ",                           // none
                         "update 1 2",                    // three tokens
                         "update 1 x",                    // three tokens
                         "update x",                      // non-decimal
                         "update 1x",                     // non-decimal
                         "update 0x10",                   // hex
                         "update -1",                     // negative
                         "update +1",                     // sign
                         "update 1.0",                    // not an integer
                         "update 18446744073709551616",   // overflow by one
                         "update 99999999999999999999",   // overflow
                         "update 000000000000000000001",  // too many digits
                         "1 update"};                     // swapped
    for (const char* line : bad) {
      INFO("command line: " << line);
      error.clear();
      CHECK_FALSE(to_relay_command(make_request(line), error));
      CHECK_FALSE(error.empty());
    }
    CHECK_FALSE(to_relay_command(make_request("update"), ignored));
  }
}

TEST_CASE("serialize_reply / serialize_expired: B.10 examples", "[relay_link]") {
  CHECK(serialize_reply(0, "[]") == "0 []\r\n");
  CHECK(serialize_reply(1, "192.0.2.5 40002 40006") == "1 192.0.2.5 40002 40006\r\n");
  CHECK(serialize_reply(2, "192.0.2.5 40000 0") == "2 192.0.2.5 40000 0\r\n");
  CHECK(serialize_reply(4, "error") == "4 error\r\n");
  CHECK(serialize_reply(5, "halting") == "5 halting\r\n");
  CHECK(serialize_reply(3, "{\"call_id\": \"3c26700d2b0f@10.0.0.23\"}") ==
        "3 {\"call_id\": \"3c26700d2b0f@10.0.0.23\"}\r\n");
  CHECK(serialize_expired("{\"call_id\": \"x\"}") == "expired {\"call_id\": \"x\"}\r\n");
}

TEST_CASE("parse_relay_message: replies", "[relay_link]") {
  std::string error;
  auto r = parse_relay_message("1 192.0.2.5 40002 40006", error);
  REQUIRE(r);
  CHECK(r->kind == RelayMessage::Kind::Reply);
  CHECK(r->seq == 1);
  CHECK(r->payload == "192.0.2.5 40002 40006");

  auto s = parse_relay_message("0 []", error);
  REQUIRE(s);
  CHECK(s->seq == 0);
  CHECK(s->payload == "[]");

  auto j = parse_relay_message("3 {\"call_id\": \"a b\", \"x\": [1, 2]}", error);
  REQUIRE(j);
  CHECK(j->seq == 3);
  CHECK(j->payload == "{\"call_id\": \"a b\", \"x\": [1, 2]}");

  auto e = parse_relay_message("4 error", error);
  REQUIRE(e);
  CHECK(e->payload == "error");

  auto big = parse_relay_message("18446744073709551615 None", error);
  REQUIRE(big);
  CHECK(big->seq == 18446744073709551615ull);
  CHECK(big->payload == "None");

  // Everything after the first space is payload, spaces included.
  auto sp = parse_relay_message("9  two", error);
  REQUIRE(sp);
  CHECK(sp->payload == " two");
}

TEST_CASE("parse_relay_message: expiry reports", "[relay_link]") {
  std::string error;
  auto r = parse_relay_message("expired {\"call_id\": \"3c26700d2b0f@10.0.0.23\", \"streams\": []}",
                               error);
  REQUIRE(r);
  CHECK(r->kind == RelayMessage::Kind::Expired);
  CHECK(r->payload == "{\"call_id\": \"3c26700d2b0f@10.0.0.23\", \"streams\": []}");
  CHECK_FALSE(parse_relay_message("expired ", error));
  CHECK_FALSE(parse_relay_message("expired", error));
  CHECK_FALSE(parse_relay_message("Expired {}", error));
}

TEST_CASE("parse_relay_message: keepalives", "[relay_link]") {
  auto ping = parse_relay_message("ping", ignored);
  REQUIRE(ping);
  CHECK(ping->kind == RelayMessage::Kind::Ping);
  auto pong = parse_relay_message("pong", ignored);
  REQUIRE(pong);
  CHECK(pong->kind == RelayMessage::Kind::Pong);
  CHECK_FALSE(parse_relay_message("ping ", ignored));
  CHECK_FALSE(parse_relay_message("PING", ignored));
  CHECK_FALSE(parse_relay_message("pingpong", ignored));
}

TEST_CASE("parse_relay_message: bad lines", "[relay_link]") {
  const char* bad[] = {"",
                       " ",
                       "error",                          // missing sequence number
                       " error",                         // empty sequence number
                       "x error",                        // non-decimal
                       "1x error",                       // non-decimal
                       "-1 error",                       // negative
                       "+1 error",                       // sign
                       "0x1 error",                      // hex
                       "18446744073709551616 error",     // overflow by one
                       "99999999999999999999999 error",  // overflow
                       "5",                              // no payload
                       "5 ",                             // empty payload
                       "5\terror"};                      // only a space separates
  for (const char* line : bad) {
    INFO("line: " << line);
    std::string error;
    CHECK_FALSE(parse_relay_message(line, error));
    CHECK_FALSE(error.empty());
  }
}

TEST_CASE("serialize_reply then parse_relay_message round-trips", "[relay_link]") {
  const std::pair<uint64_t, std::string> cases[] = {
      {0, "[]"}, {1, "192.0.2.5 40002 40006"}, {42, "error"}, {18446744073709551615ull, "x y"}};
  for (const auto& [seq, payload] : cases) {
    std::string line = serialize_reply(seq, payload);
    REQUIRE(line.size() >= 2);
    CHECK(line.substr(line.size() - 2) == "\r\n");
    line.resize(line.size() - 2);
    auto msg = parse_relay_message(line, ignored);
    REQUIRE(msg);
    CHECK(msg->kind == RelayMessage::Kind::Reply);
    CHECK(msg->seq == seq);
    CHECK(msg->payload == payload);
  }
  std::string expired = serialize_expired("{\"a\": 1}");
  expired.resize(expired.size() - 2);
  auto msg = parse_relay_message(expired, ignored);
  REQUIRE(msg);
  CHECK(msg->kind == RelayMessage::Kind::Expired);
  CHECK(msg->payload == "{\"a\": 1}");
}

TEST_CASE("limits", "[relay_link]") {
  CHECK(kMaxRelayLineAtRelay == 16384);
  CHECK(kMaxRelayLineAtDispatcher == 4u * 1024 * 1024);
}
