// Listeners and framing of the rtpproxy front end (rtpproxy_server.h).
#include "dispatcher/rtpproxy_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/address.h"
#include "common/log.h"
#include "dispatcher/rtpproxy_retransmit_cache.h"
#include "protocol/rtpproxy_command.h"

namespace mp::dispatcher {

namespace {

using protocol::kMaxRtpproxyCommand;
using protocol::kMaxRtpproxyCookie;
namespace rtpp_error = protocol::rtpp_error;

constexpr size_t kMaxDatagram = 65536;
// libuv reads a UDP socket with recvmmsg() when the buffer holds several
// 64 KiB slots (UV_UDP_RECVMMSG): one system call for up to this many
// commands.
constexpr size_t kDatagramsPerRead = 16;
// Replies produced in one loop iteration go out together (sendmmsg).
constexpr size_t kRepliesPerFlush = 64;
constexpr size_t kMaxCacheEntries = 200000;
constexpr size_t kMaxStreamBuffer = kMaxRtpproxyCommand + kMaxRtpproxyCookie + 2;
constexpr size_t kMaxStreamConnections = 4096;

char g_udp_buffer[kDatagramsPerRead * kMaxDatagram];
char g_stream_buffer[64 * 1024];

std::string address_of(const sockaddr* sa) {
  // IPv4 (every datagram of a typical proxy) without inet_ntop's sprintf.
  if (sa->sa_family == AF_INET)
    return format_ipv4(Ipv4{reinterpret_cast<const sockaddr_in*>(sa)->sin_addr.s_addr});
  char text[INET6_ADDRSTRLEN] = "";
  if (sa->sa_family == AF_INET6)
    uv_ip6_name(reinterpret_cast<const sockaddr_in6*>(sa), text, sizeof text);
  return text;
}

bool make_sockaddr(const RtpproxyListen& l, sockaddr_storage& sa) {
  if (l.address.find(':') != std::string::npos)
    return uv_ip6_addr(l.address.c_str(), l.port, reinterpret_cast<sockaddr_in6*>(&sa)) == 0;
  return uv_ip4_addr(l.address.c_str(), l.port, reinterpret_cast<sockaddr_in*>(&sa)) == 0;
}

struct UdpSend {
  uv_udp_send_t req;
  std::string data;
};

}  // namespace

// One UDP listener with its retransmission cache.
struct RtpproxyServer::Udp {
  RtpproxyServer* server = nullptr;
  uv_udp_t handle;
  // Replies wait here until the loop iteration's check phase, then leave
  // with one sendmmsg(): with several clients, a burst of commands read in
  // one go is answered with one system call instead of one per reply.
  // A reply decided outside the poll phase (a timer: a relay that did not
  // answer) must not wait for the next event: an active idle handle makes
  // that iteration's poll return at once.
  uv_check_t flusher;
  uv_idle_t waker;
  struct Queued {
    sockaddr_storage to;
    std::string data;  // capacity kept between flushes
  };
  Queued queued[kRepliesPerFlush];
  size_t queued_count = 0;
  std::string name;
  bool open = false;
  // Replies of recent commands, for the proxy's retransmissions.
  RtpproxyRetransmitCache cache{kMaxCacheEntries};
  using Sender = RtpproxyRetransmitCache::Sender;

  static Sender sender_of(const sockaddr* sa) {
    Sender k;
    if (sa->sa_family == AF_INET) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
      std::memcpy(k.bytes, &in->sin_addr, 4);
      std::memcpy(k.bytes + 4, &in->sin_port, 2);
      k.len = 6;
    } else if (sa->sa_family == AF_INET6) {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
      std::memcpy(k.bytes, &in6->sin6_addr, 16);
      std::memcpy(k.bytes + 16, &in6->sin6_port, 2);
      k.len = 18;
    }
    return k;
  }

  double now() const { return static_cast<double>(uv_now(server->loop())) / 1000.0; }

  void send_to(const sockaddr_storage& to, const std::string& data) {
    if (!open) return;
    if (queued_count == kRepliesPerFlush) flush();
    if (queued_count == 0) uv_idle_start(&waker, [](uv_idle_t*) {});
    Queued& q = queued[queued_count++];
    q.to = to;
    q.data.assign(data);
  }

