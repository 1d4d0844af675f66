// rtpproxy commands translated to dispatcher requests (rtpproxy_front_end.h).
#include "dispatcher/rtpproxy_front_end.h"

#include <rapidjson/document.h>

#include <algorithm>
#include <charconv>

#include "common/address.h"
#include "common/ip_address.h"
#include "common/log.h"
#include "dispatcher/rtpproxy_mapping.h"
#include "protocol/media.h"

namespace mp::dispatcher {

namespace {

using protocol::RtpproxyCommand;
using protocol::RtpproxyVerb;
namespace rtpp_error = protocol::rtpp_error;

constexpr uint64_t kSweepIntervalMs = 60 * 1000;
constexpr double kIdleBeforeSweep = 120;  // seconds a call state may outlive its session
constexpr size_t kMaxQueuedPerCall = 64;

const char* verb_name(RtpproxyVerb v) {
  switch (v) {
    case RtpproxyVerb::Version:
      return "V";
    case RtpproxyVerb::VersionFeature:
      return "VF";
    case RtpproxyVerb::Update:
      return "U";
    case RtpproxyVerb::Lookup:
      return "L";
    case RtpproxyVerb::Delete:
      return "D";
    case RtpproxyVerb::Query:
      return "Q";
    case RtpproxyVerb::Info:
      return "I";
    case RtpproxyVerb::Stats:
      return "G";
    case RtpproxyVerb::DeleteAll:
      return "X";
    case RtpproxyVerb::Play:
      return "P";
    case RtpproxyVerb::StopPlay:
      return "S";
    case RtpproxyVerb::Record:
      return "R";
    case RtpproxyVerb::Copy:
      return "C";
    case RtpproxyVerb::NoRecord:
      return "N";
  }
  return "?";
}

bool is_loopback(const std::string& ip) {
  auto v4 = parse_ipv4(ip);
  if (v4) return (v4->host_order() >> 24) == 127;
  return ip == "::1";
}

}  // namespace

RtpproxyFrontEnd::RtpproxyFrontEnd(uv_loop_t* loop, Dispatcher& dispatcher,
                                   const RtpproxyConfig& cfg)
    : loop_(loop), dispatcher_(dispatcher), cfg_(cfg), notifier_(loop) {
  uv_timer_init(loop, &sweep_timer_);
  sweep_timer_.data = this;
  uv_timer_start(&sweep_timer_, on_sweep, kSweepIntervalMs, kSweepIntervalMs);
  dispatcher_.add_session_end_observer(
      [this](const std::string& call_id, bool timed_out) { on_session_end(call_id, timed_out); });
}

RtpproxyFrontEnd::~RtpproxyFrontEnd() = default;

void RtpproxyFrontEnd::close() {
  uv_timer_stop(&sweep_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&sweep_timer_), nullptr);
  notifier_.close();
}

void RtpproxyFrontEnd::count_error(int code) {
  ++commands_["parse E" + std::to_string(code)];
}

RtpproxyFrontEnd::Call* RtpproxyFrontEnd::find(const std::string& call_id, const std::string& tag,
                                               CallKey* key) {
  auto ids = by_call_id_.find(call_id);
  if (ids == by_call_id_.end()) return nullptr;
  for (const CallKey k : ids->second) {
    Call& c = calls_.at(k);
    if (c.tag[0] == tag || c.tag[1] == tag) {
      if (key) *key = k;
      return &c;
    }
  }
  return nullptr;
}

