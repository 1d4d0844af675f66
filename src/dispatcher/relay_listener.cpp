// The TLS relay link and its listener (relay_listener.h; spec B.1-B.4, B.7, G.12).
//
// This file owns TlsRelayLink, the RelayLink of one connected relay: the
// per-connection sequence counter, one relay_timeout timer per command, the
// "timed out" state and its relay_recover_interval disconnect timer (cleared
// by a ping), line splitting of what the relay sends (at most
// kMaxRelayLineAtDispatcher per line; longer or unparseable lines close the
// link), ping/pong, `expired` reports, and the `remove` that cleans up a
// session a relay created after its `update` had already timed out. It also
// owns RelayListener: the uv_tcp listener, the TLS handshakes in progress, the
// one-link-per-IP table and the `sessions 0` query made on every new link.
// Call-ids in the relay's JSON are byte strings (json_string_bytes()).
//
// Lifetime: a link is owned by RelayListener::links_. It is destroyed either
// from its connection's on_closed callback (which the Connection owns, so no
// link code is on the stack), or when it is replaced / the listener closes,
// after detach() so that its connection never calls back into freed memory.
// Its timers are heap handles freed by their close callbacks.
#include "dispatcher/relay_listener.h"

#include <arpa/inet.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <map>
#include <unordered_set>
#include <utility>

#include "common/json_writer.h"
#include "common/log.h"
#include "common/tcp_listener.h"
#include "protocol/relay_link.h"
#include "protocol/session_batch.h"

namespace mp::dispatcher {

namespace {

// Timed-out updates remembered for the orphan cleanup of spec G.12.
constexpr size_t kMaxTimedOutRecords = 1024;
constexpr size_t kMaxQueuedBytes = 16u * 1024 * 1024;

uint64_t seconds_to_ms(double s) {
  if (!(s > 0)) return 1;
  const double ms = std::llround(s * 1000.0);
  return ms < 1 ? 1 : static_cast<uint64_t>(ms);
}

std::string ip_of(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(ss).sin_addr, buf, sizeof buf);
  } else if (ss.ss_family == AF_INET6) {
    const auto& a6 = reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&a6))
      inet_ntop(AF_INET, &a6.s6_addr[12], buf, sizeof buf);
    else
      inet_ntop(AF_INET6, &a6, buf, sizeof buf);
  }
  return buf;
}

// A heap timer handle that frees itself once closed.
struct Timer {
  uv_timer_t handle;
  std::function<void()> fire;

  static Timer* start(uv_loop_t* loop, uint64_t ms, std::function<void()> fire) {
    auto* t = new Timer;
    uv_timer_init(loop, &t->handle);
    t->handle.data = t;
    t->fire = std::move(fire);
    uv_timer_start(
        &t->handle, [](uv_timer_t* h) { static_cast<Timer*>(h->data)->fire(); }, ms, 0);
    return t;
  }
  // Stops and frees the timer (after the loop has processed the close).
  static void dispose(Timer*& t) {
    if (!t) return;
    uv_timer_stop(&t->handle);
    uv_close(reinterpret_cast<uv_handle_t*>(&t->handle),
             [](uv_handle_t* h) { delete static_cast<Timer*>(h->data); });
    t = nullptr;
  }
};

// Connections of each listener still in their TLS handshake (no link yet),
// so that close() can abort them. Keyed by listener; pruned lazily.
std::unordered_map<const RelayListener*, std::vector<std::weak_ptr<tls::Connection>>>&
handshaking() {
  static std::unordered_map<const RelayListener*, std::vector<std::weak_ptr<tls::Connection>>> m;
  return m;
}

}  // namespace

class TlsRelayLink final : public RelayLink {
 public:
  TlsRelayLink(RelayListener& owner, std::shared_ptr<tls::Connection> conn, std::string ip)
      : owner_(owner), conn_(std::move(conn)), ip_(std::move(ip)) {
    arm_silence_timer();
  }
  ~TlsRelayLink() override {
    // Everything should already have been failed by shut_down(); be safe.
    shut_down("relay link destroyed");
  }
  TlsRelayLink(const TlsRelayLink&) = delete;
  TlsRelayLink& operator=(const TlsRelayLink&) = delete;

