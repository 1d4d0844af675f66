// The `sessions_from` command and its batch replies (session_batch.h).
//
// Numbers are plain decimal (no sign, no blanks); a `more` batch must carry
// objects, since a relay with nothing more to list says `end`. The objects
// are passed through untouched: their JSON is the relay's business, and the
// dispatcher only joins them.
#include "protocol/session_batch.h"

#include <algorithm>
#include <charconv>

namespace mp::protocol {

namespace {

std::optional<uint64_t> parse_number(std::string_view text) {
  if (text.empty() || text.size() > 20) return std::nullopt;
  for (char c : text)
    if (c < '0' || c > '9') return std::nullopt;
  uint64_t v = 0;
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size()) return std::nullopt;
  return v;
}

const std::string* header(const std::vector<Header>& headers, std::string_view name) {
  const std::string* found = nullptr;
  for (const Header& h : headers)
    // The last one wins, as Request::find; an empty value is no value (it is
    // never sent, and RelayCommandView::find skips it too).
    if (h.name == name && !h.value.empty()) found = &h.value;
  return found;
}

}  // namespace

std::vector<Header> sessions_from_headers(const SessionsFrom& q) {
  return {{"after", std::to_string(q.after)}, {"limit", std::to_string(q.limit)}};
}

std::optional<SessionsFrom> parse_sessions_from(const std::vector<Header>& headers,
                                                std::string& error) {
  const std::string* after = header(headers, "after");
  const std::string* limit = header(headers, "limit");
  if (!after || !limit) {
    error = "sessions_from needs 'after' and 'limit' headers";
    return std::nullopt;
  }
  const auto a = parse_number(*after);
  const auto n = parse_number(*limit);
  if (!a || !n) {
    error = "sessions_from with a non-numeric 'after' or 'limit'";
    return std::nullopt;
  }
  SessionsFrom q;
  q.after = *a;
  q.limit = static_cast<size_t>(std::clamp<uint64_t>(*n, 1, kMaxBatchSessions));
  return q;
}

std::string format_sessions_batch(const SessionsBatch& batch) {
  std::string out;
  out.reserve(batch.objects.size() + 32);
  if (batch.more) {
    out = "more ";
    out += std::to_string(batch.cursor);
  } else {
    out = "end";
  }
  if (!batch.objects.empty()) {
    out += ' ';
    out += batch.objects;
  }
  return out;
}

std::optional<SessionsBatch> parse_sessions_batch(std::string_view payload, std::string& error) {
  SessionsBatch b;
  if (payload == "end") return b;
  if (payload.substr(0, 4) == "end ") {
    b.objects = payload.substr(4);
    return b;
  }
  if (payload.substr(0, 5) != "more ") {
    error = "batch reply neither 'more' nor 'end'";
    return std::nullopt;
  }
  payload.remove_prefix(5);
  const size_t space = payload.find(' ');
  const auto cursor = parse_number(payload.substr(0, space));
  if (!cursor || space == std::string_view::npos || space + 1 == payload.size()) {
    error = "'more' batch without a cursor and objects";
    return std::nullopt;
  }
  b.more = true;
  b.cursor = *cursor;
  b.objects = payload.substr(space + 1);
  return b;
}

}  // namespace mp::protocol
