// parse_session_record(): the identifiers of one final session record.
#include "accounting/session_record.h"

#include <rapidjson/document.h>

#include "common/json_writer.h"

namespace mp::accounting {

std::optional<SessionRecord> parse_session_record(std::string_view json, std::string& error) {
  rapidjson::Document d;
  d.Parse(json.data(), json.size());
  if (d.HasParseError() || !d.IsObject()) {
    error = "not a JSON object";
    return std::nullopt;
  }
  // Read through a const reference: with non-const iterators clang finds
  // rapidjson's == and C++20's reversed candidate ambiguous.
  const rapidjson::Document& doc = d;
  auto str = [&](const char* key) -> std::optional<std::string> {
    auto it = doc.FindMember(key);
    if (it == doc.MemberEnd() || !it->value.IsString()) return std::nullopt;
    return json_string_bytes({it->value.GetString(), it->value.GetStringLength()});
  };
  SessionRecord r;
  auto call_id = str("call_id");
  auto from_tag = str("from_tag");
  if (!call_id || !from_tag) {
    error = "no string call_id and from_tag";
    return std::nullopt;
  }
  r.call_id = std::move(*call_id);
  r.from_tag = std::move(*from_tag);
  r.to_tag = str("to_tag");
  if (auto it = doc.FindMember("start_time"); it != doc.MemberEnd() && it->value.IsNumber())
    r.start_time = it->value.GetDouble();
  r.json = std::string(json);
  return r;
}

}  // namespace mp::accounting
