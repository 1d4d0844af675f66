// Fuzz target for the relay's datagram classifier and latching policy: what a
// relay port decides about each packet before any forwarding
// (relay/codec.h: is_stun, codec_name; relay/latching.h: rtp_ssrc,
// latch_decide).
//
// The whole input is first classified as one datagram. Then it is read as a
// script for one party of one stream, the way MediaStream::on_datagram()
// drives the policy: byte 0 sets the policy and the starting signalling
// state, and every further 4 bytes are one event, either a datagram (RTP or
// RTCP port; a STUN, RTP, RTCP or raw packet with an SSRC from a small set;
// from the SDP address, the signalling IP, the party's NAT or an attacker,
// after a time step) or a signalling change (SDP known or moved by a
// re-INVITE, which reopens the legs as reset_party() does; the final answer;
// the signalling IP; the per-call strict switch; a kernel counter reading).
// One LatchState per sub-stream (RTP, RTCP) lives through the whole script.
//
// Invariants, after every datagram (latching.h's rules):
//   * is_stun() and rtp_ssrc() follow their definitions and never both hold;
//     codec_name() is non-empty printable text and ignores the marker bit;
//   * `foreign` grows by one exactly on Drop; `epoch` by one exactly on
//     Latched/Relatched, which leave the leg latched to the sender; Drop
//     never changes the latch; Forward comes only from the latched source
//     (or is RTCP STUN from RTP's IP); a latched leg stays latched;
//   * the party's announced source latches at once unless it is the obsolete
//     one, and replaces a fallback latch (rule 1);
//   * a source the signalling did not name latches only as the candidate
//     whose window has passed, after the SDP and the final answer, never in
//     strict mode, never by STUN (and STUN does not make it a candidate); so
//     it never latches before the SDP is known (rule 2, 3);
//   * RTCP latches only to the IP of the latched RTP, never by STUN, and
//     moves only when RTP latched anew (rule 4);
//   * once latched, a new RTP source is followed only as a replacement of a
//     fallback latch by an announced source, or as a rebinding (same SSRC,
//     old source silent for rebind_silence up to liveness_at), and such a
//     rebinding is always followed (rule 5);
//   * the source a re-INVITE moved away from never latches again until the
//     leg has latched elsewhere.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "common/address.h"
#include "relay/codec.h"
#include "relay/latching.h"

using namespace mp;
using namespace mp::relay;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_media_classifier: invariant violated: %s\n", what);
    std::abort();
  }
}

Ipv4 ip(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return Ipv4::from_host_order((uint32_t{a} << 24) | (uint32_t{b} << 16) | (uint32_t{c} << 8) | d);
}

void check_classifier(const uint8_t* data, size_t size) {
  const bool stun = is_stun(data, size);
  check(stun == (size >= 20 && (data[0] & 0xc0) == 0 && data[4] == 0x21 && data[5] == 0x12 &&
                 data[6] == 0xa4 && data[7] == 0x42),
        "is_stun is RFC 5389's test");
  const auto ssrc = rtp_ssrc(data, size);
  if (ssrc) {
    check(size >= 12 && (data[0] & 0xc0) == 0x80, "SSRC only from RTP version 2");
    const uint8_t pt = data[1] & 0x7f;
    check(pt < 72 || pt > 76, "no SSRC from RTCP");
    check(*ssrc == ((uint32_t{data[8]} << 24) | (uint32_t{data[9]} << 16) |
                    (uint32_t{data[10]} << 8) | data[11]),
          "SSRC from bytes 8-11");
  } else {
    check(
        size < 12 || (data[0] & 0xc0) != 0x80 || ((data[1] & 0x7f) >= 72 && (data[1] & 0x7f) <= 76),
        "RTP version 2 has an SSRC");
  }
  check(!(stun && ssrc), "STUN and RTP exclude each other");
  if (size >= 2) {
    const std::string name = codec_name(data[1]);
    check(!name.empty() && name.size() <= 16, "codec name bounded");
    for (char c : name) check(c > 0x20 && c < 0x7f, "codec name printable");
    check(codec_name(data[1] ^ 0x80) == name, "marker bit ignored");
    if ((data[1] & 0x7f) >= 96)
      check(name == "Dynamic(" + std::to_string(data[1] & 0x7f) + ")", "dynamic payload types");
  }
}

