// The dispatcher: routes proxy-module requests to relays (spec A.10, B.6, B.7).
//
// Owns the call_id -> relay table, relay selection for new calls (preferred
// relay from `media_relay` first, then the other usable relays in order of
// fewest sessions), the handling of relay replies (`error`, `halting`,
// statistics JSON) and of `expired` reports, and the end-of-session record:
// logged, handed to the record sink (the accounting stage) and, when the
// media of an answered call died, a hang-up request to the proxy that owns
// its dialog. It never blocks: replies come back through callbacks.
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/config.h"
#include "common/log.h"
#include "dispatcher/relay_link.h"
#include "metrics/exposition.h"
#include "protocol/request.h"

namespace mp::dispatcher {

// What a relay says about a call it holds when the dispatcher adopts it
// (its `sessions` listing): enough to account for the call and hang it up
// even if this dispatcher restarted since the call began.
struct AdoptedSession {
  std::string call_id;
  std::string dialog_id;  // empty: none known
  std::string from_tag, to_tag;
  std::optional<double> answered_at;  // wall clock of the first answer
};

class Dispatcher {
 public:
  Dispatcher(uv_loop_t* loop, const DispatcherConfig& cfg);
  ~Dispatcher();

  void add_relay(RelayLink* link);  // not owned
  // The relay's link is going away (disconnect). Its calls keep their
  // records, so that the relay can take them back when it reconnects.
  void remove_relay(RelayLink* link);
  // After a relay (re)connects and answers `sessions`: the calls it holds now
  // route to it (spec B.7); records of this relay's address whose call is
  // not in the list are dropped. What a record does not know yet (after a
  // restart of this process: dialog id, tags, answer time) is taken from
  // the relay's listing.
  void adopt_sessions(RelayLink* link, const std::vector<AdoptedSession>& sessions);

  // Answers one module request; `done` gets the reply line without CRLF.
  // Warnings about the request are rate-limited per `source` (its client).
  // The request is moved in once and shared by the steps that follow
  // (relay replies, failover), never copied.
  using Done = std::function<void(std::string reply)>;
  void handle(protocol::Request request, Done done, log::LimitSource* source = nullptr);

  // One live session's figures from its relay (the `query` relay command,
  // used by the rtpproxy front end's Q); `done` gets the JSON or "error".
  void query(const std::string& call_id, const std::string& from_tag, const std::string& to_tag,
             Done done);

  // Observers of session ends: a `remove` answered (timed_out false) or an
  // `expired` report of its relay (timed_out true unless it only moved to
  // another ICE path).
  using SessionEnded = std::function<void(const std::string& call_id, bool timed_out)>;
  void add_session_end_observer(SessionEnded cb) { end_observers_.push_back(std::move(cb)); }

  // Where final session records go (accounting), once per session end:
  // remove, expiry, or the loss of its relay (a record the dispatcher makes
  // itself, `"relay_lost": true`, since the relay's counters are gone).
  using RecordSink = std::function<void(const std::string& record)>;
  void set_record_sink(RecordSink sink) { record_sink_ = std::move(sink); }
  // Asked to end the dialog of an answered call whose media died (expiry
  // after the answer, not all-ICE; or its relay lost it), spec B.5/B.7/F.3.
  using Hangup = std::function<void(const std::string& dialog_id, const std::string& call_id)>;
  void set_hangup(Hangup hangup) { hangup_ = std::move(hangup); }

  // Management query (spec C.2): every relay's summary object, joined into
  // one JSON array exactly as the original does. The `sessions` answer is
  // streamed by SessionsDump (sessions_dump.h).
  void summary(Done done);
  // The relays, in the order they joined.
  const std::vector<RelayLink*>& relays() const { return relays_; }

  // Dispatcher metrics for the Prometheus endpoint (mediaproxy.8, METRICS).
  void write_metrics(metrics::Exposition& out) const;
  // A request the module server could not parse (answered `error` there).
  void count_malformed() { ++errors_["malformed_request"]; }

  size_t session_count() const { return sessions_.size(); }
  bool has_session(const std::string& call_id) const { return sessions_.count(call_id) != 0; }
  // Live sessions (not expired) the dispatcher routes to `relay`.
  size_t load_of(const RelayLink* relay) const;
  size_t relay_count() const { return relays_.size(); }
  // What the metrics report: calls not yet expired, relays taking new calls.
  size_t live_session_count() const;
  size_t usable_relay_count() const;
  // Releases the timer; run the loop afterwards.
  void close();

 private:
  struct Record {
    RelayLink* relay = nullptr;  // nullptr while that relay is disconnected
    std::string relay_ip;
    std::string dialog_id;
    std::optional<double> expired_at;   // monotonic seconds
    std::optional<double> orphaned_at;  // its relay disconnected at (monotonic)
    // For the record made when the relay loses the call:
    std::string from_tag, to_tag;
    std::optional<double> answered_at;  // wall clock of the first answered update
  };
  // The call's relay no longer has it (`why` for the log): relay-lost
  // record, hang-up if it was answered.
  void lose_session(const std::string& call_id, const Record& rec, const char* why);
  void note_request(Record& rec, const protocol::Request& req);

  using SharedRequest = std::shared_ptr<const protocol::Request>;
  void update_new_session(SharedRequest req, std::vector<RelayLink*> candidates, size_t index,
                          Done done);
  void forward(Record& rec, SharedRequest req, Done done);
  void on_expired(RelayLink* relay, const std::string& json);
  void account(std::string record, const std::string& dialog_id, bool timed_out,
               std::optional<bool> all_streams_ice);
  std::vector<RelayLink*> candidates(const std::string& preferred) const;
  // Sends `command` to every relay and joins the replies (nullopt: failed).
  void ask_all_relays(
      const std::string& command,
      std::function<std::string(const std::vector<std::optional<std::string>>&)> join, Done done);
  double now() const;
  static void on_cleanup(uv_timer_t* t);

  uv_loop_t* loop_;
  DispatcherConfig cfg_;
  std::vector<RelayLink*> relays_;
  std::vector<SessionEnded> end_observers_;
  RecordSink record_sink_;
  Hangup hangup_;
  void notify_end(const std::string& call_id, bool timed_out) {
    for (auto& cb : end_observers_) cb(call_id, timed_out);
  }
  using Sessions = std::unordered_map<std::string, Record>;
  Sessions sessions_;
  // Every erase goes through here: it keeps load_ and expired_records_.
  Sessions::iterator erase_record(Sessions::iterator it);
  // Live sessions (a relay, not expired) per relay, for candidates(): kept
  // exact as records change, never recounted on the request path. (A scan
  // of the table per new call made offers at 50,000 calls wait 8 ms at p99;
  // a scan every second still stalled the loop 5-25 ms once a second,
  // measured with mediaproxy_event_loop_turn_seconds.) count_in/count_out
  // wrap every change of a record's relay or expiry and every erase.
  std::unordered_map<const RelayLink*, size_t> load_;
  size_t expired_records_ = 0;  // records kept after their call ended (spec B.5)
  void count_in(const Record& rec);
  void count_out(const Record& rec);
  void recount_loads();
  uv_timer_t cleanup_timer_;

  std::map<std::pair<std::string, std::string>, uint64_t> requests_;  // (command, result)
  std::map<std::string, uint64_t> errors_;                            // by kind
  metrics::LatencyHistogram update_latency_;
};

}  // namespace mp::dispatcher