  void send(const std::string& command, const std::vector<protocol::Header>& headers,
            ReplyCallback on_reply) override {
    if (!connected_) {
      on_reply(std::nullopt);
      return;
    }
    protocol::RelayCommand cmd;
    cmd.name = command;
    cmd.seq = next_seq_++;
    for (const auto& h : headers) cmd.headers.push_back({h.name, h.value});
    Pending p;
    p.command = command;
    p.callback = std::move(on_reply);
    if (command == "update") p.remove_headers = remove_headers_of(headers);
    const uint64_t seq = cmd.seq;
    p.timer = Timer::start(owner_.loop_, seconds_to_ms(owner_.cfg_.relay_timeout),
                           [this, seq] { on_timeout(seq); });
    pending_.emplace(seq, std::move(p));
    if (!conn_->write(protocol::serialize_command(cmd))) {
      // The connection is going away; on_closed will fail everything pending.
      LOG_WARN("relay link %s: could not queue %s %llu", ip_.c_str(), command.c_str(),
               static_cast<unsigned long long>(seq));
    }
  }

  void on_expired(ExpiredCallback cb) override { expired_ = std::move(cb); }
  std::string relay_ip() const override { return ip_; }
  bool usable() const override { return connected_ && ready_ && !halting_ && !timed_out_; }
  void mark_halting() override {
    if (!halting_) LOG_INFO("relay %s is halting: no new sessions go to it", ip_.c_str());
    halting_ = true;
  }

  // Learns the calls the relay holds (on a new connection, and after a
  // timed-out relay pings again), then marks it ready. It pages through them
  // with `sessions_from` (protocol/session_batch.h), so a relay with more
  // calls than fit in one 4 MiB line can join; a relay that does not know the
  // command answers `error` and is asked `sessions` in one line, as before.
  // Small enough that a page of sessions with many streams stays far below
  // the 4 MiB line limit.
  static constexpr size_t kAdoptPageSessions = 200;

  void query_sessions() {
    sessions_query_pending_ = true;
    adopted_ids_.clear();
    query_sessions_after(0);
  }

  void query_sessions_after(uint64_t cursor) {
    send(std::string(protocol::kSessionsFromCommand),
         protocol::sessions_from_headers({cursor, kAdoptPageSessions}),
         [this](std::optional<std::string> payload) {
           if (!payload) return;  // timed out (asked again once it pings) or link gone
           on_sessions_page(*payload);
         });
  }

  void on_sessions_page(const std::string& payload) {
    if (payload == "error") {
      LOG_INFO("relay %s does not page its sessions (sessions_from); asking for all at once",
               ip_.c_str());
      send("sessions", {}, [this](std::optional<std::string> whole) {
        if (!whole) return;
        on_sessions_reply(*whole);
      });
      return;
    }
    std::string why;
    const auto batch = protocol::parse_sessions_batch(payload, why);
    rapidjson::Document d;
    if (batch) {
      const std::string array = "[" + std::string(batch->objects) + "]";
      d.Parse(array.c_str(), array.size());
    }
    if (!batch || d.HasParseError() || !d.IsArray()) {
      LOG_ERROR("relay %s answered sessions_from with something else than a batch of sessions%s%s",
                ip_.c_str(), why.empty() ? "" : ": ", why.c_str());
      fail_link("bad sessions_from answer");
      return;
    }
    collect_call_ids(d, adopted_ids_);
    if (batch->more) {
      query_sessions_after(batch->cursor);
      return;
    }
    become_ready(std::move(adopted_ids_));
    adopted_ids_.clear();
  }

  void on_data(std::string_view data) {
    if (!connected_) return;
    buffer_.append(data);
    size_t start = 0;
    while (connected_) {
      const size_t nl = buffer_.find('\n', scan_from_);
      if (nl == std::string::npos) {
        scan_from_ = buffer_.size();
        if (buffer_.size() - start > protocol::kMaxRelayLineAtDispatcher) {
          fail_link("line longer than the limit of 4 MiB");
          return;
        }
        break;
      }
      size_t end = nl;
      if (end > start && buffer_[end - 1] == '\r') --end;
      if (end - start > protocol::kMaxRelayLineAtDispatcher) {
        fail_link("line longer than the limit of 4 MiB");
        return;
      }
      std::string line = buffer_.substr(start, end - start);
      start = nl + 1;
      scan_from_ = start;
      handle_line(line);
    }
    buffer_.erase(0, start);
    scan_from_ = scan_from_ >= start ? scan_from_ - start : 0;
  }

