// The hang-up client (hangup_client.h): one AF_UNIX datagram socket per
// configured proxy kind, bound at <runtime>/opensips.sock or
// <runtime>/kamailio.sock with mode 0666 so that a proxy running as another
// user can send its reply there, watched with uv_poll (libuv's uv_udp is for
// IP only). Requests go out with a non-blocking sendto(); a proxy socket
// that is absent or refuses makes the request `unsent` (logged under
// LOG_LIMITED, never fatal). A full socket queue (the proxy reads one
// datagram at a time, and net.unix.max_dgram_qlen is 10 by default) is not
// a failure: the request waits in order in a backlog that is retried every
// 10 ms, so a burst (a relay that ends all its calls at once) gets through.
// Each request has 3 s from hang_up() to be sent and answered: a reply is
// matched by id; still in the backlog then, it is `unsent`, else `timeout`.
// At most kMaxPending requests wait per proxy, more are `unsent`. Every
// outcome is logged (network values through log_safe()) and counted in
// mediaproxy_hangup_requests_total{proxy, result}.
#include "dispatcher/hangup_client.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <random>

#include "common/log.h"
#include "protocol/proxy_rpc.h"

namespace mp::dispatcher {

namespace {

constexpr uint64_t kReplyTimeoutMs = 3000;
constexpr uint64_t kSweepIntervalMs = 100;
constexpr uint64_t kBacklogRetryMs = 10;
constexpr size_t kMaxPending = 256;  // per proxy
constexpr int kMaxReadsPerWakeup = 64;

enum Result { kOk, kError, kTimeout, kUnsent, kResults };
constexpr std::array<const char*, kResults> kResultNames = {"ok", "error", "timeout", "unsent"};

const char* proxy_title(protocol::ProxyKind k) {
  return k == protocol::ProxyKind::OpenSips ? "OpenSIPS" : "Kamailio";
}

// The libuv handle and its descriptor live on the heap and are freed by the
// close callback, so the client can be destroyed before the loop runs again.
struct PollHandle {
  uv_poll_t poll;
  int fd = -1;
};

struct Pending {
  std::string dialog_id;
  std::string call_id;
  uint64_t deadline = 0;  // uv_now() milliseconds
  std::string request;    // the datagram
  bool sent = false;      // false: in the backlog
};

}  // namespace

struct HangupClient::Impl {
  struct Channel {
    Impl* owner = nullptr;
    protocol::ProxyKind kind = protocol::ProxyKind::OpenSips;
    std::string target;      // the proxy's socket
    std::string local_path;  // ours, in the runtime directory
    sockaddr_un target_addr{};
    PollHandle* handle = nullptr;            // null: not bound (or closed)
    std::map<std::string, Pending> pending;  // by request id, sent or in the backlog
    std::deque<std::string> backlog;         // ids not sent yet (the socket queue was full)
    std::array<uint64_t, kResults> counts{};
    log::LimitSource unsent_limit;  // unsent requests
    log::LimitSource reply_limit;   // odd replies
  };

  uv_loop_t* loop;
  std::string runtime_dir;
  std::vector<std::unique_ptr<Channel>> channels;
  uv_timer_t* timer = nullptr;
  bool started = false;
  bool closed = false;
  std::mt19937 rng{std::random_device{}()};
  log::LimitSource refused_limit;

  Channel* channel(protocol::ProxyKind k) {
    for (auto& c : channels)
      if (c->kind == k) return c.get();
    return nullptr;
  }
  bool bind_channel(Channel& c, std::string& error);
  void send(Channel& c, const protocol::DialogTarget& t, const std::string& dialog_id,
            const std::string& call_id);
  // Sends the request; 0, EAGAIN (queue full: try later) or another errno.
  int transmit(Channel& c, const std::string& id, Pending& p);
  void flush(Channel& c);
  void on_readable(Channel& c);
  void on_reply(Channel& c, const protocol::RpcReply& r, std::string_view raw);
  void sweep();
  void arm_timer();
  void finish(Channel& c, const Pending& p, Result r, const std::string& detail);
};

namespace {

void close_poll(PollHandle* h) {
  uv_poll_stop(&h->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&h->poll), [](uv_handle_t* handle) {
    auto* ph = reinterpret_cast<PollHandle*>(handle);
    ::close(ph->fd);
    delete ph;
  });
}

}  // namespace

