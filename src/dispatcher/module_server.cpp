// UNIX socket server for the proxy module (module_server.h).
//
// Output of a connection: replies are appended to `out` and written by one
// uv_write at a time (`writing`), so a burst of replies costs their bytes and
// not one request structure each. While more than kMaxQueuedReplyBytes wait
// for a client that does not read, the connection is not read from either;
// reading resumes once the backlog is down to half of that. Nothing is
// dropped, and what one connection holds stays bounded by the limit plus the
// replies to one read (64 KiB) of requests.
#include "dispatcher/module_server.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "protocol/request.h"

namespace mp::dispatcher {

struct ModuleServer::Connection {
  uv_pipe_t pipe;
  ModuleServer* server = nullptr;
  uint64_t id = 0;
  bool closing = false;
  bool reading = false;
  protocol::RequestFramer framer{protocol::kMaxModuleLine};
  std::string out;      // replies not yet handed to libuv
  std::string writing;  // the buffer of the write in flight (empty: none)
  size_t awaiting = 0;  // requests handed to the dispatcher and not answered yet
  uv_write_t write_req;
  log::LimitSource log_limit;        // warnings about this client's input
  std::shared_ptr<Connection> self;  // keeps the object alive until uv_close completes

  size_t backlog() const { return out.size() + writing.size(); }
};

namespace {

char g_read_buffer[64 * 1024];
// Reply buffers that grew larger than this are released once drained.
void release_if_large(std::string& buffer) {
  if (buffer.capacity() > 16 * 1024) std::string().swap(buffer);
}

// True if something accepts connections on the UNIX socket at `path`.
bool socket_is_live(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
  bool live = connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
  ::close(fd);
  return live;
}

}  // namespace

ModuleServer::ModuleServer(uv_loop_t* loop, Dispatcher& dispatcher, const DispatcherConfig& cfg)
    : loop_(loop), dispatcher_(dispatcher), cfg_(cfg) {}

ModuleServer::~ModuleServer() = default;

bool ModuleServer::listen(const std::string& path, std::string& error) {
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    error = "socket path " + path + " is too long for a UNIX socket (max " +
            std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes)";
    return false;
  }
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      error = path + " exists and is not a socket; remove it or choose another socket_path";
      return false;
    }
    if (socket_is_live(path)) {
      error = "another process is serving " + path + " (is mediaproxy already running?)";
      return false;
    }
    LOG_INFO("removing stale socket file %s", path.c_str());
    unlink(path.c_str());
  }
  uv_pipe_init(loop_, &listener_, 0);
  listener_.data = this;
  listening_ = true;
  int r = uv_pipe_bind(&listener_, path.c_str());
  if (r == 0) r = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 511, on_connection);
  if (r != 0) {
    error = "cannot listen on " + path + ": " + uv_strerror(r);
    return false;
  }
  path_ = path;
  if (chmod(path.c_str(), cfg_.socket_mode) != 0) {
    error = "cannot set mode of " + path + ": " + std::strerror(errno);
    return false;
  }
  if (!cfg_.socket_group.empty()) {
    gid_t gid;
    char* end = nullptr;
    unsigned long num = std::strtoul(cfg_.socket_group.c_str(), &end, 10);
    if (end && *end == '\0') {
      gid = static_cast<gid_t>(num);
    } else {
      group* g = getgrnam(cfg_.socket_group.c_str());
      if (!g) {
        error = "socket_group '" + cfg_.socket_group + "' does not exist";
        return false;
      }
      gid = g->gr_gid;
    }
    if (chown(path.c_str(), static_cast<uid_t>(-1), gid) != 0) {
      error =
          "cannot give " + path + " to group " + cfg_.socket_group + ": " + std::strerror(errno);
      return false;
    }
  }
  LOG_INFO("listening for the proxy module on %s", path.c_str());
  return true;
}