  static socklen_t length_of(const sockaddr_storage& sa) {
    return sa.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  }

  // Sends the queue: sendmmsg() while libuv has nothing queued of its own
  // (else the order of replies would change), and whatever it refuses
  // through libuv one by one.
  void flush() {
    size_t done = 0;
    int fd = -1;
    if (open && handle.send_queue_count == 0 &&
        uv_fileno(reinterpret_cast<uv_handle_t*>(&handle), &fd) == 0) {
      mmsghdr msgs[kRepliesPerFlush];
      iovec iov[kRepliesPerFlush];
      for (size_t i = 0; i < queued_count; ++i) {
        iov[i].iov_base = queued[i].data.data();
        iov[i].iov_len = queued[i].data.size();
        msgs[i].msg_hdr = msghdr{};
        msgs[i].msg_hdr.msg_name = &queued[i].to;
        msgs[i].msg_hdr.msg_namelen = length_of(queued[i].to);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
      }
      while (done < queued_count) {
        int r = ::sendmmsg(fd, msgs + done, static_cast<unsigned>(queued_count - done),
                           MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r <= 0) break;
        done += static_cast<size_t>(r);
      }
    }
    for (size_t i = done; i < queued_count; ++i) send_one(queued[i].to, queued[i].data);
    queued_count = 0;
    uv_idle_stop(&waker);
  }

  void send_one(const sockaddr_storage& to, const std::string& data) {
    if (!open) return;
    uv_buf_t b = uv_buf_init(const_cast<char*>(data.data()), static_cast<unsigned>(data.size()));
    int r = uv_udp_try_send(&handle, &b, 1, reinterpret_cast<const sockaddr*>(&to));
    if (r >= 0) return;
    if (r != UV_EAGAIN) {
      LOG_DEBUG("rtpproxy: reply to %s not sent: %s",
                address_of(reinterpret_cast<const sockaddr*>(&to)).c_str(), uv_strerror(r));
      return;
    }
    auto* s = new UdpSend;
    s->data = data;
    s->req.data = s;
    b = uv_buf_init(s->data.data(), static_cast<unsigned>(s->data.size()));
    if (uv_udp_send(&s->req, &handle, &b, 1, reinterpret_cast<const sockaddr*>(&to),
                    [](uv_udp_send_t* req, int) { delete static_cast<UdpSend*>(req->data); }) != 0)
      delete s;
  }

  void on_datagram(const char* data, size_t len, const sockaddr* from) {
    std::string_view text(data, len);
    std::string_view cookie, command;
    sockaddr_storage to{};
    std::memcpy(&to, from,
                from->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
    if (!protocol::split_rtpproxy_cookie(text, cookie, command)) {
      server->front_end().count_error(rtpp_error::kSyntax);
      if (cookie.empty()) {  // no usable cookie: nothing to answer to
        LOG_DEBUG("rtpproxy: datagram from %s without a cookie dropped", address_of(from).c_str());
        return;
      }
      send_to(to, std::string(cookie) + " " + protocol::format_rtpproxy_error(rtpp_error::kSyntax) +
                      "\n");
      return;
    }
    const std::string client = address_of(from);
    const Sender sender = sender_of(from);
    const auto seen =
        cache.begin(sender, cookie, now(), static_cast<double>(server->config().retransmit_cache));
    switch (seen.found) {
      case RtpproxyRetransmitCache::Found::Replied:
        send_to(to, *seen.reply);
        return;
      case RtpproxyRetransmitCache::Found::Pending:
        return;
      case RtpproxyRetransmitCache::Found::Fresh:
      case RtpproxyRetransmitCache::Found::Collision:  // answered, not cached
        break;
    }
    const uint64_t ticket = seen.ticket;  // 0: not cached
    std::string prefix(cookie);
    prefix += ' ';
    std::weak_ptr<Udp> weak = self;
    server->dispatch(command, client, [weak, ticket, to, prefix](std::string reply) {
      auto live = weak.lock();
      if (!live || !live->open) return;
      std::string out = prefix + reply + "\n";
      live->send_to(to, out);
      if (ticket != 0) live->cache.complete(ticket, out);
    });
  }
  std::weak_ptr<Udp> self;
};

// A stream listener (unix:, cunix:, tcp:).
struct RtpproxyServer::Stream {
  RtpproxyServer* server = nullptr;
  RtpproxyListen where;
  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } handle;
  bool open = false;
  uint64_t refused = 0;
};