void RtpproxyFrontEnd::handle(RtpproxyCommand cmd, const std::string& client_ip, Reply reply) {
  const char* verb = verb_name(cmd.verb);
  auto answer = [this, verb, &reply](std::string text) {
    ++commands_[std::string(verb) + (text.size() > 1 && text[0] == 'E' ? " error" : " ok")];
    reply(std::move(text));
  };
  switch (cmd.verb) {
    case RtpproxyVerb::Version:
      answer(std::string(protocol::kRtpproxyBaseVersion));
      return;
    case RtpproxyVerb::VersionFeature:
      // Notifications are a capability only while some target is permitted.
      answer(protocol::rtpproxy_capability_supported(cmd.feature) &&
                     !(cmd.feature == "20081224" &&
                       cfg_.notify_policy == RtpproxyConfig::NotifyPolicy::None)
                 ? "1"
                 : "0");
      return;
    case RtpproxyVerb::Info:
      answer(info(!cmd.verbose));
      return;
    case RtpproxyVerb::Stats:
      answer(stats(cmd));
      return;
    case RtpproxyVerb::Play:
    case RtpproxyVerb::StopPlay:
      LOG_INFO("rtpproxy: %s (play) is not supported; answered E%d", cmd.letters.c_str(),
               rtpp_error::kPlayFailed);
      answer(protocol::format_rtpproxy_error(rtpp_error::kPlayFailed));
      return;
    case RtpproxyVerb::Record:
    case RtpproxyVerb::Copy:
    case RtpproxyVerb::NoRecord:
      LOG_INFO("rtpproxy: %s (record/copy) is not supported; answered E%d", cmd.letters.c_str(),
               rtpp_error::kCopyFailed);
      answer(protocol::format_rtpproxy_error(rtpp_error::kCopyFailed));
      return;
    case RtpproxyVerb::DeleteAll:
      LOG_WARN("rtpproxy: X (delete every session) is refused; answered E%d",
               rtpp_error::kUnknownCommand);
      answer(protocol::format_rtpproxy_error(rtpp_error::kUnknownCommand));
      return;
    case RtpproxyVerb::Update:
    case RtpproxyVerb::Lookup:
    case RtpproxyVerb::Delete:
    case RtpproxyVerb::Query:
      break;
  }

  CallKey key = 0;
  Call* call = find(cmd.call_id, cmd.from_tag.tag, &key);
  if (!call && cmd.to_tag) call = find(cmd.call_id, cmd.to_tag->tag, &key);
  if (!call) {
    if (cmd.verb == RtpproxyVerb::Lookup) {  // rtpproxy: port 0, no session
      answer("0");
      return;
    }
    if (cmd.verb != RtpproxyVerb::Update) {
      answer(protocol::format_rtpproxy_error(rtpp_error::kSessionUnknown));
      return;
    }
    key = next_key_++;
    Call& fresh = calls_[key];
    fresh.call_id = cmd.call_id;
    fresh.tag[0] = cmd.from_tag.tag;
    by_call_id_[cmd.call_id].push_back(key);
    call = &fresh;
  }
  call->touched = now();
  Pending p{std::move(cmd), client_ip, verb, std::move(reply)};
  if (call->busy) {
    if (call->queue.size() >= kMaxQueuedPerCall) {
      LOG_WARN("rtpproxy: more than %zu commands waiting for one call; answered E%d",
               kMaxQueuedPerCall, rtpp_error::kOverload);
      respond(p, protocol::format_rtpproxy_error(rtpp_error::kOverload));
      return;
    }
    call->queue.push_back(std::move(p));
    return;
  }
  run(*call, key, std::move(p));
}

void RtpproxyFrontEnd::respond(Pending& p, std::string text) {
  ++commands_[std::string(p.verb) + (!text.empty() && text[0] == 'E' ? " error" : " ok")];
  p.reply(std::move(text));
}

void RtpproxyFrontEnd::run(Call& call, CallKey key, Pending p) {
  call.busy = true;
  switch (p.cmd.verb) {
    case RtpproxyVerb::Update:
      update(call, key, p);
      break;
    case RtpproxyVerb::Lookup:
      lookup(call, key, p);
      break;
    case RtpproxyVerb::Delete:
      remove(call, key, p);
      break;
    default:
      query(call, key, p);
      break;
  }
}

// Sends the reply, then starts the call's next queued command (if the call
// still exists: a D or an expiry may have removed it).
void RtpproxyFrontEnd::finish(CallKey key, Pending& p, std::string text) {
  respond(p, std::move(text));
  auto it = calls_.find(key);
  if (it == calls_.end()) return;
  Call& call = it->second;
  call.busy = false;
  if (call.queue.empty()) return;
  Pending next = std::move(call.queue.front());
  call.queue.erase(call.queue.begin());  // at most kMaxQueuedPerCall: a short move
  run(call, key, std::move(next));
}

