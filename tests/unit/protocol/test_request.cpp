// Unit tests for request framing and parsing (protocol/request.h, spec A.2):
// parse_request() on well-formed and malformed blocks, and RequestFramer on
// byte streams split in every possible way, including hostile input.
#include <catch2/catch.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "protocol/request.h"

using namespace mp::protocol;

namespace {

// The A.11 INVITE request exactly as the Kamailio module sends it.
const std::string kUpdateRequest =
    "update\r\ntype: request\r\ndialog_id: 1234:5678\r\ncall_id: "
    "3c26700d2b0f@10.0.0.23\r\ncseq: 101\r\nfrom_uri: alice@example.com\r\nto_uri: "
    "bob@example.net\r\nfrom_tag: 9fxced76sl\r\nto_tag: \r\nuser_agent: Blink "
    "5.1.2\r\nsignaling_ip: 203.0.113.7\r\nmedia_relay: \r\nmedia: "
    "audio:10.0.0.23:49170:sendrecv:ice=no,video:10.0.0.23:51372:sendrecv:ice=no\r\n\r\n";

const std::string kRemoveRequest =
    "remove\r\ncall_id: 3c26700d2b0f@10.0.0.23\r\nfrom_tag: 9fxced76sl\r\nto_tag: "
    "8321234356\r\n\r\n";

struct Collected {
  std::vector<ParseResult> results;
  RequestFramer::Status status = RequestFramer::Status::Ok;
};

Collected feed_all(RequestFramer& framer, std::string_view bytes) {
  Collected c;
  c.status = framer.feed(bytes, [&](ParseResult&& r) { c.results.push_back(std::move(r)); });
  return c;
}

Collected feed_bytewise(RequestFramer& framer, std::string_view bytes) {
  Collected c;
  for (char ch : bytes) {
    c.status = framer.feed(std::string_view(&ch, 1),
                           [&](ParseResult&& r) { c.results.push_back(std::move(r)); });
    if (c.status != RequestFramer::Status::Ok) break;
  }
  return c;
}

void check_update(const ParseResult& r) {
  REQUIRE(r.request);
  CHECK(r.error.empty());
  const Request& req = *r.request;
  CHECK(req.command == "update");
  // to_tag and media_relay were empty and are dropped.
  REQUIRE(req.headers.size() == 10);
  CHECK(req.headers[0] == Header{"type", "request"});
  CHECK(req.headers[1] == Header{"dialog_id", "1234:5678"});
  CHECK(req.headers[2] == Header{"call_id", "3c26700d2b0f@10.0.0.23"});
  CHECK(req.headers[7] == Header{"user_agent", "Blink 5.1.2"});
  CHECK(req.headers[9].name == "media");
  CHECK(req.find("to_tag") == nullptr);
  CHECK(req.find("media_relay") == nullptr);
  REQUIRE(req.find("cseq"));
  CHECK(*req.find("cseq") == "101");
}

}  // namespace

TEST_CASE("parse_request: the A.11 update", "[request]") {
  // parse_request takes the block without the terminating empty line.
  const std::string block = kUpdateRequest.substr(0, kUpdateRequest.size() - 2);
  check_update(parse_request(block));
}

TEST_CASE("parse_request: remove", "[request]") {
  auto r = parse_request("remove\r\ncall_id: abc\r\nfrom_tag: f\r\nto_tag: t\r\n");
  REQUIRE(r.request);
  CHECK(r.request->command == "remove");
  CHECK(r.request->headers ==
        std::vector<Header>{{"call_id", "abc"}, {"from_tag", "f"}, {"to_tag", "t"}});
}

TEST_CASE("parse_request: command only, and last line without CRLF", "[request]") {
  auto a = parse_request("summary\r\n");
  REQUIRE(a.request);
  CHECK(a.request->command == "summary");
  CHECK(a.request->headers.empty());

  auto b = parse_request("update\r\ncall_id: x");
  REQUIRE(b.request);
  REQUIRE(b.request->find("call_id"));
  CHECK(*b.request->find("call_id") == "x");
}