  // The connection ended or is being dropped: fails pending commands, stops
  // timers and takes the relay out of the dispatcher. Idempotent.
  void shut_down(const std::string& reason) {
    if (!connected_ && pending_.empty() && !recover_timer_ && !silence_timer_) return;
    const bool was_connected = connected_;
    connected_ = false;
    Timer::dispose(recover_timer_);
    Timer::dispose(silence_timer_);
    if (was_connected) owner_.dispatcher_.remove_relay(this);
    auto pending = std::move(pending_);
    pending_.clear();
    for (auto& [seq, p] : pending) Timer::dispose(p.timer);
    if (!pending.empty())
      LOG_WARN("relay %s disconnected (%s): %zu pending command(s) failed", ip_.c_str(),
               log_safe(reason).c_str(), pending.size());
    for (auto& [seq, p] : pending)
      if (p.callback) p.callback(std::nullopt);
  }

  // Accepts a relay's connection on the listener (friend access to it).
  static void accept_from(RelayListener* self, uv_stream_t* server);

  // Drops this link's connection without further callbacks (replacement, shutdown).
  void drop(const std::string& reason) {
    conn_->detach();
    conn_->close(reason);
    shut_down(reason);
  }

 private:
  struct Pending {
    std::string command;
    ReplyCallback callback;
    Timer* timer = nullptr;
    std::vector<protocol::Header> remove_headers;  // update only: call_id, from_tag, to_tag
  };
  struct TimedOut {
    uint64_t seq;
    std::string command;
    std::vector<protocol::Header> remove_headers;
  };

  static std::vector<protocol::Header> remove_headers_of(
      const std::vector<protocol::Header>& headers) {
    std::vector<protocol::Header> out;
    for (const char* name : {"call_id", "from_tag", "to_tag"}) {
      const protocol::Header* found = nullptr;
      for (const auto& h : headers)
        if (h.name == name && !h.value.empty()) found = &h;  // last one wins, as Request::find
      if (found) out.push_back(*found);
    }
    return out;
  }

  void fail_link(const std::string& why) {
    LOG_WARN("relay link %s: %s; closing it", ip_.c_str(), log_safe(why).c_str());
    conn_->close(why);
    shut_down(why);
  }

  void handle_line(const std::string& line) {
    if (line.empty()) return;  // tolerated: stray blank line
    std::string why;
    auto msg = protocol::parse_relay_message(line, why);
    if (!msg) {
      fail_link("unparseable line from relay (" + why + ")");
      return;
    }
    switch (msg->kind) {
      case protocol::RelayMessage::Kind::Ping:
        conn_->write("pong\r\n");
        arm_silence_timer();
        if (timed_out_) {
          LOG_INFO("relay %s pinged again: no longer timed out", ip_.c_str());
          timed_out_ = false;
          Timer::dispose(recover_timer_);
          if (!ready_ && !sessions_query_pending_) query_sessions();
        }
        return;
      case protocol::RelayMessage::Kind::Pong:
        LOG_DEBUG("relay %s sent an unexpected pong; ignored", ip_.c_str());
        return;
      case protocol::RelayMessage::Kind::Expired:
        if (expired_) expired_(msg->payload);
        return;
      case protocol::RelayMessage::Kind::Reply:
        handle_reply(msg->seq, std::move(msg->payload));
        return;
    }
  }

  void handle_reply(uint64_t seq, std::string payload) {
    auto it = pending_.find(seq);
    if (it != pending_.end()) {
      Pending p = std::move(it->second);
      pending_.erase(it);
      Timer::dispose(p.timer);
      if (p.callback) p.callback(std::move(payload));
      return;
    }
    auto late = std::find_if(timed_out_cmds_.begin(), timed_out_cmds_.end(),
                             [seq](const TimedOut& t) { return t.seq == seq; });
    if (late == timed_out_cmds_.end()) {
      LOG_WARN("relay %s answered unknown command %llu; ignored", ip_.c_str(),
               static_cast<unsigned long long>(seq));
      return;
    }
    TimedOut t = std::move(*late);
    timed_out_cmds_.erase(late);
    if (t.command == "sessions") {
      LOG_INFO("relay %s answered sessions late; adopting its sessions", ip_.c_str());
      on_sessions_reply(payload);
      return;
    }
    if (t.command == "update" && payload != "error" && payload != "halting" && payload != "None" &&
        !t.remove_headers.empty()) {
      LOG_WARN("relay %s created a session for update %llu after it timed out; removing it",
               ip_.c_str(), static_cast<unsigned long long>(seq));
      send("remove", t.remove_headers, [ip = ip_](std::optional<std::string> r) {
        LOG_DEBUG("relay %s: orphan remove answered %s", ip.c_str(),
                  r ? log_safe(*r).c_str() : "(nothing)");
      });
      return;
    }
    LOG_INFO("relay %s answered %s %llu after it timed out; ignored", ip_.c_str(),
             t.command.c_str(), static_cast<unsigned long long>(seq));
  }

