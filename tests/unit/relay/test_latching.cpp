// The latching policy (relay/latching.h): who may become a party's media
// source, in which order, and when a latched source may move.
#include <catch2/catch.hpp>

#include "relay/latching.h"

using namespace mp::relay;
using mp::Endpoint;

namespace {

Endpoint ep(const char* ip, uint16_t port) {
  return Endpoint{*mp::parse_ipv4(ip), port};
}

// The caller announced 192.0.2.10:4000 in its SDP at t=0, SIP from 198.51.100.1.
LatchInput rtp_from(Endpoint from, double now, std::optional<uint32_t> ssrc = 1234) {
  LatchInput in;
  in.from = from;
  in.ssrc = ssrc;
  in.now = now;
  in.sdp_known = true;
  in.sdp = ep("192.0.2.10", 4000);
  in.sdp_since = 0;
  in.signaling_ip = *mp::parse_ipv4("198.51.100.1");
  in.answered = true;
  in.liveness_at = now;  // userspace: every packet of the latched source is seen
  return in;
}

const Endpoint kAttacker = ep("203.0.113.66", 5555);
const Endpoint kNat = ep("198.51.100.1", 31000);  // the phone's NAT: signalling IP, other port

}  // namespace

TEST_CASE("the SDP address or the signalling IP latches at once", "[latching]") {
  LatchPolicy p;
  LatchState s;
  CHECK(latch_decide(p, s, rtp_from(ep("192.0.2.10", 4000), 0.1)) == LatchVerdict::Latched);
  CHECK(s.remote == ep("192.0.2.10", 4000));
  LatchState n;
  CHECK(latch_decide(p, n, rtp_from(kNat, 0.1)) == LatchVerdict::Latched);
  LatchState a;  // same SDP address, another port (a NAT in front of it)
  CHECK(latch_decide(p, a, rtp_from(ep("192.0.2.10", 4444), 0.1)) == LatchVerdict::Latched);
}

TEST_CASE("an attacker sending first does not win against the real party", "[latching]") {
  LatchPolicy p;
  LatchState s;
  // Alone, the attacker waits out the window as a candidate (non-strict).
  CHECK(latch_decide(p, s, rtp_from(kAttacker, 0.0)) == LatchVerdict::Drop);
  CHECK(latch_decide(p, s, rtp_from(kAttacker, 0.4)) == LatchVerdict::Drop);
  // Still before the window: the real party arrives and wins.
  LatchState s2;
  CHECK(latch_decide(p, s2, rtp_from(kAttacker, 0.0)) == LatchVerdict::Drop);
  CHECK(latch_decide(p, s2, rtp_from(kAttacker, 0.2)) == LatchVerdict::Drop);
  CHECK(latch_decide(p, s2, rtp_from(kNat, 0.3)) == LatchVerdict::Latched);
  CHECK(latch_decide(p, s2, rtp_from(kAttacker, 0.9, 9999)) == LatchVerdict::Drop);
  CHECK(s2.remote == kNat);
  CHECK(s2.foreign == 3);
}

TEST_CASE("an unknown source latches only after the window, and never in strict mode",
          "[latching]") {
  LatchPolicy p;
  LatchState s;
  const Endpoint other = ep("203.0.113.7", 7000);
  CHECK(latch_decide(p, s, rtp_from(other, 1.0)) == LatchVerdict::Drop);
  CHECK(latch_decide(p, s, rtp_from(kAttacker, 1.2)) == LatchVerdict::Drop);  // not the first
  CHECK(latch_decide(p, s, rtp_from(other, 1.4)) == LatchVerdict::Drop);
  CHECK(latch_decide(p, s, rtp_from(kAttacker, 1.6)) == LatchVerdict::Drop);
  CHECK(latch_decide(p, s, rtp_from(other, 1.6)) == LatchVerdict::Latched);
  LatchPolicy strict;
  strict.strict = true;
  LatchState t;
  for (double now = 0; now < 5; now += 0.5)
    CHECK(latch_decide(strict, t, rtp_from(other, now)) == LatchVerdict::Drop);
  CHECK(latch_decide(strict, t, rtp_from(kNat, 5)) == LatchVerdict::Latched);
}

