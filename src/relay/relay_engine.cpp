// Session table, commands and expiry policy of the relay (relay_engine.h).
//
// Call-ids and tags are byte strings from the SIP peer: the session key keeps
// them apart whatever bytes they hold, log lines print them with log_safe(),
// and warnings about bad requests, which the proxy module passes on for any
// client, are rate-limited (LOG_LIMITED).
#include "relay/relay_engine.h"

#include <rapidjson/document.h>
#include <sys/resource.h>

#include <algorithm>
#include <charconv>
#include <map>

#include "common/json_writer.h"
#include "common/log.h"
#include "kernel/nft_forwarder.h"
#include "kernel/nft_tproxy.h"
#include "protocol/session_batch.h"

namespace mp::relay {

namespace {

constexpr uint64_t kSweepIntervalMs = 250;
// Kernel counters are read in one dump this often; they move a stream's
// last-activity time, so expiry is exact to about this interval.
constexpr double kKernelPollInterval = 1.0;
// While a NAT rebinding waits for the latched source's silence (latching.h).
constexpr double kKernelFastPollInterval = 0.25;

// Length-prefixed, so that no call-id/tag pair can spell another's key.
std::string key_of(const std::string& call_id, const std::string& tag) {
  char length[24];
  const auto end = std::to_chars(length, length + sizeof length, call_id.size()).ptr;
  std::string key;
  key.reserve(static_cast<size_t>(end - length) + 1 + call_id.size() + tag.size());
  key.append(length, end);  // "<length>:<call_id><tag>", built with one allocation
  key += ':';
  key += call_id;
  key += tag;
  return key;
}

// signaling_ip forms (spec A.4): JSON object, "SRC_DST", or a plain address.
void parse_signaling_ip(const std::string& v, UpdateRequest& req) {
  if (!v.empty() && v[0] == '{') {
    rapidjson::Document d;
    d.Parse(v.c_str(), v.size());
    if (!d.HasParseError() && d.IsObject()) {
      auto str = [&d](const char* k) -> std::optional<std::string> {
        auto it = d.FindMember(k);
        if (it == d.MemberEnd() || !it->value.IsString()) return std::nullopt;
        return std::string(it->value.GetString(), it->value.GetStringLength());
      };
      req.caller_ip = str("signaling_ip").value_or("");
      req.destination_ip = str("destination_ip").value_or("");
      req.username = str("username");
      return;
    }
  }
  size_t us = v.find('_');
  if (us != std::string::npos) {
    req.caller_ip = v.substr(0, us);
    req.destination_ip = v.substr(us + 1);
  } else {
    req.caller_ip = v;
  }
}

}  // namespace

RelayEngine::RelayEngine(uv_loop_t* loop, const RelayConfig& cfg, Ipv4 relay_ip)
    : cfg_(cfg), pool_(cfg.port_start, cfg.port_end) {
  ctx_.loop = loop;
  pump_ = MediaPump::create(loop, pump_error_);  // start_forwarding() reports a failure
  if (pump_) {
    // Keep closed ports' sockets for their next stream (call set-up then
    // costs no socket system call), within half the open-file limit.
    rlimit rl{};
    size_t files = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? static_cast<size_t>(rl.rlim_cur) : 1024;
    pump_->set_idle_capacity(
        std::min(static_cast<size_t>(cfg.port_end - cfg.port_start), files / 2));
  }
  ctx_.pump = pump_;
  ctx_.relay_ip = relay_ip;
  ctx_.reply_ip = cfg.advertised_ip.value_or(relay_ip);
  ctx_.relay_ip6 = cfg.relay_ip6;
  ctx_.reply_ip6 = cfg.relay_ip6 ? cfg.advertised_ip6 : std::nullopt;
  ctx_.ports = &pool_;
  ctx_.routable_private_ranges = cfg.routable_private_ranges;
  ctx_.transmit_every = cfg.userspace_transmit_every;
  ctx_.latch_policy.strict = cfg.strict_latching;
  ctx_.latch_policy.window = cfg.latch_window;
  ctx_.latch_policy.rebind_silence = cfg.rebind_silence;
  started_ = ctx_.now();
  uv_timer_init(loop, &sweep_timer_);
  sweep_timer_.data = this;
  uv_timer_start(&sweep_timer_, on_sweep, kSweepIntervalMs, kSweepIntervalMs);
  uv_timer_init(loop, &sample_timer_);
  sample_timer_.data = this;
  if (cfg.traffic_sampling_period > 0) {
    uint64_t ms = static_cast<uint64_t>(cfg.traffic_sampling_period) * 1000;
    uv_timer_start(&sample_timer_, on_sample, ms, ms);
  }
}

RelayEngine::~RelayEngine() = default;

bool RelayEngine::start_forwarding(std::string& error) {
  if (!pump_) {
    error = pump_error_;
    return false;
  }
  ctx_.handover_packets = cfg_.kernel_handover_packets;
  if (cfg_.media_io != MediaIo::Syscalls) {
    std::string why;
    if (pump_->use_batched_io(why)) {
      LOG_INFO("media I/O: io_uring (the receives of all ready sockets in one system call)");
    } else if (cfg_.media_io == MediaIo::IoUring) {
      error = "media_io = io_uring, but " + why;
      return false;
    } else {
      LOG_INFO("media I/O: one system call per socket (%s)", why.c_str());
    }
  } else {
    LOG_INFO("media I/O: one system call per socket (configured)");
  }
  if (cfg_.media_send != MediaSend::Sockets) {
    std::string why;
    if (pump_->use_raw_send(why)) {
      LOG_INFO("media sends: the datagrams of a pass through a raw socket per IP version");
    } else if (cfg_.media_send == MediaSend::Raw) {
      error = "media_send = raw, but " + why + " (CAP_NET_RAW is needed)";
      return false;
    } else {
      LOG_INFO("media sends: through each port's socket (%s)", why.c_str());
    }
  }
  if (cfg_.media_coalesce > 0) {
    std::string why;
    if (pump_->set_coalesce(static_cast<uint64_t>(cfg_.media_coalesce * 1e9 + 0.5), why))
      LOG_INFO("media passes: datagrams gather for up to %g ms while busy (media_coalesce)",
               cfg_.media_coalesce * 1e3);
    else
      LOG_WARN("media_coalesce: %s; a pass per readiness event", why.c_str());
  }
  load_state();
  if (cfg_.forwarding == Forwarding::Userspace) {
    LOG_INFO("forwarding: userspace (configured)");
    restore_sessions();
    return start_tproxy(error);
  }
  std::string why;
  std::unique_ptr<kernel::NftForwarder> forwarder;
  if (kernel::NftForwarder::probe(why)) {
    // With sessions to restore, the previous process's rules are adopted:
    // they forward on while we start.
    forwarder =
        loaded_ ? kernel::NftForwarder::adopt(cfg_.nft_table, ctx_.relay_ip, ctx_.relay_ip6,
                                              adopted_, why)
                : kernel::NftForwarder::create(cfg_.nft_table, ctx_.relay_ip, ctx_.relay_ip6, why);
  }
  if (!forwarder) {
    if (cfg_.forwarding == Forwarding::Kernel) {
      error = "forwarding = kernel, but in-kernel forwarding is not available: " + why;
      return false;
    }
    LOG_WARN("forwarding: userspace only, in-kernel forwarding is not available: %s", why.c_str());
    restore_sessions();
    return start_tproxy(error);
  }
  offload_ = std::make_unique<KernelOffload>(std::move(forwarder), pool_.capacity() / 2);
  ctx_.offload = offload_.get();
  // The hand-overs a media pass asked for go to the kernel when it ends.
  pump_->set_pass_end([](void* self) { static_cast<KernelOffload*>(self)->commit_pending(); },
                      offload_.get());
  if (int fd = offload_->forwarder().network_change_fd(); fd >= 0) {
    // Route and link changes: noted here, followed at most once per counter
    // poll (follow_network() resolves every installed rule's route again).
    uv_poll_init(ctx_.loop, &network_poll_, fd);
    network_poll_.data = this;
    network_poll_active_ = true;
    uv_poll_start(&network_poll_, UV_READABLE, on_network_change);
  }
  LOG_INFO(
      "forwarding: in the kernel through nftables table 'ip %s' (hand-over after %d "
      "packet(s) from each side)",
      cfg_.nft_table.c_str(), cfg_.kernel_handover_packets);
  restore_sessions();
  return start_tproxy(error);
}

void RelayEngine::on_network_change(uv_poll_t* p, int, int) {
  auto* self = static_cast<RelayEngine*>(p->data);
  uv_poll_stop(p);  // until the next counter poll has followed the change
  self->network_changed_ = true;
}

void RelayEngine::poll_kernel_counters() {
  if (!offload_) return;
  std::string error;
  if (!offload_->read_counters(error))
    LOG_WARN("reading kernel counters failed: %s", error.c_str());
}

void RelayEngine::close() {
  close_state();
  listing_.clear();
  sessions_.clear();
  if (network_poll_active_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&network_poll_), nullptr);
    network_poll_active_ = false;
  }
  if (!handed_over_) stop_tproxy(nullptr);
  if (pump_) pump_->close();  // every socket is closed now
  pump_ = nullptr;
  ctx_.pump = nullptr;
  ctx_.offload = nullptr;
  offload_.reset();  // deletes the nftables table
  uv_timer_stop(&sweep_timer_);
  uv_timer_stop(&sample_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&sweep_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sample_timer_), nullptr);
}