bool HangupClient::Impl::bind_channel(Channel& c, std::string& error) {
  if (c.local_path.size() >= sizeof(sockaddr_un::sun_path)) {
    error = "hang-up reply socket path " + c.local_path + " is longer than " +
            std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes";
    return false;
  }
  struct stat st {};
  if (::lstat(c.local_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      error = "hang-up reply socket " + c.local_path + " exists and is not a socket";
      return false;
    }
    ::unlink(c.local_path.c_str());  // left by an earlier run
  }
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::string("cannot create a datagram socket: ") + std::strerror(errno);
    return false;
  }
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, c.local_path.data(), c.local_path.size());
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    error = "cannot bind the hang-up reply socket " + c.local_path + ": " + std::strerror(errno) +
            " (is the runtime directory writable?)";
    ::close(fd);
    return false;
  }
  // The proxy (often another user) must be allowed to send its reply here.
  if (::chmod(c.local_path.c_str(), 0666) != 0)
    LOG_WARN("cannot make %s writable for the proxy (%s): replies may not arrive",
             c.local_path.c_str(), std::strerror(errno));
  auto* h = new PollHandle;
  h->fd = fd;
  int r = uv_poll_init(loop, &h->poll, fd);
  if (r != 0) {
    error = std::string("cannot watch the hang-up reply socket: ") + uv_strerror(r);
    ::close(fd);
    ::unlink(c.local_path.c_str());
    delete h;
    return false;
  }
  h->poll.data = &c;
  c.handle = h;
  uv_poll_start(&h->poll, UV_READABLE, [](uv_poll_t* p, int status, int events) {
    auto* ch = static_cast<Channel*>(p->data);
    if (status < 0) {
      LOG_LIMITED(Warning, &ch->reply_limit, "hang-up reply socket %s: %s", ch->local_path.c_str(),
                  uv_strerror(status));
      return;
    }
    if (events & UV_READABLE) ch->owner->on_readable(*ch);
  });
  c.target_addr.sun_family = AF_UNIX;
  std::memcpy(c.target_addr.sun_path, c.target.data(),
              std::min(c.target.size(), sizeof(c.target_addr.sun_path) - 1));
  return true;
}

void HangupClient::Impl::finish(Channel& c, const Pending& p, Result r, const std::string& detail) {
  ++c.counts[r];
  const char* who = proxy_title(c.kind);
  const std::string d = log_safe(p.dialog_id), call = log_safe(p.call_id);
  switch (r) {
    case kOk:
      LOG_INFO("hang-up: %s ended dialog %s (call %s) whose media expired", who, d.c_str(),
               call.c_str());
      break;
    case kError:
      LOG_WARN("hang-up: %s did not end dialog %s (call %s): %s", who, d.c_str(), call.c_str(),
               detail.c_str());
      break;
    case kTimeout:
      LOG_WARN("hang-up: no answer from %s on %s within %llu s for dialog %s (call %s)", who,
               c.target.c_str(), static_cast<unsigned long long>(kReplyTimeoutMs / 1000), d.c_str(),
               call.c_str());
      break;
    default:
      LOG_LIMITED(Warning, &c.unsent_limit,
                  "hang-up: request for dialog %s (call %s) not sent to %s: %s", d.c_str(),
                  call.c_str(), who, detail.c_str());
      break;
  }
}

void HangupClient::Impl::send(Channel& c, const protocol::DialogTarget& t,
                              const std::string& dialog_id, const std::string& call_id) {
  uv_update_time(loop);  // the loop's clock may be stale outside a callback
  Pending p{dialog_id, call_id, uv_now(loop) + kReplyTimeoutMs, {}, false};
  if (c.pending.size() >= kMaxPending) {
    finish(c, p, kUnsent,
           std::to_string(kMaxPending) + " requests already wait for an answer from " + c.target);
    return;
  }
  std::string id;
  do {
    id = protocol::format_request_id(static_cast<uint32_t>(rng()));
  } while (c.pending.count(id));
  p.request = c.kind == protocol::ProxyKind::OpenSips ? protocol::build_opensips_end_dlg(id, t)
                                                      : protocol::build_kamailio_end_dlg(id, t);
  Pending& stored = c.pending.emplace(id, std::move(p)).first->second;
  if (c.backlog.empty() && transmit(c, id, stored) != EAGAIN) {
    arm_timer();
    return;
  }
  c.backlog.push_back(id);  // sent in order once the proxy has read what it has
  arm_timer();
}