TEST_CASE("parse_request: a request without call_id is still parsed", "[request]") {
  auto r = parse_request("update\r\nfrom_tag: a\r\n");
  REQUIRE(r.request);
  CHECK(r.request->find("call_id") == nullptr);
  CHECK(r.error.empty());
}

TEST_CASE("parse_request: header split at the first \": \"", "[request]") {
  auto r = parse_request("update\r\nsignaling_ip: {\"a\": \"b\", \"c\": 1}\r\nx: y: z\r\n");
  REQUIRE(r.request);
  REQUIRE(r.request->headers.size() == 2);
  CHECK(r.request->headers[0] == Header{"signaling_ip", "{\"a\": \"b\", \"c\": 1}"});
  CHECK(r.request->headers[1] == Header{"x", "y: z"});
}

TEST_CASE("parse_request: values keep leading/inner blanks verbatim", "[request]") {
  auto r = parse_request("update\r\nuser_agent:  two spaces \r\nk: :\r\n");
  REQUIRE(r.request);
  REQUIRE(r.request->headers.size() == 2);
  CHECK(r.request->headers[0].value == " two spaces ");
  CHECK(r.request->headers[1].value == ":");
}

TEST_CASE("parse_request: empty-valued headers are dropped", "[request]") {
  auto r = parse_request("update\r\nto_tag: \r\ncall_id: c\r\nmedia_relay: \r\n: \r\n");
  REQUIRE(r.request);
  CHECK(r.request->headers == std::vector<Header>{{"call_id", "c"}});
  // Spec A.2 drops any line whose text ends with ": ", even if an earlier
  // ": " would give it a non-empty value.
  auto s = parse_request("update\r\nx: y: \r\n");
  REQUIRE(s.request);
  CHECK(s.request->headers.empty());
}

TEST_CASE("parse_request: duplicate headers are kept, find() returns the last", "[request]") {
  auto r = parse_request("update\r\ncall_id: first\r\nfrom_tag: f\r\ncall_id: second\r\n");
  REQUIRE(r.request);
  REQUIRE(r.request->headers.size() == 3);
  CHECK(r.request->headers[0].value == "first");
  REQUIRE(r.request->find("call_id"));
  CHECK(*r.request->find("call_id") == "second");
  CHECK(r.request->find("CALL_ID") == nullptr);  // names are case-sensitive
  CHECK(r.request->find("call") == nullptr);
}

TEST_CASE("parse_request: malformed blocks give an error, never a request", "[request]") {
  const char* bad[] = {
      "",                                             // nothing
      "\r\n",                                         // empty command line
      "update\r\ncall_id\r\n",                        // no ": "
      "update\r\ncall_id:x\r\n",                      // colon without space
      "update\r\ncall_id: x\r\nbad\r\n",              // one bad line spoils the request
      "update\r\ncall_id:\r\n",                       // "name:" with nothing after
      "update\r\n: value\r\n",                        // empty header name
      "update\r\ncall_id: x\r\n\r\nfrom_tag: y\r\n",  // blank line inside the block
  };
  for (const char* text : bad) {
    INFO("block: " << text);
    auto r = parse_request(text);
    CHECK_FALSE(r.request);
    CHECK_FALSE(r.error.empty());
  }
}

TEST_CASE("parse_request: header count limit", "[request]") {
  std::string ok = "update\r\n";
  for (size_t i = 0; i < kMaxHeaders; ++i) ok += "h" + std::to_string(i) + ": v\r\n";
  auto r = parse_request(ok);
  REQUIRE(r.request);
  CHECK(r.request->headers.size() == kMaxHeaders);

  auto too_many = parse_request(ok + "one_more: v\r\n");
  CHECK_FALSE(too_many.request);
  CHECK_FALSE(too_many.error.empty());

  // Dropped empty-valued lines still count as header lines.
  auto with_empty = parse_request(ok + "empty: \r\n");
  CHECK_FALSE(with_empty.request);
}