  void on_sessions_reply(const std::string& payload) {
    rapidjson::Document d;
    d.Parse(payload.c_str(), payload.size());
    if (d.HasParseError() || !d.IsArray()) {
      sessions_query_pending_ = false;
      LOG_ERROR("relay %s answered sessions with something that is not a JSON array", ip_.c_str());
      fail_link("bad sessions answer");
      return;
    }
    std::vector<AdoptedSession> ids;
    collect_call_ids(d, ids);
    become_ready(std::move(ids));
  }

  static void collect_call_ids(const rapidjson::Document& sessions,
                               std::vector<AdoptedSession>& ids) {
    auto text = [](const rapidjson::Value& o, const char* key) {
      auto it = o.FindMember(key);
      if (it == o.MemberEnd() || !it->value.IsString()) return std::string();
      return json_string_bytes({it->value.GetString(), it->value.GetStringLength()});
    };
    for (const auto& s : sessions.GetArray()) {
      if (!s.IsObject() || !s.HasMember("call_id") || !s["call_id"].IsString()) continue;
      AdoptedSession a;
      a.call_id = text(s, "call_id");
      a.dialog_id = text(s, "dialog_id");
      a.from_tag = text(s, "from_tag");
      a.to_tag = text(s, "to_tag");
      auto start = s.FindMember("start_time");
      if (start != s.MemberEnd() && start->value.IsNumber() && start->value.GetDouble() > 0)
        a.answered_at = start->value.GetDouble();
      ids.push_back(std::move(a));
    }
  }

  void become_ready(std::vector<AdoptedSession> ids) {
    sessions_query_pending_ = false;
    ready_ = true;
    LOG_INFO("relay %s is ready with %zu session(s)", ip_.c_str(), ids.size());
    owner_.dispatcher_.adopt_sessions(this, ids);
  }

  void on_timeout(uint64_t seq) {
    auto it = pending_.find(seq);
    if (it == pending_.end()) return;
    Pending p = std::move(it->second);
    pending_.erase(it);
    Timer::dispose(p.timer);
    timed_out_cmds_.push_back({seq, p.command, std::move(p.remove_headers)});
    if (timed_out_cmds_.size() > kMaxTimedOutRecords) timed_out_cmds_.pop_front();
    if (p.command == "sessions" || p.command == protocol::kSessionsFromCommand)
      sessions_query_pending_ = false;
    LOG_WARN("relay %s did not answer %s %llu in time", ip_.c_str(), p.command.c_str(),
             static_cast<unsigned long long>(seq));
    if (!timed_out_) {
      timed_out_ = true;
      const uint64_t ms = static_cast<uint64_t>(owner_.cfg_.relay_recover_interval) * 1000;
      recover_timer_ = Timer::start(owner_.loop_, ms ? ms : 1, [this] {
        Timer::dispose(recover_timer_);
        fail_link("timed out and did not ping within relay_recover_interval");
      });
    }
    if (p.callback) p.callback(std::nullopt);
  }

  RelayListener& owner_;
  std::shared_ptr<tls::Connection> conn_;
  std::string ip_;
  bool connected_ = true;
  bool ready_ = false;  // `sessions` answered
  bool sessions_query_pending_ = false;
  std::vector<AdoptedSession> adopted_ids_;  // the calls of the pages read so far
  bool halting_ = false;
  bool timed_out_ = false;
  uint64_t next_seq_ = 0;
  std::map<uint64_t, Pending> pending_;
  std::deque<TimedOut> timed_out_cmds_;
  Timer* recover_timer_ = nullptr;
  // A relay that stops pinging (its host died without closing the TCP
  // connection) is dropped after relay_dead_after seconds of silence.
  Timer* silence_timer_ = nullptr;
  void arm_silence_timer() {
    Timer::dispose(silence_timer_);
    const uint64_t ms = static_cast<uint64_t>(owner_.cfg_.relay_dead_after) * 1000;
    silence_timer_ = Timer::start(owner_.loop_, ms, [this] {
      Timer::dispose(silence_timer_);
      fail_link("no ping for " + std::to_string(owner_.cfg_.relay_dead_after) + " s");
    });
  }
  ExpiredCallback expired_;
  std::string buffer_;
  size_t scan_from_ = 0;
};

