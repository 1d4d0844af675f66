// Unit tests for the passport check of spec B.1.1 (tls/passport.h): parsing
// (None, escapes, errors), matching (exact, prefix*, *suffix, several
// attributes, repeated attributes, missing attributes) and subject formatting.
#include <catch2/catch.hpp>
#include <string>

#include "tls/passport.h"

using namespace mp::tls;

namespace {

// The reason of a failure, where a case does not look at it.
std::string ignored;

Passport parse_ok(std::string_view text) {
  std::string error;
  auto p = Passport::parse(text, error);
  INFO(text << ": " << error);
  REQUIRE(p);
  return *p;
}

std::string parse_error(std::string_view text) {
  std::string error;
  auto p = Passport::parse(text, error);
  REQUIRE_FALSE(p);
  return error;
}

const Subject kRelay = {{"C", "NL"},
                        {"O", "AG Projects"},
                        {"OU", "MediaProxy"},
                        {"CN", "eu1.relay"},
                        {"EMAIL", "ops@example.com"}};

}  // namespace

TEST_CASE("passport: None and empty disable the check", "[tls][passport]") {
  for (const char* text : {"None", "none", "NONE", "", "   "}) {
    Passport p = parse_ok(text);
    CHECK(p.disabled());
    CHECK(p.accepts(kRelay, ignored));
    CHECK(p.accepts({}, ignored));
    CHECK(p.to_string() == "None");
  }
  CHECK(Passport().disabled());
}

TEST_CASE("passport: the spec example", "[tls][passport]") {
  Passport p = parse_ok("O:AG Projects, CN:*relay");
  REQUIRE(p.rules().size() == 2);
  CHECK(p.rules()[0] == Passport::Rule{"O", Passport::Match::Exact, "AG Projects"});
  CHECK(p.rules()[1] == Passport::Rule{"CN", Passport::Match::Suffix, "relay"});
  CHECK(p.accepts(kRelay, ignored));
  CHECK(p.to_string() == "O:AG Projects, CN:*relay");
}

TEST_CASE("passport: exact match is whole-value and case-sensitive", "[tls][passport]") {
  CHECK(parse_ok("O:AG Projects").accepts(kRelay, ignored));
  CHECK_FALSE(parse_ok("O:AG").accepts(kRelay, ignored));
  CHECK_FALSE(parse_ok("O:AG Projects Ltd").accepts(kRelay, ignored));
  CHECK_FALSE(parse_ok("O:ag projects").accepts(kRelay, ignored));
  CHECK(parse_ok("CN:eu1.relay").accepts(kRelay, ignored));
}

TEST_CASE("passport: prefix* and *suffix", "[tls][passport]") {
  CHECK(parse_ok("CN:eu1*").accepts(kRelay, ignored));
  CHECK(parse_ok("CN:eu1.relay*").accepts(kRelay, ignored));
  CHECK_FALSE(parse_ok("CN:us1*").accepts(kRelay, ignored));
  CHECK(parse_ok("CN:*.relay").accepts(kRelay, ignored));
  CHECK(parse_ok("CN:*eu1.relay").accepts(kRelay, ignored));
  CHECK_FALSE(parse_ok("CN:*dispatcher").accepts(kRelay, ignored));
  CHECK(parse_ok("CN:*").accepts(kRelay, ignored));
  // A leading star wins: "*x*" means "ends with x*" literally, as in AG MediaProxy.
  Passport both = parse_ok("CN:*relay*");
  CHECK(both.rules()[0] == Passport::Rule{"CN", Passport::Match::Suffix, "relay*"});
  CHECK_FALSE(both.accepts(kRelay, ignored));
  CHECK(both.accepts({{"CN", "my relay*"}}, ignored));
  // A star in the middle is literal.
  CHECK_FALSE(parse_ok("CN:eu*relay").accepts(kRelay, ignored));
  CHECK(parse_ok("CN:eu*relay").accepts({{"CN", "eu*relay"}}, ignored));
}

TEST_CASE("passport: escaped commas", "[tls][passport]") {
  Passport p = parse_ok(R"(O:Example\, Inc., CN:relay)");
  REQUIRE(p.rules().size() == 2);
  CHECK(p.rules()[0].value == "Example, Inc.");
  CHECK(p.accepts({{"O", "Example, Inc."}, {"CN", "relay"}}, ignored));
  CHECK_FALSE(p.accepts({{"O", "Example"}, {"CN", "relay"}}, ignored));
  CHECK(p.to_string() == R"(O:Example\, Inc., CN:relay)");
  // Round trip.
  CHECK(parse_ok(p.to_string()).rules() == p.rules());
  // With wildcards.
  CHECK(parse_ok(R"(O:*\, Inc.)").accepts({{"O", "Example, Inc."}}, ignored));
  CHECK(parse_ok(R"(O:Example\,*)").accepts({{"O", "Example, Inc."}}, ignored));
  // Other backslashes are literal.
  CHECK(parse_ok(R"(CN:a\b)").rules()[0].value == R"(a\b)");
}

