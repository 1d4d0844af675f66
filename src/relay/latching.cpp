// The latching policy (latching.h).
#include "relay/latching.h"

namespace mp::relay {

namespace {

bool preferred(const LatchInput& in) {
  if (in.sdp_known && !in.sdp.ip.is_any() && in.from.ip == in.sdp.ip) return true;
  return !in.signaling_ip.is_any() && in.from.ip == in.signaling_ip;
}

LatchVerdict latch(LatchState& s, const LatchInput& in, bool fallback) {
  s.learned = true;
  s.remote = in.from;
  s.last_seen = in.now;
  s.has_candidate = false;
  s.has_ssrc = in.ssrc.has_value();
  s.ssrc = in.ssrc.value_or(0);
  s.by_fallback = fallback;
  s.rebind_pending = false;
  ++s.epoch;
  s.followed_epoch = in.rtp_epoch;
  return LatchVerdict::Latched;
}

LatchVerdict move(LatchState& s, const LatchInput& in) {
  latch(s, in, false);
  return LatchVerdict::Relatched;
}

LatchVerdict drop(LatchState& s) {
  ++s.foreign;
  return LatchVerdict::Drop;
}

}  // namespace

std::optional<uint32_t> rtp_ssrc(const uint8_t* d, size_t len) {
  if (len < 12 || (d[0] & 0xc0) != 0x80) return std::nullopt;
  const uint8_t pt = d[1] & 0x7f;
  if (pt >= 72 && pt <= 76) return std::nullopt;  // RTCP (SR, RR, SDES, BYE, APP)
  return (static_cast<uint32_t>(d[8]) << 24) | (static_cast<uint32_t>(d[9]) << 16) |
         (static_cast<uint32_t>(d[10]) << 8) | d[11];
}

LatchVerdict latch_decide(const LatchPolicy& policy, LatchState& s, const LatchInput& in) {
  if (s.learned) {
    if (in.from == s.remote) {
      s.last_seen = in.now;
      s.rebind_pending = false;
      if (!in.stun && in.ssrc) {
        s.has_ssrc = true;
        s.ssrc = *in.ssrc;
      }
      return LatchVerdict::Forward;
    }
    if (in.rtcp) {
      // RTCP follows its RTP when RTP latched anew since RTCP last did.
      if (!in.stun && in.rtp_learned && in.from.ip == in.rtp_ip && in.rtp_epoch != s.followed_epoch)
        return move(s, in);
      return drop(s);
    }
    if (s.by_fallback && !in.stun && preferred(in)) return move(s, in);
    if (!in.stun && in.ssrc && s.has_ssrc && *in.ssrc == s.ssrc) {
      if (in.liveness_at - s.last_seen >= policy.rebind_silence) return move(s, in);
      s.rebind_pending = true;
    }
    return drop(s);
  }
  if (s.has_obsolete && in.from == s.obsolete) return drop(s);
  if (in.rtcp) {
    if (!in.rtp_learned || in.from.ip != in.rtp_ip) return drop(s);
    if (in.stun) return LatchVerdict::Forward;
    return latch(s, in, false);
  }
  const bool good = preferred(in);
  if (good) return latch(s, in, false);
  if (in.stun) return drop(s);  // an unknown source's STUN never latches, nor waits
  if (policy.strict || !in.sdp_known || !in.answered) return drop(s);
  if (!s.has_candidate) {
    s.has_candidate = true;
    s.candidate = in.from;
    s.candidate_since = in.now;
    return drop(s);
  }
  if (in.from != s.candidate) return drop(s);
  double since = s.candidate_since;
  if (in.sdp_since > since) since = in.sdp_since;
  if (in.answered_since > since) since = in.answered_since;
  if (in.now - since < policy.window) return drop(s);
  return latch(s, in, true);
}

}  // namespace mp::relay