int HangupClient::Impl::transmit(Channel& c, const std::string& id, Pending& p) {
  const ssize_t n =
      ::sendto(c.handle->fd, p.request.data(), p.request.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
               reinterpret_cast<const sockaddr*>(&c.target_addr), sizeof c.target_addr);
  if (n >= 0) {
    p.sent = true;
    // The request holds only our id and numbers parsed from the dialog id.
    LOG_DEBUG("hang-up: asked %s on %s to end dialog %s (call %s): %s", proxy_title(c.kind),
              c.target.c_str(), log_safe(p.dialog_id).c_str(), log_safe(p.call_id).c_str(),
              p.request.c_str());
    return 0;
  }
  const int e = errno;
  if (e == EAGAIN || e == EWOULDBLOCK) return EAGAIN;
  std::string why = c.target + ": " + std::strerror(e);
  if (e == ENOENT || e == ECONNREFUSED)
    why += " (is the proxy running with its " +
           std::string(c.kind == protocol::ProxyKind::OpenSips ? "mi_datagram" : "jsonrpcs") +
           " datagram socket there?)";
  const Pending failed = std::move(p);
  const std::string key = id;  // `id` may be the key of the entry erased here
  c.pending.erase(key);
  finish(c, failed, kUnsent, why);
  return e;
}

void HangupClient::Impl::flush(Channel& c) {
  while (!c.backlog.empty() && c.handle) {
    auto it = c.pending.find(c.backlog.front());
    if (it != c.pending.end() && transmit(c, it->first, it->second) == EAGAIN) return;
    c.backlog.pop_front();
  }
}

void HangupClient::Impl::on_readable(Channel& c) {
  static thread_local std::string buf(protocol::kMaxReplyLength + 1, '\0');
  for (int i = 0; i < kMaxReadsPerWakeup && c.handle; ++i) {
    const ssize_t n = ::recv(c.handle->fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        LOG_LIMITED(Warning, &c.reply_limit, "hang-up reply socket %s: %s", c.local_path.c_str(),
                    std::strerror(errno));
      return;
    }
    const std::string_view raw(buf.data(), static_cast<size_t>(n));
    const auto reply = protocol::parse_rpc_reply(raw);
    if (!reply) {
      LOG_LIMITED(Warning, &c.reply_limit, "hang-up: unreadable reply from %s ignored: %s",
                  proxy_title(c.kind), log_safe(raw, 120).c_str());
      continue;
    }
    on_reply(c, *reply, raw);
  }
}

void HangupClient::Impl::on_reply(Channel& c, const protocol::RpcReply& r, std::string_view raw) {
  auto it = c.pending.end();
  if (r.id) {
    it = c.pending.find(*r.id);
    if (it == c.pending.end()) {
      LOG_LIMITED(Info, &c.reply_limit, "hang-up: reply from %s for no waiting request (late?): %s",
                  proxy_title(c.kind), log_safe(raw, 120).c_str());
      return;
    }
    if (!it->second.sent) return;  // not sent yet: not its reply
  } else if (c.pending.size() - c.backlog.size() == 1) {
    // a reply without id can only be for the one request sent and waiting
    it = std::find_if(c.pending.begin(), c.pending.end(),
                      [](const auto& e) { return e.second.sent; });
  } else {
    LOG_LIMITED(Warning, &c.reply_limit,
                "hang-up: reply without id from %s while %zu requests wait; ignored: %s",
                proxy_title(c.kind), c.pending.size() - c.backlog.size(),
                log_safe(raw, 120).c_str());
    return;
  }
  const Pending p = std::move(it->second);
  c.pending.erase(it);
  if (r.ok)
    finish(c, p, kOk, {});
  else
    finish(c, p, kError, std::to_string(r.code) + " " + log_safe(r.message, 200));
}

void HangupClient::Impl::sweep() {
  const uint64_t now = uv_now(loop);
  for (auto& c : channels) {
    flush(*c);
    for (auto it = c->pending.begin(); it != c->pending.end();) {
      if (it->second.deadline <= now) {
        const Pending p = std::move(it->second);
        if (!p.sent) c->backlog.erase(std::find(c->backlog.begin(), c->backlog.end(), it->first));
        it = c->pending.erase(it);
        finish(*c, p, p.sent ? kTimeout : kUnsent,
               p.sent ? std::string() : c->target + ": its socket queue stayed full");
      } else {
        ++it;
      }
    }
  }
  arm_timer();
}