// One client connection of a stream listener.
struct RtpproxyServer::Connection {
  RtpproxyServer* server = nullptr;
  bool cookies = true;
  bool unix_socket = false;
  std::string client_ip;
  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } handle;
  bool closing = false;
  std::string buffer;
  std::weak_ptr<Connection> self;

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&handle); }

  void write(std::string data) {
    if (closing) return;
    struct W {
      uv_write_t req;
      std::string data;
    };
    auto* w = new W;
    w->data = std::move(data);
    w->req.data = w;
    uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
    if (uv_write(&w->req, stream(), &b, 1,
                 [](uv_write_t* req, int) { delete static_cast<W*>(req->data); }) != 0)
      delete w;
  }

  void close() {
    if (closing) return;
    closing = true;
    auto& all = server->connections();
    auto it = std::find_if(all.begin(), all.end(), [this](const std::shared_ptr<Connection>& c) {
      return c.get() == this;
    });
    std::shared_ptr<Connection> keep;
    if (it != all.end()) {
      keep = *it;
      all.erase(it);
    }
    auto* holder = new std::shared_ptr<Connection>(std::move(keep));
    handle.tcp.data = holder;
    uv_close(reinterpret_cast<uv_handle_t*>(&handle),
             [](uv_handle_t* h) { delete static_cast<std::shared_ptr<Connection>*>(h->data); });
  }

  // One command: "<cookie> <command>" or, without cookies, the command.
  void command(std::string_view line) {
    std::string prefix;
    std::string_view text = line;
    if (cookies) {
      std::string_view cookie;
      if (!protocol::split_rtpproxy_cookie(line, cookie, text)) {
        server->front_end().count_error(rtpp_error::kSyntax);
        if (!cookie.empty())
          write(std::string(cookie) + " " + protocol::format_rtpproxy_error(rtpp_error::kSyntax) +
                "\n");
        return;
      }
      prefix.assign(cookie);
      prefix += ' ';
    }
    std::weak_ptr<Connection> weak = self;
    server->dispatch(text, client_ip, [weak, prefix](std::string reply) {
      if (auto live = weak.lock()) live->write(prefix + reply + "\n");
    });
  }

  void on_read(const char* data, size_t len) {
    buffer.append(data, len);
    size_t start = 0;
    for (size_t nl; (nl = buffer.find('\n', start)) != std::string::npos; start = nl + 1) {
      std::string_view line(buffer.data() + start, nl - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (!line.empty()) command(line);
      if (closing) return;
    }
    buffer.erase(0, start);
    if (!cookies && !buffer.empty()) {  // Kamailio's unix: one read is one command
      std::string whole = std::move(buffer);
      buffer.clear();
      command(whole);
      return;
    }
    if (buffer.size() > kMaxStreamBuffer) {
      LOG_WARN("rtpproxy: %s client sent a command longer than %zu bytes; connection closed",
               unix_socket ? "UNIX-socket" : client_ip.c_str(), kMaxStreamBuffer);
      server->front_end().count_error(rtpp_error::kTooBig);
      if (cookies) {
        write(protocol::format_rtpproxy_error(rtpp_error::kTooBig) + "\n");
      }
      close();
    }
  }
};

RtpproxyServer::RtpproxyServer(uv_loop_t* loop, RtpproxyFrontEnd& front_end,
                               const RtpproxyConfig& cfg)
    : loop_(loop), front_end_(front_end), cfg_(cfg) {}

RtpproxyServer::~RtpproxyServer() = default;

