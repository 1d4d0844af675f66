// A session's state taken from, and put back into, the live objects
// (Session and MediaStream members declared in session.h and stream.h).
//
// capture() copies what a new process needs to carry on: identities, the
// offer/answer bookkeeping, what each party announced, what the relay learned
// (latched addresses, SSRCs, epochs), counters and times. Monotonic times
// become Unix times on the way out and monotonic times of the new process on
// the way in, so timers run on as if nothing had happened. Not kept: STUN
// datagrams waiting for a destination, a latching candidate still inside its
// window (it is seen again with the next packet), and the pump's send queue.
#include <algorithm>

#include "relay/session.h"

namespace mp::relay {

namespace {

// Monotonic <-> Unix time, both read once per call of capture()/restore().
struct Clock {
  double mono, wall;
  double to_wall(double m) const { return wall - (mono - m); }
  double to_mono(double w) const { return mono - (wall - w); }
  // Times whose 0 means "never" (a leg's last_seen, hold_since) stay 0.
  double to_wall_or_zero(double m) const { return m == 0 ? 0 : to_wall(m); }
  double to_mono_or_zero(double w) const { return w == 0 ? 0 : to_mono(w); }
  std::optional<double> to_wall(const std::optional<double>& m) const {
    return m ? std::optional<double>(to_wall(*m)) : std::nullopt;
  }
  std::optional<double> to_mono(const std::optional<double>& w) const {
    return w ? std::optional<double>(to_mono(*w)) : std::nullopt;
  }
};

Clock clock_of(const RelayContext& ctx) {
  return Clock{ctx.now(), RelayContext::wall_now()};
}

// What a Leg and a LegState have in common, under the same names, copied
// either way (times and kernel ids are converted by the callers).
template <typename To, typename From>
void copy_leg(To& o, const From& l) {
  o.learned = l.learned;
  o.remote = l.remote;
  o.has_obsolete = l.has_obsolete;
  o.obsolete = l.obsolete;
  o.by_fallback = l.by_fallback;
  o.has_ssrc = l.has_ssrc;
  o.ssrc = l.ssrc;
  o.epoch = l.epoch;
  o.followed_epoch = l.followed_epoch;
  o.got_media = l.got_media;
  o.packets = l.packets;
  o.bytes = l.bytes;
  o.dropped = l.dropped;
  o.foreign = l.foreign;
  o.media_seen = l.media_seen;
  o.kernel_packets = l.kernel_packets;
  o.kernel_bytes = l.kernel_bytes;
  o.kernel_live_packets = l.kernel_live_packets;
  o.kernel_live_bytes = l.kernel_live_bytes;
}

}  // namespace

// ---- MediaStream -------------------------------------------------------------

StreamState MediaStream::capture() const {
  StreamState s;
  capture_into(s);
  return s;
}

void MediaStream::capture_into(StreamState& out) const {
  const Clock c = clock_of(ctx_);
  // A fresh state (every field as capture() always set it) that takes over
  // out's string buffers: the assignments below then copy without allocating.
  StreamState s;
  s.media_type = std::move(out.media_type);
  s.status = std::move(out.status);
  s.codec = std::move(out.codec);
  s.id = id_;
  s.slot = slot_ ? slot_index_ : UINT32_MAX;
  s.media_type = media_type_;
  s.status = status_;
  s.alive = alive_;
  s.rtp_port = {rtp_port_[kCaller], rtp_port_[kCallee]};
  s.family = family_;
  s.created = c.to_wall(created);
  s.start_wall = start_wall;
  s.confirmed = c.to_wall(confirmed);
  s.end_wall = end_wall;
  s.first_media = c.to_wall(first_media);
  s.last_activity = c.to_wall(last_activity);
  s.hold_since = c.to_wall_or_zero(hold_since);
  s.timeout_wait = timeout_wait;
  s.codec[0] = codec[kCaller];
  s.codec[1] = codec[kCallee];
  s.was_on_hold = was_on_hold_;
  s.kernel_refused = kernel_refused_;
  s.strict_latching = strict_latching_;
  for (Side side : {kCaller, kCallee}) {
    const PartySdp& p = sdp_[side];
    PartyState& o = s.party[side];
    o.known = p.known;
    o.ip = p.ip;
    o.port = p.port;
    o.direction = static_cast<int>(p.direction);
    o.ice = p.ice;
    o.hold_ip = p.hold_ip;
    o.asymmetric = p.asymmetric;
    o.known_since = c.to_wall(p.known_since);
    o.signaling_ip = p.signaling_ip;
  }
  for (SubStream k : {kRtp, kRtcp})
    for (Side side : {kCaller, kCallee}) {
      const Leg& l = legs_[k][side];
      LegState& o = s.leg[k][side];
      copy_leg(o, l);
      o.in_kernel = l.kernel_id != 0 || l.kernel_claim;
      o.last_seen = c.to_wall_or_zero(l.last_seen);
    }
  out = std::move(s);
}

std::unique_ptr<MediaStream> MediaStream::restore(RelayContext& ctx, const StreamState& s,
                                                  std::string& error) {
  const Clock c = clock_of(ctx);
  std::unique_ptr<MediaStream> st(new MediaStream(ctx, s.media_type));
  st->status_ = s.status;
  st->alive_ = s.alive;
  st->created = c.to_mono(s.created);
  st->start_wall = s.start_wall;
  st->confirmed = c.to_mono(s.confirmed);
  st->end_wall = s.end_wall;
  st->first_media = c.to_mono(s.first_media);
  st->last_activity = c.to_mono(s.last_activity);
  st->hold_since = c.to_mono_or_zero(s.hold_since);
  st->timeout_wait = s.timeout_wait;
  st->codec[kCaller] = s.codec[0];
  st->codec[kCallee] = s.codec[1];
  st->was_on_hold_ = s.was_on_hold;
  st->kernel_refused_ = s.kernel_refused;
  st->strict_latching_ = s.strict_latching;
  for (Side side : {kCaller, kCallee}) {
    const PartyState& p = s.party[side];
    PartySdp& o = st->sdp_[side];
    o.known = p.known;
    o.ip = p.ip;
    o.port = p.port;
    o.direction = static_cast<protocol::Direction>(p.direction);
    o.ice = p.ice;
    o.hold_ip = p.hold_ip;
    o.asymmetric = p.asymmetric;
    o.known_since = c.to_mono(p.known_since);
    o.signaling_ip = p.signaling_ip;
  }
  for (SubStream k : {kRtp, kRtcp})
    for (Side side : {kCaller, kCallee}) {
      const LegState& l = s.leg[k][side];
      Leg& o = st->legs_[k][side];
      copy_leg(o, l);
      o.kernel_claim = l.in_kernel && s.alive;
      o.last_seen = c.to_mono_or_zero(l.last_seen);
    }
  st->id_ = s.id;
  st->rtp_port_[kCaller] = s.rtp_port[0];
  st->rtp_port_[kCallee] = s.rtp_port[1];
  st->family_ = s.family;
  if (!s.alive || s.rtp_port[0] == 0 || s.rtp_port[1] == 0) {
    // Ended (or disabled) streams keep their record, not their ports.
    st->alive_ = false;
    st->ports_released_ = true;
    return st;
  }
  if (!ctx.pump) {
    error = "the relay's media path is not running";
    return nullptr;
  }
  for (Side side : {kCaller, kCallee})
    if (!ctx.serves(s.family[side])) {
      error = "an IPv6 stream, and relay_ip has no IPv6 address any more";
      return nullptr;
    }
  // The destructor releases the pairs to the pool if a bind fails.
  for (Side side : {kCaller, kCallee})
    for (SubStream k : {kRtp, kRtcp}) {
      int err = 0;
      const auto port = static_cast<uint16_t>(s.rtp_port[side] + (k == kRtcp ? 1 : 0));
      MediaSocket* sock = MediaSocket::open(ctx.pump, IpEndpoint{ctx.bind_ip(s.family[side]), port},
                                            st.get(), k * 2 + side, err);
      if (!sock) {
        error = "cannot bind relay port " + std::to_string(port) + ": " + uv_strerror(err);
        return nullptr;
      }
      st->legs_[k][side].socket = sock;
    }
  // The counter table knows what was forwarded after the journal's record.
  if (CounterSlot* slot = ctx.counters ? ctx.counters->find(s.slot, s.id) : nullptr) {
    ctx.counters->claim(s.slot);
    for (SubStream k : {kRtp, kRtcp})
      for (Side side : {kCaller, kCallee}) {
        Leg& l = st->legs_[k][side];
        const CounterSlot::Leg& m = slot->leg[k][side];
        if (m.packets + m.dropped + m.media_seen < l.packets + l.dropped + l.media_seen) continue;
        l.packets = m.packets;
        l.bytes = m.bytes;
        l.dropped = m.dropped;
        l.foreign = m.foreign;
        l.media_seen = m.media_seen;
      }
    const double wall = slot->last_activity + ctx.counters->previous_clock_offset();
    st->last_activity = std::max(st->last_activity, c.to_mono(wall));
    st->slot_ = slot;
    st->slot_index_ = s.slot;
    for (SubStream k : {kRtp, kRtcp})
      for (Side side : {kCaller, kCallee}) st->mirror(k, side);
  }
  return st;
}

void MediaStream::hand_over_sockets(std::vector<std::pair<IpEndpoint, int>>& out) {
  if (!alive_) return;
  for (auto& sub : legs_)
    for (Leg& l : sub) {
      if (!l.socket) continue;
      ctx_.pump->unwatch(l.socket);
      out.emplace_back(l.socket->local(), l.socket->fd());
    }
}

bool MediaStream::kernel_claim(SubStream k, Side s, IpEndpoint& from, uint16_t& relay_port) const {
  const Leg& l = legs_[k][s];
  if (!l.kernel_claim || !l.socket) return false;
  from = l.remote;
  relay_port = l.socket->local().port;
  return true;
}

void MediaStream::adopt_kernel_rule(SubStream k, Side s, uint32_t id, uint64_t packets,
                                    uint64_t bytes) {
  Leg& l = legs_[k][s];
  l.kernel_claim = false;
  l.kernel_id = id;
  // The element counted from its installation, before and during the restart.
  l.kernel_live_packets = std::max(l.kernel_live_packets, packets);
  l.kernel_live_bytes = std::max(l.kernel_live_bytes, bytes);
}

void MediaStream::forget_kernel_claim(SubStream k, Side s) {
  Leg& l = legs_[k][s];
  if (!l.kernel_claim) return;
  l.kernel_claim = false;
  // The rule is gone: what it counted up to the last reading stays counted.
  l.kernel_packets += l.kernel_live_packets;
  l.kernel_bytes += l.kernel_live_bytes;
  l.kernel_live_packets = l.kernel_live_bytes = 0;
  state_changed();
}

// ---- Session ---------------------------------------------------------------

SessionState Session::capture() const {
  SessionState s;
  capture_into(s);
  return s;
}

void Session::capture_into(SessionState& out) const {
  const Clock c = clock_of(ctx_);
  SessionState s;  // as in MediaStream::capture_into: out's buffers, fresh values
  s.call_id = std::move(out.call_id);
  s.from_tag = std::move(out.from_tag);
  s.to_tag = std::move(out.to_tag);
  s.from_uri = std::move(out.from_uri);
  s.to_uri = std::move(out.to_uri);
  s.caller_ua = std::move(out.caller_ua);
  s.callee_ua = std::move(out.callee_ua);
  s.dialog_id = std::move(out.dialog_id);
  s.streams = std::move(out.streams);
  s.streams.resize(streams_.size());
  s.call_id = call_id_;
  s.from_tag = from_tag_;
  s.to_tag = to_tag_;
  s.from_uri = from_uri_;
  s.to_uri = to_uri_;
  s.caller_ua = caller_ua_;
  s.callee_ua = callee_ua_;
  s.username = username_;
  s.dialog_id = dialog_id_;
  s.strict_latching = strict_latching_;
  s.owner = owner_;
  s.created = c.to_wall(created_);
  s.start_wall = start_wall_;
  s.ended_wall = ended_wall_;
  s.cseq = cseq_;
  s.previous_cseq = previous_cseq_;
  for (const auto& [key, offer] : offers_) {
    OfferState o;
    o.cseq_caller = key.first;
    o.cseq_callee = key.second;
    o.offerer = offer.offerer;
    for (const MediaStream* st : offer.streams) {
      for (size_t i = 0; i < streams_.size(); ++i)
        if (streams_[i].get() == st) o.streams.push_back(i);
    }
    s.offers.push_back(std::move(o));
  }
  for (size_t i = 0; i < streams_.size(); ++i) streams_[i]->capture_into(s.streams[i]);
  out = std::move(s);
}

CounterCheckpoint Session::capture_counters() const {
  const Clock c = clock_of(ctx_);
  CounterCheckpoint out;
  out.streams.resize(streams_.size());
  for (size_t i = 0; i < streams_.size(); ++i) {
    const MediaStream& st = *streams_[i];
    out.streams[i].last_activity = c.to_wall(st.last_activity);
    for (SubStream k : {kRtp, kRtcp})
      for (Side side : {kCaller, kCallee}) {
        const Leg& l = st.leg(k, side);
        auto& o = out.streams[i].leg[k][side];
        o.packets = l.packets;
        o.bytes = l.bytes;
        o.dropped = l.dropped;
        o.foreign = l.foreign;
        o.media_seen = l.media_seen;
      }
  }
  return out;
}

uint64_t Session::traffic_total() const {
  uint64_t n = 0;
  for (const auto& st : streams_)
    for (SubStream k : {kRtp, kRtcp})
      for (Side side : {kCaller, kCallee}) {
        const Leg& l = st->leg(k, side);
        n += l.packets + l.dropped + l.media_seen;
      }
  return n;
}

std::unique_ptr<Session> Session::restore(RelayContext& ctx, const SessionState& s,
                                          std::string& error) {
  UpdateRequest first;
  first.call_id = s.call_id;
  first.from_tag = s.from_tag;
  first.from_uri = s.from_uri;
  first.to_uri = s.to_uri;
  first.username = s.username;
  auto session = std::make_unique<Session>(ctx, first, s.owner);
  const Clock c = clock_of(ctx);
  session->to_tag_ = s.to_tag;
  session->caller_ua_ = s.caller_ua;
  session->callee_ua_ = s.callee_ua;
  session->dialog_id_ = s.dialog_id;
  session->strict_latching_ = s.strict_latching;
  session->created_ = c.to_mono(s.created);
  session->start_wall_ = s.start_wall;
  session->ended_wall_ = s.ended_wall;
  session->cseq_ = s.cseq;
  session->previous_cseq_ = s.previous_cseq;
  for (const StreamState& st : s.streams) {
    auto stream = MediaStream::restore(ctx, st, error);
    if (!stream) return nullptr;  // the streams made so far release their ports
    stream->set_session(session.get());
    session->streams_.push_back(std::move(stream));
  }
  for (const OfferState& o : s.offers) {
    Offer offer{o.offerer == kCallee ? kCallee : kCaller, {}};
    for (size_t i : o.streams) {
      if (i >= session->streams_.size()) {
        error = "an offer names a stream that does not exist";
        return nullptr;
      }
      offer.streams.push_back(session->streams_[i].get());
    }
    session->offers_[CSeqPair{o.cseq_caller, o.cseq_callee}] = std::move(offer);
  }
  for (const auto* key : {&session->cseq_, &session->previous_cseq_})
    if (*key && !session->offers_.count(**key)) {
      error = "no offer for the session's cseq";
      return nullptr;
    }
  return session;
}

}  // namespace mp::relay