std::string RelayEngine::handle(const protocol::RelayCommandView& cmd, uint64_t owner) {
  if (cmd.name == "update") return handle_update(cmd, owner);
  if (cmd.name == "remove") return handle_remove(cmd);
  if (cmd.name == "query") return handle_query(cmd);
  if (cmd.name == "summary") return summary_json();
  if (cmd.name == "sessions") return sessions_json();
  if (cmd.name == protocol::kSessionsFromCommand) return sessions_batch(cmd);
  LOG_LIMITED(Warning, nullptr, "relay: unknown command '%s' answered with error",
              log_safe(cmd.name).c_str());
  return "error";
}

Session* RelayEngine::find(const std::string& call_id, const std::string& from_tag,
                           const std::string& to_tag) {
  auto it = sessions_.find(key_of(call_id, from_tag));
  if (it == sessions_.end() && !to_tag.empty()) it = sessions_.find(key_of(call_id, to_tag));
  return it == sessions_.end() ? nullptr : it->second.get();
}

std::string RelayEngine::handle_update(const protocol::RelayCommandView& cmd, uint64_t owner) {
  UpdateRequest req;
  const char* required[] = {"call_id", "from_tag",   "from_uri", "to_uri",
                            "cseq",    "user_agent", "type"};
  for (const char* name : required) {
    if (!cmd.find(name)) {
      LOG_LIMITED(Warning, nullptr, "relay: update without '%s' header answered with error", name);
      return "error";
    }
  }
  req.call_id = *cmd.find("call_id");
  req.from_tag = *cmd.find("from_tag");
  if (const std::string* t = cmd.find("to_tag")) req.to_tag = *t;
  req.from_uri = *cmd.find("from_uri");
  req.to_uri = *cmd.find("to_uri");
  req.user_agent = *cmd.find("user_agent");
  const std::string& type = *cmd.find("type");
  if (type != "request" && type != "reply") {
    LOG_LIMITED(Warning, nullptr, "relay: update %s with type '%s' (expected request or reply)",
                log_safe(req.call_id).c_str(), log_safe(type).c_str());
    return "error";
  }
  req.is_request = type == "request";
  if (const std::string* latching = cmd.find("latching")) {
    if (*latching != "strict" && *latching != "normal") {
      LOG_LIMITED(Warning, nullptr,
                  "relay: update %s with latching '%s' (expected strict or normal)",
                  log_safe(req.call_id).c_str(), log_safe(*latching).c_str());
      return "error";
    }
    req.strict_latching = *latching == "strict";
  }
  if (const std::string* index = cmd.find("media_index")) {
    auto [q, err] = std::from_chars(index->data(), index->data() + index->size(), req.media_index);
    if (err != std::errc() || q != index->data() + index->size() || req.media_index == 0 ||
        req.media_index > protocol::kMaxMediaItems) {
      LOG_LIMITED(Warning, nullptr, "relay: update %s with bad media_index",
                  log_safe(req.call_id).c_str());
      return "error";
    }
  }
  if (const std::string* dialog = cmd.find("dialog_id"); dialog && dialog->size() <= 256)
    req.dialog_id = *dialog;  // (longer: not a dialog id the module makes; not kept)
  if (const std::string* families = cmd.find("families")) {
    // "<a>,<b>": this party's family, then the family the reply must have.
    const size_t comma = families->find(',');
    const auto a = parse_family_digit(std::string_view(*families).substr(0, comma));
    const auto b = comma == std::string::npos
                       ? std::nullopt
                       : parse_family_digit(std::string_view(*families).substr(comma + 1));
    if (!a || !b) {
      LOG_LIMITED(Warning, nullptr, "relay: update %s with families '%s' (expected 4,6 or 6,4...)",
                  log_safe(req.call_id).c_str(), log_safe(*families).c_str());
      return "error";
    }
    req.reply_family = *b;
  }
  const std::string& cseq = *cmd.find("cseq");
  auto [p, ec] = std::from_chars(cseq.data(), cseq.data() + cseq.size(), req.cseq);
  if (ec != std::errc() || p != cseq.data() + cseq.size() || req.cseq < 0) {
    LOG_LIMITED(Warning, nullptr, "relay: update %s with non-numeric cseq '%s'",
                log_safe(req.call_id).c_str(), log_safe(cseq).c_str());
    return "error";
  }
  if (const std::string* sig = cmd.find("signaling_ip")) parse_signaling_ip(*sig, req);
  if (const std::string* m = cmd.find("media")) {
    std::string why;
    req.media = protocol::parse_media(*m, why);
    if (!req.media) {
      LOG_LIMITED(Warning, nullptr,
                  "relay: update %s has an undecodable media header (%s): answered with error",
                  log_safe(req.call_id).c_str(), log_safe(why).c_str());
      return "error";
    }
  }

  Session* session = find(req.call_id, req.from_tag, req.to_tag);
  if (!session) {
    if (halting_) return "halting";
    if (!req.is_request && (!req.media || req.media->empty())) return "None";
    auto fresh = std::make_unique<Session>(ctx_, req, owner);
    ++sessions_created_;
    session = fresh.get();
    sessions_.emplace(key_of(req.call_id, req.from_tag), std::move(fresh));
    list(session);
    track(session);
    LOG_DEBUG("relay: new session %s (from tag %s)", log_safe(req.call_id).c_str(),
              log_safe(req.from_tag).c_str());
  }
  std::string reply, error;
  if (!session->update(req, reply, error)) {
    LOG_LIMITED(Warning, nullptr, "relay: update for %s failed: %s", log_safe(req.call_id).c_str(),
                log_safe(error).c_str());
    if (!session->alive() && session->streams().empty()) erase(session);
    return "error";
  }
  session_changed(session);
  return reply;
}