void RtpproxyServer::dispatch(std::string_view command, const std::string& client_ip,
                              std::function<void(std::string)> reply) {
  if (command.size() > kMaxRtpproxyCommand) {
    front_end_.count_error(rtpp_error::kTooBig);
    reply(protocol::format_rtpproxy_error(rtpp_error::kTooBig));
    return;
  }
  protocol::RtpproxyParseError error;
  auto cmd = protocol::parse_rtpproxy_command(command, error);
  if (!cmd) {
    LOG_INFO("rtpproxy: command from %s answered E%d: %s",
             client_ip.empty() ? "UNIX socket" : client_ip.c_str(), error.code,
             error.reason.c_str());
    front_end_.count_error(error.code);
    reply(protocol::format_rtpproxy_error(error.code));
    return;
  }
  front_end_.handle(std::move(*cmd), client_ip, std::move(reply));
}

bool RtpproxyServer::listen(std::string& error) {
  for (const RtpproxyListen& l : cfg_.listen) {
    const bool ok = l.datagram() ? listen_udp(l, error) : listen_stream(l, error);
    if (!ok) {
      error = "[Rtpproxy] listen " + l.text + ": " + error;
      return false;
    }
    LOG_INFO("listening for rtpproxy-protocol commands on %s", l.text.c_str());
  }
  return true;
}

bool RtpproxyServer::listen_udp(const RtpproxyListen& l, std::string& error) {
  auto u = std::make_shared<Udp>();
  u->server = this;
  u->name = l.text;
  u->self = u;
  sockaddr_storage sa{};
  if (!make_sockaddr(l, sa)) {
    error = "bad address";
    return false;
  }
  int r = uv_udp_init_ex(loop_, &u->handle, sa.ss_family | UV_UDP_RECVMMSG);
  if (r != 0) {
    error = uv_strerror(r);
    return false;
  }
  u->handle.data = u.get();
  uv_check_init(loop_, &u->flusher);
  u->flusher.data = u.get();
  uv_idle_init(loop_, &u->waker);
  uv_check_start(&u->flusher, [](uv_check_t* c) {
    auto* udp = static_cast<Udp*>(c->data);
    if (udp->queued_count > 0) udp->flush();
  });
  u->open = true;
  udp_.push_back(u);
  r = uv_udp_bind(&u->handle, reinterpret_cast<sockaddr*>(&sa), 0);
  if (r == 0)
    r = uv_udp_recv_start(
        &u->handle,
        [](uv_handle_t*, size_t, uv_buf_t* buf) {
          buf->base = g_udp_buffer;
          buf->len = sizeof g_udp_buffer;
        },
        [](uv_udp_t* h, ssize_t nread, const uv_buf_t* buf, const sockaddr* from, unsigned flags) {
          // nread 0 without an address: the socket is drained, or (with
          // UV_UDP_MMSG_FREE) libuv is done with a recvmmsg() buffer.
          if (nread <= 0 || !from) return;
          auto* udp = static_cast<Udp*>(h->data);
          if (flags & UV_UDP_PARTIAL) {
            LOG_DEBUG("rtpproxy: truncated datagram from %s dropped", address_of(from).c_str());
            udp->server->front_end().count_error(rtpp_error::kTooBig);
            return;
          }
          udp->on_datagram(buf->base, static_cast<size_t>(nread), from);
        });
  if (r != 0) {
    error = uv_strerror(r);
    return false;
  }
  return true;
}

