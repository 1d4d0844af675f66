// One media stream (one m= line) of a relayed session.
//
// Owns the stream's four relay sockets (caller-facing and callee-facing RTP and
// RTCP), what each party declared in its SDP, what the relay learned from the
// packets (latching, spec D.4), the userspace forwarding rule (D.5), STUN
// queueing (D.6), per-direction counters and the stream's status and times.
// The offer/answer logic that creates, reuses and closes streams is in
// session.cpp; the expiry policy that reads the times kept here is in
// relay_engine.cpp.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/ip_address.h"
#include "protocol/media.h"
#include "relay/counter_table.h"
#include "relay/latching.h"
#include "relay/media_socket.h"
#include "relay/relay_context.h"
#include "relay/session_state.h"

namespace mp::relay {

class Session;
class KernelOffload;

enum Side : int { kCaller = 0, kCallee = 1 };
enum SubStream : int { kRtp = 0, kRtcp = 1 };
inline Side other(Side s) {
  return s == kCaller ? kCallee : kCaller;
}

// What a party said about the stream in its SDP.
struct PartySdp {
  bool known = false;
  IpAddress ip;
  uint16_t port = 0;
  protocol::Direction direction = protocol::Direction::SendRecv;
  bool ice = false;
  bool hold_ip = false;     // last SDP used the old-style hold address 0.0.0.0
  bool asymmetric = false;  // send to the SDP address, not to the latched source
  double known_since = 0;   // monotonic: when this SDP address was learned
  IpAddress signaling_ip;   // the address its SIP message came from; any: unknown
  bool on_hold() const {
    return known && (hold_ip || direction == protocol::Direction::SendOnly ||
                     direction == protocol::Direction::Inactive);
  }
};

// Small FIFO of STUN datagrams waiting for a destination. Its storage is
// allocated once, the first time something is queued.
class PendingQueue {
 public:
  static constexpr size_t kSlots = 4;
  static constexpr size_t kMaxLen = 1500;
  bool push(const uint8_t* data, size_t len);  // false: full or too long, dropped
  template <typename F>
  void drain(F&& send) {
    for (size_t i = 0; i < count_; ++i) send(storage_.get() + i * kMaxLen, lengths_[i]);
    count_ = 0;
  }
  bool empty() const { return count_ == 0; }
  void clear() { count_ = 0; }

 private:
  std::unique_ptr<uint8_t[]> storage_;
  std::array<uint16_t, kSlots> lengths_{};
  size_t count_ = 0;
};

// One party on one sub-stream: the socket facing it and what we learned
// (LatchState: the latched address and the policy's bookkeeping).
struct Leg : LatchState {
  MediaSocket* socket = nullptr;
  bool got_media = false;  // a non-STUN datagram arrived from this party
  uint64_t packets = 0;    // forwarded from this party (IP-layer bytes)
  uint64_t bytes = 0;
  uint64_t dropped = 0;  // from foreign sources or undeliverable
  uint32_t transmit_counter = 0;
  PendingQueue pending;  // STUN to be sent *to* this party

  // In-kernel forwarding of this party's packets (spec D.7, nftables).
  uint64_t media_seen = 0;      // non-STUN datagrams accepted from this party
  uint32_t kernel_id = 0;       // installed rule, 0 if none
  uint64_t kernel_packets = 0;  // counted by rules already removed
  uint64_t kernel_bytes = 0;
  uint64_t kernel_live_packets = 0;  // last reading of the installed rule
  uint64_t kernel_live_bytes = 0;
  bool kernel_claim = false;  // restored: a rule of the previous process may be ours

  uint64_t total_packets() const { return packets + kernel_packets + kernel_live_packets; }
  uint64_t total_bytes() const { return bytes + kernel_bytes + kernel_live_bytes; }
  uint64_t all_kernel_packets() const { return kernel_packets + kernel_live_packets; }
  uint64_t all_kernel_bytes() const { return kernel_bytes + kernel_live_bytes; }
};

class MediaStream final : public MediaSocketOwner {
 public:
  // The relay-socket families of the two sides ([caller, callee]): the same
  // for a plain stream, different for an IPv4-IPv6 bridged one.
  using Families = std::array<IpAddress::Family, 2>;
  // Allocates the two port pairs (caller side first) and binds the four
  // sockets, each side's to the relay address of its family (which the
  // relay must serve). On failure nothing is leaked and `error` says why.
  static std::unique_ptr<MediaStream> create(RelayContext& ctx, const std::string& media_type,
                                             Families families, std::string& error);
  // A stream offered with port 0: no ports, closed from the start.
  static std::unique_ptr<MediaStream> create_disabled(RelayContext& ctx,
                                                      const std::string& media_type,
                                                      Families families);
  ~MediaStream();
  MediaStream(const MediaStream&) = delete;
  MediaStream& operator=(const MediaStream&) = delete;
  // A stream is larger than malloc's per-thread cache takes (1,424 bytes
  // against 1,032), so each new and delete went through malloc's bins: the
  // memory of ended streams is kept (up to kKeptStreams) for the next ones
  // (not in AddressSanitizer builds, which must see every free).
  static constexpr size_t kKeptStreams = 4096;
  static void* operator new(size_t size);
  static void operator delete(void* p, size_t size) noexcept;

  const std::string& media_type() const { return media_type_; }
  const std::string& status() const { return status_; }
  bool alive() const { return alive_; }
  bool on_hold() const { return sdp_[kCaller].on_hold() || sdp_[kCallee].on_hold(); }
  bool uses_ice() const { return sdp_[kCaller].ice && sdp_[kCallee].ice; }

