// The relay's TLS links to its dispatchers (dispatcher_client.h, spec B.1-B.5,
// B.8, B.9).
//
// Owns, per configured dispatcher (a Peer): the tls::Connection in client
// mode, the line splitter in front of the RequestFramer (a bare "pong" line
// between commands is the keepalive answer and never reaches the framer,
// which would otherwise wait for a blank line), answering each framed command
// with RelayEngine::handle() under that dispatcher's owner id, the keepalive
// timer (ping every keepalive_interval, three unanswered: abort and
// reconnect) and the reconnect timer with the spec's delays. Timers live on
// the heap and are freed by their close callbacks, so a Peer (and the client)
// can go away while libuv finishes closing them.
#include "relay/dispatcher_client.h"

#include <algorithm>
#include <string_view>

#include "common/log.h"
#include "protocol/relay_link.h"
#include "protocol/request.h"

namespace mp::relay {

namespace {

constexpr uint64_t kShortConnectionMs = 5000;  // spec B.9: "lasted < 5 s"
constexpr int kMaxOutstandingPings = 3;        // spec B.4

uv_timer_t* new_timer(uv_loop_t* loop, void* data) {
  auto* t = new uv_timer_t;
  uv_timer_init(loop, t);
  t->data = data;
  return t;
}

void close_timer(uv_timer_t*& t) {
  if (!t) return;
  uv_timer_stop(t);
  t->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(t),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  t = nullptr;
}

}  // namespace

struct DispatcherClient::Peer {
  DispatcherClient* owner_client = nullptr;
  size_t index = 0;
  uint64_t owner = 0;
  Endpoint endpoint;
  std::string name;  // "a.b.c.d:port" for the log

  std::shared_ptr<tls::Connection> conn;
  uint64_t generation = 0;  // tells callbacks of a replaced connection apart
  bool connected = false;   // on_connected seen, on_closed not yet
  uint64_t connected_at = 0;

  // Input state: an incomplete line, and whether a command block is being
  // assembled (a command line seen, its blank line not yet).
  std::string partial;
  bool in_command = false;
  std::string command_line;  // first line of the block being assembled
  protocol::RequestFramer framer{protocol::kMaxRelayLineAtRelay};
  int outstanding_pings = 0;

  uv_timer_t* ping_timer = nullptr;
  uv_timer_t* retry_timer = nullptr;

