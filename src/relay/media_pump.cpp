// Implementation of the relay's bounded-pass data path (media_pump.h).
#include "relay/media_pump.h"

#include <netinet/udp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "relay/media_socket.h"

namespace mp::relay {

namespace {
// Receive buffers of one batch, shared by every socket (passes never nest).
alignas(64) unsigned char g_rx[MediaPump::kBatch][MediaPump::kMaxDatagram];
mmsghdr g_rx_msgs[MediaPump::kBatch];
iovec g_rx_iov[MediaPump::kBatch];
SocketAddress g_from[MediaPump::kBatch];
epoll_event g_events[MediaPump::kEvents];
}  // namespace

MediaPump* MediaPump::create(uv_loop_t* loop, std::string& error) {
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) {
    error = std::string("cannot create the media epoll instance: ") + std::strerror(errno);
    return nullptr;
  }
  auto* p = new MediaPump();
  p->loop_ = loop;
  p->epfd_ = epfd;
  p->poll_.data = p;
  int rc = uv_poll_init(loop, &p->poll_, epfd);
  if (rc == 0) rc = uv_poll_start(&p->poll_, UV_READABLE, on_ready);
  if (rc != 0) {
    error = std::string("cannot watch the media epoll instance: ") + uv_strerror(rc);
    ::close(epfd);
    delete p;  // uv_poll_init failing leaves nothing registered
    return nullptr;
  }
  return p;
}

void MediaPump::close() {
  uv_close(reinterpret_cast<uv_handle_t*>(&poll_), on_closed);
}

void MediaPump::on_closed(uv_handle_t* h) {
  auto* p = static_cast<MediaPump*>(h->data);
  for (MediaSocket* s : p->graveyard_) delete s;
  for (auto& [key, s] : p->idle_) {
    ::close(s->fd_);
    delete s;
  }
  ::close(p->epfd_);
  delete p;
}

int MediaPump::watch(int fd, MediaSocket* s) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = s;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) return -errno;
  return 0;
}

void MediaPump::unwatch(int fd) {
  epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
}

void MediaPump::retire(MediaSocket* s) {
  if (in_pass_) {
    graveyard_.push_back(s);
  } else {
    delete s;
  }
}

namespace {
// A relay binds one address per family, so the port and the family name a
// local address; the address bits only guard against surprises.
uint64_t idle_key(const IpEndpoint& e) {
  uint32_t tail;
  std::memcpy(&tail, e.ip.bytes.data() + (e.ip.is_v4() ? 0 : 12), 4);
  return (static_cast<uint64_t>(e.ip.is_v6()) << 63) | (static_cast<uint64_t>(tail) << 16) | e.port;
}
}  // namespace

bool MediaPump::park(MediaSocket* s) {
  if (idle_.size() >= idle_capacity_) return false;
  return idle_.emplace(idle_key(s->local_), s).second;
}

void MediaPump::close_idle() {
  for (auto& [key, s] : idle_) {
    unwatch(s->fd_);
    ::close(s->fd_);
    s->fd_ = -1;
    retire(s);
  }
  idle_.clear();
}

size_t MediaPump::evict_idle(size_t n) {
  size_t closed = 0;
  for (auto it = idle_.begin(); it != idle_.end() && closed < n; ++closed) {
    MediaSocket* s = it->second;
    it = idle_.erase(it);
    unwatch(s->fd_);
    ::close(s->fd_);
    s->fd_ = -1;
    retire(s);
  }
  return closed;
}

void MediaPump::inherit(const IpEndpoint& local, int fd) {
  auto [it, fresh] = inherited_.emplace(idle_key(local), fd);
  if (!fresh) ::close(fd);  // the same port twice: keep the first
}

int MediaPump::take_inherited(const IpEndpoint& local) {
  auto it = inherited_.find(idle_key(local));
  if (it == inherited_.end()) return -1;
  const int fd = it->second;
  inherited_.erase(it);
  return fd;
}

size_t MediaPump::close_inherited() {
  const size_t n = inherited_.size();
  for (auto& [key, fd] : inherited_) ::close(fd);
  inherited_.clear();
  return n;
}

