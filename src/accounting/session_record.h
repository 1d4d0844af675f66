// One session's final record, as the accounting backends receive it.
//
// The record is the relay's statistics JSON (spec D.13) with the
// dispatcher's additions (`dialog_id`, `timed_out`, `all_streams_ice`), one
// line of printable ASCII. parse_session_record() is a pure function that
// checks it is a JSON object with a `call_id` and a `from_tag` and pulls out
// the identifiers every backend needs, byte-exact (json_string_bytes): a
// call-id that is not UTF-8 keeps its bytes. Backends that need more of the
// record (RADIUS: streams, codecs) parse `json` themselves.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace mp::accounting {

struct SessionRecord {
  std::string json;  // the complete record, exactly as journaled and stored
  std::string call_id;
  std::string from_tag;
  std::optional<std::string> to_tag;  // nullopt: JSON null (never answered)
  std::optional<double> start_time;   // nullopt: never answered (not accounted, spec F)
};

// Parses a record line. nullopt with `error` set when it is not a JSON
// object or lacks a string `call_id` / `from_tag`.
std::optional<SessionRecord> parse_session_record(std::string_view json, std::string& error);

}  // namespace mp::accounting
