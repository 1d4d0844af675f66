// Subject formatting and passport parsing/matching (passport.h, spec B.1.1).
#include "tls/passport.h"

#include "common/error.h"

#include <array>

namespace mp::tls {
namespace {

constexpr std::array<std::string_view, 7> kAttributes = {"O", "OU", "CN", "C", "L", "ST", "EMAIL"};

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if ((a[i] | 0x20) != (b[i] | 0x20)) return false;
  return true;
}

// Splits at commas not preceded by a backslash and turns `\,` into `,`.
std::vector<std::string> split_pairs(std::string_view text) {
  std::vector<std::string> out(1);
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\\' && i + 1 < text.size() && text[i + 1] == ',') {
      out.back() += ',';
      ++i;
    } else if (c == ',') {
      out.emplace_back();
    } else {
      out.back() += c;
    }
  }
  return out;
}

bool rule_matches(const Passport::Rule& rule, std::string_view value) {
  switch (rule.match) {
    case Passport::Match::Exact:
      return value == rule.value;
    case Passport::Match::Prefix:
      return value.starts_with(rule.value);
    case Passport::Match::Suffix:
      return value.ends_with(rule.value);
  }
  return false;
}

void append_escaped(std::string& out, std::string_view value, std::string_view specials) {
  for (char c : value) {
    if (specials.find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
}

}  // namespace

std::string format_subject(const Subject& subject) {
  std::string out;
  for (const auto& a : subject) {
    if (!out.empty()) out += ", ";
    out += a.name;
    out += '=';
    append_escaped(out, a.value, ",\\");
  }
  return out;
}

std::optional<Passport> Passport::parse(std::string_view text, std::string& error) {
  auto fail = [&](std::string msg) -> std::optional<Passport> {
    error = std::move(msg);
    return std::nullopt;
  };
  Passport p;
  std::string_view whole = trim(text);
  if (whole.empty() || iequals(whole, "none")) return p;
  for (const std::string& pair : split_pairs(whole)) {
    std::string_view item = trim(pair);
    size_t colon = item.find(':');
    if (item.empty() || colon == std::string_view::npos)
      return fail("passport entry '" + std::string(item) +
                  "' is not of the form ATTRIBUTE:value (e.g. 'CN:*relay')");
    std::string name = upper(trim(item.substr(0, colon)));
    std::string_view value = trim(item.substr(colon + 1));
    bool known = false;
    for (std::string_view k : kAttributes) known = known || name == k;
    if (!known)
      return fail("unknown attribute '" + name +
                  "' in passport (use O, OU, CN, C, L, ST or EMAIL)");
    if (value.empty()) return fail("passport attribute " + name + " has an empty value");
    Rule rule;
    rule.attribute = std::move(name);
    if (value.front() == '*') {
      rule.match = Match::Suffix;
      rule.value = value.substr(1);
    } else if (value.back() == '*') {
      rule.match = Match::Prefix;
      rule.value = value.substr(0, value.size() - 1);
    } else {
      rule.value = value;
    }
    p.rules_.push_back(std::move(rule));
  }
  return p;
}

bool Passport::accepts(const Subject& subject, std::string& error) const {
  for (const Rule& rule : rules_) {
    bool present = false, matched = false;
    std::string seen;
    for (const auto& a : subject) {
      if (a.name != rule.attribute) continue;
      if (present) seen += "', '";
      present = true;
      seen += a.value;
      matched = matched || rule_matches(rule, a.value);
    }
    if (!present) matched = rule_matches(rule, "");
    if (!matched) {
      std::string want;
      append_escaped(want, rule.value, ",");
      if (rule.match == Match::Suffix) want.insert(want.begin(), '*');
      if (rule.match == Match::Prefix) want += '*';
      return fail(error,
                  present ? rule.attribute + " '" + seen + "' does not match '" + want + "'"
                          : "no " + rule.attribute + " attribute (passport wants '" + want + "')");
    }
  }
  return true;
}

std::string Passport::to_string() const {
  if (rules_.empty()) return "None";
  std::string out;
  for (const Rule& rule : rules_) {
    if (!out.empty()) out += ", ";
    out += rule.attribute;
    out += ':';
    if (rule.match == Match::Suffix) out += '*';
    append_escaped(out, rule.value, ",");
    if (rule.match == Match::Prefix) out += '*';
  }
  return out;
}

}  // namespace mp::tls