MediaSocket* MediaPump::unpark(const IpEndpoint& local) {
  auto it = idle_.find(idle_key(local));
  if (it == idle_.end()) return nullptr;
  MediaSocket* s = it->second;
  idle_.erase(it);
  // What reached the port while it was idle belongs to no call: a parked
  // socket stays in the epoll set and every pass reads and drops it
  // (read_batch without an owner). A datagram queued since the last pass is
  // no different from one sent just after this call, so the port is not
  // drained here: that was a recv() per stream socket of every call set-up.
  return s;
}

void MediaPump::on_ready(uv_poll_t* p, int status, int) {
  if (status < 0) return;
  static_cast<MediaPump*>(p->data)->run_pass();
}

void MediaPump::run_pass() {
  in_pass_ = true;
  ++passes_;
  unsigned handled = 0;
  while (handled < kPassBudget) {
    int n = epoll_wait(epfd_, g_events, kEvents, 0);
    if (n <= 0) break;
    // Sockets fetched but not read stay ready (level-triggered): the next
    // pass gets them.
    for (int i = 0; i < n && handled < kPassBudget; ++i) {
      auto* s = static_cast<MediaSocket*>(g_events[i].data.ptr);
      // Idle sockets (no owner) are read too: their datagrams are dropped.
      if (s->fd_ >= 0) handled += read_batch(s);
    }
  }
  in_pass_ = false;
  for (MediaSocket* s : graveyard_) delete s;
  graveyard_.clear();
  if (pass_end_) pass_end_(pass_end_arg_);
}

unsigned MediaPump::read_batch(MediaSocket* s) {
  for (unsigned i = 0; i < kBatch; ++i) {
    g_rx_iov[i].iov_base = g_rx[i];
    g_rx_iov[i].iov_len = kMaxDatagram;
    msghdr& h = g_rx_msgs[i].msg_hdr;
    h.msg_name = &g_from[i].sa;
    h.msg_namelen = sizeof g_from[i].v6;
    h.msg_iov = &g_rx_iov[i];
    h.msg_iovlen = 1;
    h.msg_control = nullptr;
    h.msg_controllen = 0;
    h.msg_flags = 0;
  }
  int n = ::recvmmsg(s->fd_, g_rx_msgs, kBatch, MSG_DONTWAIT, nullptr);
  if (n <= 0) {
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      LOG_DEBUG("receive error on %s: %s", format_ip_endpoint(s->local_).c_str(),
                std::strerror(errno));
    // A socket with a pending error (ICMP) is readable without data: reading
    // the error clears it, so the next pass does not spin on it.
    return 1;
  }
  received_ += static_cast<unsigned>(n);
  for (int i = 0; i < n && s->owner_; ++i) {
    const msghdr& h = g_rx_msgs[i].msg_hdr;
    const sa_family_t family = g_from[i].sa.sa_family;
    if ((h.msg_flags & MSG_TRUNC) || (family != AF_INET && family != AF_INET6)) continue;
    g_from[i].len = h.msg_namelen;
    s->owner_->on_datagram(s->tag_, g_from[i], g_rx[i], g_rx_msgs[i].msg_len);
  }
  flush();  // before the buffers are read into again
  return static_cast<unsigned>(n);
}

void MediaPump::send(int fd, const SocketAddress& to, const uint8_t* data, size_t len,
                     SendFailureSink* sink, int cookie) {
  if (!in_pass_) {
    ssize_t r = ::sendto(fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL, &to.sa, to.len);
    if (r < 0) {
      ++send_failures_;
      if (sink) sink->on_send_failed(cookie, len);
    }
    return;
  }
  if (out_count_ == sizeof out_ / sizeof out_[0]) flush();
  out_[out_count_++] = Outgoing{fd, to, data, len, sink, cookie};
}

namespace {
// Larger datagrams go singly: a GSO segment plus headers must fit the path
// MTU (the kernel refuses the send otherwise), and RTP stays well below this.
constexpr size_t kGsoMaxSegment = 1400;

bool same_destination(const SocketAddress& a, const SocketAddress& b) {
  return a.same_as(b);
}
}  // namespace

