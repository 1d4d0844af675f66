// The `sessions_from` command and its batch replies (protocol/session_batch.h):
// headers and payloads as the relay and the dispatcher write and read them.
#include <catch2/catch.hpp>

#include "protocol/session_batch.h"

using namespace mp::protocol;

namespace {

// The reason of a failure, where a case does not look at it.
std::string ignored;

}  // namespace

TEST_CASE("sessions_from headers round-trip and clamp the limit", "[session_batch]") {
  const auto h = sessions_from_headers({42, 100});
  REQUIRE(h.size() == 2);
  CHECK(h[0].name == "after");
  CHECK(h[0].value == "42");
  CHECK(h[1].name == "limit");
  CHECK(h[1].value == "100");
  CHECK(parse_sessions_from(h, ignored) == SessionsFrom{42, 100});
  CHECK(parse_sessions_from({{"after", "0"}, {"limit", "0"}}, ignored)->limit == 1);
  CHECK(parse_sessions_from({{"after", "0"}, {"limit", "99999999"}}, ignored)->limit ==
        kMaxBatchSessions);
  CHECK(parse_sessions_from({{"after", "18446744073709551615"}, {"limit", "5"}}, ignored)->after ==
        18446744073709551615ull);
}

TEST_CASE("sessions_from without numbers is refused with a reason", "[session_batch]") {
  std::string why;
  CHECK_FALSE(parse_sessions_from({{"limit", "5"}}, why));
  CHECK(why.find("after") != std::string::npos);
  CHECK_FALSE(parse_sessions_from({{"after", "-1"}, {"limit", "5"}}, why));
  CHECK_FALSE(parse_sessions_from({{"after", "1"}, {"limit", " 5"}}, why));
  CHECK_FALSE(parse_sessions_from({{"after", "18446744073709551616"}, {"limit", "5"}}, why));
  CHECK(why.find("non-numeric") != std::string::npos);
}

TEST_CASE("batch payloads: more with a cursor, end with or without objects", "[session_batch]") {
  const std::string objs = R"({"call_id": "a"}, {"call_id": "b c"})";
  CHECK(format_sessions_batch({true, 7, objs}) == "more 7 " + objs);
  CHECK(format_sessions_batch({false, 0, objs}) == "end " + objs);
  CHECK(format_sessions_batch({false, 0, ""}) == "end");

  const std::string more_text = "more 7 " + objs, end_text = "end " + objs;  // outlive the views
  auto more = parse_sessions_batch(more_text, ignored);
  REQUIRE(more);
  CHECK(more->more);
  CHECK(more->cursor == 7);
  CHECK(more->objects == objs);
  auto end = parse_sessions_batch(end_text, ignored);
  REQUIRE(end);
  CHECK_FALSE(end->more);
  CHECK(end->objects == objs);
  auto empty = parse_sessions_batch("end", ignored);
  REQUIRE(empty);
  CHECK_FALSE(empty->more);
  CHECK(empty->objects.empty());
}

TEST_CASE("malformed batch payloads are refused", "[session_batch]") {
  std::string why;
  for (const char* bad : {"", "[]", "error", "ends", "more", "more 7", "more 7 ", "more x {}",
                          "more -1 {}", "more  7 {}"}) {
    INFO(bad);
    CHECK_FALSE(parse_sessions_batch(bad, why));
    CHECK_FALSE(why.empty());
  }
}
