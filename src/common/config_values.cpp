// Parsers of the configuration file's value syntaxes (config_values.h).
#include "common/config_values.h"

#include <cctype>
#include <charconv>
#include <set>

#include "common/error.h"

namespace mp::config_values {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

std::string lower(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

bool set_int(std::string_view v, int& out, int min, int max, const char* what, std::string& error) {
  int x = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (v.empty() || ec != std::errc() || p != v.data() + v.size() || x < min || x > max)
    return fail(error, "expected " + std::string(what) + " between " + std::to_string(min) +
                           " and " + std::to_string(max) + ", got '" + std::string(v) + "'");
  out = x;
  return true;
}

// Seconds as a decimal number in [min, max].
bool set_seconds(std::string_view v, double& out, double min, double max, std::string& error) {
  double d = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
  if (v.empty() || ec != std::errc() || p != v.data() + v.size() || !(d >= min) || d > max)
    return fail(error, "expected seconds between " + std::to_string(min).substr(0, 4) + " and " +
                           std::to_string(static_cast<int>(max)) + ", got '" + std::string(v) +
                           "'");
  out = d;
  return true;
}

bool set_level(std::string_view v, std::optional<log::Level>& out, std::string& error) {
  if (v.empty()) {
    out.reset();
    return true;
  }
  log::Level l;
  if (!log::parse_level(v, l))
    return fail(error, "unknown log level '" + std::string(v) +
                           "' (use critical, error, warning, info, debug)");
  out = l;
  return true;
}

// "a.b.c.d", "v6", or both separated by a comma (at most one per family).
bool set_ips(std::string_view v, std::optional<Ipv4>& out4, std::optional<IpAddress>& out6,
             std::string& error) {
  out4.reset();
  out6.reset();
  while (!v.empty()) {
    const size_t comma = v.find(',');
    std::string_view item = v.substr(0, comma);
    v = comma == std::string_view::npos ? std::string_view() : v.substr(comma + 1);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    auto ip = parse_ip(item);
    if (!ip || ip->is_v4_mapped())
      return fail(error,
                  "expected an IPv4 and/or an IPv6 address, got '" + std::string(item) + "'");
    if (ip->is_any())
      return fail(error, format_ip(*ip) + " is not a usable address here; give the host's address");
    if (ip->is_v4() ? out4.has_value() : out6.has_value())
      return fail(error, "more than one IPv" + std::string(1, family_digit(ip->family)) +
                             " address (give at most one per family)");
    if (ip->is_v4())
      out4 = ip->v4();
    else
      out6 = ip;
  }
  return true;
}

bool check_bool(std::string_view v, std::string& error) {
  static const std::set<std::string> kOk = {"yes", "no", "true", "false", "on", "off", "1", "0"};
  if (kOk.count(lower(v))) return true;
  return fail(error, "expected yes/no/true/false/on/off/1/0, got '" + std::string(v) + "'");
}

bool set_bool(std::string_view v, bool& out, std::string& error) {
  if (!check_bool(v, error)) return false;
  std::string l = lower(v);
  out = l == "yes" || l == "true" || l == "on" || l == "1";
  return true;
}

// AG address syntax: "any" (0.0.0.0), "ip" or "ip:port"; `port` is the
// default port. Empty or "none" switches the listener off.
bool set_listen(std::string_view v, std::optional<Endpoint>& out, uint16_t port,
                std::string& error) {
  if (v.empty() || v == "none") {
    out.reset();
    return true;
  }
  std::string_view host = v;
  uint16_t p = port;
  if (size_t colon = v.rfind(':'); colon != std::string_view::npos) {
    auto parsed = parse_port(v.substr(colon + 1));
    if (!parsed || *parsed == 0) return fail(error, "bad port in '" + std::string(v) + "'");
    p = *parsed;
    host = v.substr(0, colon);
  }
  Ipv4 ip;
  if (host != "any" && !host.empty()) {
    auto a = parse_ipv4(host);
    if (!a)
      return fail(error,
                  "expected any, an IPv4 address or address:port, got '" + std::string(v) + "'");
    ip = *a;
  }
  out = Endpoint{ip, p};
  return true;
}

std::string expected_one_of(const std::vector<std::string_view>& words, std::string_view v) {
  std::string list;
  for (size_t i = 0; i < words.size(); ++i) {
    if (i > 0) list += i + 1 == words.size() ? " or " : ", ";
    list += words[i];
  }
  return "expected " + list + ", got '" + std::string(v) + "'";
}

}  // namespace mp::config_values