  void connect();
  void schedule_reconnect(uint64_t delay_ms);
  void on_connected();
  void on_data(std::string_view data);
  void on_closed(const std::string& reason);
  void on_line(std::string_view line);
  void on_request(protocol::ParseResult&& parsed);
  void on_ping_timer();
  void stop_timers();
  bool alive(uint64_t gen) const { return conn && gen == generation; }
};

void DispatcherClient::Peer::connect() {
  DispatcherClient& c = *owner_client;
  if (c.closing_) return;
  partial.clear();
  in_command = false;
  command_line.clear();
  framer = protocol::RequestFramer(protocol::kMaxRelayLineAtRelay);
  outstanding_pings = 0;
  connected = false;

  const uint64_t gen = ++generation;
  tls::ConnectionCallbacks cb;
  cb.on_connected = [this, gen](const tls::Subject&) {
    if (alive(gen)) on_connected();
  };
  cb.on_data = [this, gen](std::string_view data) {
    if (alive(gen)) on_data(data);
  };
  cb.on_closed = [this, gen](const std::string& reason) {
    if (alive(gen)) on_closed(reason);
  };
  tls::ConnectionOptions opt;
  opt.label = "dispatcher link";
  opt.passport = c.passport_;
  conn = tls::Connection::create(c.loop_, c.tls_, std::move(cb), std::move(opt));
  LOG_DEBUG("dispatcher link: connecting to %s", name.c_str());
  const sockaddr_in sa = endpoint.to_sockaddr();
  if (std::string why; !conn->connect(reinterpret_cast<const sockaddr*>(&sa), why))
    LOG_WARN("dispatcher link: cannot connect to %s: %s", name.c_str(), why.c_str());
  // Either way on_closed follows on failure, and schedules the retry.
}

void DispatcherClient::Peer::schedule_reconnect(uint64_t delay_ms) {
  if (owner_client->closing_ || !retry_timer) return;
  LOG_INFO("dispatcher link: reconnecting to %s in %.1f s", name.c_str(),
           static_cast<double>(delay_ms) / 1000.0);
  uv_timer_start(
      retry_timer,
      [](uv_timer_t* t) {
        if (t->data) static_cast<Peer*>(t->data)->connect();
      },
      delay_ms, 0);
}

void DispatcherClient::Peer::on_connected() {
  DispatcherClient& c = *owner_client;
  connected = true;
  connected_at = uv_now(c.loop_);
  LOG_INFO("dispatcher link: connected to %s (%s)", name.c_str(),
           conn->protocol_description().c_str());
  if (ping_timer && c.cfg_.keepalive_interval > 0) {
    const uint64_t ms = static_cast<uint64_t>(c.cfg_.keepalive_interval) * 1000;
    uv_timer_start(
        ping_timer,
        [](uv_timer_t* t) {
          if (t->data) static_cast<Peer*>(t->data)->on_ping_timer();
        },
        ms, ms);
  }
}

void DispatcherClient::Peer::on_ping_timer() {
  if (!conn || !connected) return;
  if (outstanding_pings >= kMaxOutstandingPings) {
    LOG_WARN("dispatcher link: %s did not answer %d pings, reconnecting", name.c_str(),
             outstanding_pings);
    uv_timer_stop(ping_timer);
    conn->abort("keepalive: pings unanswered");
    return;
  }
  if (conn->write("ping\r\n")) ++outstanding_pings;
}

void DispatcherClient::Peer::on_data(std::string_view data) {
  const uint64_t gen = generation;
  const size_t limit = protocol::kMaxRelayLineAtRelay;
  partial.append(data);
  size_t start = 0;
  bool too_long = false;
  for (;;) {
    const size_t eol = partial.find("\r\n", start);
    if (eol == std::string::npos) {
      // A pending line of limit + 1 bytes is still fine if its last byte is
      // the CR of the terminating CRLF.
      const size_t pending = partial.size() - start;
      too_long = pending > limit && (pending - limit > 1 || partial.back() != '\r');
      break;
    }
    if (eol - start > limit) {
      too_long = true;
      break;
    }
    on_line(std::string_view(partial).substr(start, eol - start));
    // Handling may have closed (or replaced) the connection.
    if (!alive(gen) || !conn->is_open()) {
      partial.clear();
      return;
    }
    start = eol + 2;
  }
  partial.erase(0, start);
  if (too_long) {
    LOG_WARN("dispatcher link: %s sent a line longer than %zu bytes, closing", name.c_str(), limit);
    partial.clear();
    conn->abort("line too long");
  }
}

void DispatcherClient::Peer::on_line(std::string_view line) {
  if (!in_command) {
    if (line.empty()) return;  // blank lines between commands
    if (line == "pong") {
      if (outstanding_pings > 0) --outstanding_pings;
      return;
    }
    in_command = true;
    command_line.assign(line);
  } else if (line.empty()) {
    in_command = false;  // the framer delivers the block during this feed
  }
  std::string bytes(line);
  bytes += "\r\n";
  const auto status =
      framer.feed(bytes, [this](protocol::ParseResult&& parsed) { on_request(std::move(parsed)); });
  if (status != protocol::RequestFramer::Status::Ok && conn && conn->is_open()) {
    LOG_WARN("dispatcher link: %s sent a line longer than %zu bytes, closing", name.c_str(),
             protocol::kMaxRelayLineAtRelay);
    conn->abort("line too long");
  }
}

void DispatcherClient::Peer::on_request(protocol::ParseResult&& parsed) {
  if (!conn || !conn->is_open()) return;
  std::string why;
  if (!parsed.request) {
    // Answer "<seq> error" if at least the command line makes sense.
    protocol::Request head;
    head.command = command_line;
    auto cmd = protocol::to_relay_command(std::move(head), why);
    LOG_WARN("dispatcher link: malformed command from %s: %s", name.c_str(), parsed.error.c_str());
    if (cmd) conn->write(protocol::serialize_reply(cmd->seq, "error"));
    return;
  }
  const std::string line = parsed.request->command;
  auto cmd = protocol::to_relay_command(std::move(*parsed.request), why);
  if (!cmd) {
    LOG_WARN("dispatcher link: ignoring command line '%s' from %s: %s", log_safe(line).c_str(),
             name.c_str(), why.c_str());
    return;
  }
  const std::string payload = owner_client->engine_.handle(cmd->view(), owner);
  if (conn && conn->is_open()) conn->write(protocol::serialize_reply(cmd->seq, payload));
}

void DispatcherClient::Peer::on_closed(const std::string& reason) {
  DispatcherClient& c = *owner_client;
  if (ping_timer) uv_timer_stop(ping_timer);
  const bool was_connected = connected;
  connected = false;
  conn.reset();
  if (c.closing_) return;
  const uint64_t delay_ms = static_cast<uint64_t>(std::max(c.cfg_.reconnect_delay, 0)) * 1000;
  if (!was_connected) {
    // Failed attempt or refused certificate (closed before on_connected).
    LOG_WARN("dispatcher link: connection to %s failed: %s", name.c_str(),
             log_safe(reason).c_str());
    schedule_reconnect(delay_ms);
    return;
  }
  const uint64_t lasted = uv_now(c.loop_) - connected_at;
  LOG_WARN("dispatcher link: connection to %s lost after %.1f s: %s", name.c_str(),
           static_cast<double>(lasted) / 1000.0, log_safe(reason).c_str());
  schedule_reconnect(lasted < kShortConnectionMs ? delay_ms : std::min<uint64_t>(delay_ms, 1000));
}

void DispatcherClient::Peer::stop_timers() {
  if (ping_timer) uv_timer_stop(ping_timer);
  if (retry_timer) uv_timer_stop(retry_timer);
}

DispatcherClient::DispatcherClient(uv_loop_t* loop, RelayEngine& engine,
                                   std::shared_ptr<const tls::TlsContext> tls,
                                   tls::Passport passport, const RelayConfig& cfg,
                                   std::vector<Endpoint> dispatchers)
    : loop_(loop),
      engine_(engine),
      tls_(std::move(tls)),
      passport_(std::move(passport)),
      cfg_(cfg) {
  for (size_t i = 0; i < dispatchers.size(); ++i) {
    auto p = std::make_unique<Peer>();
    p->owner_client = this;
    p->index = i;
    p->owner = kFirstOwner + i;
    p->endpoint = dispatchers[i];
    p->name = format_endpoint(dispatchers[i]);
    p->ping_timer = new_timer(loop, p.get());
    p->retry_timer = new_timer(loop, p.get());
    peers_.push_back(std::move(p));
  }
}

DispatcherClient::~DispatcherClient() {
  closing_ = true;
  for (auto& p : peers_) {
    close_timer(p->ping_timer);
    close_timer(p->retry_timer);
    if (p->conn) {
      p->conn->detach();
      const auto state = p->conn->state();
      if (state != tls::Connection::State::Closing && state != tls::Connection::State::Closed)
        p->conn->abort("relay shutting down");
      p->conn.reset();
    }
  }
}

void DispatcherClient::start() {
  if (peers_.empty()) {
    LOG_ERROR("relay: no dispatchers configured, waiting for none");
    return;
  }
  for (auto& p : peers_) p->connect();
}

void DispatcherClient::deliver_expired(uint64_t owner, const std::string& json) {
  Peer* p = nullptr;
  if (owner >= kFirstOwner && owner - kFirstOwner < peers_.size())
    p = peers_[owner - kFirstOwner].get();
  if (p && p->conn && p->connected && p->conn->is_open() &&
      p->conn->write(protocol::serialize_expired(json)))
    return;
  LOG_WARN("dispatcher link: %s not connected, expired report lost: %s",
           p ? p->name.c_str() : "unknown dispatcher", json.c_str());
}

void DispatcherClient::close() {
  if (closing_) return;
  closing_ = true;
  for (auto& p : peers_) {
    p->stop_timers();
    if (p->conn) {
      const auto state = p->conn->state();
      if (state != tls::Connection::State::Closing && state != tls::Connection::State::Closed)
        p->conn->close("relay shutting down");
    }
  }
}

size_t DispatcherClient::connected_count() const {
  return static_cast<size_t>(
      std::count_if(peers_.begin(), peers_.end(), [](const auto& p) { return p->connected; }));
}

}  // namespace mp::relay