TEST_CASE("nothing unknown latches before the party's SDP is known; the window restarts then",
          "[latching]") {
  LatchPolicy p;
  LatchState s;
  auto before = rtp_from(kAttacker, 0.0);
  before.sdp_known = false;
  before.signaling_ip = {};
  CHECK(latch_decide(p, s, before) == LatchVerdict::Drop);
  before.now = 5;
  CHECK(latch_decide(p, s, before) == LatchVerdict::Drop);
  // The answer arrives at t=10: the real callee has `window` seconds.
  auto after = rtp_from(kAttacker, 10.1);
  after.sdp_since = 10;
  CHECK(latch_decide(p, s, after) == LatchVerdict::Drop);
  auto real = rtp_from(kNat, 10.2);
  real.sdp_since = 10;
  CHECK(latch_decide(p, s, real) == LatchVerdict::Latched);
}

TEST_CASE("STUN from an unknown source neither latches nor becomes a candidate", "[latching]") {
  LatchPolicy p;
  LatchState s;
  auto stun = rtp_from(kAttacker, 0, std::nullopt);
  stun.stun = true;
  CHECK(latch_decide(p, s, stun) == LatchVerdict::Drop);
  CHECK_FALSE(s.has_candidate);
  auto good = rtp_from(kNat, 0.1, std::nullopt);
  good.stun = true;
  CHECK(latch_decide(p, s, good) == LatchVerdict::Latched);
}

TEST_CASE("RTCP latches only to the IP of the party's RTP and follows it", "[latching]") {
  LatchPolicy p;
  LatchState rtcp;
  LatchInput in = rtp_from(ep("192.0.2.10", 4001), 0.1, std::nullopt);
  in.rtcp = true;
  CHECK(latch_decide(p, rtcp, in) == LatchVerdict::Drop);  // RTP not latched yet
  in.rtp_learned = true;
  in.rtp_ip = *mp::parse_ipv4("192.0.2.10");
  LatchInput attacker = in;
  attacker.from = kAttacker;
  CHECK(latch_decide(p, rtcp, attacker) == LatchVerdict::Drop);
  CHECK(latch_decide(p, rtcp, in) == LatchVerdict::Latched);
  CHECK(latch_decide(p, rtcp, attacker) == LatchVerdict::Drop);
  // RTP moved to the NAT address: RTCP from there follows.
  LatchInput moved = in;
  moved.from = ep("198.51.100.1", 31001);
  moved.rtp_ip = *mp::parse_ipv4("198.51.100.1");
  moved.rtp_epoch = 2;
  CHECK(latch_decide(p, rtcp, moved) == LatchVerdict::Relatched);
  CHECK(rtcp.remote == moved.from);
  // A NAT rebinding that changes only the port: RTCP follows its RTP too,
  // once; another port on the same IP without an RTP move does not.
  LatchInput port_only = moved;
  port_only.from = ep("198.51.100.1", 32001);
  CHECK(latch_decide(p, rtcp, port_only) == LatchVerdict::Drop);
  port_only.rtp_epoch = 3;
  CHECK(latch_decide(p, rtcp, port_only) == LatchVerdict::Relatched);
  port_only.from = ep("198.51.100.1", 33001);
  CHECK(latch_decide(p, rtcp, port_only) == LatchVerdict::Drop);
}

TEST_CASE("no fallback before the final answer; a rule-1 source replaces a fallback latch",
          "[latching]") {
  LatchPolicy p;
  LatchState s;
  // Ringing: the attacker sprays for seconds, nothing latches.
  for (double t = 0; t < 3; t += 0.1) {
    auto in = rtp_from(kAttacker, t, 9999);
    in.answered = false;
    CHECK(latch_decide(p, s, in) == LatchVerdict::Drop);
  }
  // Answered at t=3: the attacker becomes a candidate only now.
  auto in = rtp_from(kAttacker, 3.2, 9999);
  in.answered_since = 3;
  CHECK(latch_decide(p, s, in) == LatchVerdict::Drop);
  in.now = 3.6;
  CHECK(latch_decide(p, s, in) == LatchVerdict::Drop);
  in.now = 3.75;
  CHECK(latch_decide(p, s, in) == LatchVerdict::Latched);
  CHECK(s.by_fallback);
  // The real party shows up late: it takes the stream back for good.
  CHECK(latch_decide(p, s, rtp_from(kNat, 3.8)) == LatchVerdict::Relatched);
  CHECK(s.remote == kNat);
  CHECK_FALSE(s.by_fallback);
  in.now = 3.9;
  CHECK(latch_decide(p, s, in) == LatchVerdict::Drop);
}

