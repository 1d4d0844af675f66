// One session record turned into the attributes of its RADIUS
// Accounting-Request (spec F.2), as a pure function so that it can be unit
// tested and fuzzed without a RADIUS server.
//
// radius_attributes() reads the record JSON (D.13 with the dispatcher's
// additions) and returns, in the order of the F.2 table, every attribute by
// its dictionary name with its type and value; the backend
// (radius_backend.cpp) looks the names up in the loaded dictionaries and
// hands the values to radcli. Decisions beyond F.2:
// - a record with no stream has no NAS-IP-Address (AG crashed there); radcli
//   then puts in the address the request is sent from, as RFC 2865 wants a
//   NAS-IP-Address or NAS-Identifier in every request;
// - strings are byte strings (a call-id that is not UTF-8 keeps its bytes)
//   cut to 253 bytes, the RADIUS limit, at a character boundary: a valid
//   UTF-8 sequence is never split (an invalid byte counts as one character);
//   an empty value (Sip-To-Tag of a record without to_tag, Media-Info of a
//   normal call) is listed here as F.2 says, but the backend leaves it out
//   of the packet: RFC 8044 3.5 forbids zero-length strings and FreeRADIUS
//   drops them;
// - RADIUS integers are 32 bits: byte counters of 4 GiB and more are sent as
//   Acct-Input-Octets / Acct-Output-Octets = the low 32 bits plus
//   Acct-Input-Gigawords / Acct-Output-Gigawords = the high bits (RFC 2869),
//   the gigawords only when non-zero; other integers (duration, post-dial
//   delay) are clamped to 2^32-1;
// - fields that are missing or of the wrong type never fail the record: a
//   counter or a duration that is not a non-negative number counts as absent
//   (bytes: 0; Acct-Session-Time: omitted), a user agent that is not a
//   string is "Unknown" (D.13), a codec that is not a string is "Unknown", a
//   username that is empty or not a string gives mediaproxy@default, a
//   post_dial_delay that is not a non-negative number is no delay (the next
//   stream's counts), a caller_local without an IPv4 address gives no
//   NAS-IP-Address, a stream that is not an object is skipped. Only a
//   record that is not a JSON object or has no string call_id / from_tag is
//   an error.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mp::accounting {

// RADIUS string attributes carry at most 253 bytes (RFC 2865 section 5).
inline constexpr size_t kRadiusMaxString = 253;

struct RadiusAttribute {
  enum class Type { String, Integer, Ipv4 };
  std::string name;  // dictionary name, e.g. "Acct-Session-Id"
  Type type = Type::String;
  std::string text;     // String: the bytes (at most kRadiusMaxString)
  uint32_t number = 0;  // Integer: the value; Ipv4: the address in host byte order

  friend bool operator==(const RadiusAttribute&, const RadiusAttribute&) = default;
};

// The value of Acct-Status-Type: "Update" in the mediaproxy dictionary (the
// RFC 2866 Interim-Update).
inline constexpr uint32_t kAcctStatusUpdate = 3;

// The attributes of F.2 for one record, in table order (the gigawords right
// after their octets). nullopt with `error` set when the record is not a
// JSON object or has no string call_id / from_tag.
std::optional<std::vector<RadiusAttribute>> radius_attributes(std::string_view json,
                                                              std::string& error);

// The longest prefix of `s` of at most `max` bytes that does not end inside
// a valid UTF-8 sequence.
std::string_view utf8_prefix(std::string_view s, size_t max);

// Every attribute name radius_attributes() may return (the backend checks
// that the dictionaries define them all, with a matching type).
const std::vector<std::pair<std::string_view, RadiusAttribute::Type>>& radius_attribute_names();

}  // namespace mp::accounting