void RtpproxyFrontEnd::update(Call& call, CallKey key, Pending& p) {
  const RtpproxyCommand& cmd = p.cmd;
  const unsigned n = cmd.from_tag.media_number ? cmd.from_tag.media_number : 1;
  auto fail = [this, key, &p, &call](int code, const char* why) {
    LOG_WARN("rtpproxy: %s for call %s answered E%d: %s", p.cmd.letters.c_str(),
             log_safe(p.cmd.call_id).c_str(), code, why);
    if (call.cseq[0] == 0 && call.cseq[1] == 0) {  // refused before it existed: no trace
      erase_call(key);
      respond(p, protocol::format_rtpproxy_error(code));
      return;
    }
    finish(key, p, protocol::format_rtpproxy_error(code));
  };
  if (n > protocol::kMaxMediaItems) return fail(rtpp_error::kBadArgument, "media number too high");
  const std::optional<IpAddress> party_ip = rtpproxy_party_address(cmd);
  if (!party_ip)
    return fail(rtpp_error::kBadAddress, "address not of the family its modifiers say");
  int side;
  if (cmd.from_tag.tag == call.tag[0]) {
    side = 0;
  } else if (cmd.from_tag.tag == call.tag[1] || call.tag[1].empty()) {
    side = 1;
    call.tag[1] = cmd.from_tag.tag;
  } else {
    return fail(rtpp_error::kSessionUnknown, "from-tag belongs to neither party");
  }
  if (cmd.to_tag && call.tag[1 - side].empty()) call.tag[1 - side] = cmd.to_tag->tag;

  std::string target_error;
  if (!cmd.notify_socket.empty() &&
      !parse_rtpproxy_notify_target(cmd.notify_socket, target_error)) {
    // Kamailio sends a timeout_socket without tag as "<ftag> <ttag> <socket>":
    // the to-tag then reads as the socket. Like rtpproxy, ignore a socket
    // that is not one and go on with the call.
    LOG_INFO("rtpproxy: %s for call %s: '%s' is not a notification socket; ignored",
             cmd.letters.c_str(), log_safe(cmd.call_id).c_str(),
             log_safe(cmd.notify_socket).c_str());
  } else if (!cmd.notify_socket.empty()) {
    if (!notify_permitted(cmd.notify_socket, p.client_ip))
      return fail(rtpp_error::kNotifyRefused,
                  "timeout notification target not permitted "
                  "([Rtpproxy] notify_targets)");
    call.notify_socket = cmd.notify_socket;
    call.notify_tag = cmd.notify_tag;
  }

  std::vector<StreamSdp> list = call.sdp[side];
  if (list.size() < n) list.resize(n);
  list[n - 1] = StreamSdp{true, cmd.address, cmd.port, cmd.modifiers.asymmetric};
  const bool retransmission =
      call.offerer == side && !call.answered && call.cseq[side] > 0 && list == call.sdp[side];
  // What the call was before this U: restored if the relay refuses it, so
  // that a refused offer (say, a second stream when ports ran out) leaves
  // the call as the relay still has it and later commands keep working.
  struct Before {
    int64_t cseq;
    std::vector<StreamSdp> sdp;
    int offerer;
    bool answered;
  };
  Before before{call.cseq[side], {}, call.offerer, call.answered};
  if (!retransmission) {  // (a retransmission's list equals call.sdp[side])
    ++call.cseq[side];
    before.sdp = std::move(call.sdp[side]);
    call.sdp[side] = std::move(list);
    call.offerer = side;
    call.answered = false;
  }
  std::string media;
  for (const StreamSdp& s : call.sdp[side]) {
    if (!media.empty()) media += ',';
    media += s.known ? rtpproxy_media_item(s.ip, s.port, s.asymmetric)
                     : rtpproxy_media_item(party_ip->is_v4() ? "0.0.0.0" : "::", 0);
  }
  const IpAddress::Family wanted = rtpproxy_reply_family(cmd, *party_ip);
  protocol::Request req;
  req.command = "update";
  // Built in place (an initializer list would copy every string twice).
  std::vector<protocol::Header>& h = req.headers;
  h.reserve(11);
  h.push_back({"call_id", call.call_id});
  h.push_back({"from_tag", call.tag[side]});
  if (!call.tag[1 - side].empty()) h.push_back({"to_tag", call.tag[1 - side]});
  h.push_back({"from_uri", "unknown"});
  h.push_back({"to_uri", "unknown"});
  h.push_back({"user_agent", "rtpproxy client"});
  h.push_back({"type", "request"});
  h.push_back({"cseq", std::to_string(call.cseq[side])});
  h.push_back({"signaling_ip", cmd.address});
  h.push_back({"media", std::move(media)});
  if (wanted != party_ip->family)  // a bridge: "<this party's family>,<the reply's>"
    h.push_back(
        {"families", std::string{family_digit(party_ip->family), ',', family_digit(wanted)}});
  const bool created = call.cseq[0] == 1 && call.cseq[1] == 0 && !retransmission && side == 0;
  dispatcher_.handle(
      std::move(req), [this, key, n, created, side, retransmission, before = std::move(before),
                       p = std::move(p)](std::string r) mutable {
        std::string ip;
        uint16_t port = 0;
        if (!rtpproxy_pick_port(r, n - 1, ip, port)) {
          LOG_WARN("rtpproxy: %s for call %s: the relay answered '%s'; answered E%d",
                   p.cmd.letters.c_str(), log_safe(p.cmd.call_id).c_str(), log_safe(r).c_str(),
                   rtpp_error::kNoPorts);
          auto it = calls_.find(key);
          if (it != calls_.end() && !retransmission) {
            Call& c = it->second;
            c.cseq[side] = before.cseq;
            c.sdp[side] = std::move(before.sdp);
            c.offerer = before.offerer;
            c.answered = before.answered;
          }
          if (created && it != calls_.end() && !dispatcher_.has_session(it->second.call_id)) {
            // Nothing was allocated: forget the call (a flood of refused calls
            // leaves no state behind; a retry starts afresh).
            erase_call(key);
            respond(p, protocol::format_rtpproxy_error(rtpp_error::kNoPorts));
            return;
          }
          finish(key, p, protocol::format_rtpproxy_error(rtpp_error::kNoPorts));
          return;
        }
        if (created) ++created_;
        finish(key, p,
               protocol::format_rtpproxy_port(port, ip, rtpproxy_reply_family_token(p.cmd, ip)));
      });
}

