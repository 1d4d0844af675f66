// Request routing, relay selection and session records (dispatcher.h).
//
// Call-ids are byte strings: the table is keyed by the exact bytes of the
// module's header, and those that come back from a relay inside JSON are
// decoded with json_string_bytes(), so a call-id with a NUL byte or bytes that
// are not UTF-8 is found again when its relay expires it. Whatever came from
// the network is printed with log_safe(); warnings a client can cause with
// every request are rate-limited (LOG_LIMITED).
#include "dispatcher/dispatcher.h"

#include <rapidjson/document.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <memory>

#include "common/json_writer.h"
#include "common/log.h"

namespace mp::dispatcher {

namespace {
constexpr uint64_t kCleanupIntervalMs = 60 * 1000;
}

Dispatcher::Dispatcher(uv_loop_t* loop, const DispatcherConfig& cfg) : loop_(loop), cfg_(cfg) {
  uv_timer_init(loop, &cleanup_timer_);
  cleanup_timer_.data = this;
  uv_timer_start(&cleanup_timer_, on_cleanup, kCleanupIntervalMs, kCleanupIntervalMs);
}

Dispatcher::~Dispatcher() = default;

void Dispatcher::close() {
  uv_timer_stop(&cleanup_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&cleanup_timer_), nullptr);
}

double Dispatcher::now() const {
  return static_cast<double>(uv_now(loop_)) / 1000.0;
}

void Dispatcher::add_relay(RelayLink* link) {
  relays_.push_back(link);
  link->on_expired([this, link](const std::string& json) { on_expired(link, json); });
}

void Dispatcher::remove_relay(RelayLink* link) {
  relays_.erase(std::remove(relays_.begin(), relays_.end(), link), relays_.end());
  load_.erase(link);  // its records lose their relay below
  for (auto& [id, rec] : sessions_)
    if (rec.relay == link) {
      rec.relay = nullptr;  // re-adopted by relay address on reconnect
      rec.orphaned_at = now();
    }
}

void Dispatcher::adopt_sessions(RelayLink* link, const std::vector<AdoptedSession>& sessions) {
  const std::string ip = link->relay_ip();
  std::unordered_map<std::string, bool> held;
  for (const auto& s : sessions) held[s.call_id] = true;
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    Record& rec = it->second;
    const bool mine = rec.relay == link || (!rec.relay && rec.relay_ip == ip);
    if (mine && !held.count(it->first) && !rec.expired_at) {
      lose_session(it->first, rec, "is no longer on its relay after the relay reconnected");
      it = erase_record(it);
      continue;
    }
    ++it;
  }
  for (const auto& s : sessions) {
    Record& rec = sessions_[s.call_id];
    rec.relay = link;
    rec.relay_ip = ip;
    rec.orphaned_at.reset();
    if (rec.dialog_id.empty()) rec.dialog_id = s.dialog_id;
    if (rec.from_tag.empty()) rec.from_tag = s.from_tag;
    if (rec.to_tag.empty()) rec.to_tag = s.to_tag;
    if (!rec.answered_at) rec.answered_at = s.answered_at;
  }
  recount_loads();  // relays changed for many records; this scanned the table anyway
}

Dispatcher::Sessions::iterator Dispatcher::erase_record(Sessions::iterator it) {
  count_out(it->second);
  if (it->second.expired_at) --expired_records_;
  return sessions_.erase(it);
}

void Dispatcher::count_in(const Record& rec) {
  if (rec.relay && !rec.expired_at) ++load_[rec.relay];
}

void Dispatcher::count_out(const Record& rec) {
  if (!rec.relay || rec.expired_at) return;
  auto it = load_.find(rec.relay);
  if (it != load_.end() && it->second > 0) --it->second;
}

void Dispatcher::recount_loads() {
  load_.clear();
  for (const auto& [id, rec] : sessions_) count_in(rec);
}

size_t Dispatcher::load_of(const RelayLink* relay) const {
  auto it = load_.find(relay);
  return it == load_.end() ? 0 : it->second;
}

