// The relay's sessions across a restart of its process: RelayEngine's use of
// the state file (state_journal.h).
//
// At start, load_state() reads the file the previous process left; with
// kernel forwarding, the previous process's nftables table is adopted
// instead of replaced, so its rules never stop forwarding. restore_sessions()
// reserves the recorded ports, binds them again, rebuilds each session
// (session_restore.cpp) and hands every adopted rule to the leg it belongs
// to (key: latched source and relay port); rules nobody claims are deleted.
// Then the file is rewritten with what was restored, and from there on:
//  * a session whose state changed (update, latching, hand-over, end of a
//    stream) is marked dirty through StateSink, without allocating, and its
//    whole record is queued once before the loop next waits (a uv_prepare
//    handle) and written with one write(2) for however many changed, at
//    most one write per state_write_interval (1 ms): under load the records
//    of several loop iterations share a write (a write is a system call of a
//    few microseconds on a VM, 4% of a call set-up's CPU when every
//    iteration wrote), and a crash loses at most that last interval of
//    changes; while idle every iteration's records are written before the
//    loop waits;
//  * every second, sessions whose traffic moved get a short counter line;
//  * an ended session gets a delete line;
//  * the file is compacted when it has grown past twice its live content,
//    off the loop (state_compaction.h).
// A clean exit ends every session (SIGTERM) and removes the file; a crash or
// `kill -9` leaves it for the next start.
#include <unistd.h>

#include <algorithm>
#include <map>

#include "common/log.h"
#include "kernel/nft_forwarder.h"
#include "relay/counter_table.h"
#include "relay/relay_engine.h"