bool RtpproxyServer::listen_stream(const RtpproxyListen& l, std::string& error) {
  auto s = std::make_unique<Stream>();
  s->server = this;
  s->where = l;
  int r;
  const bool is_unix = l.transport == RtpproxyListen::Transport::Unix ||
                       l.transport == RtpproxyListen::Transport::Cunix;
  if (is_unix) {
    struct stat st;
    if (lstat(l.address.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) {
        error = l.address + " exists and is not a socket";
        return false;
      }
      unlink(l.address.c_str());  // stale: the module socket logic owns liveness checks
    }
    uv_pipe_init(loop_, &s->handle.pipe, 0);
    s->handle.pipe.data = s.get();
    s->open = true;
    r = uv_pipe_bind(&s->handle.pipe, l.address.c_str());
    if (r == 0) chmod(l.address.c_str(), 0660);
  } else {
    sockaddr_storage sa{};
    if (!make_sockaddr(l, sa)) {
      error = "bad address";
      return false;
    }
    uv_tcp_init(loop_, &s->handle.tcp);
    s->handle.tcp.data = s.get();
    s->open = true;
    r = uv_tcp_bind(&s->handle.tcp, reinterpret_cast<sockaddr*>(&sa), 0);
  }
  Stream* raw = s.get();
  streams_.push_back(std::move(s));
  if (r == 0)
    r = uv_listen(reinterpret_cast<uv_stream_t*>(&raw->handle), 128, [](uv_stream_t* h, int st) {
      auto* listener = static_cast<Stream*>(h->data);
      RtpproxyServer* server = listener->server;
      if (st < 0) return;
      auto c = std::make_shared<Connection>();
      c->server = server;
      c->self = c;
      const auto t = listener->where.transport;
      c->cookies = listener->where.has_cookie();
      c->unix_socket =
          t == RtpproxyListen::Transport::Unix || t == RtpproxyListen::Transport::Cunix;
      if (c->unix_socket)
        uv_pipe_init(server->loop(), &c->handle.pipe, 0);
      else
        uv_tcp_init(server->loop(), &c->handle.tcp);
      c->handle.tcp.data = c.get();
      server->connections().push_back(c);
      if (uv_accept(h, c->stream()) != 0 || server->connections().size() > kMaxStreamConnections) {
        if (server->connections().size() > kMaxStreamConnections && listener->refused++ % 100 == 0)
          LOG_WARN("rtpproxy: more than %zu connections on %s; refusing", kMaxStreamConnections,
                   listener->where.text.c_str());
        c->close();
        return;
      }
      if (!c->unix_socket) {
        sockaddr_storage peer{};
        int len = sizeof peer;
        if (uv_tcp_getpeername(&c->handle.tcp, reinterpret_cast<sockaddr*>(&peer), &len) == 0)
          c->client_ip = address_of(reinterpret_cast<sockaddr*>(&peer));
      }
      uv_read_start(
          c->stream(),
          [](uv_handle_t*, size_t, uv_buf_t* buf) {
            buf->base = g_stream_buffer;
            buf->len = sizeof g_stream_buffer;
          },
          [](uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
            auto* conn = static_cast<Connection*>(stream->data);
            if (nread < 0) {
              conn->close();
              return;
            }
            auto keep = conn->self.lock();  // a reply callback may close it
            conn->on_read(buf->base, static_cast<size_t>(nread));
          });
    });
  if (r != 0) {
    error = uv_strerror(r);
    return false;
  }
  return true;
}

void RtpproxyServer::close() {
  for (auto& u : udp_) {
    if (!u->open) continue;
    u->flush();  // replies already decided still go out
    u->open = false;
    auto* holder = new std::shared_ptr<Udp>(u);
    u->handle.data = holder;
    u->flusher.data = new std::shared_ptr<Udp>(u);
    uv_close(reinterpret_cast<uv_handle_t*>(&u->handle),
             [](uv_handle_t* h) { delete static_cast<std::shared_ptr<Udp>*>(h->data); });
    uv_close(reinterpret_cast<uv_handle_t*>(&u->flusher),
             [](uv_handle_t* h) { delete static_cast<std::shared_ptr<Udp>*>(h->data); });
    u->waker.data = new std::shared_ptr<Udp>(u);
    uv_close(reinterpret_cast<uv_handle_t*>(&u->waker),
             [](uv_handle_t* h) { delete static_cast<std::shared_ptr<Udp>*>(h->data); });
  }
  udp_.clear();
  for (auto& s : streams_) {
    if (!s->open) continue;
    s->open = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&s->handle), nullptr);
    const auto t = s->where.transport;
    if (t == RtpproxyListen::Transport::Unix || t == RtpproxyListen::Transport::Cunix)
      unlink(s->where.address.c_str());
  }
  auto all = connections_;
  for (auto& c : all) c->close();
}

}  // namespace mp::dispatcher