std::vector<RelayLink*> Dispatcher::candidates(const std::string& preferred) const {
  std::vector<RelayLink*> out;
  for (RelayLink* r : relays_)
    if (r->usable()) out.push_back(r);
  if (out.size() > 1)  // least loaded first (load_ is kept exact, no scan here)
    std::stable_sort(out.begin(), out.end(), [this](const RelayLink* a, const RelayLink* b) {
      return load_of(a) < load_of(b);
    });
  if (!preferred.empty()) {
    auto it = std::find_if(out.begin(), out.end(),
                           [&](const RelayLink* r) { return r->relay_ip() == preferred; });
    if (it != out.end())
      std::rotate(out.begin(), it, it + 1);
    else
      LOG_LIMITED(Warning, nullptr, "preferred media relay %s is not available; choosing another",
                  log_safe(preferred).c_str());
  }
  return out;
}

void Dispatcher::handle(protocol::Request request, Done inner, log::LimitSource* source) {
  // Count every answer and time updates from request to reply.
  const uint64_t started = uv_hrtime();
  auto req_ptr = std::make_shared<const protocol::Request>(std::move(request));
  const protocol::Request& req = *req_ptr;
  const char* command = req.command == "update"   ? "update"
                        : req.command == "remove" ? "remove"
                                                  : "other";
  Done done = [this, command, started, inner = std::move(inner)](std::string reply) {
    const char* result = reply == "error" ? "error" : "ok";
    ++requests_[{command, result}];
    if (command[0] == 'u')
      update_latency_.observe(static_cast<double>(uv_hrtime() - started) / 1e9);
    inner(std::move(reply));
  };
  const std::string* call_id = req.find("call_id");
  if (!call_id) {
    LOG_LIMITED(Warning, source, "module request '%s' without call_id answered with error",
                log_safe(req.command).c_str());
    ++errors_["missing_call_id"];
    done("error");
    return;
  }
  if (req.command != "update" && req.command != "remove") {
    LOG_LIMITED(Warning, source, "unknown module command '%s' (call %s) answered with error",
                log_safe(req.command).c_str(), log_safe(*call_id).c_str());
    ++errors_["unknown_command"];
    done("error");
    return;
  }
  auto it = sessions_.find(*call_id);
  if (it != sessions_.end() && !it->second.expired_at) {
    if (!it->second.relay) {  // its relay is disconnected: no failover for live calls
      LOG_LIMITED(Warning, source,
                  "call %s is on relay %s, which is not connected: answered with error",
                  log_safe(*call_id).c_str(), it->second.relay_ip.c_str());
      ++errors_["relay_disconnected"];
      done("error");
      return;
    }
    forward(it->second, std::move(req_ptr), std::move(done));
    return;
  }
  if (req.command == "update") {
    const std::string* preferred = req.find("media_relay");
    update_new_session(std::move(req_ptr), candidates(preferred ? *preferred : ""), 0,
                       std::move(done));
    return;
  }
  if (it != sessions_.end()) {  // remove for a session that already expired
    erase_record(it);
    done("removed");
    return;
  }
  LOG_LIMITED(Info, source, "remove for unknown call %s answered with error",
              log_safe(*call_id).c_str());
  ++errors_["unknown_session"];
  done("error");
}

