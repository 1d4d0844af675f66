// The sessions list of a relay in batches: the `sessions_from` command of the
// dispatcher-relay protocol (spec B.3 extension, mediaproxy.8 "Management
// interface").
//
// `sessions` answers with every session of the relay in one reply line, which
// costs the relay (and, in the combined role, the dispatcher's loop) time and
// memory in proportion to the table, and past ~5,000 sessions exceeds the
// dispatcher's 4 MiB line limit. `sessions_from` asks for the sessions after a
// cursor, at most `limit` of them:
//
//   D -> R  "sessions_from <seq>" CRLF "after: <cursor>" CRLF "limit: <n>" CRLF CRLF
//   R -> D  "<seq> more <cursor> <objects>" CRLF   (more may follow: ask again
//                                                   with after = <cursor>)
//   R -> D  "<seq> end <objects>" CRLF | "<seq> end" CRLF   (the last batch)
//
// <objects> are D.13 session objects joined with ", ", exactly as they appear
// inside the brackets of the `sessions` array, so that the dispatcher can
// join batches into the byte-identical management answer. Cursors are
// opaque decimal numbers (the relay's listing order: session creation), 0
// before the first session. A relay that predates the command answers
// `error`; the dispatcher then falls back to `sessions`. Pure code: the
// relay (relay/session_listing.cpp) builds batches, the dispatcher
// (dispatcher/sessions_dump.cpp) reads them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/request.h"

namespace mp::protocol {

inline constexpr std::string_view kSessionsFromCommand = "sessions_from";
// A relay never puts more than this in one batch, whatever `limit` says.
inline constexpr size_t kMaxBatchSessions = 1000;

struct SessionsFrom {
  uint64_t after = 0;  // cursor: the sessions listed after it
  size_t limit = 0;    // at most this many sessions (1..kMaxBatchSessions)
  friend bool operator==(const SessionsFrom&, const SessionsFrom&) = default;
};

// Headers of a `sessions_from` command.
std::vector<Header> sessions_from_headers(const SessionsFrom& q);
// Reads them back: `after` a decimal uint64, `limit` a decimal number,
// clamped to 1..kMaxBatchSessions. nullopt (with `error`) if either is
// missing or not a number.
std::optional<SessionsFrom> parse_sessions_from(const std::vector<Header>& headers,
                                                std::string& error);

struct SessionsBatch {
  bool more = false;         // another batch follows, after `cursor`
  uint64_t cursor = 0;       // only when `more`
  std::string_view objects;  // into the parsed payload; may be empty
};

// The reply payload (without "<seq> "): "more <cursor> <objects>" or
// "end[ <objects>]".
std::string format_sessions_batch(const SessionsBatch& batch);
// Parses a reply payload; nullopt (with `error`) if it is neither form.
std::optional<SessionsBatch> parse_sessions_batch(std::string_view payload, std::string& error);

}  // namespace mp::protocol