std::string RelayEngine::handle_remove(const protocol::RelayCommandView& cmd) {
  const std::string* call_id = cmd.find("call_id");
  const std::string* from_tag = cmd.find("from_tag");
  if (!call_id || !from_tag) {
    LOG_LIMITED(Warning, nullptr, "relay: remove without call_id/from_tag answered with error");
    return "error";
  }
  const std::string* to_tag = cmd.find("to_tag");
  Session* s = find(*call_id, *from_tag, to_tag ? *to_tag : std::string());
  if (!s) {
    LOG_LIMITED(Info, nullptr, "relay: remove for unknown session %s", log_safe(*call_id).c_str());
    return "error";
  }
  s->close_all("closed");
  std::string json = s->stats_json();
  ++sessions_removed_;
  account_ended(*s);
  erase(s);
  return json;
}

// One session's live figures for the rtpproxy front end's Q command:
// packets from each party, relayed and dropped, and the seconds left before
// the expiry policy below would end it.
std::string RelayEngine::handle_query(const protocol::RelayCommandView& cmd) {
  const std::string* call_id = cmd.find("call_id");
  const std::string* from_tag = cmd.find("from_tag");
  if (!call_id || !from_tag) return "error";
  const std::string* to_tag = cmd.find("to_tag");
  Session* s = find(*call_id, *from_tag, to_tag ? *to_tag : std::string());
  if (!s) return "error";
  const double now = ctx_.now();
  uint64_t from[2] = {0, 0}, dropped = 0;
  double ttl = 0;
  for (const auto& st : s->streams()) {
    for (Side side : {kCaller, kCallee})
      for (SubStream k : {kRtp, kRtcp}) {
        from[side] += st->leg(k, side).total_packets();
        dropped += st->leg(k, side).dropped;
      }
    if (!st->alive()) continue;
    double left;
    if (!st->confirmed)
      left = cfg_.answer_timeout - (now - st->created);
    else if (st->on_hold())
      left = cfg_.on_hold_timeout - (now - std::max(st->hold_since, st->last_activity));
    else
      left = cfg_.stream_timeout - (now - std::max(*st->confirmed, st->last_activity));
    ttl = std::max(ttl, left);
  }
  JsonWriter w;
  w.begin_object();
  w.field("ttl", static_cast<int64_t>(ttl));
  w.field("caller_packets", from[kCaller]);
  w.field("callee_packets", from[kCallee]);
  w.field("relayed", from[kCaller] + from[kCallee]);
  w.field("dropped", dropped);
  w.end_object();
  return w.str();
}