void ModuleServer::on_connection(uv_stream_t* listener, int status) {
  auto* self = static_cast<ModuleServer*>(listener->data);
  if (status < 0) {
    LOG_WARN("module socket accept error: %s", uv_strerror(status));
    return;
  }
  auto conn = std::make_shared<Connection>();
  conn->server = self;
  conn->id = self->next_id_++;
  conn->self = conn;
  uv_pipe_init(self->loop_, &conn->pipe, 0);
  conn->pipe.data = conn.get();
  if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(&conn->pipe)) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&conn->pipe),
             [](uv_handle_t* h) { static_cast<Connection*>(h->data)->self.reset(); });
    return;
  }
  if (self->connections_.size() >= static_cast<size_t>(self->cfg_.max_connections)) {
    if (self->refused_++ % 100 == 0)
      LOG_WARN("module connection refused: max_connections (%d) reached (%llu refused so far)",
               self->cfg_.max_connections, static_cast<unsigned long long>(self->refused_));
    conn->closing = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&conn->pipe),
             [](uv_handle_t* h) { static_cast<Connection*>(h->data)->self.reset(); });
    return;
  }
  self->connections_.insert(conn);
  LOG_DEBUG("module connection %llu opened", static_cast<unsigned long long>(conn->id));
  self->start_reading(conn.get());
}

void ModuleServer::start_reading(Connection* conn) {
  if (conn->reading || conn->closing) return;
  conn->reading = true;
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&conn->pipe),
      [](uv_handle_t*, size_t, uv_buf_t* buf) {
        buf->base = g_read_buffer;
        buf->len = sizeof g_read_buffer;
      },
      [](uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
        auto* c = static_cast<Connection*>(stream->data);
        if (nread < 0) {
          if (nread != UV_EOF)
            LOG_DEBUG("module connection %llu: %s", static_cast<unsigned long long>(c->id),
                      uv_strerror(static_cast<int>(nread)));
          c->server->close_connection(c);
          return;
        }
        c->server->on_read(c, std::string_view(buf->base, static_cast<size_t>(nread)));
      });
}

void ModuleServer::on_read(Connection* c, std::string_view data) {
  std::weak_ptr<Connection> weak = c->self;
  auto feed_status = c->framer.feed(data, [&](protocol::ParseResult&& parsed) {
    ++c->awaiting;
    auto reply = [weak](std::string line) {
      auto live = weak.lock();
      if (live && live->awaiting) --live->awaiting;
      if (!live || live->closing) return;
      live->out += line;
      live->out += "\r\n";
      live->server->flush(live.get());
    };
    if (!parsed.request) {
      LOG_LIMITED(Warning, &c->log_limit,
                  "module connection %llu: malformed request (%s) answered with error",
                  static_cast<unsigned long long>(c->id), log_safe(parsed.error).c_str());
      dispatcher_.count_malformed();
      reply("error");
      return;
    }
    dispatcher_.handle(std::move(*parsed.request), std::move(reply), &c->log_limit);
  });
  if (feed_status == protocol::RequestFramer::Status::LineTooLong) {
    LOG_LIMITED(Warning, nullptr,
                "module connection %llu: line longer than %zu bytes; connection closed",
                static_cast<unsigned long long>(c->id), protocol::kMaxModuleLine);
    close_connection(c);
  }
}

void ModuleServer::flush(Connection* c) {
  if (c->closing) return;
  if (c->writing.empty() && !c->out.empty()) {
    c->writing.swap(c->out);
    c->write_req.data = c;
    uv_buf_t b = uv_buf_init(c->writing.data(), static_cast<unsigned>(c->writing.size()));
    const int r =
        uv_write(&c->write_req, reinterpret_cast<uv_stream_t*>(&c->pipe), &b, 1,
                 [](uv_write_t* req, int status) {
                   auto* conn = static_cast<Connection*>(req->data);
                   conn->writing.clear();
                   if (conn->out.empty()) {  // a burst is over: give back its buffers
                     release_if_large(conn->writing);
                     release_if_large(conn->out);
                   }
                   if (conn->closing) return;
                   if (status < 0) {
                     LOG_DEBUG("module connection %llu: write failed: %s",
                               static_cast<unsigned long long>(conn->id), uv_strerror(status));
                     conn->server->close_connection(conn);
                     return;
                   }
                   conn->server->flush(conn);
                 });
    if (r != 0) {
      c->writing.clear();
      LOG_DEBUG("module connection %llu: write failed: %s", static_cast<unsigned long long>(c->id),
                uv_strerror(r));
      close_connection(c);
      return;
    }
  }
  if (c->reading && c->backlog() > kMaxQueuedReplyBytes) {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->pipe));
    c->reading = false;
    ++paused_;
    LOG_DEBUG("module connection %llu: %zu bytes of replies unread; not reading until they drain",
              static_cast<unsigned long long>(c->id), c->backlog());
  } else if (!c->reading && c->backlog() <= kMaxQueuedReplyBytes / 2) {
    LOG_DEBUG("module connection %llu: replies drained; reading again",
              static_cast<unsigned long long>(c->id));
    start_reading(c);
  }
}

