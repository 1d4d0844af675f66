// The rtpproxy control protocol on top of the dispatcher.
//
// rtpproxy speaks per stream: `U` carries one party's address for media
// stream N of an offer, `L` the other party's address for stream N of the
// answer, `D` deletes. The relays speak per offer: an `update` carries every
// stream of one SDP, with a CSeq. This class keeps, per call, what each party
// said about each stream, and turns every U and L into the `update` the relay
// session model expects:
//   * U from a party: a new offer (a fresh synthetic CSeq for that party)
//     holding every stream that party has described so far, stream N
//     replaced; an identical U is a retransmission and is sent with the same
//     CSeq, so the relay answers the same ports and allocates nothing;
//   * L: an answer with `media_index: N`, which changes stream N only;
//   * D: `remove`; Q: the relay's `query`; I and G: figures kept here.
// Commands of one call are handled one at a time, in arrival order, so two
// proxy workers racing on the same call cannot create it twice. Every call
// goes through Dispatcher::handle(), so relay choice, failover, management,
// metrics and the session records are those of the mediaproxy module socket.
// The reply text has neither cookie nor newline: the transport adds them.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/config.h"
#include "dispatcher/dispatcher.h"
#include "dispatcher/timeout_notifier.h"
#include "metrics/exposition.h"
#include "protocol/rtpproxy_command.h"

namespace mp::dispatcher {

class RtpproxyFrontEnd {
 public:
  RtpproxyFrontEnd(uv_loop_t* loop, Dispatcher& dispatcher, const RtpproxyConfig& cfg);
  ~RtpproxyFrontEnd();
  RtpproxyFrontEnd(const RtpproxyFrontEnd&) = delete;
  RtpproxyFrontEnd& operator=(const RtpproxyFrontEnd&) = delete;

  using Reply = std::function<void(std::string reply)>;
  // Answers one parsed command from the client at `client_ip` (empty for a
  // UNIX socket client). `reply` may run before handle() returns.
  void handle(protocol::RtpproxyCommand cmd, const std::string& client_ip, Reply reply);
  // A command that did not parse: counted, answered E<code> by the caller.
  void count_error(int code);

  void write_metrics(metrics::Exposition& out) const;
  size_t call_count() const { return calls_.size(); }
  // Stops the sweep timer and the notifier's connections.
  void close();

 private:
  struct StreamSdp {
    bool known = false;
    std::string ip;
    uint16_t port = 0;
    bool asymmetric = false;
    friend bool operator==(const StreamSdp&, const StreamSdp&) = default;
  };
  struct Pending {
    protocol::RtpproxyCommand cmd;
    std::string client_ip;
    const char* verb;  // for the commands_ counter
    Reply reply;       // through respond(), which counts
  };
  // A call's identity in calls_: a serial, never reused, so that a reply
  // arriving after its call was removed cannot land on a newer call.
  using CallKey = uint64_t;
  struct Call {
    std::string call_id;
    std::string tag[2];  // [0] the party whose U created the call, [1] the other party
    int64_t cseq[2] = {0, 0};
    std::vector<StreamSdp> sdp[2];  // per party, per media number - 1
    int offerer = -1;               // party of the current offer
    bool answered = false;          // an L was applied to the current offer
    std::string notify_socket, notify_tag;
    double touched = 0;          // monotonic seconds
    bool busy = false;           // a command is with the dispatcher
    std::vector<Pending> queue;  // empty: no allocation (most calls never queue)
  };

  void run(Call& call, CallKey key, Pending p);
  // Counts and sends a reply.
  void respond(Pending& p, std::string text);
  void finish(CallKey key, Pending& p, std::string text);
  void update(Call& call, CallKey key, Pending& p);
  void lookup(Call& call, CallKey key, Pending& p);
  void remove(Call& call, CallKey key, Pending& p);
  void query(Call& call, CallKey key, Pending& p);
  std::string info(bool brief) const;
  std::string stats(const protocol::RtpproxyCommand& cmd) const;
  void on_session_end(const std::string& call_id, bool timed_out);
  // Forgets a call; its queued commands are answered as for an unknown call.
  void erase_call(CallKey key);
  // The call `tag` belongs to, or nullptr; `key` is set to its map key.
  Call* find(const std::string& call_id, const std::string& tag, CallKey* key);
  bool notify_permitted(const std::string& target, const std::string& client_ip) const;
  static void on_sweep(uv_timer_t* t);
  double now() const { return static_cast<double>(uv_now(loop_)) / 1000.0; }

  uv_loop_t* loop_;
  Dispatcher& dispatcher_;
  RtpproxyConfig cfg_;
  TimeoutNotifier notifier_;
  uv_timer_t sweep_timer_;
  std::unordered_map<CallKey, Call> calls_;
  CallKey next_key_ = 1;
  // call-id -> keys of its calls (rtpproxy allows several per call-id, one
  // per creating party's tag).
  std::unordered_map<std::string, std::vector<CallKey>> by_call_id_;

  uint64_t created_ = 0, deleted_ = 0, timed_out_ = 0, notified_ = 0;
  std::unordered_map<std::string, uint64_t> commands_;  // by verb letter and result
};

}  // namespace mp::dispatcher
