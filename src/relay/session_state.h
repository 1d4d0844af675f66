// What a relay remembers of one session across a restart of its process.
//
// Plain data, no sockets: a SessionState is what Session::capture() takes from
// a live session and what Session::restore() rebuilds one from (both in
// session_restore.cpp), and what the state journal (state_journal.h) writes
// as one JSON line. Times that are monotonic in the running process are kept
// here as Unix times, because a new process has a new monotonic clock. The
// JSON codec is a pair of pure functions with unit tests and a fuzz target:
// everything read back is checked (sizes, enums, ports in the relay's range
// are checked by the restorer) and a record that does not decode is refused
// as a whole.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip_address.h"

namespace mp::relay {

// One party on one sub-stream (a Leg without its socket).
struct LegState {
  bool learned = false;
  IpEndpoint remote;
  bool has_obsolete = false;
  IpEndpoint obsolete;
  bool by_fallback = false;
  bool has_ssrc = false;
  uint32_t ssrc = 0;
  uint32_t epoch = 0;
  uint32_t followed_epoch = 0;
  bool got_media = false;
  uint64_t packets = 0, bytes = 0, dropped = 0, foreign = 0, media_seen = 0;
  bool in_kernel = false;  // a rule keyed (remote, this leg's relay port) was installed
  uint64_t kernel_packets = 0, kernel_bytes = 0;  // of rules already removed
  uint64_t kernel_live_packets = 0, kernel_live_bytes = 0;
  double last_seen = 0;  // Unix time
};

// What a party said in its SDP.
struct PartyState {
  bool known = false;
  IpAddress ip;
  uint16_t port = 0;
  int direction = 0;  // protocol::Direction
  bool ice = false, hold_ip = false, asymmetric = false;
  double known_since = 0;  // Unix time
  IpAddress signaling_ip;
};

struct StreamState {
  uint64_t id = 0;             // owner of its counter table slot
  uint32_t slot = UINT32_MAX;  // its counter table slot
  std::string media_type;
  std::string status;
  bool alive = false;
  std::array<uint16_t, 2> rtp_port{0, 0};  // [caller, callee]; 0: disabled stream
  // The family of each side's relay sockets (absent in older records: IPv4).
  std::array<IpAddress::Family, 2> family{IpAddress::Family::V4, IpAddress::Family::V4};
  double created = 0;  // Unix times from here on
  std::optional<double> start_wall, confirmed, end_wall, first_media;
  double last_activity = 0, hold_since = 0;
  int timeout_wait = 0;
  std::array<std::string, 2> codec;
  bool was_on_hold = false, kernel_refused = false;
  std::optional<bool> strict_latching;
  std::array<PartyState, 2> party;
  std::array<std::array<LegState, 2>, 2> leg;  // [sub-stream][side]
};

struct OfferState {
  int64_t cseq_caller = 0, cseq_callee = 0;
  int offerer = 0;              // Side
  std::vector<size_t> streams;  // indexes into SessionState::streams
};

struct SessionState {
  std::string call_id, from_tag, to_tag, from_uri, to_uri, caller_ua, callee_ua;
  std::optional<std::string> username;
  std::string dialog_id;  // empty: none (absent in older records)
  std::optional<bool> strict_latching;
  uint64_t owner = 0;
  double created = 0;  // Unix time
  std::optional<double> start_wall, ended_wall;
  std::optional<std::pair<int64_t, int64_t>> cseq, previous_cseq;
  std::vector<OfferState> offers;
  std::vector<StreamState> streams;
};

// One JSON object, written with JsonWriter (byte strings survive).
std::string session_state_to_json(const SessionState& s);
// The same object appended to `out` (a journal's record buffer).
void append_session_state_json(std::string& out, const SessionState& s);
// The inverse. false with `error` when the text is not such an object, a
// field has the wrong type or a value is out of its range.
bool session_state_from_json(std::string_view json, SessionState& out, std::string& error);

// The traffic counters of a session, checkpointed more often than the whole
// record (state journal `C` lines): per stream, per sub-stream and side.
struct CounterCheckpoint {
  struct Leg {
    uint64_t packets = 0, bytes = 0, dropped = 0, foreign = 0, media_seen = 0;
  };
  struct Stream {
    double last_activity = 0;  // Unix time
    std::array<std::array<Leg, 2>, 2> leg;
  };
  std::vector<Stream> streams;
};
std::string counters_to_text(const CounterCheckpoint& c);
bool counters_from_text(std::string_view text, CounterCheckpoint& out, std::string& error);
// Applies a checkpoint to a record (only where it moved counters forward).
void apply_counters(SessionState& s, const CounterCheckpoint& c);

}  // namespace mp::relay