void Dispatcher::update_new_session(SharedRequest req, std::vector<RelayLink*> cands, size_t index,
                                    Done done) {
  const std::string& call_id = *req->find("call_id");
  if (index >= cands.size()) {
    LOG_LIMITED(Error, nullptr, "no relay could take call %s (%zu tried): answered with error",
                log_safe(call_id).c_str(), cands.size());
    ++errors_["no_relay"];
    done("error");
    return;
  }
  // A candidate may have disconnected (and its link gone) while an earlier
  // one was being tried: only relays still registered and usable are asked.
  if (std::find(relays_.begin(), relays_.end(), cands[index]) == relays_.end() ||
      !cands[index]->usable()) {
    update_new_session(std::move(req), std::move(cands), index + 1, std::move(done));
    return;
  }
  RelayLink* relay = cands[index];
  const protocol::Request& request = *req;
  relay->send("update", request.headers,
              [this, req = std::move(req), cands = std::move(cands), index, done = std::move(done),
               relay](std::optional<std::string> payload) mutable {
                const std::string& call = *req->find("call_id");
                if (!payload || *payload == "error" || *payload == "halting") {
                  if (payload && *payload == "halting") relay->mark_halting();
                  LOG_LIMITED(Warning, nullptr,
                              "relay %s refused call %s (%s); trying the next relay",
                              relay->relay_ip().c_str(), log_safe(call).c_str(),
                              payload ? log_safe(*payload).c_str() : "no answer");
                  update_new_session(std::move(req), std::move(cands), index + 1, std::move(done));
                  return;
                }
                Record& rec = sessions_[call];
                count_out(rec);  // a record it replaces (e.g. an expired one) stops counting
                if (rec.expired_at) --expired_records_;
                rec = Record{};
                rec.relay = relay;
                rec.relay_ip = relay->relay_ip();
                count_in(rec);
                if (const std::string* dialog = req->find("dialog_id")) rec.dialog_id = *dialog;
                note_request(rec, *req);
                done(std::move(*payload));
              });
}

void Dispatcher::forward(Record& rec, SharedRequest req, Done done) {
  RelayLink* relay = rec.relay;
  const protocol::Request& request = *req;
  if (const std::string* dialog = request.find("dialog_id"); dialog && rec.dialog_id.empty())
    rec.dialog_id = *dialog;
  relay->send(
      request.command, request.headers,
      [this, relay, done = std::move(done),
       req = std::move(req)](std::optional<std::string> payload) {
        const std::string& call_id = *req->find("call_id");
        const std::string& command = req->command;
        if (!payload || *payload == "error" || *payload == "halting") {
          LOG_LIMITED(Warning, nullptr, "relay %s answered %s for %s of call %s",
                      relay->relay_ip().c_str(), payload ? log_safe(*payload).c_str() : "nothing",
                      log_safe(command).c_str(), log_safe(call_id).c_str());
          done("error");
          return;
        }
        if (command == "update") {
          if (auto it = sessions_.find(call_id); it != sessions_.end())
            note_request(it->second, *req);
          done(std::move(*payload));
          return;
        }
        auto it = sessions_.find(call_id);
        std::string dialog_id = it != sessions_.end() ? it->second.dialog_id : std::string();
        if (it != sessions_.end()) erase_record(it);
        account(std::move(*payload), dialog_id, false, std::nullopt);
        notify_end(call_id, false);
        done("removed");
      });
}

void Dispatcher::query(const std::string& call_id, const std::string& from_tag,
                       const std::string& to_tag, Done done) {
  auto it = sessions_.find(call_id);
  if (it == sessions_.end() || !it->second.relay || it->second.expired_at) {
    done("error");
    return;
  }
  std::vector<protocol::Header> headers{{"call_id", call_id}, {"from_tag", from_tag}};
  if (!to_tag.empty()) headers.push_back({"to_tag", to_tag});
  it->second.relay->send("query", headers, [done](std::optional<std::string> payload) {
    done(payload && !payload->empty() && payload->front() == '{' ? std::move(*payload)
                                                                 : std::string("error"));
  });
}

void Dispatcher::on_expired(RelayLink* relay, const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.c_str(), json.size());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("call_id") || !d["call_id"].IsString()) {
    LOG_ERROR("relay %s sent an unreadable expired report", relay->relay_ip().c_str());
    return;
  }
  const std::string call_id =
      json_string_bytes({d["call_id"].GetString(), d["call_id"].GetStringLength()});
  auto it = sessions_.find(call_id);
  if (it == sessions_.end() || it->second.relay != relay) {
    LOG_DEBUG("expired report for unknown call %s from relay %s ignored", log_safe(call_id).c_str(),
              relay->relay_ip().c_str());
    return;
  }
  bool all_ice = true;
  if (d.HasMember("streams") && d["streams"].IsArray()) {
    for (const auto& st : d["streams"].GetArray())
      if (!st.IsObject() || !st.HasMember("status") || !st["status"].IsString() ||
          std::string(st["status"].GetString()) != "unselected ICE candidate")
        all_ice = false;
    if (d["streams"].GetArray().Empty()) all_ice = false;  // spec G.18: not for an empty list
  }
  account(json, it->second.dialog_id, !all_ice, all_ice);
  notify_end(call_id, !all_ice);
  // Spec B.5: an answered call with a dialog id (that did not just move to
  // another ICE path) keeps its record, so the proxy's later `remove` gets
  // `removed`; anything else is forgotten now.
  const bool answered = d.HasMember("start_time") && !d["start_time"].IsNull();
  if (!it->second.dialog_id.empty() && answered && !all_ice) {
    if (hangup_) hangup_(it->second.dialog_id, call_id);
    count_out(it->second);
    if (!it->second.expired_at) ++expired_records_;  // a repeated report counts once
    it->second.expired_at = now();
  } else {
    erase_record(it);
  }
}

