// Management interface over TLS or plain TCP (management_server.h).
#include "management/management_server.h"

#include "common/log.h"
#include "common/tcp_listener.h"
#include "management/management_command.h"

namespace mp::management {

ManagementServer::ManagementServer(uv_loop_t* loop, dispatcher::Dispatcher& dispatcher,
                                   std::shared_ptr<const tls::TlsContext> tls,
                                   tls::Passport passport)
    : loop_(loop), dispatcher_(dispatcher), tls_(std::move(tls)), passport_(std::move(passport)) {}

ManagementServer::~ManagementServer() = default;

bool ManagementServer::listen(Endpoint where, std::string& error) {
  listening_ = true;
  std::string why;
  const bool ok = start_tcp_listener(
      loop_, &listener_, this, where, 128,
      [](uv_stream_t* l, int status) {
        auto* self = static_cast<ManagementServer*>(l->data);
        if (status < 0) return;
        const uint64_t id = self->next_id_++;
        tls::ConnectionCallbacks cb;
        cb.on_connected = [self, id](const tls::Subject&) {
          auto it = self->clients_.find(id);
          if (it != self->clients_.end())
            LOG_DEBUG("management client %s connected (%s)",
                      it->second.conn->peer_address().c_str(),
                      it->second.conn->protocol_description().c_str());
        };
        cb.on_data = [self, id](std::string_view data) { self->on_data(id, data); };
        cb.on_drain = [self, id] {
          auto it = self->clients_.find(id);
          if (it != self->clients_.end() && it->second.dump) it->second.dump->drained();
        };
        cb.on_closed = [self, id](const std::string& reason) {
          LOG_DEBUG("management client closed: %s", log_safe(reason).c_str());
          self->clients_.erase(id);
        };
        tls::ConnectionOptions opts;
        opts.label = "management";
        opts.max_queued_bytes = kMaxPendingOutput;
        opts.passport = self->passport_;
        auto conn =
            tls::Connection::create(self->loop_, self->tls_, std::move(cb), std::move(opts));
        self->clients_[id].conn = conn;
        std::string ignored;
        conn->accept(l, ignored);  // on failure on_closed follows and removes the client
      },
      why);
  if (!ok) {
    error = "cannot listen for management clients on " + format_endpoint(where) + ": " + why;
    return false;
  }
  const std::string how = !tls_ ? std::string("plain TCP")
                          : passport_.disabled()
                              ? std::string("TLS, any client certificate of the CA")
                              : "TLS, client certificates matching '" + passport_.to_string() + "'";
  LOG_INFO("management interface listening on %s (%s)", format_endpoint(where).c_str(),
           how.c_str());
  return true;
}

void ManagementServer::close() {
  if (listening_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    listening_ = false;
  }
  // Closing reports on_closed later from the loop; detach first so nothing
  // calls back into a server that is going away.
  for (auto& [id, client] : clients_) {
    if (client.dump) client.dump->cancel();
    client.conn->detach();
    client.conn->abort("shutting down");
  }
  clients_.clear();
  if (stall_timer_init_) {
    uv_timer_stop(&stall_timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(&stall_timer_), nullptr);
    stall_timer_init_ = stall_timer_running_ = false;
  }
}

void ManagementServer::on_data(uint64_t id, std::string_view data) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  it->second.buffer.append(data);
  process(id);
}

void ManagementServer::process(uint64_t id) {
  auto it = clients_.find(id);
  if (it == clients_.end() || it->second.processing) return;  // the outer call goes on
  it->second.processing = true;
  for (;;) {
    it = clients_.find(id);
    if (it == clients_.end()) return;
    Client& c = it->second;
    if (!c.conn->is_open() || c.busy) break;
    std::string line;
    const LineStatus status = take_management_line(c.buffer, line);
    if (status == LineStatus::NeedMore) break;
    if (status == LineStatus::TooLong) {
      c.conn->abort("command line longer than 16384 bytes");
      break;
    }
    handle_line(id, line);
  }
  it = clients_.find(id);
  if (it == clients_.end()) return;
  it->second.processing = false;
  if (!it->second.conn->is_open()) return;
  if (it->second.busy)
    it->second.conn->pause_reading();
  else
    it->second.conn->resume_reading();
}

void ManagementServer::command_done(uint64_t id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  it->second.busy = false;
  it->second.dump.reset();
  process(id);  // a no-op while process() is on the stack: it continues itself
}

void ManagementServer::handle_line(uint64_t id, std::string_view line) {
  const ManagementCommand command = parse_management_command(line);
  if (command == ManagementCommand::Empty) return;
  Client& client = clients_.at(id);
  std::weak_ptr<tls::Connection> weak = client.conn;
  auto reply = [weak](std::string_view text) {
    if (auto conn = weak.lock(); conn && conn->is_open()) conn->write(std::string(text) + "\r\n");
  };
  switch (command) {
    case ManagementCommand::Summary:
      client.busy = true;
      dispatcher_.summary([this, id, weak, reply](std::string text) {
        if (auto conn = weak.lock(); !conn || !conn->is_open()) return;  // client (or server) gone
        reply(text);
        command_done(id);
      });
      break;
    case ManagementCommand::Sessions:
      start_dump(id);
      break;
    case ManagementCommand::Version:
      reply(MEDIAPROXY_VERSION);
      break;
    case ManagementCommand::Quit:
      client.conn->close("quit");
      break;
    case ManagementCommand::Empty:
    case ManagementCommand::Unknown:
      reply("error");
      break;
  }
}

void ManagementServer::start_dump(uint64_t id) {
  Client& client = clients_.at(id);
  std::weak_ptr<tls::Connection> weak = client.conn;
  dispatcher::SessionsDump::Output out;
  out.write = [weak](std::string_view text) {
    auto conn = weak.lock();
    return conn && conn->is_open() && conn->write(text);
  };
  out.has_room = [weak] {
    auto conn = weak.lock();
    return conn && conn->queued_bytes() < kHighWater;
  };
  out.finished = [this, id] { command_done(id); };
  client.busy = true;
  client.dump = dispatcher::SessionsDump::start(loop_, dispatcher_, std::move(out));
  if (!stall_timer_init_) {
    uv_timer_init(loop_, &stall_timer_);
    stall_timer_.data = this;
    stall_timer_init_ = true;
  }
  if (!stall_timer_running_) {
    uv_timer_start(&stall_timer_, on_stall_check, 1000, 1000);
    stall_timer_running_ = true;
  }
}

void ManagementServer::on_stall_check(uv_timer_t* t) {
  auto* self = static_cast<ManagementServer*>(t->data);
  const uint64_t now = uv_now(self->loop_);
  bool dumping = false;
  for (auto& [id, c] : self->clients_) {
    if (!c.dump || c.dump->done()) continue;
    const uint64_t since = c.dump->waiting_since();
    if (since && now - since >= kStallTimeoutMs) {
      LOG_WARN("management client %s read nothing of its sessions answer for %llu s: closing it",
               c.conn->peer_address().c_str(),
               static_cast<unsigned long long>(kStallTimeoutMs / 1000));
      c.dump->cancel();
      c.conn->abort("did not read its sessions answer");
      continue;
    }
    dumping = true;
  }
  if (!dumping) {
    uv_timer_stop(&self->stall_timer_);
    self->stall_timer_running_ = false;
  }
}

}  // namespace mp::management