// One party of one stream, as MediaStream keeps it.
struct Party {
  bool sdp_set = false;
  IpEndpoint sdp;
  double sdp_since = 0;
  IpEndpoint old_sdp;  // before the last re-INVITE
  Ipv4 signaling;
  std::optional<double> answered;
  bool strict = false;
  double kernel_polled_at = 0;
  bool kernel = false;  // silence known only up to kernel_polled_at
  LatchState legs[2];   // RTP, RTCP
};

const IpEndpoint kSdpChoices[] = {
    {ip(10, 0, 0, 1), 5000},      // private address behind a NAT
    {ip(198, 51, 100, 7), 7000},  // public, what the NAT shows
    {ip(0, 0, 0, 0), 5000},       // hold (c=0.0.0.0)
    {ip(10, 0, 0, 1), 0},         // port 0: no SDP address to latch to
    {ip(192, 0, 2, 9), 6000},     // moved elsewhere
    {ip(203, 0, 113, 66), 5000},  // the attacker's address (announced)
    {ip(198, 51, 100, 7), 7002},  // the NAT's next port
    {ip(10, 0, 0, 1), 5002},
};
const Ipv4 kSignaling[] = {ip(0, 0, 0, 0), ip(10, 0, 0, 2), ip(198, 51, 100, 7), ip(192, 0, 2, 9)};
const uint32_t kSsrcs[] = {0x11111111, 0x22222222, 0, 0xffffffff};
const double kWindows[] = {0, 0.1, 0.5, 2.0};
const double kSilences[] = {0, 0.2, 0.5, 1.0};

IpEndpoint source(const Party& p, unsigned which, uint8_t extra) {
  switch (which & 15) {
    case 0:
      return p.sdp;
    case 1:
      return {p.sdp.ip, static_cast<uint16_t>(p.sdp.port + 1)};
    case 2:
      return {p.sdp.ip, static_cast<uint16_t>(4000 + extra)};
    case 3:
      return {p.signaling, 5060};
    case 4:
      return {p.signaling, static_cast<uint16_t>(5000 + (extra & 3))};
    case 5:
      return {ip(198, 51, 100, 7), 7000};
    case 6:
      return {ip(198, 51, 100, 7), 7001};
    case 7:
      return {ip(198, 51, 100, 7), static_cast<uint16_t>(7002 + (extra & 3))};
    case 8:
      return {ip(203, 0, 113, 66), 5000};
    case 9:
      return {ip(203, 0, 113, 66), 5001};
    case 10:
      return {ip(203, 0, 113, 67), static_cast<uint16_t>(40000 + extra)};
    case 11:
      return p.old_sdp;
    case 12:
      return p.legs[0].remote;
    case 13:
      return {p.legs[0].remote.ip, static_cast<uint16_t>(p.legs[0].remote.port + 1)};
    case 14:
      return p.legs[1].remote;
    default:
      return {ip(0, 0, 0, 0), 0};
  }
}

// The datagram of one event: `kind` 0 STUN, 1 RTP, 2 RTCP, 3 raw bytes.
std::vector<uint8_t> datagram(unsigned kind, uint8_t b1, uint8_t b3, const uint8_t* rest,
                              size_t rest_size) {
  std::vector<uint8_t> d;
  switch (kind & 3) {
    case 0:  // STUN binding request (or, with b3's top bits, almost one)
      d = {static_cast<uint8_t>(b3 & 0xc1), 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42};
      d.resize(20 + (b1 & 7), b1);
      break;
    case 1: {  // RTP version 2 with an SSRC from the set
      const uint32_t ssrc = kSsrcs[b1 >> 6];
      d = {static_cast<uint8_t>(0x80 | (b3 & 0x3f)),
           static_cast<uint8_t>(b1 & 0x3f ? b1 : 0),
           0,
           1,
           0,
           0,
           0,
           160,
           static_cast<uint8_t>(ssrc >> 24),
           static_cast<uint8_t>(ssrc >> 16),
           static_cast<uint8_t>(ssrc >> 8),
           static_cast<uint8_t>(ssrc)};
      d.resize(12 + (b3 & 0x0f), 0xd5);
      break;
    }
    case 2:  // RTCP receiver report
      d = {0x81, static_cast<uint8_t>(200 + (b1 & 7)), 0, 7, 0x11, 0x11, 0x11, 0x11};
      d.resize(32, 0);
      break;
    default:  // whatever the input holds next
      d.assign(rest, rest + (rest_size < b3 % 40 ? rest_size : b3 % 40));
      break;
  }
  return d;
}

