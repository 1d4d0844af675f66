// Media stream sockets, latching and userspace forwarding (stream.h).
#include "relay/stream.h"

#include <cstring>

#include "common/log.h"
#include "relay/codec.h"
#include "relay/kernel_offload.h"

namespace mp::relay {

namespace {
constexpr int kBindAttempts = 16;
constexpr uint64_t kIpUdpHeader = 28;  // counters are IP-layer bytes, like the kernel's

int tag_of(SubStream k, Side s) {
  return k * 2 + s;
}

// The memory of ended streams, per thread (streams live on the loop's).
// Not under AddressSanitizer: memory kept here would not be poisoned, and a
// use of an ended stream would go unreported.
#if defined(__SANITIZE_ADDRESS__)
#define MP_KEEP_STREAM_MEMORY 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MP_KEEP_STREAM_MEMORY 0
#endif
#endif
#ifndef MP_KEEP_STREAM_MEMORY
#define MP_KEEP_STREAM_MEMORY 1
#endif
struct KeptStreams {
  void* blocks[MediaStream::kKeptStreams];
  size_t count = 0;
  ~KeptStreams() {
    while (count) ::operator delete(blocks[--count]);
  }
};
thread_local KeptStreams t_kept_streams;
}  // namespace

void* MediaStream::operator new(size_t size) {
  KeptStreams& kept = t_kept_streams;
  if (MP_KEEP_STREAM_MEMORY && size == sizeof(MediaStream) && kept.count)
    return kept.blocks[--kept.count];
  return ::operator new(size);
}

void MediaStream::operator delete(void* p, size_t size) noexcept {
  KeptStreams& kept = t_kept_streams;
  if (MP_KEEP_STREAM_MEMORY && size == sizeof(MediaStream) && kept.count < kKeptStreams) {
    kept.blocks[kept.count++] = p;
    return;
  }
  ::operator delete(p);
}

bool PendingQueue::push(const uint8_t* data, size_t len) {
  if (count_ >= kSlots || len > kMaxLen) return false;
  if (!storage_) storage_ = std::make_unique<uint8_t[]>(kSlots * kMaxLen);
  std::memcpy(storage_.get() + count_ * kMaxLen, data, len);
  lengths_[count_++] = static_cast<uint16_t>(len);
  return true;
}

std::unique_ptr<MediaStream> MediaStream::create(RelayContext& ctx, const std::string& media_type,
                                                 Families families, std::string& error) {
  std::unique_ptr<MediaStream> st(new MediaStream(ctx, media_type));
  st->family_ = families;
  if (!ctx.pump) {
    error = "the relay's media path is not running";
    return nullptr;
  }
  for (Side side : {kCaller, kCallee}) {
    if (!ctx.serves(families[side])) {
      error = "this relay has no IPv6 media address (relay_ip)";
      return nullptr;
    }
    const IpAddress bind_ip = ctx.bind_ip(families[side]);
    bool bound = false;
    for (int attempt = 0; attempt < kBindAttempts && !bound; ++attempt) {
      auto port = ctx.ports->allocate();
      if (!port) {
        error = "port pool exhausted (" + std::to_string(ctx.ports->capacity()) +
                " pairs in port_range, all in use)";
        return nullptr;  // destructor releases what the caller side holds
      }
      int err = 0;
      MediaSocket* rtp = MediaSocket::open(ctx.pump, IpEndpoint{bind_ip, *port}, st.get(),
                                           tag_of(kRtp, side), err);
      MediaSocket* rtcp = nullptr;
      if (rtp)
        rtcp = MediaSocket::open(ctx.pump, IpEndpoint{bind_ip, static_cast<uint16_t>(*port + 1)},
                                 st.get(), tag_of(kRtcp, side), err);
      if (!rtp || !rtcp) {
        if (rtp) rtp->close();
        LOG_WARN("cannot bind relay ports %s/%u: %s; trying the next pair",
                 format_ip_endpoint(IpEndpoint{bind_ip, *port}).c_str(), *port + 1,
                 uv_strerror(err));
        ctx.ports->mark_bad(*port);
        if (err == UV_EMFILE || err == UV_ENFILE || err == UV_EADDRNOTAVAIL) {
          error = std::string("cannot open relay sockets: ") + uv_strerror(err);
          return nullptr;
        }
        continue;
      }
      st->rtp_port_[side] = *port;
      st->legs_[kRtp][side].socket = rtp;
      st->legs_[kRtcp][side].socket = rtcp;
      bound = true;
    }
    if (!bound) {
      error = "could not bind any port pair after " + std::to_string(kBindAttempts) + " attempts";
      return nullptr;
    }
  }
  st->created = ctx.now();
  st->last_activity = st->created;
  st->take_counter_slot();
  return st;
}

void MediaStream::take_counter_slot() {
  if (!ctx_.counters || slot_) return;
  if (!id_) id_ = ++ctx_.last_stream_id;
  slot_index_ = ctx_.counters->acquire(id_);
  slot_ = ctx_.counters->at(slot_index_);
}

void MediaStream::attach_counter_slot() {
  if (slot_ || !alive_) return;
  take_counter_slot();
  for (SubStream k : {kRtp, kRtcp})
    for (Side s : {kCaller, kCallee}) mirror(k, s);
}

std::unique_ptr<MediaStream> MediaStream::create_disabled(RelayContext& ctx,
                                                          const std::string& media_type,
                                                          Families families) {
  std::unique_ptr<MediaStream> st(new MediaStream(ctx, media_type));
  st->family_ = families;
  st->created = ctx.now();
  st->last_activity = st->created;
  st->alive_ = false;
  st->status_ = "closed";
  st->end_wall = RelayContext::wall_now();
  st->ports_released_ = true;
  return st;
}

bool MediaStream::any_media() const {
  for (const auto& sub : legs_)
    for (const Leg& l : sub)
      if (l.got_media) return true;
  return false;
}

MediaStream::~MediaStream() {
  if (ctx_.offload && (offload_queued_[kRtp] || offload_queued_[kRtcp])) ctx_.offload->forget(this);
  release_ports();
}

void MediaStream::release_ports() {
  for (Side side : {kCaller, kCallee}) {
    for (SubStream k : {kRtp, kRtcp}) {
      Leg& leg = legs_[k][side];
      if (leg.socket) leg.socket->close();
      leg.socket = nullptr;
      leg.pending.clear();
    }
    if (rtp_port_[side] && !ports_released_) ctx_.ports->release(rtp_port_[side]);
  }
  ports_released_ = true;
  if (slot_ && ctx_.counters) ctx_.counters->release(slot_index_);
  slot_ = nullptr;
}

void MediaStream::close(const std::string& status, int wait) {
  if (!alive_) return;
  alive_ = false;
  status_ = status;
  timeout_wait = wait;
  end_wall = RelayContext::wall_now();
  take_back_from_kernel(kRtp);
  take_back_from_kernel(kRtcp);
  release_ports();  // the port numbers stay recorded for the report
  state_changed();
}

void MediaStream::state_changed() {
  if (ctx_.state && session_) ctx_.state->session_changed(session_);
}

void MediaStream::update_hold(Side s, protocol::Direction d, const IpAddress& ip) {
  sdp_[s].direction = d;
  sdp_[s].hold_ip = ip.is_any();  // old-style hold; the real address stays recorded
  bool hold = on_hold();
  if (hold && !was_on_hold_) hold_since = ctx_.now();
  if (!hold && was_on_hold_) last_activity = ctx_.now();  // resume: a fresh timeout window
  was_on_hold_ = hold;
  if (alive_) status_ = hold ? "on hold" : "active";
}

void MediaStream::reset_party(Side s, const IpAddress& ip, uint16_t port) {
  sdp_[s].ip = ip;
  sdp_[s].port = port;
  sdp_[s].known_since = ctx_.now();
  IpEndpoint announced{ip, port};
  for (SubStream k : {kRtp, kRtcp}) {
    take_back_from_kernel(k);
    Leg& leg = legs_[k][s];
    if (leg.learned && !(k == kRtp && leg.remote == announced)) leg.reopen();
    leg.transmit_counter = 0;
  }
  last_activity = ctx_.now();
}

void MediaStream::on_datagram(int tag, const SocketAddress& from_sa, const uint8_t* data,
                              size_t len) {
  if (!alive_) return;
  const auto k = static_cast<SubStream>(tag / 2);
  const auto s = static_cast<Side>(tag % 2);
  Leg& leg = legs_[k][s];
  const bool stun = is_stun(data, len);
  LatchInput in;
  in.from = from_sa.endpoint();
  in.rtcp = k == kRtcp;
  in.stun = stun;
  in.ssrc = k == kRtp && !stun ? rtp_ssrc(data, len) : std::nullopt;
  in.now = ctx_.now();
  const PartySdp& sdp = sdp_[s];
  in.sdp_known = sdp.known && sdp.port != 0;
  in.sdp = IpEndpoint{sdp.ip, sdp.port};
  in.sdp_since = sdp.known_since;
  in.signaling_ip = sdp.signaling_ip;
  in.answered = confirmed.has_value();
  in.answered_since = confirmed.value_or(0);
  // In the kernel, the latched source's packets are seen only through the
  // rule's counters: its silence is known up to their last reading.
  in.liveness_at = leg.kernel_id ? ctx_.kernel_polled_at : in.now;
  in.rtp_learned = legs_[kRtp][s].learned;
  in.rtp_ip = legs_[kRtp][s].remote.ip;
  in.rtp_epoch = legs_[kRtp][s].epoch;
  LatchPolicy policy = ctx_.latch_policy;
  if (strict_latching_) policy.strict = *strict_latching_;
  const IpEndpoint before = leg.remote;
  switch (latch_decide(policy, leg, in)) {
    case LatchVerdict::Drop:
      ++leg.dropped;
      ++ctx_.foreign_packets;
      // A possible NAT rebinding: read the kernel counters soon to learn
      // whether the latched source went silent.
      if (leg.rebind_pending && leg.kernel_id) ctx_.kernel_poll_soon = true;
      mirror(k, s);
      return;
    case LatchVerdict::Forward:
      break;
    case LatchVerdict::Latched: {
      LOG_DEBUG("%s %s: latched %s address %s on relay port %u", media_type_.c_str(),
                k == kRtp ? "RTP" : "RTCP", s == kCaller ? "caller" : "callee",
                format_ip_endpoint(in.from).c_str(), leg.socket ? leg.socket->local().port : 0);
      // STUN queued for this party can go now.
      if (!leg.pending.empty() && leg.socket) {
        const SocketAddress dst = SocketAddress::of(in.from);
        leg.pending.drain([&](const uint8_t* d, size_t n) { leg.socket->send_now(dst, d, n); });
      }
      state_changed();
      break;
    }
    case LatchVerdict::Relatched:
      LOG_INFO("%s %s: %s moved from %s to %s (%s); following it", media_type_.c_str(),
               k == kRtp ? "RTP" : "RTCP", s == kCaller ? "caller" : "callee",
               format_ip_endpoint(before).c_str(), format_ip_endpoint(in.from).c_str(),
               k == kRtp ? "same SSRC, old source silent" : "follows its RTP");
      take_back_from_kernel(k);  // the rules name the old source
      state_changed();
      break;
  }
  if (!stun) {
    const double now = in.now;
    last_activity = now;
    ++leg.media_seen;
    if (!leg.got_media) {
      leg.got_media = true;
      if (!first_media) first_media = now;
      if (k == kRtp && len >= 2) codec[s] = codec_name(data[1]);
    }
  }
  deliver(k, other(s), data, len, stun, leg);
  mirror(k, s);
  if (!stun && ctx_.offload) maybe_hand_over(k);
}

// Both parties of sub-stream k are learned and have sent enough media: the
// kernel forwards their packets once the current media pass ends (the
// hand-overs of a pass are committed together, kernel_offload.h).
void MediaStream::maybe_hand_over(SubStream k) {
  IpEndpoint to_caller, to_callee;
  if (ready_for_kernel(k, to_caller, to_callee)) ctx_.offload->want(this, k);
}

bool MediaStream::ready_for_kernel(SubStream k, IpEndpoint& to_caller,
                                   IpEndpoint& to_callee) const {
  const Leg& a = legs_[k][kCaller];
  const Leg& b = legs_[k][kCallee];
  if (a.kernel_id || b.kernel_id || kernel_refused_ || !alive_ || !a.learned || !b.learned ||
      !a.socket || !b.socket)
    return false;
  const uint64_t need = static_cast<uint64_t>(ctx_.handover_packets);
  if (a.media_seen < need || b.media_seen < need) return false;
  return destination(k, kCaller, to_caller) && destination(k, kCallee, to_callee);
}

// Removes the kernel rules of sub-stream k; their final counters are kept.
void MediaStream::take_back_from_kernel(SubStream k) {
  if (ctx_.offload) ctx_.offload->take_back(this, k);
}

void MediaStream::kernel_counters(SubStream k, Side side, uint64_t packets, uint64_t bytes) {
  Leg& l = legs_[k][side];
  if (packets != l.kernel_live_packets) {
    last_activity = ctx_.now();
    l.last_seen = last_activity;  // the latched source is alive (NAT rebinding check)
  }
  l.kernel_live_packets = packets;
  l.kernel_live_bytes = bytes;
}

void MediaStream::deliver(SubStream k, Side to, const uint8_t* data, size_t len, bool stun,
                          Leg& from_leg) {
  Leg& out = legs_[k][to];
  if (!out.socket) return;
  SocketAddress dst;
  IpEndpoint known;
  if (destination(k, to, known)) {
    dst = SocketAddress::of(known);
  } else if (k == kRtp && sdp_[to].known && sdp_[to].port != 0 && !sdp_[to].ip.is_any() &&
             is_publicly_routable(sdp_[to].ip, ctx_.routable_private_ranges)) {
    dst = SocketAddress::of(IpEndpoint{sdp_[to].ip, sdp_[to].port});
  } else {
    if (stun) {
      if (!out.pending.push(data, len)) ++from_leg.dropped;
    } else {
      ++from_leg.dropped;
    }
    return;
  }
  // An SDP address of the other family than this side's relay socket (an
  // answer that ignored the bridge the offer asked for) cannot be reached.
  if ((dst.sa.sa_family == AF_INET6) != (family_[to] == IpAddress::Family::V6)) {
    ++from_leg.dropped;
    return;
  }
  if (!out.pending.empty())
    out.pending.drain([&](const uint8_t* d, size_t n) { out.socket->send_now(dst, d, n); });
  if (!stun && ctx_.transmit_every > 1 &&
      ++from_leg.transmit_counter % static_cast<uint32_t>(ctx_.transmit_every) != 0)
    return;
  // Counted as forwarded now; on_send_failed() takes it back if the send
  // queue cannot deliver it.
  ++from_leg.packets;
  from_leg.bytes += len + kIpUdpHeader;
  ctx_.relayed_bytes += len + kIpUdpHeader;
  out.socket->forward(dst, data, len, this, tag_of(k, other(to)));
}

bool MediaStream::destination(SubStream k, Side s, IpEndpoint& out) const {
  const PartySdp& sdp = sdp_[s];
  if (sdp.asymmetric && sdp.known && sdp.port != 0 && !sdp.ip.is_any()) {
    out = IpEndpoint{sdp.ip, static_cast<uint16_t>(k == kRtp ? sdp.port : sdp.port + 1)};
    return true;
  }
  if (!legs_[k][s].learned) return false;
  out = legs_[k][s].remote;
  return true;
}

void MediaStream::on_send_failed(int cookie, size_t len) {
  Leg& from_leg = legs_[cookie / 2][cookie % 2];
  --from_leg.packets;
  from_leg.bytes -= len + kIpUdpHeader;
  ctx_.relayed_bytes -= len + kIpUdpHeader;
  ++from_leg.dropped;
  mirror(static_cast<SubStream>(cookie / 2), static_cast<Side>(cookie % 2));
}

}  // namespace mp::relay