TEST_CASE("parse_request: bare CR and LF are data, not line ends", "[request]") {
  auto r = parse_request("update\r\nk: a\nb\rc\r\n");
  REQUIRE(r.request);
  REQUIRE(r.request->headers.size() == 1);
  CHECK(r.request->headers[0].value == "a\nb\rc");
}

TEST_CASE("RequestFramer: whole request in one chunk", "[request][framer]") {
  RequestFramer framer;
  auto c = feed_all(framer, kUpdateRequest);
  CHECK(c.status == RequestFramer::Status::Ok);
  REQUIRE(c.results.size() == 1);
  check_update(c.results[0]);
  CHECK(framer.pending_bytes() == 0);
}

TEST_CASE("RequestFramer: byte by byte, CRLF split across feeds", "[request][framer]") {
  RequestFramer framer;
  auto c = feed_bytewise(framer, kUpdateRequest + kRemoveRequest);
  CHECK(c.status == RequestFramer::Status::Ok);
  REQUIRE(c.results.size() == 2);
  check_update(c.results[0]);
  REQUIRE(c.results[1].request);
  CHECK(c.results[1].request->command == "remove");
  CHECK(framer.pending_bytes() == 0);
}

TEST_CASE("RequestFramer: every two-way split gives the same result", "[request][framer]") {
  const std::string stream = kUpdateRequest + kRemoveRequest;
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    RequestFramer framer;
    std::vector<ParseResult> results;
    auto sink = [&](ParseResult&& r) { results.push_back(std::move(r)); };
    REQUIRE(framer.feed(std::string_view(stream).substr(0, cut), sink) ==
            RequestFramer::Status::Ok);
    REQUIRE(framer.feed(std::string_view(stream).substr(cut), sink) == RequestFramer::Status::Ok);
    INFO("cut at " << cut);
    REQUIRE(results.size() == 2);
    check_update(results[0]);
    REQUIRE(results[1].request);
    CHECK(results[1].request->headers.size() == 3);
  }
}

TEST_CASE("RequestFramer: leading and repeated empty lines are ignored", "[request][framer]") {
  RequestFramer framer;
  auto c = feed_all(framer, "\r\n\r\n\r\n" + kRemoveRequest + "\r\n\r\n" + kRemoveRequest);
  CHECK(c.status == RequestFramer::Status::Ok);
  REQUIRE(c.results.size() == 2);
  for (auto& r : c.results) {
    REQUIRE(r.request);
    CHECK(r.request->command == "remove");
  }
}

TEST_CASE("RequestFramer: incomplete request stays pending", "[request][framer]") {
  RequestFramer framer;
  auto c = feed_all(framer, "update\r\ncall_id: x\r\nfrom_ta");
  CHECK(c.status == RequestFramer::Status::Ok);
  CHECK(c.results.empty());
  CHECK(framer.pending_bytes() == 7);  // "from_ta" (complete lines are consumed)
  c = feed_all(framer, "g: y\r\n\r\n");
  REQUIRE(c.results.size() == 1);
  REQUIRE(c.results[0].request);
  CHECK(c.results[0].request->headers.size() == 2);
}

TEST_CASE("RequestFramer: a malformed request is reported and the next one still parses",
          "[request][framer]") {
  RequestFramer framer;
  auto c = feed_all(framer, "update\r\nno separator here\r\n\r\n" + kRemoveRequest);
  CHECK(c.status == RequestFramer::Status::Ok);
  REQUIRE(c.results.size() == 2);
  CHECK_FALSE(c.results[0].request);
  CHECK_FALSE(c.results[0].error.empty());
  REQUIRE(c.results[1].request);
  CHECK(c.results[1].request->command == "remove");
}