void HangupClient::Impl::arm_timer() {
  if (!timer) return;
  bool waiting = false, backlog = false;
  for (auto& c : channels) {
    waiting = waiting || !c->pending.empty();
    backlog = backlog || !c->backlog.empty();
  }
  const uint64_t interval = backlog ? kBacklogRetryMs : kSweepIntervalMs;
  if (!waiting) {
    uv_timer_stop(timer);
  } else if (!uv_is_active(reinterpret_cast<uv_handle_t*>(timer)) ||
             uv_timer_get_repeat(timer) != interval) {
    uv_timer_start(
        timer, [](uv_timer_t* t) { static_cast<Impl*>(t->data)->sweep(); }, interval, interval);
  }
}

HangupClient::HangupClient(uv_loop_t* loop, const HangupConfig& cfg, const std::string& runtime_dir)
    : impl_(std::make_unique<Impl>()) {
  impl_->loop = loop;
  impl_->runtime_dir = runtime_dir;
  auto add = [&](protocol::ProxyKind kind, const std::string& target, const char* file) {
    if (target.empty()) return;
    auto c = std::make_unique<Impl::Channel>();
    c->owner = impl_.get();
    c->kind = kind;
    c->target = target;
    c->local_path = runtime_dir + "/" + file;
    impl_->channels.push_back(std::move(c));
  };
  add(protocol::ProxyKind::OpenSips, cfg.opensips_socket, "opensips.sock");
  add(protocol::ProxyKind::Kamailio, cfg.kamailio_socket, "kamailio.sock");
}

HangupClient::~HangupClient() {
  close();
}

bool HangupClient::start(std::string& error) {
  Impl& m = *impl_;
  if (m.started || m.closed) return !m.closed;
  for (auto& c : m.channels)
    if (!m.bind_channel(*c, error)) return false;
  m.timer = new uv_timer_t;
  uv_timer_init(m.loop, m.timer);
  m.timer->data = &m;
  m.started = true;
  for (auto& c : m.channels)
    LOG_INFO("hang-up: %s dialogs are ended through %s (replies to %s)", proxy_title(c->kind),
             c->target.c_str(), c->local_path.c_str());
  return true;
}

void HangupClient::hang_up(const std::string& dialog_id, const std::string& call_id) {
  Impl& m = *impl_;
  if (!m.started || m.closed) return;
  std::string reason;
  const auto target = protocol::classify_dialog_id(dialog_id, reason);
  if (!target) {
    LOG_LIMITED(Warning, &m.refused_limit, "hang-up: dialog %s of call %s not ended: %s",
                log_safe(dialog_id).c_str(), log_safe(call_id).c_str(), reason.c_str());
    return;
  }
  Impl::Channel* c = m.channel(target->kind);
  if (!c) {
    LOG_LIMITED(Warning, &m.refused_limit,
                "hang-up: dialog %s of call %s belongs to %s, whose socket_path is off",
                log_safe(dialog_id).c_str(), log_safe(call_id).c_str(), proxy_title(target->kind));
    return;
  }
  m.send(*c, *target, dialog_id, call_id);
}

void HangupClient::write_metrics(metrics::Exposition& out) const {
  for (const auto& c : impl_->channels)
    for (int r = 0; r < kResults; ++r)
      out.counter("mediaproxy_hangup_requests_total",
                  "Requests to a SIP proxy to end a dialog whose media died, by proxy and result.",
                  static_cast<double>(c->counts[r]),
                  {{"proxy", std::string(protocol::proxy_kind_name(c->kind))},
                   {"result", kResultNames[r]}});
}

void HangupClient::close() {
  Impl& m = *impl_;
  if (m.closed) return;
  m.closed = true;
  for (auto& c : m.channels) {
    if (!c->pending.empty())
      LOG_INFO("hang-up: %zu request(s) to %s still unanswered at shutdown", c->pending.size(),
               proxy_title(c->kind));
    c->pending.clear();
    c->backlog.clear();
    if (c->handle) {
      close_poll(c->handle);
      c->handle = nullptr;
      ::unlink(c->local_path.c_str());
    }
  }
  if (m.timer) {
    uv_timer_stop(m.timer);
    uv_close(reinterpret_cast<uv_handle_t*>(m.timer),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    m.timer = nullptr;
  }
}

}  // namespace mp::dispatcher
