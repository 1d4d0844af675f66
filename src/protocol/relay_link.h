// Messages of the dispatcher-to-relay protocol (spec B.2, B.3).
//
//   D -> R  "<command> <seq>" CRLF, header lines, CRLF   (a command)
//   R -> D  "<seq> <payload>" CRLF                       (its reply)
//   R -> D  "expired <json>" CRLF                        (session expiry report)
//   R -> D  "ping" CRLF,  D -> R "pong" CRLF              (keepalive)
// Pure serialisers and parsers; the transport (in-process or TLS) lives
// elsewhere. Commands are framed with RequestFramer (request.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/request.h"

namespace mp::protocol {

inline constexpr size_t kMaxRelayLineAtRelay = 16384;                 // spec B.2
inline constexpr size_t kMaxRelayLineAtDispatcher = 4 * 1024 * 1024;  // spec B.2

// A command as the relay engine reads it, without owning the headers: a
// RelayCommand parsed off the wire, or the dispatcher's own request handed
// over in process. Those headers may hold empty values, which
// serialize_command() leaves out; find() skips them, so both read the same.
struct RelayCommandView {
  std::string_view name;
  uint64_t seq = 0;
  const std::vector<Header>& headers;
  // The value of the last header named `header` with a non-empty value.
  const std::string* find(std::string_view header) const;
};

struct RelayCommand {
  std::string name;  // update, remove, summary, sessions
  uint64_t seq = 0;
  std::vector<Header> headers;
  friend bool operator==(const RelayCommand&, const RelayCommand&) = default;
  RelayCommandView view() const { return {name, seq, headers}; }
};

// "<name> <seq>\r\n" + "h: v\r\n"... + "\r\n". Headers with empty values are skipped.
std::string serialize_command(const RelayCommand& cmd);

// Splits the command line of a framed request into name and sequence number:
// exactly two space-separated tokens, the second a decimal uint64.
std::optional<RelayCommand> to_relay_command(Request&& request, std::string& error);

// "<seq> <payload>\r\n"
std::string serialize_reply(uint64_t seq, std::string_view payload);
// "expired <json>\r\n"
std::string serialize_expired(std::string_view json);

struct RelayMessage {
  enum class Kind { Reply, Expired, Ping, Pong } kind = Kind::Reply;
  uint64_t seq = 0;     // Reply only
  std::string payload;  // Reply: payload; Expired: the JSON text
};

// One line received by the dispatcher (or "pong" by the relay), without CRLF.
std::optional<RelayMessage> parse_relay_message(std::string_view line, std::string& error);

}  // namespace mp::protocol