void RelayEngine::erase(Session* s) {
  forget(s);
  unlist(s);
  sessions_.erase(key_of(s->call_id(), s->from_tag()));
  check_drained();
}

void RelayEngine::expire(Session* s) {
  std::string reason = "closed";
  for (const auto& st : s->streams())
    if (!st->alive() && st->status() != "closed" && st->status() != "rejected") {
      reason = st->status();
      break;
    }
  for (char& ch : reason)
    if (ch == ' ' || ch == '-') ch = '_';
  ++sessions_expired_[reason];
  s->close_all("closed");  // no-op for streams already ended with their reason
  account_ended(*s);
  std::string json = s->stats_json();
  LOG_INFO("relay: session %s expired", log_safe(s->call_id()).c_str());
  uint64_t owner = s->owner();
  erase(s);
  if (expired_sink_) expired_sink_(owner, json);
}

void RelayEngine::on_sweep(uv_timer_t* t) {
  static_cast<RelayEngine*>(t->data)->sweep();
}

// Expiry policy (documented in mediaproxy.8, "Timers"):
//  * a stream without a final answer lives answer_timeout from its offer;
//  * an answered stream on hold ends after on_hold_timeout without packets;
//  * any other answered stream ends after stream_timeout without packets,
//    counted from the final answer or the last packet, whichever is later;
//  * a session ends when no stream of its current or previous offer is alive.
void RelayEngine::sweep() {
  const double now = ctx_.now();
  if (offload_ && (now - last_kernel_poll_ >= kKernelPollInterval ||
                   (ctx_.kernel_poll_soon && now - last_kernel_poll_ >= kKernelFastPollInterval))) {
    last_kernel_poll_ = now;
    ctx_.kernel_poll_soon = false;
    if (network_changed_) {
      network_changed_ = false;
      size_t moved = 0;
      std::string error;
      if (!offload_->forwarder().follow_network(moved, error)) LOG_WARN("%s", error.c_str());
      if (moved) LOG_INFO("kernel forwarding: %zu rule(s) moved to a changed route", moved);
      uv_poll_start(&network_poll_, UV_READABLE, on_network_change);
    }
    poll_kernel_counters();
    ctx_.kernel_polled_at = now;
  }
  std::vector<Session*> dead;
  for (auto& [key, session] : sessions_) {
    for (auto& st : session->streams()) {
      if (!st->alive()) continue;
      if (!st->confirmed) {
        if (now - st->created >= cfg_.answer_timeout)
          st->close("no-traffic timeout", cfg_.answer_timeout);
      } else if (st->on_hold()) {
        if (now - std::max(st->hold_since, st->last_activity) >= cfg_.on_hold_timeout)
          st->close("on hold timeout", cfg_.on_hold_timeout);
      } else if (now - std::max(*st->confirmed, st->last_activity) >= cfg_.stream_timeout) {
        const char* status = st->uses_ice()    ? "unselected ICE candidate"
                             : st->any_media() ? "conntrack timeout"
                                               : "no-traffic timeout";
        st->close(status, cfg_.stream_timeout);
      }
    }
    if (!session->alive()) dead.push_back(session.get());
  }
  for (Session* s : dead) expire(s);
}