void RtpproxyFrontEnd::lookup(Call& call, CallKey key, Pending& p) {
  const RtpproxyCommand& cmd = p.cmd;
  const unsigned n = cmd.to_tag && cmd.to_tag->media_number ? cmd.to_tag->media_number
                     : cmd.from_tag.media_number            ? cmd.from_tag.media_number
                                                            : 1;
  auto fail = [this, key, &p](int code, const char* why) {
    LOG_WARN("rtpproxy: %s for call %s answered E%d: %s", p.cmd.letters.c_str(),
             log_safe(p.cmd.call_id).c_str(), code, why);
    finish(key, p, protocol::format_rtpproxy_error(code));
  };
  if (n > protocol::kMaxMediaItems) return fail(rtpp_error::kBadArgument, "media number too high");
  if (!rtpproxy_party_address(cmd))
    return fail(rtpp_error::kBadAddress, "address not of the family its modifiers say");
  const std::string& answerer_tag = cmd.to_tag ? cmd.to_tag->tag : std::string();
  int offerer;
  if (cmd.from_tag.tag == call.tag[0])
    offerer = 0;
  else if (cmd.from_tag.tag == call.tag[1])
    offerer = 1;
  else if (answerer_tag == call.tag[0] && call.tag[1].empty())
    offerer = 1;
  else
    return fail(rtpp_error::kSessionUnknown, "from-tag belongs to neither party");
  const int answerer = 1 - offerer;
  if (call.tag[offerer].empty()) call.tag[offerer] = cmd.from_tag.tag;
  if (call.tag[answerer].empty()) call.tag[answerer] = answerer_tag;
  if (call.offerer != offerer || call.cseq[offerer] == 0)
    return fail(rtpp_error::kSessionUnknown, "no offer from that party to answer");
  if (n > call.sdp[offerer].size())
    return fail(rtpp_error::kBadArgument, "the offer has fewer streams");
  if (call.sdp[answerer].size() < n) call.sdp[answerer].resize(n);
  call.sdp[answerer][n - 1] = StreamSdp{true, cmd.address, cmd.port, cmd.modifiers.asymmetric};
  call.answered = true;

  protocol::Request req;
  req.command = "update";
  std::vector<protocol::Header>& h = req.headers;
  h.reserve(11);
  h.push_back({"call_id", call.call_id});
  h.push_back({"from_tag", call.tag[offerer]});
  if (!call.tag[answerer].empty()) h.push_back({"to_tag", call.tag[answerer]});
  h.push_back({"from_uri", "unknown"});
  h.push_back({"to_uri", "unknown"});
  h.push_back({"user_agent", "rtpproxy client"});
  h.push_back({"type", "reply"});
  h.push_back({"cseq", std::to_string(call.cseq[offerer])});
  h.push_back({"signaling_ip", cmd.address});
  h.push_back({"media_index", std::to_string(n)});
  h.push_back({"media", rtpproxy_media_item(cmd.address, cmd.port, cmd.modifiers.asymmetric)});
  dispatcher_.handle(std::move(req), [this, key, n, p = std::move(p)](std::string r) mutable {
    std::string ip;
    uint16_t port = 0;
    if (!rtpproxy_pick_port(r, n - 1, ip, port)) {
      LOG_WARN("rtpproxy: %s for call %s: the relay answered '%s'; answered E%d",
               p.cmd.letters.c_str(), log_safe(p.cmd.call_id).c_str(), log_safe(r).c_str(),
               rtpp_error::kSessionUnknown);
      finish(key, p, protocol::format_rtpproxy_error(rtpp_error::kSessionUnknown));
      return;
    }
    finish(key, p,
           protocol::format_rtpproxy_port(port, ip, rtpproxy_reply_family_token(p.cmd, ip)));
  });
}

