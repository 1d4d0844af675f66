// The value syntaxes of the configuration file, one parser each.
//
// Integers and seconds in a range, yes/no words, log levels, listening
// addresses in AG's syntax ("any", "ip", "ip:port"), the relay's address
// lists (an IPv4 and/or an IPv6 address), and words out of a fixed set
// (forwarding = auto|kernel|userspace). Each stores the value or
// returns false with the reason in `error` (the loader adds file, line and
// option). Pure functions, used by the option table in config.cpp.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "common/address.h"
#include "common/error.h"
#include "common/ip_address.h"
#include "common/log.h"

namespace mp::config_values {

std::string_view trim(std::string_view s);
std::string lower(std::string_view s);
bool set_int(std::string_view v, int& out, int min, int max, const char* what, std::string& error);
// Seconds as a decimal number in [min, max].
bool set_seconds(std::string_view v, double& out, double min, double max, std::string& error);
bool set_level(std::string_view v, std::optional<log::Level>& out, std::string& error);
// "a.b.c.d", "v6", or both separated by a comma (at most one per family).
bool set_ips(std::string_view v, std::optional<Ipv4>& out4, std::optional<IpAddress>& out6,
             std::string& error);
bool check_bool(std::string_view v, std::string& error);
bool set_bool(std::string_view v, bool& out, std::string& error);
// AG address syntax: "any" (0.0.0.0), "ip" or "ip:port"; `port` is the
// default port. Empty or "none" switches the listener off.
bool set_listen(std::string_view v, std::optional<Endpoint>& out, uint16_t port,
                std::string& error);

// One word of an option with a fixed set of words, and the value it stands for.
template <typename T>
struct Choice {
  std::string_view word;
  T value;
};

// "expected a, b or c, got 'v'": the reason for a word that is not one of `words`.
std::string expected_one_of(const std::vector<std::string_view>& words, std::string_view v);

// Stores the value of the choice whose word is `v` (exact, case-sensitive);
// any other word fails with the reason expected_one_of() gives for the words
// in the order listed:
//   set_choice(v, c.relay.forwarding, {{"auto", Forwarding::Auto}, ...}, error)
template <typename T>
bool set_choice(std::string_view v, T& out,
                std::initializer_list<Choice<std::type_identity_t<T>>> choices,
                std::string& error) {
  for (const auto& choice : choices) {
    if (v == choice.word) {
      out = choice.value;
      return true;
    }
  }
  std::vector<std::string_view> words;
  for (const auto& choice : choices) words.push_back(choice.word);
  return fail(error, expected_one_of(words, v));
}

}  // namespace mp::config_values