namespace mp::relay {

namespace {
constexpr uint64_t kCheckpointIntervalMs = 1000;
constexpr uint64_t kMinCompactBytes = 1 << 20;
}  // namespace

StateIdentity RelayEngine::state_identity() const {
  StateIdentity id;
  id.relay_ip = ctx_.relay_ip;
  id.port_start = cfg_.port_start;
  id.port_end = cfg_.port_end;
  id.nft_table = cfg_.nft_table;
  return id;
}

void RelayEngine::load_state() {
  if (!cfg_.state_file.empty() && cfg_.state_file[0] != '/') {
    LOG_WARN("state_file %s is not an absolute path: sessions are not kept across restarts",
             cfg_.state_file.c_str());
    cfg_.state_file.clear();
  }
  if (cfg_.state_file.empty()) return;
  LoadedState state;
  std::string error;
  if (StateJournal::load(cfg_.state_file, state_identity(), state, error)) {
    loaded_ = std::move(state);
    return;
  }
  if (!error.empty())
    LOG_WARN("state file %s ignored, starting without sessions: %s", cfg_.state_file.c_str(),
             error.c_str());
}

void RelayEngine::restore_sessions() {
  if (cfg_.state_file.empty()) return;
  journal_ = std::make_unique<StateJournal>();
  size_t restored = 0, failed = 0;
  if (loaded_) {
    // Every port pair of the sessions to restore, reserved in one go.
    std::vector<uint16_t> ports;
    for (const auto& [id, s] : loaded_->sessions)
      for (const StreamState& st : s.streams)
        if (st.alive && st.rtp_port[0] && st.rtp_port[1])
          ports.insert(ports.end(), {st.rtp_port[0], st.rtp_port[1]});
    uint16_t bad = 0;
    if (!pool_.reserve(ports, bad)) {
      LOG_WARN(
          "state file %s ignored, starting without sessions: port %u is outside port_range "
          "or used twice",
          cfg_.state_file.c_str(), bad);
      loaded_.reset();
    }
  }
  counters_ = std::make_unique<CounterTable>();
  {
    std::string error;
    const double offset = RelayContext::wall_now() - ctx_.now();
    if (counters_->open(cfg_.state_file + ".counters", state_identity().header(),
                        static_cast<uint32_t>(pool_.capacity() / 2 + 16), offset, error)) {
      ctx_.counters = counters_.get();
    } else {
      LOG_WARN("%s; userspace counters are kept once a second only", error.c_str());
      counters_.reset();
    }
    // Ids of new streams: above those of any earlier process.
    ctx_.last_stream_id = static_cast<uint64_t>(RelayContext::wall_now() * 1e6);
  }
  if (loaded_) {
    for (auto& [id, state] : loaded_->sessions) {
      std::string error;
      std::unique_ptr<Session> s = Session::restore(ctx_, state, error);
      const std::string key =
          std::to_string(state.call_id.size()) + ':' + state.call_id + state.from_tag;
      if (!s || sessions_.count(key)) {
        ++failed;
        LOG_WARN("state file: session %s not restored: %s", log_safe(state.call_id).c_str(),
                 s ? "listed twice" : error.c_str());
        continue;
      }
      s->state_id = id;
      s->state_traffic = s->traffic_total();
      list(sessions_.emplace(key, std::move(s)).first->second.get());
      ++restored;
    }
    next_state_id_ = loaded_->last_id + 1;
  }
  if (counters_) {
    counters_->release_unclaimed();
    for (auto& [k, s] : sessions_)
      for (auto& st : s->streams()) st->attach_counter_slot();
  }
  size_t adopted = adopted_.size(), claimed = 0;
  if (offload_) {
    // Key of each adopted rule -> the leg that claims it.
    std::map<std::pair<std::string, uint16_t>, std::tuple<MediaStream*, SubStream, Side>> claims;
    auto key = [](const IpEndpoint& from, uint16_t port) {
      return std::pair{format_ip_endpoint(from), port};
    };
    for (auto& [k, s] : sessions_)
      for (auto& st : s->streams())
        for (SubStream sub : {kRtp, kRtcp})
          for (Side side : {kCaller, kCallee}) {
            IpEndpoint from;
            uint16_t port = 0;
            if (st->kernel_claim(sub, side, from, port))
              claims[key(from, port)] = {st.get(), sub, side};
          }
    for (const kernel::AdoptedRule& r : adopted_) {
      auto it = claims.find(key(r.rule.from, r.rule.relay_in_port));
      if (it == claims.end()) {
        offload_->forwarder().remove(r.id);
        continue;
      }
      auto [st, sub, side] = it->second;
      offload_->adopt(r.id, st, sub, side, r.counters.packets, r.counters.bytes);
      claims.erase(it);
      ++claimed;
    }
    // Legs whose rule did not survive go back to userspace (and are handed
    // over again from there).
    for (auto& [k, claim] : claims) {
      auto [st, sub, side] = claim;
      st->forget_kernel_claim(sub, side);
    }
    std::string error;
    if (claimed < adopted && !offload_->forwarder().commit(nullptr, error))
      LOG_WARN("state file: deleting %zu kernel rule(s) of ended sessions failed: %s",
               adopted - claimed, error.c_str());
  } else {
    for (auto& [k, s] : sessions_)
      for (auto& st : s->streams())
        for (SubStream sub : {kRtp, kRtcp})
          for (Side side : {kCaller, kCallee}) st->forget_kernel_claim(sub, side);
  }
  adopted_.clear();
  if (pump_) {
    if (size_t unused = pump_->close_inherited())
      LOG_INFO("upgrade: %zu handed-over socket(s) belonged to no restored stream; closed", unused);
  }
  if (loaded_)
    LOG_INFO(
        "state file %s: %zu session(s) restored, %zu not; %zu kernel rule(s) kept, %zu deleted",
        cfg_.state_file.c_str(), restored, failed, claimed, adopted - claimed);
  loaded_.reset();
  start_journal();
}

void RelayEngine::start_journal() {
  dirty_.reserve(pool_.capacity() + 64);
  ctx_.state = this;
  compaction_ = std::make_unique<BackgroundCompaction>(ctx_.loop);
  compact_state();
  uv_prepare_init(ctx_.loop, &state_prepare_);
  state_prepare_.data = this;
  uv_prepare_start(&state_prepare_, on_state_prepare);
  uv_timer_init(ctx_.loop, &checkpoint_timer_);
  checkpoint_timer_.data = this;
  uv_timer_start(&checkpoint_timer_, on_checkpoint, kCheckpointIntervalMs, kCheckpointIntervalMs);
  uv_timer_init(ctx_.loop, &state_write_timer_);
  state_write_timer_.data = this;
  state_handles_ = true;
}

std::vector<RelayEngine::Summary> RelayEngine::summaries() const {
  std::vector<Summary> out;
  out.reserve(sessions_.size());
  for (const auto& [key, s] : sessions_)
    out.push_back(
        Summary{s->call_id(), s->dialog_id(), s->from_tag(), s->to_tag(), s->answered_wall()});
  return out;
}

void RelayEngine::session_changed(Session* s) {
  if (s->state_dirty || !journal_) return;
  s->state_dirty = true;
  dirty_.push_back(s);  // capacity reserved for every session the ports allow
}

void RelayEngine::track(Session* s) {
  if (!journal_) return;
  if (!s->state_id) s->state_id = next_state_id_++;
  session_changed(s);
}

void RelayEngine::forget(Session* s) {
  if (!journal_ || !s->state_id) return;
  if (s->state_dirty) dirty_.erase(std::remove(dirty_.begin(), dirty_.end(), s), dirty_.end());
  journal_->put_delete(s->state_id);
}

void RelayEngine::on_state_prepare(uv_prepare_t* h) {
  static_cast<RelayEngine*>(h->data)->flush_state();
}

void RelayEngine::on_state_write(uv_timer_t* t) {
  auto* self = static_cast<RelayEngine*>(t->data);
  self->state_write_armed_ = false;
  self->write_state();
}

void RelayEngine::flush_state(bool now_or_never) {
  if (!journal_) return;
  if (state_broken_) {
    // The checkpoint timer retries the rewrite, which writes everything.
    journal_->drop_pending();
    return;
  }
  for (Session* s : dirty_) {
    journal_->put_session_with(s->state_id, [this, s](std::string& out) {
      s->capture_into(state_scratch_);
      append_session_state_json(out, state_scratch_);
    });
    s->state_dirty = false;
    s->state_traffic = s->traffic_total();
  }
  dirty_.clear();
  if (!journal_->has_pending()) return;
  const auto interval = static_cast<uint64_t>(cfg_.state_write_interval * 1e9);
  const uint64_t since = uv_hrtime() - last_state_write_ns_;
  if (now_or_never || since >= interval) {
    write_state();
  } else if (!state_write_armed_ && state_handles_) {
    state_write_armed_ = true;
    const uint64_t rest_ms = (interval - since + 999'999) / 1'000'000;
    uv_timer_start(&state_write_timer_, on_state_write, rest_ms, 0);
  }
}

void RelayEngine::write_state() {
  if (!journal_ || !journal_->has_pending()) return;
  if (state_write_armed_) {
    uv_timer_stop(&state_write_timer_);
    state_write_armed_ = false;
  }
  last_state_write_ns_ = uv_hrtime();
  std::string error;
  if (!journal_->flush(error)) {
    LOG_LIMITED(Error, nullptr, "state file %s: %s; rewriting it", cfg_.state_file.c_str(),
                error.c_str());
    state_broken_ = true;
    return;
  }
  if (journal_->appended() > std::max<uint64_t>(kMinCompactBytes, 2 * journal_->base_size()) &&
      compaction_->can_start())
    compact_state_in_background();
}

void RelayEngine::compact_state_in_background() {
  // Only the snapshot is taken here; JSON and write happen off the loop.
  BackgroundCompaction::Snapshot snapshot;
  snapshot.reserve(sessions_.size());
  for (auto& [key, s] : sessions_) {
    if (!s->state_id) s->state_id = next_state_id_++;
    snapshot.emplace_back(s->state_id, s->capture());
    s->state_traffic = s->traffic_total();
  }
  std::string error;
  if (!compaction_->start(*journal_, state_identity().header(), std::move(snapshot), error))
    LOG_LIMITED(Error, nullptr, "state file %s: %s", cfg_.state_file.c_str(), error.c_str());
}

void RelayEngine::on_checkpoint(uv_timer_t* t) {
  static_cast<RelayEngine*>(t->data)->checkpoint_counters();
}

void RelayEngine::checkpoint_counters() {
  if (!journal_) return;
  if (state_broken_) {
    compact_state();
    return;
  }
  for (auto& [key, s] : sessions_) {
    if (s->state_dirty) continue;  // its whole record goes out anyway
    const uint64_t traffic = s->traffic_total();
    if (traffic == s->state_traffic) continue;
    s->state_traffic = traffic;
    journal_->put_counters(s->state_id, counters_to_text(s->capture_counters()));
  }
}

void RelayEngine::compact_state() {
  if (!journal_) return;
  if (compaction_) compaction_->abandon();  // what it would write is older than this
  for (Session* s : dirty_) s->state_dirty = false;
  dirty_.clear();
  std::string content = state_identity().header() + '\n';
  for (auto& entry : sessions_) {
    Session* s = entry.second.get();  // a named pointer: lambdas cannot capture bindings (clang)
    if (!s->state_id) s->state_id = next_state_id_++;
    StateJournal::append_line_with(content, 'S', s->state_id, [this, s](std::string& out) {
      s->capture_into(state_scratch_);
      append_session_state_json(out, state_scratch_);
    });
    s->state_traffic = s->traffic_total();
  }
  std::string error;
  if (journal_->rewrite(cfg_.state_file, content, error)) {
    state_broken_ = false;
  } else {
    LOG_LIMITED(Error, nullptr, "state file: %s", error.c_str());
    state_broken_ = true;
  }
}

void RelayEngine::close_state() {
  if (!state_handles_) return;
  state_handles_ = false;
  uv_prepare_stop(&state_prepare_);
  uv_timer_stop(&checkpoint_timer_);
  uv_timer_stop(&state_write_timer_);
  state_write_armed_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&state_prepare_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&checkpoint_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&state_write_timer_), nullptr);
  ctx_.state = nullptr;
  if (handed_over_) {
    // The successor owns the file and the counter slots now.
    compaction_.reset();
    journal_.reset();
    ctx_.counters = nullptr;
    return;
  }
  if (sessions_.empty()) {
    // A clean exit: every session ended, nothing to restore.
    journal_->close();
    ::unlink(cfg_.state_file.c_str());
    if (counters_) counters_->remove_file();
  } else {
    flush_state(true);
  }
  compaction_.reset();
  journal_.reset();
  ctx_.counters = nullptr;  // streams destroyed from here on leave their slots alone
}

std::vector<std::pair<IpEndpoint, int>> RelayEngine::hand_over() {
  std::vector<std::pair<IpEndpoint, int>> out;
  uv_timer_stop(&sweep_timer_);
  uv_timer_stop(&sample_timer_);
  if (network_poll_active_) uv_poll_stop(&network_poll_);
  if (state_handles_) {
    uv_prepare_stop(&state_prepare_);
    uv_timer_stop(&checkpoint_timer_);
    uv_timer_stop(&state_write_timer_);
    state_write_armed_ = false;
  }
  // Counters read from the kernel and the last packets' state go into the
  // file the successor reads.
  if (offload_) {
    offload_->commit_pending();
    poll_kernel_counters();
    offload_->forwarder().keep_table_on_exit(true);
  }
  if (pump_) pump_->close_idle();
  stop_tproxy(&out);
  for (auto& [key, s] : sessions_)
    for (auto& st : s->streams()) st->hand_over_sockets(out);
  if (journal_) compact_state();
  handed_over_ = true;
  halting_ = true;  // anything still asked of this process is refused
  return out;
}

}  // namespace mp::relay
