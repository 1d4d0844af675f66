// The relay: its session table and the commands of the relay protocol.
//
// Owns every session of this relay, the port pool, the expiry sweep (spec D.8
// with the improvements listed in mediaproxy.8) and the relay-wide figures of
// the `summary` command (spec C.3). It serves the commands of spec B.3
// (update, remove, summary, sessions) for any number of dispatchers, each
// identified by an opaque owner id, and reports expired sessions to the
// dispatcher that created them. Transport-agnostic: the in-process link of the
// combined role and the TLS link both call handle().
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
#include "metrics/exposition.h"
#include "protocol/relay_link.h"
#include "relay/counter_table.h"
#include "relay/kernel_offload.h"
#include "relay/port_pool.h"
#include "relay/relay_context.h"
#include "relay/session.h"
#include "relay/state_compaction.h"
#include "relay/state_journal.h"

namespace mp::kernel {
class NftForwarder;  // kernel/nft_forwarder.h, used only by relay_engine.cpp
class NftTproxy;     // kernel/nft_tproxy.h, used by tproxy_setup.cpp
struct AdoptedRule;  // and relay_state.cpp
}  // namespace mp::kernel

namespace mp::relay {

class RelayEngine final : public StateSink {
 public:
  // `cfg.state_file` must be absolute (or empty: no state file).
  RelayEngine(uv_loop_t* loop, const RelayConfig& cfg, Ipv4 relay_ip);
  // Sets up forwarding as [Relay] forwarding asks: `kernel` fails (false,
  // `error` set) when nftables cannot be used; `auto` falls back to userspace
  // with one log line saying why. With a state file, the sessions of the
  // previous process are restored here (relay_state.cpp): their ports bound
  // again, their kernel rules adopted, their latching as it was.
  bool start_forwarding(std::string& error);
  // Call-ids of the sessions restored at start (combined role: the
  // dispatcher side learns them).
  // What the dispatcher adopts of each session (app/server.cpp hands it on
  // in the combined role): call id, dialog id, tags, first answer.
  struct Summary {
    std::string call_id, dialog_id, from_tag, to_tag;
    std::optional<double> answered_at;
  };
  std::vector<Summary> summaries() const;
  bool kernel_forwarding() const { return offload_ != nullptr; }
  ~RelayEngine();
  RelayEngine(const RelayEngine&) = delete;
  RelayEngine& operator=(const RelayEngine&) = delete;

  // Answers one command from dispatcher `owner` with the reply payload.
  std::string handle(const protocol::RelayCommandView& cmd, uint64_t owner);
  std::string handle(const protocol::RelayCommand& cmd, uint64_t owner) {
    return handle(cmd.view(), owner);
  }

  // Where `expired <json>` reports go.
  using ExpiredSink = std::function<void(uint64_t owner, const std::string& json)>;
  void set_expired_sink(ExpiredSink sink) { expired_sink_ = std::move(sink); }

  // SIGHUP: refuse new sessions, keep the others; `drained` runs once the
  // last session has ended (immediately if there is none).
  void halt(std::function<void()> drained);
  bool halting() const { return halting_; }
  // SIGTERM: every session ends now (status "closed") and is reported.
  void shutdown();

  // Releases the timers; run the loop afterwards so libuv finishes closing
  // them (and the sockets) before the engine is destroyed.
  void close();

  // StateSink: the session's record is written again before the loop waits.
  void session_changed(Session* s) override;

  // Live upgrade, old process: stops every timer and the media path (no
  // socket is read any more), writes the state file, keeps the nftables table
  // for the successor and returns the media sockets (local address and
  // descriptor) to hand over. Afterwards close() ends no call and leaves the
  // state file. New process: `sockets` received are bound to ports the
  // restore takes (inherit before start_forwarding()); a tproxy socket
  // among them (tproxy_socket.h) is read again as such.
  std::vector<std::pair<IpEndpoint, int>> hand_over();
  void inherit_sockets(const std::vector<std::pair<IpEndpoint, int>>& sockets);

  // Hand-overs to the kernel committed as one transaction per media pass.
  uint64_t kernel_batches() const { return offload_ ? offload_->batches() : 0; }

  // Relay metrics for the Prometheus endpoint (mediaproxy.8, METRICS).
  void write_metrics(metrics::Exposition& out) const;

  size_t session_count() const { return sessions_.size(); }
  size_t stream_count() const;
  const PortPool& ports() const { return pool_; }

 private:
  std::string handle_update(const protocol::RelayCommandView& cmd, uint64_t owner);
  std::string handle_remove(const protocol::RelayCommandView& cmd);
  std::string handle_query(const protocol::RelayCommandView& cmd);
  std::string summary_json() const;
  // The `sessions` list, whole or in batches (session_listing.cpp).
  std::string sessions_json() const;
  std::string sessions_batch(const protocol::RelayCommandView& cmd) const;
  void list(Session* s);    // a new session joins the listing order
  void unlist(Session* s);  // before it is erased