void RelayEngine::on_sample(uv_timer_t* t) {
  auto* self = static_cast<RelayEngine*>(t->data);
  uint64_t total = self->ctx_.relayed_bytes;
  self->bps_relayed_ = 8.0 * static_cast<double>(total - self->bytes_at_last_sample_) /
                       self->cfg_.traffic_sampling_period;
  self->bytes_at_last_sample_ = total;
  self->bps_sampled_ = true;
}

void RelayEngine::halt(std::function<void()> drained) {
  halting_ = true;
  drained_ = std::move(drained);
  LOG_INFO("relay: halting: no new sessions; %zu session(s) left", sessions_.size());
  check_drained();
}

void RelayEngine::check_drained() {
  if (halting_ && sessions_.empty() && drained_) {
    auto cb = std::move(drained_);
    drained_ = nullptr;
    cb();
  }
}

void RelayEngine::shutdown() {
  std::vector<Session*> all;
  for (auto& [key, s] : sessions_) all.push_back(s.get());
  for (Session* s : all) expire(s);
}

void RelayEngine::account_ended(const Session& s) {
  for (const auto& st : s.streams())
    for (SubStream k : {kRtp, kRtcp})
      for (Side side : {kCaller, kCallee}) {
        const Leg& l = st->leg(k, side);
        ended_packets_[0][side] += l.packets;
        ended_bytes_[0][side] += l.bytes;
        ended_packets_[1][side] += l.all_kernel_packets();
        ended_bytes_[1][side] += l.all_kernel_bytes();
      }
}

}  // namespace mp::relay
