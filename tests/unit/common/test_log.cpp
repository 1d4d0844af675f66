// Unit tests for the parts of common/log.h that protect the log from peers:
// log_safe() (escaping of network bytes) and the rate limit for lines about
// bad input (log::admit). The limit runs on the real monotonic clock; every
// case below runs well inside one second.
#include <catch2/catch.hpp>
#include <string>

#include "common/log.h"

using mp::log_safe;
namespace mplog = mp::log;

TEST_CASE("log_safe: control bytes, DEL, backslash and non-ASCII are escaped", "[log]") {
  CHECK(log_safe("plain text: 1.2.3.4") == "plain text: 1.2.3.4");
  CHECK(log_safe(std::string("a\0b", 3)) == "a\\x00b");
  CHECK(log_safe("x\ny\rz\t") == "x\\x0ay\\x0dz\\x09");
  CHECK(log_safe("\x1b[31m\x7f") == "\\x1b[31m\\x7f");
  CHECK(log_safe("\xc3\xa9\xff") == "\\xc3\\xa9\\xff");
  CHECK(log_safe("a\\x0ab") == "a\\\\x0ab");  // a literal backslash cannot fake an escape
  CHECK(log_safe(std::string(300, 'a')) == std::string(256, 'a') + "...");
  CHECK(log_safe("abcdef", 3) == "abc...");
}

TEST_CASE("log::admit: one line per source per interval, the rest counted", "[log]") {
  mplog::reset_limits();
  mplog::LimitSource a, b;
  std::string note = "stale";
  CHECK(mplog::admit(&a, note));
  CHECK(note.empty());
  CHECK_FALSE(mplog::admit(&a, note));
  CHECK_FALSE(mplog::admit(&a, note));
  CHECK(mplog::suppressed_total() == 2);
  // Another source is not held back by the first; its line reports the two.
  CHECK(mplog::admit(&b, note));
  CHECK(note == " [2 similar line(s) suppressed]");
  CHECK_FALSE(mplog::admit(&b, note));
  // Once the interval is over the source may log again.
  a.next_allowed = 0;
  CHECK(mplog::admit(&a, note));
  CHECK(note == " [1 similar line(s) suppressed]");
  CHECK(mplog::suppressed_total() == 3);
}

TEST_CASE("log::admit: at most kLinesPerSecond lines a second in all", "[log]") {
  mplog::reset_limits();
  std::string note;
  unsigned written = 0;
  for (int i = 0; i < 1000; ++i)
    if (mplog::admit(nullptr, note)) ++written;
  CHECK(written == mplog::kLinesPerSecond);
  CHECK(mplog::suppressed_total() == 1000 - mplog::kLinesPerSecond);
  // Fresh sources do not get around the process-wide limit.
  mplog::LimitSource fresh;
  CHECK_FALSE(mplog::admit(&fresh, note));
  mplog::reset_limits();
}
