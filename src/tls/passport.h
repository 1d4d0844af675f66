// Certificate subjects as attribute lists, and the "passport" check of spec
// B.1.1 that decides whether a verified peer may talk to us.
//
// Owns the Subject value type (what a TLS connection reports about its peer),
// its log formatting, and parsing and matching of passport strings such as
// `O:AG Projects, CN:*relay`. Everything here is a pure function over strings
// (no TLS library, no I/O) so it can be unit tested exhaustively.
//
// Passport semantics (spec B.1.1, plus the decisions the spec leaves open):
//   * `AN:value[, AN:value...]`, AN one of O, OU, CN, C, L, ST, EMAIL (names are
//     case-insensitive); blanks around names and values are ignored.
//   * A comma inside a value is written `\,`; no other escapes exist (a
//     backslash before anything else is kept literally), as in AG MediaProxy.
//   * `None` (any case) or an empty string disables the check.
//   * A value `*suffix` matches when the peer's value ends with suffix,
//     `prefix*` when it starts with prefix (the leading-star rule wins for
//     `*x*`, as in AG MediaProxy), anything else must be equal (case-sensitive).
//     `*` alone matches anything.
//   * Every listed rule must match; an attribute listed twice must satisfy both.
//     When the subject carries an attribute several times (e.g. two OU), a rule
//     is satisfied if any of them matches. A missing attribute is compared as
//     the empty string (so only `*`-style rules accept it), as in AG MediaProxy.
//   * Unlisted attributes are unconstrained.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mp::tls {

struct SubjectAttribute {
  std::string name;  // "CN", "O", "OU", "C", "L", "ST", "EMAIL", other short names, or a dotted OID
  std::string value;  // raw bytes of the attribute (UTF-8 or ASCII in practice)

  friend bool operator==(const SubjectAttribute&, const SubjectAttribute&) = default;
};

// A distinguished name in certificate order (usually C/O/OU first, CN last).
using Subject = std::vector<SubjectAttribute>;

// "O=AG Projects, OU=MediaProxy, CN=relay" for logs; ',' and '\' inside
// values are escaped with a backslash so the text stays unambiguous.
std::string format_subject(const Subject& subject);

class Passport {
 public:
  enum class Match { Exact, Prefix, Suffix };
  struct Rule {
    std::string attribute;  // canonical upper-case name, e.g. "CN"
    Match match = Match::Exact;
    std::string value;  // without the '*'

    friend bool operator==(const Rule&, const Rule&) = default;
  };

  // A disabled passport (accepts every subject).
  Passport() = default;

  // Parses B.1.1 syntax. nullopt with `error` describing the problem (e.g.
  // "unknown attribute 'CX' in passport (use O, OU, CN, C, L, ST or EMAIL)").
  static std::optional<Passport> parse(std::string_view text, std::string& error);

  bool disabled() const { return rules_.empty(); }
  const std::vector<Rule>& rules() const { return rules_; }

  // True if every rule matches `subject`. On a mismatch `error` names the
  // first failing rule and the peer's value(s), for the log.
  bool accepts(const Subject& subject, std::string& error) const;

  // Canonical text, parseable again: "None" or "O:AG Projects, CN:*relay".
  std::string to_string() const;

 private:
  std::vector<Rule> rules_;
};

}  // namespace mp::tls