void ModuleServer::close_connection(Connection* c) {
  if (c->closing) return;
  c->closing = true;
  LOG_DEBUG("module connection %llu closed", static_cast<unsigned long long>(c->id));
  connections_.erase(c->self);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->pipe),
           [](uv_handle_t* h) { static_cast<Connection*>(h->data)->self.reset(); });
}

std::vector<ModuleServer::Handed> ModuleServer::hand_over() {
  std::vector<Handed> out;
  if (listening_) {
    uv_os_fd_t fd;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(&listener_), &fd) == 0) {
      const int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
      if (copy >= 0) out.push_back(Handed{copy, true, {}});
    }
    // libuv unlinks the socket file it bound when the handle closes: the new
    // process serves that file now, so it must stay.
    free(const_cast<char*>(listener_.pipe_fname));
    listener_.pipe_fname = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    listening_ = false;
  }
  std::vector<Connection*> all;
  for (const auto& c : connections_) all.push_back(c.get());
  size_t busy = 0;
  for (Connection* c : all) {
    uv_os_fd_t fd;
    if (!c->awaiting && c->backlog() == 0 &&
        uv_fileno(reinterpret_cast<uv_handle_t*>(&c->pipe), &fd) == 0) {
      const int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
      if (copy >= 0) out.push_back(Handed{copy, false, c->framer.unconsumed()});
    } else {
      ++busy;
    }
    close_connection(c);
  }
  if (busy) LOG_WARN("upgrade: %zu module connection(s) busy with a request were closed", busy);
  path_.clear();  // the socket file is the new process's now
  return out;
}

bool ModuleServer::adopt_listener(const std::string& path, int fd, std::string& error) {
  uv_pipe_init(loop_, &listener_, 0);
  listener_.data = this;
  listening_ = true;
  int r = uv_pipe_open(&listener_, fd);
  if (r == 0) r = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 511, on_connection);
  if (r != 0) {
    error = "cannot serve the module socket handed over: " + std::string(uv_strerror(r));
    return false;
  }
  path_ = path;
  LOG_INFO("listening for the proxy module on %s (handed over)", path.c_str());
  return true;
}

void ModuleServer::adopt_connection(int fd, const std::string& unread) {
  auto conn = std::make_shared<Connection>();
  conn->server = this;
  conn->id = next_id_++;
  conn->self = conn;
  uv_pipe_init(loop_, &conn->pipe, 0);
  conn->pipe.data = conn.get();
  if (uv_pipe_open(&conn->pipe, fd) != 0) {
    ::close(fd);
    uv_close(reinterpret_cast<uv_handle_t*>(&conn->pipe),
             [](uv_handle_t* h) { static_cast<Connection*>(h->data)->self.reset(); });
    return;
  }
  connections_.insert(conn);
  LOG_DEBUG("module connection %llu handed over", static_cast<unsigned long long>(conn->id));
  if (!unread.empty()) on_read(conn.get(), unread);
  start_reading(conn.get());
}

void ModuleServer::close() {
  if (listening_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    listening_ = false;
  }
  std::vector<Connection*> all;
  for (const auto& c : connections_) all.push_back(c.get());
  for (Connection* c : all) close_connection(c);
  if (!path_.empty()) unlink(path_.c_str());
  path_.clear();
}

}  // namespace mp::dispatcher