// Sends the queue: one sendmmsg() per run of datagrams leaving the same
// socket (normally the whole batch, as one stream's packets go one way).
// Consecutive datagrams of one length to one destination (RTP of one
// stream) become a single UDP GSO send (UDP_SEGMENT): the kernel builds and
// routes one buffer and cuts it into the same datagrams on the way out,
// which costs much less than sending them one by one. Where GSO is refused
// (old kernel, IPsec route) it is switched off and the datagrams go singly.
void MediaPump::flush() {
  constexpr unsigned kMax = sizeof out_ / sizeof out_[0];
  static mmsghdr msgs[kMax];
  static iovec iov[kMax];
  static unsigned group_begin[kMax];
  static unsigned group_end[kMax];
  alignas(cmsghdr) static char control[kMax][CMSG_SPACE(sizeof(uint16_t))];
  unsigned i = 0;
  while (i < out_count_) {
    const int fd = out_[i].fd;
    unsigned end = i + 1;
    while (end < out_count_ && out_[end].fd == fd) ++end;
    // Group [i, end) into messages.
    unsigned m = 0;
    for (unsigned j = i; j < end;) {
      unsigned k = j + 1;
      if (gso_ && out_[j].len <= kGsoMaxSegment) {
        // All segments but the last have the GSO size; the last may be shorter.
        while (k < end && same_destination(out_[k].to, out_[j].to) &&
               out_[k - 1].len == out_[j].len && out_[k].len <= out_[j].len)
          ++k;
      }
      for (unsigned x = j; x < k; ++x) {
        iov[x].iov_base = const_cast<uint8_t*>(out_[x].data);
        iov[x].iov_len = out_[x].len;
      }
      msghdr& h = msgs[m].msg_hdr;
      h = msghdr{};
      h.msg_name = const_cast<sockaddr*>(&out_[j].to.sa);
      h.msg_namelen = out_[j].to.len;
      h.msg_iov = &iov[j];
      h.msg_iovlen = k - j;
      if (k - j > 1) {
        h.msg_control = control[m];
        h.msg_controllen = sizeof control[m];
        cmsghdr* c = CMSG_FIRSTHDR(&h);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        const uint16_t segment = static_cast<uint16_t>(out_[j].len);
        std::memcpy(CMSG_DATA(c), &segment, sizeof segment);
      }
      group_begin[m] = j;
      group_end[m] = k;
      ++m;
      j = k;
    }
    for (unsigned g = 0; g < m;) {
      int r = ::sendmmsg(fd, &msgs[g], m - g, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (r > 0) {
        g += static_cast<unsigned>(r);
        continue;
      }
      // Message g was refused (buffer full, ICMP error pending...).
      const int err = errno;
      const bool gso_refused =
          group_end[g] - group_begin[g] > 1 &&
          (err == EINVAL || err == EIO || err == EOPNOTSUPP || err == ENOPROTOOPT);
      // Those errors may be about GSO or about the datagrams (port 0...):
      // send them singly, and if that works, GSO was the problem.
      bool singly_ok = false;
      for (unsigned x = group_begin[g]; x < group_end[g]; ++x) {
        if (gso_refused) {
          ssize_t one = ::sendto(fd, out_[x].data, out_[x].len, MSG_DONTWAIT | MSG_NOSIGNAL,
                                 &out_[x].to.sa, out_[x].to.len);
          if (one >= 0) {
            singly_ok = true;
            continue;
          }
        }
        ++send_failures_;
        if (out_[x].sink) out_[x].sink->on_send_failed(out_[x].cookie, out_[x].len);
      }
      if (singly_ok && gso_) {
        gso_ = false;
        LOG_WARN("UDP segmentation offload refused (%s): media datagrams are sent one by one",
                 std::strerror(err));
      }
      ++g;
    }
    i = end;
  }
  out_count_ = 0;
}

}  // namespace mp::relay