void RtpproxyFrontEnd::remove(Call& call, CallKey key, Pending& p) {
  protocol::Request req;
  req.command = "remove";
  req.headers.reserve(3);
  req.headers.push_back({"call_id", call.call_id});
  req.headers.push_back({"from_tag", call.tag[0]});
  if (!call.tag[1].empty()) req.headers.push_back({"to_tag", call.tag[1]});
  if (p.cmd.from_tag.media_number || (p.cmd.to_tag && p.cmd.to_tag->media_number))
    LOG_DEBUG("rtpproxy: D with a media number for call %s deletes the whole session",
              log_safe(call.call_id).c_str());
  dispatcher_.handle(std::move(req), [this, key, p = std::move(p)](std::string r) mutable {
    if (calls_.count(key)) erase_call(key);
    if (r == "removed") {
      respond(p, "0");
    } else {
      LOG_INFO("rtpproxy: D for call %s: the dispatcher answered '%s'",
               log_safe(p.cmd.call_id).c_str(), log_safe(r).c_str());
      respond(p, protocol::format_rtpproxy_error(rtpp_error::kSessionUnknown));
    }
  });
}

void RtpproxyFrontEnd::query(Call& call, CallKey key, Pending& p) {
  dispatcher_.query(
      call.call_id, call.tag[0], call.tag[1], [this, key, p = std::move(p)](std::string r) mutable {
        rapidjson::Document d;
        d.Parse(r.c_str(), r.size());
        if (d.HasParseError() || !d.IsObject()) {
          finish(key, p, protocol::format_rtpproxy_error(rtpp_error::kSessionUnknown));
          return;
        }
        auto num = [&d](const char* name) -> uint64_t {
          auto it = d.FindMember(name);
          return it != d.MemberEnd() && it->value.IsUint64() ? it->value.GetUint64() : 0;
        };
        protocol::RtpproxyQueryFigures f;
        f.ttl = static_cast<int>(num("ttl"));
        // npkts_ina counts the packets of the party whose tag comes first.
        auto it = calls_.find(key);
        const bool swapped = it != calls_.end() && p.cmd.from_tag.tag == it->second.tag[1];
        f.packets_from_caller = num(swapped ? "callee_packets" : "caller_packets");
        f.packets_from_callee = num(swapped ? "caller_packets" : "callee_packets");
        f.relayed = num("relayed");
        f.dropped = num("dropped");
        finish(key, p, protocol::format_rtpproxy_query(p.cmd, f));
      });
}

std::string RtpproxyFrontEnd::info(bool brief) const {
  protocol::RtpproxyInfo in;
  in.sessions_created = created_;
  in.active_sessions = calls_.size();
  size_t streams = 0;
  for (const auto& [key, c] : calls_) streams += std::max(c.sdp[0].size(), c.sdp[1].size());
  in.active_streams = streams;
  return protocol::format_rtpproxy_info(brief, in);
}