void Dispatcher::note_request(Record& rec, const protocol::Request& req) {
  if (const std::string* t = req.find("from_tag"); t && rec.from_tag.empty()) rec.from_tag = *t;
  const std::string* type = req.find("type");
  if (type && *type == "reply") {
    if (const std::string* t = req.find("to_tag")) rec.to_tag = *t;
    if (!rec.answered_at) {
      timespec ts{};
      clock_gettime(CLOCK_REALTIME, &ts);
      rec.answered_at = static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
    }
  }
}

void Dispatcher::lose_session(const std::string& call_id, const Record& rec, const char* why) {
  LOG_WARN("call %s %s (relay %s): its media is gone", log_safe(call_id).c_str(), why,
           rec.relay_ip.c_str());
  // The relay's statistics died with it: the record says what the
  // dispatcher knows, with no streams, and that the relay lost the call.
  JsonWriter w;
  w.begin_object();
  w.field("call_id", call_id);
  w.field("from_tag", rec.from_tag);
  w.field("from_uri", "");
  if (rec.to_tag.empty())
    w.field("to_tag", std::optional<std::string>());
  else
    w.field("to_tag", rec.to_tag);
  w.field("to_uri", "");
  w.field("start_time", rec.answered_at);
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  const double wall = static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
  w.field("duration",
          static_cast<int64_t>(rec.answered_at ? std::floor(wall - *rec.answered_at) : 0));
  w.field("caller_ua", "Unknown");
  w.field("callee_ua", "Unknown");
  w.field("username", std::optional<std::string>());
  w.key("streams");
  w.begin_array();
  w.end_array();
  w.field("relay_lost", true);
  w.end_object();
  account(w.str(), rec.dialog_id, rec.answered_at.has_value(), false);
  notify_end(call_id, rec.answered_at.has_value());
  if (hangup_ && rec.answered_at && !rec.dialog_id.empty()) hangup_(rec.dialog_id, call_id);
}

// Appends the dispatcher's fields to the relay's record (spec D.13), writes it
// to the log and hands it to the record sink (accounting).
void Dispatcher::account(std::string record, const std::string& dialog_id, bool timed_out,
                         std::optional<bool> all_streams_ice) {
  // Nobody to tell (no accounting backend, INFO not logged): nothing to build.
  if (!record_sink_ && !log::enabled(log::Level::Info)) return;
  if (!record.empty() && record.back() == '}') {
    record.pop_back();
    const size_t last = record.find_last_not_of(" \t\r\n");
    bool empty = last != std::string::npos && record[last] == '{';
    auto add = [&](std::string_view k, auto v) {
      record += empty ? "" : ", ";
      empty = false;
      record += json_quote(k) + ": ";
      record += v;
    };
    if (all_streams_ice) {
      add("timed_out", std::string(timed_out ? "true" : "false"));
      add("dialog_id", dialog_id.empty() ? std::string("null") : json_quote(dialog_id));
      add("all_streams_ice", std::string(*all_streams_ice ? "true" : "false"));
    } else {
      add("dialog_id", dialog_id.empty() ? std::string("null") : json_quote(dialog_id));
      add("timed_out", std::string(timed_out ? "true" : "false"));
    }
    record += '}';
  }
  // The relay's JSON is printable ASCII; anything else is escaped, so that a
  // record is always exactly one log line.
  const bool printable = std::all_of(record.begin(), record.end(), [](char ch) {
    return static_cast<unsigned char>(ch) >= 0x20 && static_cast<unsigned char>(ch) < 0x7f;
  });
  LOG_INFO("session ended: %s",
           printable ? record.c_str() : log_safe(record, record.size()).c_str());
  if (record_sink_) record_sink_(record);
}