  PartySdp& sdp(Side s) { return sdp_[s]; }
  const PartySdp& sdp(Side s) const { return sdp_[s]; }
  const Leg& leg(SubStream k, Side s) const { return legs_[k][s]; }
  IpEndpoint local(Side s) const { return IpEndpoint{ctx_.bind_ip(family_[s]), rtp_port_[s]}; }
  IpAddress::Family family(Side s) const { return family_[s]; }
  bool bridged() const { return family_[kCaller] != family_[kCallee]; }
  bool any_media() const;  // some party sent a non-STUN datagram at some point
  uint16_t reply_port(Side facing) const { return rtp_port_[facing]; }
  // Per-call latching override (the `latching` header): strict or not.
  void set_strict_latching(std::optional<bool> strict) { strict_latching_ = strict; }
  uint64_t foreign_packets(Side s) const {
    return legs_[kRtp][s].foreign + legs_[kRtcp][s].foreign;
  }

  // Applies a party's SDP direction/address and updates the hold state.
  void update_hold(Side s, protocol::Direction d, const IpAddress& ip);
  // The party announced a new address in an answer: forget what was learned
  // (the old source is ignored from now on unless it equals the new SDP).
  void reset_party(Side s, const IpAddress& ip, uint16_t port);
  // Stops forwarding and releases the ports. `status` is kept in reports.
  void close(const std::string& status, int timeout_wait = 0);

  // Times (monotonic seconds unless named wall).
  double created = 0;                 // offer seen
  std::optional<double> start_wall;   // first answer (stats start_time)
  std::optional<double> confirmed;    // final answer (with a To tag) seen
  std::optional<double> end_wall;     // closed
  double last_activity = 0;           // last non-STUN datagram accepted
  double hold_since = 0;              // entered hold
  std::optional<double> first_media;  // monotonic, for post-dial delay
  int timeout_wait = 0;
  std::string codec[2] = {"Unknown", "Unknown"};

  void on_datagram(int tag, const SocketAddress& from, const uint8_t* data, size_t len) override;
  void on_send_failed(int cookie, size_t len) override;

  // State kept across a restart (session_restore.cpp). restore() binds the
  // recorded ports, which the caller has reserved in the pool.
  StreamState capture() const;
  void capture_into(StreamState& out) const;  // reusing out's strings (Session::capture_into)
  static std::unique_ptr<MediaStream> restore(RelayContext& ctx, const StreamState& state,
                                              std::string& error);
  // After a restart: the rule of the previous process that forwards this
  // leg's party (key: its latched source and this leg's relay port), if the
  // leg had one. adopt_kernel_rule() takes it over (its counters continue);
  // forget_kernel_claim() says there is none (the stream is handed over
  // again from userspace).
  bool kernel_claim(SubStream k, Side s, IpEndpoint& from, uint16_t& relay_port) const;
  void adopt_kernel_rule(SubStream k, Side s, uint32_t id, uint64_t packets, uint64_t bytes);
  void forget_kernel_claim(SubStream k, Side s);
  // The session whose record changes when this stream's state does.
  void set_session(Session* s) { session_ = s; }
  // After a restart, for a restored stream whose slot was not found: a new
  // slot, filled with the counters restored from the journal.
  void attach_counter_slot();
  // Live upgrade: stops reading this stream's sockets and lists them (local
  // address, descriptor) for the new process; the stream is not closed.
  void hand_over_sockets(std::vector<std::pair<IpEndpoint, int>>& out);

  // A reading of the kernel counters of rule `side` of sub-stream `k`.
  void kernel_counters(SubStream k, Side side, uint64_t packets, uint64_t bytes);
  bool in_kernel(SubStream k) const { return legs_[k][kCaller].kernel_id != 0; }

 private:
  MediaStream(RelayContext& ctx, std::string media_type)
      : ctx_(ctx), media_type_(std::move(media_type)) {}
  void release_ports();
  void maybe_hand_over(SubStream k);
  // Both parties of sub-stream k latched, enough media seen, nothing in the
  // kernel yet, not refused before: where each party's packets go.
  bool ready_for_kernel(SubStream k, IpEndpoint& to_caller, IpEndpoint& to_callee) const;
  friend class KernelOffload;
  bool offload_queued_[2] = {false, false};
  void take_back_from_kernel(SubStream k);
  void deliver(SubStream k, Side to, const uint8_t* data, size_t len, bool stun, Leg& from_leg);
  // Where packets for party `s` on sub-stream k go: its latched source, or
  // for an asymmetric party its SDP address (RTCP: port + 1).
  bool destination(SubStream k, Side s, IpEndpoint& out) const;

  RelayContext& ctx_;
  std::string media_type_;
  std::string status_ = "active";
  bool alive_ = true;
  PartySdp sdp_[2];
  Leg legs_[2][2];  // [sub-stream][side]
  uint16_t rtp_port_[2] = {0, 0};
  Families family_{IpAddress::Family::V4, IpAddress::Family::V4};
  bool was_on_hold_ = false;
  bool ports_released_ = false;
  bool kernel_refused_ = false;  // a hand-over failed: stay in userspace
  std::optional<bool> strict_latching_;
  Session* session_ = nullptr;
  void state_changed();
  // The counter table slot that mirrors this stream's counters
  // (counter_table.h); nullptr without a table.
  uint64_t id_ = 0;
  uint32_t slot_index_ = UINT32_MAX;
  CounterSlot* slot_ = nullptr;
  void take_counter_slot();
  void mirror(SubStream k, Side s) {
    if (!slot_) return;
    const Leg& l = legs_[k][s];
    CounterSlot::Leg& m = slot_->leg[k][s];
    m.packets = l.packets;
    m.bytes = l.bytes;
    m.dropped = l.dropped;
    m.foreign = l.foreign;
    m.media_seen = l.media_seen;
    slot_->last_activity = last_activity;
  }
};

}  // namespace mp::relay
