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
  int r = start_tcp_listener(loop_, &listener_, this, where, 128, [](uv_stream_t* l, int status) {
    auto* self = static_cast<ManagementServer*>(l->data);
    if (status < 0) return;
    const uint64_t id = self->next_id_++;
    tls::ConnectionCallbacks cb;
    cb.on_connected = [self, id](const tls::Subject&) {
      auto it = self->clients_.find(id);
      if (it != self->clients_.end())
        LOG_DEBUG("management client %s connected (%s)", it->second.conn->peer_address().c_str(),
                  it->second.conn->protocol_description().c_str());
    };
    cb.on_data = [self, id](std::string_view data) { self->on_data(id, data); };
    cb.on_closed = [self, id](const std::string& reason) {
      LOG_DEBUG("management client closed: %s", log_safe(reason).c_str());
      self->clients_.erase(id);
    };
    tls::ConnectionOptions opts;
    opts.label = "management";
    opts.max_queued_bytes = kMaxPendingOutput;
    opts.passport = self->passport_;
    auto conn = tls::Connection::create(self->loop_, self->tls_, std::move(cb), std::move(opts));
    self->clients_[id] = Client{conn, {}};
    conn->accept(l);  // on failure on_closed follows and removes the client
  });
  if (r != 0) {
    error =
        "cannot listen for management clients on " + format_endpoint(where) + ": " + uv_strerror(r);
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
    client.conn->detach();
    client.conn->abort("shutting down");
  }
  clients_.clear();
}

void ManagementServer::on_data(uint64_t id, std::string_view data) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  it->second.buffer.append(data);
  for (;;) {
    it = clients_.find(id);  // a command may have closed the client
    if (it == clients_.end() || !it->second.conn->is_open()) return;
    std::string line;
    switch (take_management_line(it->second.buffer, line)) {
      case LineStatus::NeedMore:
        return;
      case LineStatus::TooLong:
        it->second.conn->abort("command line longer than 16384 bytes");
        return;
      case LineStatus::Line:
        handle_line(id, line);
        break;
    }
  }
}

void ManagementServer::handle_line(uint64_t id, std::string_view line) {
  const ManagementCommand command = parse_management_command(line);
  if (command == ManagementCommand::Empty) return;
  std::weak_ptr<tls::Connection> weak = clients_.at(id).conn;
  auto reply = [weak](std::string text) {
    if (auto conn = weak.lock(); conn && conn->is_open()) conn->write(text + "\r\n");
  };
  switch (command) {
    case ManagementCommand::Summary:
      dispatcher_.summary(reply);
      break;
    case ManagementCommand::Sessions:
      dispatcher_.sessions(reply);
      break;
    case ManagementCommand::Version:
      reply(MEDIAPROXY_VERSION);
      break;
    case ManagementCommand::Quit:
      clients_.at(id).conn->close("quit");
      break;
    case ManagementCommand::Empty:
    case ManagementCommand::Unknown:
      reply("error");
      break;
  }
}

}  // namespace mp::management
