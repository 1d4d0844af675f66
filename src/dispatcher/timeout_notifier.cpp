// Writing timeout notifications to the proxy (timeout_notifier.h).
#include "dispatcher/timeout_notifier.h"

#include <arpa/inet.h>

#include <cstring>

#include "common/config.h"
#include "common/log.h"

namespace mp::dispatcher {

namespace {
constexpr size_t kMaxQueued = 1024;  // per target
}

struct TimeoutNotifier::Target {
  TimeoutNotifier* owner = nullptr;
  std::string name;
  RtpproxyNotifyTarget where;
  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } handle;
  bool open = false;  // handle initialised, not yet closed
  bool closing = false;
  bool reconnect = false;  // connect again when the close completes
  bool connected = false;
  bool connecting = false;
  int retries_left = 1;
  std::deque<std::string> queue;
  uv_connect_t connect_req;
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&handle); }
};

namespace {

struct Write {
  uv_write_t req;
  std::string data;
  TimeoutNotifier::Target* target;
};

}  // namespace

// Closes the connection; once libuv has let go of the handle, connects
// again if notifications are waiting and a reconnect was asked for.
static void close_handle(TimeoutNotifier::Target& t, bool reconnect);

TimeoutNotifier::TimeoutNotifier(uv_loop_t* loop) : loop_(loop) {}
TimeoutNotifier::~TimeoutNotifier() = default;

void TimeoutNotifier::send(const std::string& target, const std::string& tag) {
  auto& slot = targets_[target];
  if (!slot) {
    std::string error;
    auto where = parse_rtpproxy_notify_target(target, error);
    if (!where) {
      ++lost_;
      LOG_WARN("rtpproxy: timeout notification to %s not sent: %s", log_safe(target).c_str(),
               log_safe(error).c_str());
      targets_.erase(target);
      return;
    }
    slot = std::make_unique<Target>();
    slot->owner = this;
    slot->name = target;
    slot->where = *where;
  }
  Target& t = *slot;
  if (t.queue.size() >= kMaxQueued) {
    ++lost_;
    LOG_WARN("rtpproxy: %zu timeout notifications already wait for %s; one dropped", kMaxQueued,
             log_safe(target).c_str());
    return;
  }
  t.queue.push_back(tag + "\n");
  t.retries_left = 1;
  if (t.connected)
    flush(t);
  else if (t.closing)
    t.reconnect = true;
  else if (!t.connecting && !t.open)
    connect(t);
}

void TimeoutNotifier::connect(Target& t) {
  t.connecting = true;
  t.open = true;
  t.connect_req.data = &t;
  auto on_connect = [](uv_connect_t* req, int status) {
    auto* target = static_cast<Target*>(req->data);
    if (!target->open) return;  // closed meanwhile
    target->connecting = false;
    if (status < 0) {
      target->owner->drop(*target, uv_strerror(status));
      return;
    }
    target->connected = true;
    target->owner->flush(*target);
  };
  int r;
  if (t.where.unix_socket) {
    uv_pipe_init(loop_, &t.handle.pipe, 0);
    t.handle.pipe.data = &t;
    uv_pipe_connect(&t.connect_req, &t.handle.pipe, t.where.address.c_str(), on_connect);
    return;
  }
  uv_tcp_init(loop_, &t.handle.tcp);
  t.handle.tcp.data = &t;
  sockaddr_storage sa{};
  if (t.where.address.find(':') != std::string::npos)
    r = uv_ip6_addr(t.where.address.c_str(), t.where.port, reinterpret_cast<sockaddr_in6*>(&sa));
  else
    r = uv_ip4_addr(t.where.address.c_str(), t.where.port, reinterpret_cast<sockaddr_in*>(&sa));
  if (r == 0)
    r = uv_tcp_connect(&t.connect_req, &t.handle.tcp, reinterpret_cast<sockaddr*>(&sa), on_connect);
  if (r != 0) drop(t, uv_strerror(r));
}

void TimeoutNotifier::flush(Target& t) {
  while (!t.queue.empty()) {
    auto* w = new Write;
    w->data = std::move(t.queue.front());
    t.queue.pop_front();
    w->target = &t;
    w->req.data = w;
    uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
    int r = uv_write(&w->req, t.stream(), &b, 1, [](uv_write_t* req, int status) {
      auto* wr = static_cast<Write*>(req->data);
      Target& tg = *wr->target;
      if (status == 0) {
        ++tg.owner->delivered_;
      } else if (status != UV_ECANCELED) {
        // rtpproxy reconnects and tries once more.
        if (tg.retries_left-- > 0) {
          tg.queue.push_front(std::move(wr->data));
          LOG_INFO("rtpproxy: timeout notification socket %s failed (%s); reconnecting",
                   log_safe(tg.name).c_str(), uv_strerror(status));
          close_handle(tg, true);
        } else {
          tg.owner->drop(tg, uv_strerror(status));
        }
      }
      delete wr;
    });
    if (r != 0) {
      t.queue.push_front(std::move(w->data));
      delete w;
      drop(t, uv_strerror(r));
      return;
    }
  }
}

void TimeoutNotifier::drop(Target& t, const char* why) {
  lost_ += t.queue.size();
  if (!t.queue.empty())
    LOG_WARN("rtpproxy: %zu timeout notification(s) to %s lost: %s", t.queue.size(),
             log_safe(t.name).c_str(), why);
  t.queue.clear();
  close_handle(t, false);
}

static void close_handle(TimeoutNotifier::Target& t, bool reconnect) {
  if (!t.open) return;
  t.open = false;
  t.connected = t.connecting = false;
  t.closing = true;
  t.reconnect = reconnect;
  uv_close(reinterpret_cast<uv_handle_t*>(&t.handle), [](uv_handle_t* h) {
    auto* tg = static_cast<TimeoutNotifier::Target*>(h->data);
    tg->closing = false;
    if (tg->reconnect && !tg->queue.empty() && !tg->owner->closed()) tg->owner->reconnect(*tg);
  });
}

void TimeoutNotifier::close() {
  closed_ = true;
  for (auto& [name, t] : targets_) {
    t->queue.clear();
    close_handle(*t, false);
  }
}

}  // namespace mp::dispatcher
