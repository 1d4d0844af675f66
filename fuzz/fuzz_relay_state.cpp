// Fuzz target for the relay's state file reader (relay/state_journal.h,
// relay/session_state.h).
//
// A state file is read at start from the runtime directory; a damaged one
// must be refused, never crash the relay or restore nonsense. Each input is
// tried three ways: as a whole file, as the records after this relay's
// header line, and as one session record (JSON) and one counter checkpoint.
// Invariants:
//   * no crash, leak or sanitizer report;
//   * a refusal always says why (non-empty error) and restores nothing;
//   * whatever is accepted is in range (stream count, ports even, offers
//     naming existing streams) and re-encodes to JSON that reads back to the
//     same encoding (the codec is a fixed point on what it accepts);
//   * an accepted checkpoint re-encodes to text that reads back identical.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "relay/state_journal.h"

using namespace mp;
using namespace mp::relay;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_relay_state: invariant violated: %s\n", what);
    std::abort();
  }
}

void check_session(const SessionState& s) {
  check(!s.call_id.empty() && !s.from_tag.empty(), "identity present");
  check(s.streams.size() <= 64 && s.offers.size() <= 2, "bounded");
  for (const StreamState& st : s.streams)
    check(st.rtp_port[0] % 2 == 0 && st.rtp_port[1] % 2 == 0, "even ports");
  for (const OfferState& o : s.offers)
    for (size_t i : o.streams) check(i < s.streams.size(), "offer names a stream");
  const std::string json = session_state_to_json(s);
  SessionState again;
  std::string error;
  check(session_state_from_json(json, again, error), "own encoding reads back");
  check(session_state_to_json(again) == json, "encoding is a fixed point");
}

StateIdentity identity() {
  StateIdentity id;
  id.relay_ip = *parse_ipv4("192.0.2.10");
  id.port_start = 40000;
  id.port_end = 40100;
  id.nft_table = "mediaproxy";
  return id;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const StateIdentity id = identity();
  for (const std::string& text : {input, id.header() + "\n" + input}) {
    LoadedState out;
    std::string error;
    if (parse_state_file(text, id, out, error)) {
      for (const auto& [key, s] : out.sessions) {
        check(key != 0 && key <= out.last_id, "record ids in range");
        check_session(s);
      }
    } else {
      check(!error.empty(), "a refusal says why");
      check(out.sessions.empty() && out.last_id == 0, "a refusal restores nothing");
    }
  }
  SessionState s;
  std::string error;
  if (session_state_from_json(input, s, error))
    check_session(s);
  else
    check(!error.empty(), "a refused record says why");
  CounterCheckpoint c;
  if (counters_from_text(input, c, error)) {
    const std::string text = counters_to_text(c);
    CounterCheckpoint again;
    check(counters_from_text(text, again, error), "own checkpoint reads back");
    check(counters_to_text(again) == text, "checkpoint is a fixed point");
  }
  return 0;
}
