// One relayed dialog's media: the offer/answer state machine (spec D.2, D.3,
// D.9, D.10).
//
// Owns the session's identity (call id, creating From tag, URIs, user agents),
// its CSeq bookkeeping, the streams of the current and previous offer, and the
// choice of ports to return for each update. A session is keyed by
// (call_id, from_tag of the creator) and also found by (call_id, to_tag).
// Deviations from AG MediaProxy, on purpose: a retransmitted offer is
// recognised as such and does not count as an answer; only answers carrying a
// To tag (final answers) arm the no-traffic timer, so ringing is never cut.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "protocol/media.h"
#include "relay/relay_context.h"
#include "relay/session_state.h"
#include "relay/stream.h"

namespace mp::relay {

// The decoded headers of an `update` command (spec A.4).
struct UpdateRequest {
  std::string call_id;
  std::string from_tag;
  std::string to_tag;  // empty: none
  std::string from_uri;
  std::string to_uri;
  std::string user_agent;
  bool is_request = true;  // type: request / reply
  int64_t cseq = 0;
  std::optional<std::vector<protocol::MediaItem>> media;  // nullopt: absent
  std::string caller_ip, destination_ip;                  // from signaling_ip
  std::optional<std::string> username;                    // from JSON signaling_ip
  // `media_index: N` (rtpproxy front end): this answer's single media item is
  // stream N (1-based) of the offer; the other streams are left as they are.
  size_t media_index = 0;  // 0: the media list is the whole answer
  // `latching: strict|normal`: overrides [Relay] latching for this call.
  std::optional<bool> strict_latching;
  // `families: <a>,<b>` (4 or 6): the family of the relay address the
  // reply must give (b), i.e. of the party this SDP goes to; a is the
  // sending party's own. Absent: no bridging, the reply has the family of
  // each media item's address.
  std::optional<IpAddress::Family> reply_family;
  // `dialog_id` (engage mode): the proxy's dialog, kept so that a restarted
  // dispatcher can still hang the call up. Empty: none.
  std::string dialog_id;
};

class Session {
 public:
  Session(RelayContext& ctx, const UpdateRequest& first, uint64_t owner);

  // Applies one update. On success `reply` is the payload for the proxy:
  // "<ip> <port>..." or "None". On failure returns false with `error` set.
  bool update(const UpdateRequest& req, std::string& reply, std::string& error);

  // Ends every stream that is still alive with `status`.
  void close_all(const std::string& status);
  // Freezes the session's end time (reports then stop counting duration).
  void mark_ended();
  // True while a stream of the current or previous offer is alive.
  bool alive() const;
  // Streams for the expiry sweep.
  const std::vector<std::unique_ptr<MediaStream>>& streams() const { return streams_; }
  std::vector<std::unique_ptr<MediaStream>>& streams() { return streams_; }

  const std::string& call_id() const { return call_id_; }
  const std::string& from_tag() const { return from_tag_; }
  const std::string& to_tag() const { return to_tag_; }
  uint64_t owner() const { return owner_; }  // the dispatcher that created it
  double created() const { return created_; }

  // Statistics record (spec D.13), Python json.dumps format.
  std::string stats_json() const;
  // The object `sessions` and `sessions_from` list: the statistics record
  // plus "dialog_id" when the session has one (a dispatcher that restarted
  // learns it back when it adopts the relay's sessions).
  std::string listing_json() const;
  const std::string& dialog_id() const { return dialog_id_; }
  // Wall clock of the first answer (the record's start_time), if any.
  std::optional<double> answered_wall() const { return start_wall_; }

  // State kept across a restart of the process (session_restore.cpp).
  SessionState capture() const;
  // The same into `out`, whose strings and lists are reused (the journal
  // captures into one scratch state: no allocation once it is warm).
  void capture_into(SessionState& out) const;
  CounterCheckpoint capture_counters() const;
  // Rebuilds a session with its sockets on the recorded ports (reserved in
  // the pool by the caller); nullptr with `error` if a port cannot be bound.
  static std::unique_ptr<Session> restore(RelayContext& ctx, const SessionState& state,
                                          std::string& error);
  // The state journal's bookkeeping (relay_engine.cpp): this session's record
  // id, whether its record must be written again, and the traffic total of
  // its last counter checkpoint.
  uint64_t state_id = 0;
  bool state_dirty = false;
  uint64_t state_traffic = 0;
  uint64_t traffic_total() const;
  // Its place in the relay's listing order (session_listing.cpp): the
  // cursor of the `sessions_from` command.
  uint64_t listing_id = 0;

 private:
  using CSeqPair = std::pair<int64_t, int64_t>;
  struct Offer {
    Side offerer;
    std::vector<MediaStream*> streams;
  };

  bool apply_offer(const CSeqPair& c, Side party, const std::vector<protocol::MediaItem>& media,
                   const IpAddress& signaling, std::optional<IpAddress::Family> reply_family,
                   std::string& error);
  bool apply_answer(const CSeqPair& c, Side party, const UpdateRequest& req, std::string& error);
  void answer_stream(MediaStream* st, Side party, const protocol::MediaItem& item,
                     const IpAddress& signaling);
  std::string local_media(bool downstream, int64_t cseq, bool caller_cseq) const;
  void close_unless_in(const Offer& old, const Offer& keep1, const Offer* keep2);

  RelayContext& ctx_;
  std::string call_id_, from_tag_, to_tag_, from_uri_, to_uri_;
  std::string caller_ua_, callee_ua_;
  std::string dialog_id_;
  std::optional<std::string> username_;
  std::optional<bool> strict_latching_;
  uint64_t owner_;
  double created_;
  std::optional<double> start_wall_;
  std::optional<double> ended_wall_;

  std::optional<CSeqPair> cseq_, previous_cseq_;
  std::map<CSeqPair, Offer> offers_;
  std::vector<std::unique_ptr<MediaStream>> streams_;  // every stream ever created, in order
};

}  // namespace mp::relay