bool preferred(const LatchInput& in) {
  return (in.sdp_known && !in.sdp.ip.is_any() && in.from.ip == in.sdp.ip) ||
         (!in.signaling_ip.is_any() && in.from.ip == in.signaling_ip);
}

void check_decision(const LatchPolicy& policy, const LatchState& b, const LatchState& s,
                    const LatchInput& in, LatchVerdict v) {
  const bool pref = preferred(in);
  const bool moved = v == LatchVerdict::Latched || v == LatchVerdict::Relatched;
  check(s.foreign == b.foreign + (v == LatchVerdict::Drop ? 1 : 0), "foreign counts the drops");
  check(s.epoch == b.epoch + (moved ? 1 : 0), "epoch counts latches and moves");
  check(!b.learned || s.learned, "a latched leg stays latched");
  check(!s.by_fallback || s.learned, "fallback only when latched");
  if (moved) check(s.learned && s.remote == in.from, "latched to the sender");
  if (v == LatchVerdict::Latched) check(!b.learned, "Latched only on an open leg");
  if (v == LatchVerdict::Relatched) check(b.learned && in.from != b.remote, "Relatched moves");
  if (v == LatchVerdict::Drop)
    check(s.learned == b.learned && (!b.learned || s.remote == b.remote), "Drop keeps the latch");
  if (v == LatchVerdict::Forward) {
    check((b.learned && in.from == b.remote) ||
              (in.rtcp && in.stun && !b.learned && in.rtp_learned && in.from.ip == in.rtp_ip),
          "Forward only from the latched source");
    check(s.learned == b.learned && s.remote == b.remote, "Forward keeps the latch");
  }
  if (!b.learned && b.has_obsolete && in.from == b.obsolete)
    check(v == LatchVerdict::Drop, "the source a re-INVITE left never latches again");

  if (in.rtcp) {
    check(!(moved && in.stun), "RTCP never latches by STUN");
    if (moved) check(in.rtp_learned && in.from.ip == in.rtp_ip, "RTCP latches only to RTP's IP");
    if (v == LatchVerdict::Relatched)
      check(in.rtp_epoch != b.followed_epoch, "RTCP moves only after RTP latched anew");
    if (moved) check(s.followed_epoch == in.rtp_epoch, "RTCP remembers RTP's epoch");
    return;
  }
  if (in.stun && !pref) {
    check(!moved, "STUN from an unknown source never latches");
    check(s.has_candidate == b.has_candidate && (!b.has_candidate || s.candidate == b.candidate),
          "STUN from an unknown source does not become a candidate");
  }
  if (v == LatchVerdict::Latched && !pref) {
    check(!policy.strict, "no fallback latch in strict mode");
    check(in.sdp_known, "no unknown source latches before the SDP is known");
    check(in.answered, "no fallback latch before the final answer");
    check(!in.stun, "no fallback latch by STUN");
    check(b.has_candidate && in.from == b.candidate, "only the first unknown source latches");
    double since = b.candidate_since;
    if (in.sdp_since > since) since = in.sdp_since;
    if (in.answered_since > since) since = in.answered_since;
    check(in.now - since >= policy.window, "fallback only after the window");
    check(s.by_fallback, "a fallback latch is marked");
  }
  const bool rebind = !in.stun && in.ssrc && b.has_ssrc && *in.ssrc == b.ssrc &&
                      in.liveness_at - b.last_seen >= policy.rebind_silence;
  if (v == LatchVerdict::Relatched)
    check(!in.stun && ((b.by_fallback && pref) || rebind),
          "a latched RTP leg moves only for its announced source or a rebinding");
  if (!b.learned && pref && !(b.has_obsolete && in.from == b.obsolete))
    check(v == LatchVerdict::Latched, "the announced source latches at once");
  if (b.learned && in.from != b.remote && ((b.by_fallback && pref && !in.stun) || rebind))
    check(v == LatchVerdict::Relatched, "announced source or rebinding is followed");
}

