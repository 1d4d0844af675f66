// The relay's list of sessions for `sessions` and `sessions_from`
// (protocol/session_batch.h): RelayEngine's listing order and its batches.
//
// Every session gets a listing id when it joins the table (created by an
// update or restored from the state file), increasing with creation, and
// is indexed by it in RelayEngine::listing_. `sessions` lists the whole
// table in that order; `sessions_from` lists at most `limit` sessions after a
// cursor (a listing id) and at most kMaxBatchBytes of JSON, so that one
// batch costs the relay's loop a bounded time however large the table is,
// and a session created or ended between two batches never invalidates the
// cursor: one that ended is simply not listed, one created after the cursor
// is. The objects are the same bytes either way, so a dispatcher joining the
// batches answers exactly what one `sessions` would have.
#include "common/log.h"
#include "protocol/session_batch.h"
#include "relay/relay_engine.h"

namespace mp::relay {

namespace {
// Bytes of JSON after which a batch ends even if `limit` is not reached.
constexpr size_t kMaxBatchBytes = 256 * 1024;
}  // namespace

void RelayEngine::list(Session* s) {
  s->listing_id = next_listing_id_++;
  listing_.emplace_hint(listing_.end(), s->listing_id, s);
}

void RelayEngine::unlist(Session* s) {
  listing_.erase(s->listing_id);
}

std::string RelayEngine::sessions_json() const {
  std::string out = "[";
  bool first = true;
  for (const auto& [id, s] : listing_) {
    if (!first) out += ", ";
    first = false;
    out += s->listing_json();
  }
  out += "]";
  return out;
}

std::string RelayEngine::sessions_batch(const protocol::RelayCommandView& cmd) const {
  std::string why;
  const auto q = protocol::parse_sessions_from(cmd.headers, why);
  if (!q) {
    LOG_LIMITED(Warning, nullptr, "relay: %s answered with error", why.c_str());
    return "error";
  }
  std::string objects;
  size_t n = 0;
  auto it = listing_.upper_bound(q->after);
  uint64_t last = q->after;
  for (; it != listing_.end() && n < q->limit && objects.size() < kMaxBatchBytes; ++it, ++n) {
    if (n) objects += ", ";
    objects += it->second->listing_json();
    last = it->first;
  }
  protocol::SessionsBatch batch;
  batch.more = it != listing_.end();
  batch.cursor = last;
  batch.objects = objects;
  return protocol::format_sessions_batch(batch);
}

}  // namespace mp::relay