TEST_CASE("in the kernel, silence is only believed up to the last counter reading", "[latching]") {
  LatchPolicy p;
  LatchState s;
  REQUIRE(latch_decide(p, s, rtp_from(kNat, 1.0, 42)) == LatchVerdict::Latched);
  // The kernel forwards the old source; its counters were last read at 1.0.
  const Endpoint rebound = ep("198.51.100.1", 31500);
  auto in = rtp_from(rebound, 1.8, 42);
  in.liveness_at = 1.0;
  CHECK(latch_decide(p, s, in) == LatchVerdict::Drop);
  CHECK(s.rebind_pending);
  // A reading at 2.0 saw packets: still alive.
  s.last_seen = 2.0;
  in.now = 2.1;
  in.liveness_at = 2.0;
  CHECK(latch_decide(p, s, in) == LatchVerdict::Drop);
  // Readings up to 2.6 saw nothing new: silent for 0.6 s, the move is followed.
  in.now = 2.65;
  in.liveness_at = 2.6;
  CHECK(latch_decide(p, s, in) == LatchVerdict::Relatched);
  CHECK_FALSE(s.rebind_pending);
}

TEST_CASE("NAT rebinding is followed for the same SSRC after silence only", "[latching]") {
  LatchPolicy p;
  LatchState s;
  REQUIRE(latch_decide(p, s, rtp_from(kNat, 1.0, 42)) == LatchVerdict::Latched);
  const Endpoint rebound = ep("198.51.100.1", 31500);
  // The old source is still talking: no move.
  CHECK(latch_decide(p, s, rtp_from(kNat, 1.2, 42)) == LatchVerdict::Forward);
  CHECK(latch_decide(p, s, rtp_from(rebound, 1.3, 42)) == LatchVerdict::Drop);
  // Silent for rebind_silence: a different SSRC is refused, the same one followed.
  CHECK(latch_decide(p, s, rtp_from(rebound, 1.8, 43)) == LatchVerdict::Drop);
  // A new NAT mapping (even a new public IP) with the latched SSRC is followed.
  const Endpoint new_nat = ep("198.51.100.2", 40000);
  CHECK(latch_decide(p, s, rtp_from(new_nat, 1.9, 42)) == LatchVerdict::Relatched);
  CHECK(s.remote == new_nat);
  CHECK(latch_decide(p, s, rtp_from(kNat, 1.95, 42)) == LatchVerdict::Drop);
}

TEST_CASE("a re-INVITE reopens latching and ignores the old source", "[latching]") {
  LatchPolicy p;
  LatchState s;
  REQUIRE(latch_decide(p, s, rtp_from(kNat, 1.0)) == LatchVerdict::Latched);
  s.reopen();
  CHECK_FALSE(s.learned);
  CHECK(latch_decide(p, s, rtp_from(kNat, 2.0)) == LatchVerdict::Drop);
  CHECK(latch_decide(p, s, rtp_from(ep("192.0.2.10", 4000), 2.1)) == LatchVerdict::Latched);
}

TEST_CASE("rtp_ssrc reads RTP version 2 only, not RTCP", "[latching]") {
  uint8_t rtp[12] = {0x80, 0x08, 0, 1, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef};
  CHECK(rtp_ssrc(rtp, sizeof rtp) == std::optional<uint32_t>(0xdeadbeef));
  CHECK_FALSE(rtp_ssrc(rtp, 11));
  uint8_t rtcp[12] = {0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0};
  CHECK_FALSE(rtp_ssrc(rtcp, sizeof rtcp));
  uint8_t v1[12] = {0x40, 0x08};
  CHECK_FALSE(rtp_ssrc(v1, sizeof v1));
}