void TlsRelayLink::accept_from(RelayListener* self, uv_stream_t* server) {
  struct Slot {
    std::weak_ptr<tls::Connection> conn;
    TlsRelayLink* link = nullptr;
  };
  auto slot = std::make_shared<Slot>();
  tls::ConnectionCallbacks cb;
  cb.on_connected = [self, slot](const tls::Subject&) {
    auto conn = slot->conn.lock();
    if (!conn) return;
    auto& pending = handshaking()[self];
    pending.erase(std::remove_if(pending.begin(), pending.end(),
                                 [&](const std::weak_ptr<tls::Connection>& w) {
                                   auto c = w.lock();
                                   return !c || c == conn;
                                 }),
                  pending.end());
    const std::string ip = ip_of(conn->peer_sockaddr());
    if (auto old = self->links_.find(ip); old != self->links_.end()) {
      LOG_WARN("relay %s connected again: replacing its previous connection", ip.c_str());
      std::unique_ptr<TlsRelayLink> gone = std::move(old->second);
      self->links_.erase(old);
      gone->drop("replaced by a new connection from the same relay");
    }
    auto link = std::make_unique<TlsRelayLink>(*self, conn, ip);
    TlsRelayLink* raw = link.get();
    slot->link = raw;
    self->links_[ip] = std::move(link);
    LOG_INFO("relay %s connected (%s)", ip.c_str(), conn->protocol_description().c_str());
    self->dispatcher_.add_relay(raw);
    raw->query_sessions();
  };
  cb.on_data = [slot](std::string_view data) {
    if (slot->link) slot->link->on_data(data);
  };
  cb.on_closed = [self, slot](const std::string& reason) {
    TlsRelayLink* link = slot->link;
    if (!link) return;  // handshake failed: Connection logged it
    slot->link = nullptr;
    LOG_INFO("relay %s disconnected: %s", link->relay_ip().c_str(), log_safe(reason).c_str());
    link->shut_down(reason);
    auto it = self->links_.find(link->relay_ip());
    if (it != self->links_.end() && it->second.get() == link)
      self->links_.erase(it);  // destroys link
  };
  tls::ConnectionOptions opt;
  opt.label = "relay link";
  opt.passport = self->passport_;
  opt.max_queued_bytes = kMaxQueuedBytes;
  auto conn = tls::Connection::create(self->loop_, self->tls_, std::move(cb), std::move(opt));
  slot->conn = conn;
  auto& pending = handshaking()[self];
  pending.erase(std::remove_if(pending.begin(), pending.end(),
                               [](const std::weak_ptr<tls::Connection>& w) { return w.expired(); }),
                pending.end());
  pending.push_back(conn);
  if (std::string why; !conn->accept(server, why))
    LOG_WARN("relay listener: cannot accept a connection: %s", why.c_str());
}

RelayListener::RelayListener(uv_loop_t* loop, Dispatcher& dispatcher,
                             std::shared_ptr<const tls::TlsContext> tls, tls::Passport passport,
                             const DispatcherConfig& cfg)
    : loop_(loop),
      dispatcher_(dispatcher),
      tls_(std::move(tls)),
      passport_(std::move(passport)),
      cfg_(cfg) {}

RelayListener::~RelayListener() {
  close();
  handshaking().erase(this);
}

bool RelayListener::listen(Endpoint where, std::string& error) {
  if (listening_) {
    error = "relay listener already listening";
    return false;
  }
  listening_ = true;
  std::string why;
  const bool ok = start_tcp_listener(
      loop_, &listener_, this, where, 128,
      [](uv_stream_t* s, int status) {
        auto* self = static_cast<RelayListener*>(s->data);
        if (!self) return;
        if (status != 0) {
          LOG_WARN("relay listener: accept failed: %s", uv_strerror(status));
          return;
        }
        TlsRelayLink::accept_from(self, s);
      },
      why);
  if (!ok) {
    error = "cannot listen for relays on " + format_endpoint(where) + ": " + why;
    listener_.data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    listening_ = false;
    return false;
  }
  LOG_INFO("listening for relays on %s", format_endpoint(where).c_str());
  return true;
}

void RelayListener::close() {
  if (auto it = handshaking().find(this); it != handshaking().end()) {
    auto conns = std::move(it->second);
    handshaking().erase(it);
    for (auto& w : conns)
      if (auto c = w.lock()) {
        c->detach();
        c->abort("dispatcher shutting down");
      }
  }
  auto links = std::move(links_);
  links_.clear();
  for (auto& [ip, link] : links) link->drop("dispatcher shutting down");
  links.clear();
  if (listening_) {
    listening_ = false;
    listener_.data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
  }
}

size_t RelayListener::relay_count() const {
  return links_.size();
}

}  // namespace mp::dispatcher