TEST_CASE("passport: several attributes must all match", "[tls][passport]") {
  Passport p = parse_ok("C:NL, O:AG Projects, OU:Media*, CN:*relay, EMAIL:*@example.com");
  CHECK(p.rules().size() == 5);
  CHECK(p.accepts(kRelay, ignored));
  Subject other_ou = kRelay;
  other_ou[2].value = "SIP";
  std::string why;
  CHECK_FALSE(p.accepts(other_ou, why));
  CHECK(why == "OU 'SIP' does not match 'Media*'");
  Subject other_country = kRelay;
  other_country[0].value = "DE";
  CHECK_FALSE(p.accepts(other_country, ignored));
}

TEST_CASE("passport: unlisted attributes are unconstrained, missing ones compare as empty",
          "[tls][passport]") {
  CHECK(parse_ok("CN:*relay").accepts({{"CN", "relay"}}, ignored));
  std::string why;
  CHECK_FALSE(parse_ok("L:Amsterdam").accepts(kRelay, why));
  CHECK(why == "no L attribute (passport wants 'Amsterdam')");
  CHECK(parse_ok("L:*").accepts(kRelay, ignored));
  CHECK_FALSE(parse_ok("ST:x*").accepts(kRelay, ignored));
}

TEST_CASE("passport: repeated attributes", "[tls][passport]") {
  Subject two_ou = {{"O", "AG Projects"}, {"OU", "MediaProxy"}, {"OU", "Relays"}, {"CN", "r1"}};
  // A subject attribute present twice: any value may satisfy the rule.
  CHECK(parse_ok("OU:Relays").accepts(two_ou, ignored));
  CHECK(parse_ok("OU:MediaProxy").accepts(two_ou, ignored));
  std::string why;
  CHECK_FALSE(parse_ok("OU:Dispatchers").accepts(two_ou, why));
  CHECK(why == "OU 'MediaProxy', 'Relays' does not match 'Dispatchers'");
  // A rule listed twice: both must hold.
  CHECK(parse_ok("OU:Media*, OU:*s").accepts(two_ou, ignored));
  CHECK_FALSE(parse_ok("CN:r*, CN:*x").accepts(two_ou, ignored));
}

TEST_CASE("passport: names are case-insensitive and blanks ignored", "[tls][passport]") {
  Passport p = parse_ok("  o : AG Projects ,cn:*relay  , email:ops@example.com");
  REQUIRE(p.rules().size() == 3);
  CHECK(p.rules()[0].attribute == "O");
  CHECK(p.rules()[0].value == "AG Projects");
  CHECK(p.rules()[2].attribute == "EMAIL");
  CHECK(p.accepts(kRelay, ignored));
  // The value keeps everything after the first colon.
  CHECK(parse_ok("CN:host:5060").rules()[0].value == "host:5060");
}

TEST_CASE("passport: malformed text is refused with a useful message", "[tls][passport]") {
  CHECK(parse_error("CX:relay") ==
        "unknown attribute 'CX' in passport (use O, OU, CN, C, L, ST "
        "or EMAIL)");
  CHECK(parse_error("relay").find("not of the form ATTRIBUTE:value") != std::string::npos);
  CHECK(parse_error("O:AG Projects,").find("not of the form") != std::string::npos);
  CHECK(parse_error("O:AG Projects,,CN:x").find("not of the form") != std::string::npos);
  CHECK(parse_error("CN:") == "passport attribute CN has an empty value");
  CHECK(parse_error("CN:   , O:x") == "passport attribute CN has an empty value");
  CHECK_FALSE(Passport::parse("bogus", ignored));
}

TEST_CASE("format_subject escapes separators", "[tls][passport]") {
  CHECK(format_subject({}).empty());
  CHECK(format_subject({{"O", "AG Projects"}, {"CN", "relay"}}) == "O=AG Projects, CN=relay");
  CHECK(format_subject({{"O", "Example, Inc."}, {"CN", R"(a\b)"}}) ==
        R"(O=Example\, Inc., CN=a\\b)");
}
