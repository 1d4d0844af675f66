// Unit tests for the management protocol's text layer
// (management/management_command.h, spec section C): commands matched exactly
// after trimming spaces and tabs, lines cut at LF with one CR dropped, and the
// 16384-byte line limit applied whether or not the line's LF has arrived.
#include <catch2/catch.hpp>
#include <string>

#include "management/management_command.h"

using namespace mp::management;

TEST_CASE("parse_management_command names the five commands", "[management]") {
  CHECK(parse_management_command("summary") == ManagementCommand::Summary);
  CHECK(parse_management_command("sessions") == ManagementCommand::Sessions);
  CHECK(parse_management_command("version") == ManagementCommand::Version);
  CHECK(parse_management_command("quit") == ManagementCommand::Quit);
  CHECK(parse_management_command("exit") == ManagementCommand::Quit);
  CHECK(parse_management_command(" \tsummary\t ") == ManagementCommand::Summary);
}

TEST_CASE("parse_management_command: blank lines and anything else", "[management]") {
  CHECK(parse_management_command("") == ManagementCommand::Empty);
  CHECK(parse_management_command(" \t ") == ManagementCommand::Empty);
  CHECK(parse_management_command("Summary") == ManagementCommand::Unknown);
  CHECK(parse_management_command("summary x") == ManagementCommand::Unknown);
  CHECK(parse_management_command("sum mary") == ManagementCommand::Unknown);
  CHECK(parse_management_command("summary\r") == ManagementCommand::Unknown);
  CHECK(parse_management_command(std::string("summary\0", 8)) == ManagementCommand::Unknown);
  CHECK(parse_management_command("\r") == ManagementCommand::Unknown);
}

TEST_CASE("take_management_line cuts at LF and drops one CR", "[management]") {
  std::string buffer = "summary\r\nversion\n\r\r\npartial";
  std::string line;
  REQUIRE(take_management_line(buffer, line) == LineStatus::Line);
  CHECK(line == "summary");
  REQUIRE(take_management_line(buffer, line) == LineStatus::Line);
  CHECK(line == "version");
  REQUIRE(take_management_line(buffer, line) == LineStatus::Line);
  CHECK(line == "\r");
  CHECK(take_management_line(buffer, line) == LineStatus::NeedMore);
  CHECK(buffer == "partial");
  buffer += "\n";
  REQUIRE(take_management_line(buffer, line) == LineStatus::Line);
  CHECK(line == "partial");
  CHECK(buffer.empty());
  CHECK(take_management_line(buffer, line) == LineStatus::NeedMore);
}

TEST_CASE("take_management_line refuses lines over 16384 bytes", "[management]") {
  std::string line;
  std::string exact(kMaxCommandLine, 'x');
  std::string buffer = exact;
  CHECK(take_management_line(buffer, line) == LineStatus::NeedMore);
  buffer += "\n";
  REQUIRE(take_management_line(buffer, line) == LineStatus::Line);
  CHECK(line == exact);

  buffer = exact + "x";
  CHECK(take_management_line(buffer, line) == LineStatus::TooLong);
  // Also when the LF came in the same read: the limit does not depend on
  // how the bytes were split.
  buffer = exact + "x\nsummary\n";
  CHECK(take_management_line(buffer, line) == LineStatus::TooLong);
  // The CR counts towards the limit.
  buffer = exact + "\r\n";
  CHECK(take_management_line(buffer, line) == LineStatus::TooLong);
}