std::string RtpproxyFrontEnd::stats(const RtpproxyCommand& cmd) const {
  protocol::RtpproxyStatsValues v;
  v.set("nsess_created", created_);
  v.set("nsess_destroyed", deleted_ + timed_out_);
  v.set("nsess_timeout", timed_out_);
  v.set("nsess_complete", created_);
  return protocol::format_rtpproxy_stats(cmd, v);
}

void RtpproxyFrontEnd::on_session_end(const std::string& call_id, bool timed_out) {
  auto ids = by_call_id_.find(call_id);
  if (ids == by_call_id_.end()) return;
  const std::vector<CallKey> keys = ids->second;
  for (const CallKey k : keys) {
    auto it = calls_.find(k);
    if (it == calls_.end()) continue;
    Call& c = it->second;
    if (!timed_out) ++deleted_;  // a D: the record ends before its reply
    if (timed_out) {
      ++timed_out_;
      if (!c.notify_socket.empty()) {
        ++notified_;
        LOG_INFO("rtpproxy: media of call %s timed out; notifying %s with tag '%s'",
                 log_safe(call_id).c_str(), log_safe(c.notify_socket).c_str(),
                 log_safe(c.notify_tag).c_str());
        notifier_.send(c.notify_socket, c.notify_tag);
      }
    }
    erase_call(k);  // a command in flight finishes on a call that is gone
  }
}

void RtpproxyFrontEnd::erase_call(CallKey key) {
  auto it = calls_.find(key);
  if (it == calls_.end()) return;
  const std::string call_id = it->second.call_id;
  auto ids = by_call_id_.find(call_id);
  if (ids != by_call_id_.end()) {
    auto& keys = ids->second;
    keys.erase(std::remove(keys.begin(), keys.end(), key), keys.end());
    if (keys.empty()) by_call_id_.erase(ids);
  }
  // Commands queued behind find no call now, as rtpproxy would answer them.
  std::vector<Pending> queued = std::move(it->second.queue);
  calls_.erase(it);
  for (Pending& q : queued)
    respond(q, q.cmd.verb == RtpproxyVerb::Lookup
                   ? std::string("0")
                   : protocol::format_rtpproxy_error(rtpp_error::kSessionUnknown));
}

bool RtpproxyFrontEnd::notify_permitted(const std::string& target,
                                        const std::string& client_ip) const {
  using P = RtpproxyConfig::NotifyPolicy;
  switch (cfg_.notify_policy) {
    case P::None:
      return false;
    case P::List:
      return std::find(cfg_.notify_targets.begin(), cfg_.notify_targets.end(), target) !=
             cfg_.notify_targets.end();
    case P::Local: {
      std::string error;
      auto t = parse_rtpproxy_notify_target(target, error);
      if (!t) return false;
      return t->unix_socket || is_loopback(t->address) ||
             (!client_ip.empty() && t->address == client_ip);
    }
  }
  return false;
}

void RtpproxyFrontEnd::on_sweep(uv_timer_t* t) {
  auto* self = static_cast<RtpproxyFrontEnd*>(t->data);
  const double limit = self->now() - kIdleBeforeSweep;
  std::vector<CallKey> stale;
  for (const auto& [key, c] : self->calls_)
    if (!c.busy && c.touched < limit && !self->dispatcher_.has_session(c.call_id))
      stale.push_back(key);
  for (const CallKey key : stale) self->erase_call(key);
}

void RtpproxyFrontEnd::write_metrics(metrics::Exposition& out) const {
  for (const auto& [name, n] : commands_) {
    size_t sp = name.find(' ');
    out.counter("mediaproxy_rtpproxy_commands_total",
                "rtpproxy-protocol commands answered, by command and result.",
                static_cast<double>(n),
                {{"command", name.substr(0, sp)}, {"result", name.substr(sp + 1)}});
  }
  out.gauge("mediaproxy_rtpproxy_calls", "Calls known to the rtpproxy front end.",
            static_cast<double>(calls_.size()));
  out.counter("mediaproxy_rtpproxy_timeout_notifications_total",
              "Media timeouts reported to the proxy's timeout socket.",
              static_cast<double>(notified_));
}

}  // namespace mp::dispatcher
