// Management interface over TCP (management_server.h).
#include "management/management_server.h"

#include <cstring>

#include "common/log.h"

namespace mp::management {

struct ManagementServer::Client {
  uv_tcp_t tcp;
  ManagementServer* server = nullptr;
  uint64_t id = 0;
  std::string peer;
  std::string buffer;
  bool closing = false;
  std::shared_ptr<Client> self;
};

namespace {

char g_read_buffer[16 * 1024];

struct WriteReq {
  uv_write_t req;
  std::string data;
};

std::string peer_name(uv_tcp_t* tcp) {
  sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&ss), &len) != 0 ||
      ss.ss_family != AF_INET)
    return "?";
  return format_endpoint(Endpoint::from_sockaddr(*reinterpret_cast<sockaddr_in*>(&ss)));
}

}  // namespace

ManagementServer::ManagementServer(uv_loop_t* loop, dispatcher::Dispatcher& dispatcher)
    : loop_(loop), dispatcher_(dispatcher) {}

ManagementServer::~ManagementServer() = default;

bool ManagementServer::listen(Endpoint where, std::string& error) {
  uv_tcp_init(loop_, &listener_);
  listener_.data = this;
  listening_ = true;
  sockaddr_in sa = where.to_sockaddr();
  int r = uv_tcp_bind(&listener_, reinterpret_cast<const sockaddr*>(&sa), 0);
  if (r == 0) r = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 128, on_connection);
  if (r != 0) {
    error =
        "cannot listen for management clients on " + format_endpoint(where) + ": " + uv_strerror(r);
    return false;
  }
  LOG_INFO("management interface listening on %s (plain TCP)", format_endpoint(where).c_str());
  return true;
}

void ManagementServer::close() {
  if (listening_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    listening_ = false;
  }
  std::vector<Client*> all;
  for (const auto& c : clients_) all.push_back(c.get());
  for (Client* c : all) close_client(c, "shutting down");
}

void ManagementServer::on_connection(uv_stream_t* listener, int status) {
  auto* self = static_cast<ManagementServer*>(listener->data);
  if (status < 0) return;
  auto c = std::make_shared<Client>();
  c->server = self;
  c->id = self->next_id_++;
  c->self = c;
  uv_tcp_init(self->loop_, &c->tcp);
  c->tcp.data = c.get();
  if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp),
             [](uv_handle_t* h) { static_cast<Client*>(h->data)->self.reset(); });
    return;
  }
  c->peer = peer_name(&c->tcp);
  self->clients_.insert(c);
  LOG_DEBUG("management client %s connected", c->peer.c_str());
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&c->tcp),
      [](uv_handle_t*, size_t, uv_buf_t* buf) {
        buf->base = g_read_buffer;
        buf->len = sizeof g_read_buffer;
      },
      [](uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
        auto* client = static_cast<Client*>(stream->data);
        ManagementServer* server = client->server;
        if (nread < 0) {
          server->close_client(
              client, nread == UV_EOF ? "disconnected" : uv_strerror(static_cast<int>(nread)));
          return;
        }
        std::shared_ptr<Client> hold = client->self;  // survives close inside handle_line
        client->buffer.append(buf->base, static_cast<size_t>(nread));
        size_t start = 0;
        while (!client->closing) {
          size_t nl = client->buffer.find('\n', start);
          if (nl == std::string::npos) break;
          std::string line = client->buffer.substr(start, nl - start);
          if (!line.empty() && line.back() == '\r') line.pop_back();
          start = nl + 1;
          server->handle_line(client, std::move(line));
        }
        client->buffer.erase(0, start);
        if (!client->closing && client->buffer.size() > kMaxLine)
          server->close_client(client, "command line longer than 16384 bytes");
      });
}

void ManagementServer::handle_line(Client* c, std::string line) {
  while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) line.pop_back();
  size_t lead = line.find_first_not_of(" \t");
  line.erase(0, lead == std::string::npos ? line.size() : lead);
  if (line.empty()) return;
  std::weak_ptr<Client> weak = c->self;
  auto reply = [this, weak](std::string text) {
    if (auto live = weak.lock(); live && !live->closing) send_line(live.get(), std::move(text));
  };
  if (line == "summary") {
    dispatcher_.summary(reply);
  } else if (line == "sessions") {
    dispatcher_.sessions(reply);
  } else if (line == "version") {
    reply(MEDIAPROXY_VERSION);
  } else if (line == "quit" || line == "exit") {
    close_client(c, "quit");
  } else {
    LOG_DEBUG("management client %s: unknown command answered with error", c->peer.c_str());
    reply("error");
  }
}

void ManagementServer::send_line(Client* c, std::string line) {
  auto* stream = reinterpret_cast<uv_stream_t*>(&c->tcp);
  if (uv_stream_get_write_queue_size(stream) + line.size() > kMaxPendingOutput) {
    close_client(c, "client does not read its replies");
    return;
  }
  auto* w = new WriteReq;
  w->req.data = w;
  w->data = std::move(line);
  w->data += "\r\n";
  uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  if (uv_write(&w->req, stream, &b, 1,
               [](uv_write_t* req, int) { delete static_cast<WriteReq*>(req->data); }) != 0)
    delete w;
}

void ManagementServer::close_client(Client* c, const char* why) {
  if (c->closing) return;
  c->closing = true;
  LOG_DEBUG("management client %s closed: %s", c->peer.c_str(), why);
  clients_.erase(c->self);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp),
           [](uv_handle_t* h) { static_cast<Client*>(h->data)->self.reset(); });
}

}  // namespace mp::management