  Session* find(const std::string& call_id, const std::string& from_tag, const std::string& to_tag);
  void erase(Session* s);
  void expire(Session* s);
  void sweep();
  void check_drained();
  void poll_kernel_counters();

  // State file (relay_state.cpp).
  void load_state();
  void restore_sessions();
  void adopt_kernel_rules();
  // The receive path through one socket per family (tproxy_setup.cpp), set
  // up after the restore; false only when media_receive = tproxy cannot be
  // had. stop_tproxy() deletes the nftables table, or with `hand_over_to`
  // leaves it and adds the sockets for the successor.
  bool start_tproxy(std::string& error);
  void stop_tproxy(std::vector<std::pair<IpEndpoint, int>>* hand_over_to);
  void start_journal();
  void track(Session* s);   // a new session gets a record id and is written
  void forget(Session* s);  // an ended session's record is deleted
  // Queues the records of changed sessions; writes them now if the last
  // write is state_write_interval old (or `now_or_never`), else arms
  // state_write_timer_ for the rest of that interval.
  void flush_state(bool now_or_never = false);
  void write_state();
  void checkpoint_counters();
  void compact_state();  // now, on the loop (start, hand-over, after a failed write)
  void compact_state_in_background();
  void close_state();
  static void on_state_prepare(uv_prepare_t* h);
  static void on_checkpoint(uv_timer_t* t);
  static void on_state_write(uv_timer_t* t);
  StateIdentity state_identity() const;
  static void on_sweep(uv_timer_t* t);
  static void on_network_change(uv_poll_t* p, int status, int events);
  static void on_sample(uv_timer_t* t);

  RelayConfig cfg_;
  std::unique_ptr<KernelOffload> offload_;           // in-kernel forwarding, or nullptr
  std::unique_ptr<kernel::NftTproxy> tproxy_table_;  // media_receive's rule, or nullptr
  int inherited_tproxy_[2] = {-1, -1};               // handed over, per family
  double last_kernel_poll_ = 0;
  uv_poll_t network_poll_;  // route/link change notifications of the forwarder
  bool network_poll_active_ = false;
  bool network_changed_ = false;
  PortPool pool_;
  MediaPump* pump_ = nullptr;  // freed by its close()
  std::string pump_error_;
  RelayContext ctx_;
  uv_timer_t sweep_timer_;
  uv_timer_t sample_timer_;
  double started_;
  double bps_relayed_ = 0;
  bool bps_sampled_ = false;
  uint64_t bytes_at_last_sample_ = 0;

  // Keyed by call_id + '\n' + creator's from_tag.
  std::unordered_map<std::string, std::unique_ptr<Session>> sessions_;
  // The same sessions in the order they were created (listing_id), the
  // order of `sessions` and the cursor of `sessions_from`.
  std::map<uint64_t, Session*> listing_;
  uint64_t next_listing_id_ = 1;
  ExpiredSink expired_sink_;

  std::unique_ptr<StateJournal> journal_;   // nullptr: no state file
  std::unique_ptr<CounterTable> counters_;  // its live counters
  // Compaction off the loop; after journal_, so that it goes first.
  std::unique_ptr<BackgroundCompaction> compaction_;
  std::optional<LoadedState> loaded_;  // read at start, consumed by restore_sessions()
  std::vector<kernel::AdoptedRule> adopted_;
  std::vector<Session*> dirty_;
  SessionState state_scratch_;  // flush_state() captures each dirty session into it
  uint64_t next_state_id_ = 1;
  uv_prepare_t state_prepare_;
  uv_timer_t checkpoint_timer_;
  uv_timer_t state_write_timer_;  // a deferred write (flush_state)
  bool state_write_armed_ = false;
  uint64_t last_state_write_ns_ = 0;  // uv_hrtime() of the last write
  bool state_handles_ = false;
  bool state_broken_ = false;  // a write failed: compact at the next flush
  bool handed_over_ = false;   // hand_over() ran: write nothing more
  // Monotonic totals for metrics: sessions by outcome, and the traffic of
  // ended streams ([kernel?][caller->callee?]); live streams are added at
  // scrape time.
  void account_ended(const Session& s);
  uint64_t sessions_created_ = 0;
  uint64_t sessions_removed_ = 0;
  std::map<std::string, uint64_t> sessions_expired_;
  uint64_t ended_packets_[2][2] = {{0, 0}, {0, 0}};
  uint64_t ended_bytes_[2][2] = {{0, 0}, {0, 0}};
  bool halting_ = false;
  std::function<void()> drained_;
};

}  // namespace mp::relay