void run_script(const uint8_t* data, size_t size) {
  if (size == 0) return;
  Party p;
  LatchPolicy policy;
  policy.strict = data[0] & 1;
  policy.window = kWindows[(data[0] >> 1) & 3];
  policy.rebind_silence = kSilences[(data[0] >> 3) & 3];
  double now = 100;
  if (data[0] & 0x20) {
    p.sdp_set = true;
    p.sdp = kSdpChoices[0];
    p.sdp_since = now;
  }
  if (data[0] & 0x40) p.signaling = kSignaling[2];
  if (data[0] & 0x80) p.answered = now;
  p.old_sdp = kSdpChoices[4];

  for (size_t i = 1; i + 4 <= size; i += 4) {
    const uint8_t e0 = data[i], e1 = data[i + 1], e2 = data[i + 2], e3 = data[i + 3];
    now += (e2 & 0x3f) * 0.02;
    if (e2 & 0x80) p.kernel_polled_at = now;
    p.kernel = e2 & 0x40;
    const unsigned op = (e0 >> 4) & 3;
    if (op == 3) {  // signalling
      switch (e0 & 7) {
        case 0:
        case 1: {  // SDP known or moved (a re-INVITE): reset_party()
          const IpEndpoint announced = kSdpChoices[e1 & 7];
          if (p.sdp_set) p.old_sdp = p.sdp;
          p.sdp_set = true;
          p.sdp = announced;
          p.sdp_since = now;
          for (int k = 0; k < 2; ++k) {
            LatchState& leg = p.legs[k];
            if (leg.learned && !(k == 0 && leg.remote == announced)) leg.reopen();
          }
          break;
        }
        case 2:
          if (!p.answered) p.answered = now;
          break;
        case 3:
          p.signaling = kSignaling[e1 & 3];
          break;
        case 4:
          p.strict = !p.strict;
          break;
        default:
          p.kernel_polled_at = now;
          break;
      }
      continue;
    }
    const int k = op == 2 ? 1 : 0;
    const std::vector<uint8_t> d = datagram(e0 >> 6, e1, e3, data + i + 4, size - (i + 4));
    check_classifier(d.data(), d.size());
    LatchInput in;
    in.from = source(p, e0 & 15, e3);
    in.rtcp = k == 1;
    in.stun = is_stun(d.data(), d.size());
    in.ssrc = k == 0 && !in.stun ? rtp_ssrc(d.data(), d.size()) : std::nullopt;
    in.now = now;
    in.sdp_known = p.sdp_set && p.sdp.port != 0;
    in.sdp = p.sdp;
    in.sdp_since = p.sdp_since;
    in.signaling_ip = p.signaling;
    in.answered = p.answered.has_value();
    in.answered_since = p.answered.value_or(0);
    in.liveness_at = p.kernel ? p.kernel_polled_at : now;
    in.rtp_learned = p.legs[0].learned;
    in.rtp_ip = p.legs[0].remote.ip;
    in.rtp_epoch = p.legs[0].epoch;
    LatchPolicy effective = policy;
    if (p.strict) effective.strict = !policy.strict;
    LatchState& leg = p.legs[k];
    const LatchState before = leg;
    const LatchVerdict v = latch_decide(effective, leg, in);
    check_decision(effective, before, leg, in, v);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  check_classifier(data, size);
  run_script(data, size);
  return 0;
}