void Dispatcher::ask_all_relays(
    const std::string& command,
    std::function<std::string(const std::vector<std::optional<std::string>>&)> join, Done done) {
  if (relays_.empty()) {
    done("[]");
    return;
  }
  struct Gather {
    std::vector<std::optional<std::string>> replies;
    size_t outstanding = 0;
  };
  auto g = std::make_shared<Gather>();
  g->replies.resize(relays_.size());
  g->outstanding = relays_.size();
  for (size_t i = 0; i < relays_.size(); ++i) {
    relays_[i]->send(command, {}, [g, i, join, done](std::optional<std::string> payload) {
      g->replies[i] = std::move(payload);
      if (--g->outstanding == 0) done(join(g->replies));
    });
  }
}

void Dispatcher::summary(Done done) {
  std::vector<std::string> ips;
  for (const RelayLink* r : relays_) ips.push_back(r->relay_ip());
  ask_all_relays(
      "summary",
      [ips](const std::vector<std::optional<std::string>>& replies) {
        // One object per relay; a relay that failed shows as an error object.
        std::string out = "[";
        for (size_t k = 0; k < replies.size(); ++k) {
          if (k) out += ", ";
          const auto& r = replies[k];
          if (r && !r->empty() && (*r)[0] == '{')
            out += *r;
          else
            out += "{\"status\": \"error\", \"ip\": " + json_quote(ips[k]) + "}";
        }
        return out + "]";
      },
      std::move(done));
}

size_t Dispatcher::live_session_count() const {
  return sessions_.size() - expired_records_;  // no scan: a scrape at 50,000 calls took ~5 ms
}

size_t Dispatcher::usable_relay_count() const {
  size_t usable = 0;
  for (const RelayLink* r : relays_)
    if (r->usable()) ++usable;
  return usable;
}

void Dispatcher::write_metrics(metrics::Exposition& out) const {
  const size_t usable = usable_relay_count();
  out.gauge("mediaproxy_dispatcher_relays", "Relays known to the dispatcher, by state.",
            static_cast<double>(usable), {{"state", "active"}});
  out.gauge("mediaproxy_dispatcher_relays", "", static_cast<double>(relays_.size() - usable),
            {{"state", "halting"}});
  out.gauge("mediaproxy_dispatcher_sessions", "Calls the dispatcher routes to a relay.",
            static_cast<double>(live_session_count()));
  for (const auto& [key, n] : requests_)
    out.counter("mediaproxy_dispatcher_requests_total",
                "Proxy-module requests answered, by command and result.", static_cast<double>(n),
                {{"command", key.first}, {"result", key.second}});
  for (const auto& [kind, n] : errors_)
    out.counter("mediaproxy_dispatcher_errors_total", "Requests answered error, by cause.",
                static_cast<double>(n), {{"kind", kind}});
  out.histogram("mediaproxy_dispatcher_update_latency_seconds",
                "Time from an update request to its reply.", update_latency_.bounds,
                update_latency_.buckets, update_latency_.overflow, update_latency_.sum);
}

void Dispatcher::on_cleanup(uv_timer_t* t) {
  auto* self = static_cast<Dispatcher*>(t->data);
  const double limit = self->now() - self->cfg_.cleanup_expired_sessions_after;
  const double dead_limit = self->now() - self->cfg_.cleanup_dead_relays_after;
  for (auto it = self->sessions_.begin(); it != self->sessions_.end();) {
    if (it->second.expired_at && *it->second.expired_at < limit) {
      it = self->erase_record(it);
    } else if (it->second.orphaned_at && *it->second.orphaned_at < dead_limit) {
      self->lose_session(it->first, it->second, "was on a relay that never came back");
      it = self->erase_record(it);
    } else {
      ++it;
    }
  }
}

}  // namespace mp::dispatcher