TEST_CASE("RequestFramer: line length limit", "[request][framer]") {
  SECTION("a line of exactly the limit is accepted, even byte by byte") {
    RequestFramer framer;
    const std::string value(kMaxModuleLine - 3, 'v');  // "k: " + value = limit
    const std::string req = "update\r\nk: " + value + "\r\n\r\n";
    auto c = feed_bytewise(framer, req);
    CHECK(c.status == RequestFramer::Status::Ok);
    REQUIRE(c.results.size() == 1);
    REQUIRE(c.results[0].request);
    CHECK(c.results[0].request->headers[0].value.size() == kMaxModuleLine - 3);
  }
  SECTION("one byte over the limit, complete line") {
    RequestFramer framer;
    const std::string req = "update\r\nk: " + std::string(kMaxModuleLine - 2, 'v') + "\r\n\r\n";
    auto c = feed_all(framer, req);
    CHECK(c.status == RequestFramer::Status::LineTooLong);
    CHECK(c.results.empty());
  }
  SECTION("one byte over the limit, incomplete line") {
    RequestFramer framer;
    auto c = feed_all(framer, std::string(kMaxModuleLine, 'x'));
    CHECK(c.status == RequestFramer::Status::Ok);  // could still be followed by CRLF
    c = feed_all(framer, "x");
    CHECK(c.status == RequestFramer::Status::LineTooLong);
  }
  SECTION("limit reached while waiting for the LF") {
    RequestFramer framer;
    auto c = feed_all(framer, std::string(kMaxModuleLine, 'x') + "\r");
    CHECK(c.status == RequestFramer::Status::Ok);
    c = feed_all(framer, "\n\r\n");
    CHECK(c.status == RequestFramer::Status::Ok);
    REQUIRE(c.results.size() == 1);
    CHECK(c.results[0].request);
  }
  SECTION("100 KB line") {
    RequestFramer framer;
    auto c = feed_all(framer, "update\r\nk: " + std::string(100 * 1024, 'a') + "\r\n\r\n");
    CHECK(c.status == RequestFramer::Status::LineTooLong);
    CHECK(c.results.empty());
  }
  SECTION("100 KB line fed in 1 KB chunks stops early") {
    RequestFramer framer;
    RequestFramer::Status status = RequestFramer::Status::Ok;
    size_t fed = 0;
    const std::string chunk(1024, 'a');
    while (status == RequestFramer::Status::Ok && fed < 100 * 1024) {
      status = framer.feed(chunk, [](ParseResult&&) { FAIL("no request expected"); });
      fed += chunk.size();
    }
    CHECK(status == RequestFramer::Status::LineTooLong);
    CHECK(fed <= kMaxModuleLine + chunk.size());
  }
  SECTION("requests before the long line are still delivered; the error is sticky") {
    RequestFramer framer;
    auto c = feed_all(framer, kRemoveRequest + std::string(kMaxModuleLine + 10, 'x') + "\r\n");
    CHECK(c.status == RequestFramer::Status::LineTooLong);
    REQUIRE(c.results.size() == 1);
    CHECK(c.results[0].request);
    c = feed_all(framer, "\r\n" + kRemoveRequest);
    CHECK(c.status == RequestFramer::Status::LineTooLong);
    CHECK(c.results.empty());
  }
  SECTION("custom limit") {
    RequestFramer framer(8);
    CHECK(feed_all(framer, "12345678\r\n").status == RequestFramer::Status::Ok);
    CHECK(feed_all(framer, "123456789\r\n").status == RequestFramer::Status::LineTooLong);
  }
}

