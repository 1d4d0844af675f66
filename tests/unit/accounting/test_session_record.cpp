// parse_session_record() (accounting/session_record.h): the identifiers of a
// final record, byte-exact, and clear refusals of what is not a record.
#include <catch2/catch.hpp>

#include <string>

#include "accounting/session_record.h"

using mp::accounting::parse_session_record;

TEST_CASE("a record's identifiers and start time", "[session_record]") {
  std::string error;
  const std::string json =
      R"({"call_id": "3c26700d2b0f@10.0.0.23", "from_tag": "9fxced76sl", "to_tag": "8321", )"
      R"("start_time": 1700000000.5, "streams": []})";
  auto r = parse_session_record(json, error);
  REQUIRE(r);
  CHECK(r->call_id == "3c26700d2b0f@10.0.0.23");
  CHECK(r->from_tag == "9fxced76sl");
  CHECK(r->to_tag == std::optional<std::string>("8321"));
  CHECK(r->start_time == Approx(1700000000.5));
  CHECK(r->json == json);
}

TEST_CASE("null to_tag and start_time of a call never answered", "[session_record]") {
  std::string error;
  auto r = parse_session_record(
      R"({"call_id": "a", "from_tag": "b", "to_tag": null, "start_time": null})", error);
  REQUIRE(r);
  CHECK_FALSE(r->to_tag);
  CHECK_FALSE(r->start_time);
}

TEST_CASE("identifiers keep bytes that are not UTF-8", "[session_record]") {
  std::string error;
  // \udcff is how the JSON writer keeps the byte 0xff (surrogateescape).
  auto r = parse_session_record(R"({"call_id": "x\udcffy", "from_tag": "t\u00e9"})", error);
  REQUIRE(r);
  CHECK(r->call_id == std::string("x\xffy"));
  CHECK(r->from_tag == std::string("t\xc3\xa9"));
}

TEST_CASE("what is not a record is refused with a reason", "[session_record]") {
  for (const char* bad : {"", "[]", "{", "{\"call_id\": 5, \"from_tag\": \"a\"}",
                          "{\"from_tag\": \"a\"}", "{\"call_id\": \"a\"}", "null"}) {
    std::string error;
    CHECK_FALSE(parse_session_record(bad, error));
    CHECK_FALSE(error.empty());
  }
}
