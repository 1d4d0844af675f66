// The latching policy: which source a relay port accepts as a party's media.
//
// A relay learns each party's real address from its packets ("latching"),
// which is what makes phones behind NAT work. An attacker who sends first must
// not win. latch_decide() is a pure function of one datagram's source and
// what the party announced; it owns the preference order documented in
// mediaproxy(8), "Latching":
//   1. before latching, a source that matches the party's SDP address and
//      port, or its SDP address or signalling IP, latches at once;
//   2. any other source only waits as a candidate: it latches when it is
//      still the first such source once `window` seconds have passed since
//      it appeared, since the party's SDP became known and since the final
//      answer (never in strict mode, never before the answer); a source of
//      rule 1 replaces such a fallback latch whenever it shows up;
//   3. STUN latches only from a preferred source (ICE checks come from the
//      announced addresses); an unknown source's STUN is dropped;
//   4. RTCP latches only to the IP of the same party's latched RTP (any port)
//      and follows it when RTP latches anew (NAT rebinding, fallback
//      replaced): the first RTCP packet from RTP's IP after that moves it;
//   5. after latching, other sources are dropped, except a NAT rebinding: an
//      RTP packet with the latched SSRC from a new source once the latched
//      source is known to have been silent `rebind_silence` seconds. Silence
//      is measured up to `liveness_at`: now in userspace; in the kernel, the
//      last reading of the rule's counters (so a rule still forwarding the
//      old source is never mistaken for silence).
#pragma once

#include <cstdint>
#include <optional>

#include "common/ip_address.h"

namespace mp::relay {

struct LatchPolicy {
  bool strict = false;          // no fallback to sources the signalling did not name
  double window = 0.5;          // seconds before an unknown source may latch
  double rebind_silence = 0.5;  // seconds the latched source must be quiet before a rebinding
};

// Per leg (one party on one sub-stream) latching state.
struct LatchState {
  bool learned = false;
  IpEndpoint remote;
  bool has_obsolete = false;  // after a re-INVITE moved the party: ignore this old source
  IpEndpoint obsolete;
  bool has_candidate = false;  // the first unknown source, waiting for the window
  IpEndpoint candidate;
  double candidate_since = 0;
  bool has_ssrc = false;  // RTP: SSRC last seen from `remote`
  uint32_t ssrc = 0;
  double last_seen = 0;         // last packet from `remote` (monotonic seconds)
  uint64_t foreign = 0;         // datagrams from other sources, dropped
  bool by_fallback = false;     // latched by rule 2: a rule-1 source may replace it
  uint32_t epoch = 0;           // counts latches and moves of this leg
  uint32_t followed_epoch = 0;  // RTCP: the RTP epoch it latched or moved with
  bool rebind_pending = false;  // a same-SSRC source waits for the old one's silence

  // Forgets the latch (the party moved); the old source stays ignored.
  void reopen() {
    if (learned) {
      has_obsolete = true;
      obsolete = remote;
    }
    learned = false;
    has_candidate = false;
    has_ssrc = false;
    by_fallback = false;
    rebind_pending = false;
  }
};

struct LatchInput {
  IpEndpoint from;
  bool rtcp = false;
  bool stun = false;
  std::optional<uint32_t> ssrc;  // RTP version 2 packets only
  double now = 0;
  // What the party announced (RTP address; RTCP is port + 1 by convention).
  bool sdp_known = false;
  IpEndpoint sdp;
  double sdp_since = 0;    // when the SDP became known
  IpAddress signaling_ip;  // any: unknown
  bool answered = false;   // the stream has its final answer
  double answered_since = 0;
  double liveness_at = 0;  // up to when `last_seen` is known to be current
  // RTCP only: the same party's RTP leg.
  bool rtp_learned = false;
  IpAddress rtp_ip;
  uint32_t rtp_epoch = 0;
};

enum class LatchVerdict {
  Forward,    // from the latched source (or preferred STUN): deliver
  Latched,    // latched now: deliver
  Relatched,  // moved to a new source (NAT rebinding, RTCP following RTP): deliver
  Drop,       // not accepted; counted
};

LatchVerdict latch_decide(const LatchPolicy& policy, LatchState& state, const LatchInput& in);

// The SSRC of an RTP version 2 packet, if `data` looks like one.
std::optional<uint32_t> rtp_ssrc(const uint8_t* data, size_t len);

}  // namespace mp::relay