TEST_CASE("RequestFramer: too many header lines is an error, memory stays bounded",
          "[request][framer]") {
  RequestFramer framer;
  std::string req = "update\r\n";
  for (int i = 0; i < 10000; ++i) req += "h: " + std::string(100, 'v') + "\r\n";
  std::vector<ParseResult> results;
  size_t max_pending = 0;
  for (size_t pos = 0; pos < req.size(); pos += 4096) {
    REQUIRE(framer.feed(std::string_view(req).substr(pos, 4096), [&](ParseResult&& r) {
      results.push_back(std::move(r));
    }) == RequestFramer::Status::Ok);
    max_pending = std::max(max_pending, framer.pending_bytes());
  }
  CHECK(max_pending < 4096 + 200);
  CHECK(results.empty());
  REQUIRE(framer.feed("\r\n" + kRemoveRequest, [&](ParseResult&& r) {
    results.push_back(std::move(r));
  }) == RequestFramer::Status::Ok);
  REQUIRE(results.size() == 2);
  CHECK_FALSE(results[0].request);
  CHECK_FALSE(results[0].error.empty());
  REQUIRE(results[1].request);  // the framer recovered
  CHECK(results[1].request->command == "remove");

  SECTION("exactly kMaxHeaders header lines are fine") {
    RequestFramer f2;
    std::string ok = "update\r\n";
    for (size_t i = 0; i < kMaxHeaders; ++i) ok += "h: v\r\n";
    auto c = feed_all(f2, ok + "\r\n");
    REQUIRE(c.results.size() == 1);
    REQUIRE(c.results[0].request);
    CHECK(c.results[0].request->headers.size() == kMaxHeaders);
  }
  SECTION("kMaxHeaders + 1 is not") {
    RequestFramer f3;
    std::string bad = "update\r\n";
    for (size_t i = 0; i <= kMaxHeaders; ++i) bad += "h: v\r\n";
    auto c = feed_all(f3, bad + "\r\n");
    REQUIRE(c.results.size() == 1);
    CHECK_FALSE(c.results[0].request);
  }
}

TEST_CASE("RequestFramer: a request with a LF-only line ending is one long line",
          "[request][framer]") {
  RequestFramer framer;
  auto c = feed_all(framer, "update\ncall_id: x\n\n");
  CHECK(c.status == RequestFramer::Status::Ok);
  CHECK(c.results.empty());  // no CRLF seen yet
  c = feed_all(framer, "\r\n\r\n");
  REQUIRE(c.results.size() == 1);
  REQUIRE(c.results[0].request);
  CHECK(c.results[0].request->command == "update\ncall_id: x\n\n");
}

TEST_CASE("RequestFramer: the callback may destroy the framer", "[request][framer]") {
  auto* framer = new RequestFramer();
  int calls = 0;
  auto status = framer->feed(kRemoveRequest + kRemoveRequest, [&](ParseResult&&) {
    ++calls;
    if (framer) {
      delete framer;
      framer = nullptr;
    }
  });
  CHECK(status == RequestFramer::Status::Ok);
  CHECK(calls == 2);
  CHECK(framer == nullptr);
}

TEST_CASE("RequestFramer: random bytes never crash and never yield empty commands",
          "[request][framer]") {
  uint64_t state = 0x9e3779b97f4a7c15ull;
  auto next = [&] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  const char alphabet[] = {'\r', '\n', ':', ' ', 'a', 'b', '\0', '\xff'};
  for (int round = 0; round < 300; ++round) {
    RequestFramer framer(64);
    std::string data;
    const size_t len = next() % 2000;
    for (size_t i = 0; i < len; ++i) {
      const uint64_t r = next();
      data.push_back((r & 1) ? alphabet[(r >> 1) % sizeof alphabet] : static_cast<char>(r >> 8));
    }
    size_t pos = 0;
    while (pos < data.size()) {
      const size_t n = 1 + next() % 64;
      const auto status = framer.feed(std::string_view(data).substr(pos, n), [](ParseResult&& r) {
        CHECK(r.request.has_value() == r.error.empty());
        if (r.request) {
          CHECK_FALSE(r.request->command.empty());
          CHECK(r.request->headers.size() <= kMaxHeaders);
          for (const Header& h : r.request->headers) {
            CHECK_FALSE(h.name.empty());
            CHECK_FALSE(h.value.empty());
          }
        }
      });
      if (status == RequestFramer::Status::LineTooLong) break;
      pos += n;
    }
    CHECK(framer.pending_bytes() <= 2000);
  }
}
