// Implementation of the relay's bounded-pass data path (media_pump.h).
#include "relay/media_pump.h"

#include <netinet/udp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "relay/batched_io.h"
#include "relay/media_socket.h"
#include "relay/pass_timer.h"
#include "relay/raw_udp_sender.h"
#include "relay/tproxy_socket.h"

namespace mp::relay {

namespace {
// Receive buffers of one batch, shared by every socket (passes never nest).
alignas(64) unsigned char g_rx[MediaPump::kBatch][MediaPump::kMaxDatagram];
mmsghdr g_rx_msgs[MediaPump::kBatch];
iovec g_rx_iov[MediaPump::kBatch];
SocketAddress g_from[MediaPump::kBatch];
epoll_event g_events[MediaPump::kEvents];
// Batched reads: one buffer per receive of a round.
alignas(64) unsigned char g_round_rx[MediaPump::kRoundReads][MediaPump::kMaxDatagram];
msghdr g_round_msgs[MediaPump::kRoundReads];
iovec g_round_iov[MediaPump::kRoundReads];
SocketAddress g_round_from[MediaPump::kRoundReads];
MediaSocket* g_round_socket[MediaPump::kRoundReads];
int g_round_result[MediaPump::kRoundReads];
// Reads of a tproxy socket: headers and original-destination control
// messages (the buffers and sources are the round's).
mmsghdr g_tp_msgs[MediaPump::kTproxyBatch];
alignas(cmsghdr) char g_tp_control[MediaPump::kTproxyBatch][kOriginalDestinationSpace];
static_assert(MediaPump::kTproxyBatch <= MediaPump::kRoundReads);
// Completions of one submission (receives of a round, or sends of a flush).
constexpr unsigned kMaxOps = MediaPump::kRoundReads + 8;
}  // namespace

MediaPump::~MediaPump() = default;

bool MediaPump::use_batched_io(std::string& error) {
  if (!batched_) batched_ = BatchedIo::create(kMaxOps, error);
  return batched_ != nullptr;
}

bool MediaPump::use_raw_send(std::string& error) {
  if (!raw_) raw_ = RawUdpSender::open(error);
  return raw_ != nullptr;
}

bool MediaPump::set_coalesce(uint64_t period_ns, std::string& error) {
  if (period_ns && !tick_) {
    tick_ = PassTimer::create(loop_, on_tick, this, error);
    if (!tick_) return false;
  }
  if (!period_ns && coalescing()) {
    tick_->stop();
    uv_poll_start(&poll_, UV_READABLE, on_ready);
  }
  coalesce_ns_ = period_ns;
  return true;
}

bool MediaPump::coalescing() const {
  return tick_ && tick_->running();
}

void MediaPump::stop_batched_io(int err) {
  LOG_WARN("io_uring submission failed (%s): media goes back to one system call per socket",
           std::strerror(err));
  batched_.reset();
}

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
  if (tick_) tick_->close();
  tick_ = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&poll_), on_closed);
}

void MediaPump::on_closed(uv_handle_t* h) {
  auto* p = static_cast<MediaPump*>(h->data);
  for (MediaSocket* s : p->graveyard_) delete s;
  for (auto& [key, s] : p->idle_) {
    ::close(s->fd_);
    delete s;
  }
  for (TproxySocket& t : p->tproxy_)
    if (t.fd >= 0) ::close(t.fd);
  ::close(p->epfd_);
  delete p;
}

int MediaPump::watch(int fd, MediaSocket* s) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = s;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) return -errno;
  std::vector<MediaSocket*>& ports = by_port_[s->local_.ip.is_v6() ? 1 : 0];
  if (ports.empty()) ports.assign(65536, nullptr);
  ports[s->local_.port] = s;
  return 0;
}

void MediaPump::unwatch(MediaSocket* s) {
  epoll_ctl(epfd_, EPOLL_CTL_DEL, s->fd_, nullptr);
  std::vector<MediaSocket*>& ports = by_port_[s->local_.ip.is_v6() ? 1 : 0];
  if (!ports.empty() && ports[s->local_.port] == s) ports[s->local_.port] = nullptr;
}

bool MediaPump::add_tproxy_socket(int fd, const IpEndpoint& local, std::string& error) {
  TproxySocket& t = tproxy_[local.ip.is_v6() ? 1 : 0];
  if (t.fd >= 0) {
    error = "a tproxy socket of that family is read already";
    return false;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = &t;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    error = std::string("cannot watch the tproxy socket: ") + std::strerror(errno);
    return false;
  }
  t.fd = fd;
  t.local = local;
  t.watched = true;
  ++tproxy_watched_;
  return true;
}

std::vector<std::pair<IpEndpoint, int>> MediaPump::release_tproxy_sockets() {
  std::vector<std::pair<IpEndpoint, int>> out;
  for (TproxySocket& t : tproxy_) {
    if (t.fd < 0) continue;
    if (t.watched) epoll_ctl(epfd_, EPOLL_CTL_DEL, t.fd, nullptr);
    t.watched = false;
    out.emplace_back(t.local, t.fd);
  }
  tproxy_watched_ = 0;
  return out;
}

bool MediaPump::set_ports_transparent(bool on, std::string& error) {
  transparent_ports_ = on;
  for (int v6 = 0; v6 < 2; ++v6)
    for (MediaSocket* s : by_port_[v6])
      if (s)
        if (int err = make_transparent(s->fd_, v6 ? AF_INET6 : AF_INET, on)) {
          if (!on) continue;  // as plain as it can be made
          error = "cannot make the media port socket " + format_ip_endpoint(s->local_) +
                  " transparent: " + std::strerror(err);
          std::string ignored;
          set_ports_transparent(false, ignored);
          return false;
        }
  return true;
}

size_t MediaPump::tproxy_sockets() const {
  return tproxy_watched_;
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
    unwatch(s);
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
    unwatch(s);
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
  auto* self = static_cast<MediaPump*>(p->data);
  const unsigned handled = self->run_pass();
  // Work, but less than a full pass: more is on its way; let it gather.
  if (self->coalesce_ns_ && handled > 0 && handled < kPassBudget && self->tick_) {
    uv_poll_stop(&self->poll_);
    self->tick_->start(self->coalesce_ns_);
  }
}

void MediaPump::on_tick(void* pump) {
  auto* self = static_cast<MediaPump*>(pump);
  const unsigned handled = self->run_pass();
  // Quiet (nothing came in a whole period) or behind (a full pass): back to
  // passes on readiness.
  if (handled == 0 || handled >= kPassBudget || self->coalesce_ns_ == 0) {
    self->tick_->stop();
    uv_poll_start(&self->poll_, UV_READABLE, on_ready);
  }
}

unsigned MediaPump::run_pass() {
  in_pass_ = true;
  ++passes_;
  unsigned handled = 0;
  while (handled < kPassBudget) {
    int n = epoll_wait(epfd_, g_events, kEvents, 0);
    if (n <= 0) break;
    const int ready = n;
    // The tproxy sockets are drained here; the per-port sockets left in
    // g_events are read below.
    if (tproxy_watched_ > 0) handled += read_tproxy_events(n, kPassBudget - handled);
    const unsigned before = handled;
    // One ready socket costs one receive call either way, and recvmmsg
    // takes a burst in it: io_uring pays off from two sockets on.
    if (batched_ && n > 1) {
      handled += read_ready_batched(n, kPassBudget - handled);
    } else {
      // Sockets fetched but not read stay ready (level-triggered): the next
      // pass gets them.
      for (int i = 0; i < n && handled < kPassBudget; ++i) {
        auto* s = static_cast<MediaSocket*>(g_events[i].data.ptr);
        // Idle sockets (no owner) are read too: their datagrams are dropped.
        if (s->fd_ >= 0) handled += read_batch(s);
      }
    }
    // Every ready socket was served: what arrives from now on makes the
    // epoll descriptor readable again, and the loop calls back, so another
    // epoll_wait() here would mostly find nothing. A pass on the coalescing
    // timer goes on while sockets held more than one datagram each (a hot
    // socket gives kBatch per visit; the next pass is a period away), but
    // not for the few sockets that became ready meanwhile: chasing them
    // round by round would pay a round's system calls for a datagram or two.
    // A drained tproxy socket asks for no further round either.
    if (ready < kEvents && (!coalescing() || handled - before <= static_cast<unsigned>(n))) break;
  }
  in_pass_ = false;
  for (MediaSocket* s : graveyard_) delete s;
  graveyard_.clear();
  if (pass_end_) pass_end_(pass_end_arg_);
  return handled;
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

unsigned MediaPump::read_tproxy_events(int& n, unsigned budget) {
  unsigned handled = 0;
  int kept = 0;
  for (int i = 0; i < n; ++i) {
    void* p = g_events[i].data.ptr;
    if (p == &tproxy_[0] || p == &tproxy_[1]) {
      if (handled < budget)
        handled += read_tproxy(*static_cast<TproxySocket*>(p), budget - handled);
    } else {
      g_events[kept++] = g_events[i];
    }
  }
  n = kept;
  return handled;
}

unsigned MediaPump::read_tproxy(TproxySocket& t, unsigned budget) {
  const unsigned v6 = t.local.ip.is_v6() ? 1 : 0;
  MediaSocket* const* ports = by_port_[v6].empty() ? nullptr : by_port_[v6].data();
  unsigned handled = 0;
  while (handled < budget) {
    const unsigned want = std::min(kTproxyBatch, budget - handled);
    for (unsigned i = 0; i < want; ++i) {
      g_round_iov[i].iov_base = g_round_rx[i];
      g_round_iov[i].iov_len = kMaxDatagram;
      msghdr& h = g_tp_msgs[i].msg_hdr;
      h.msg_name = &g_round_from[i].sa;
      h.msg_namelen = sizeof g_round_from[i].v6;
      h.msg_iov = &g_round_iov[i];
      h.msg_iovlen = 1;
      h.msg_control = g_tp_control[i];
      h.msg_controllen = sizeof g_tp_control[i];
      h.msg_flags = 0;
    }
    const int got = ::recvmmsg(t.fd, g_tp_msgs, want, MSG_DONTWAIT, nullptr);
    if (got <= 0) {
      if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        LOG_DEBUG("receive error on the tproxy socket %s: %s", format_ip_endpoint(t.local).c_str(),
                  std::strerror(errno));
      break;
    }
    handled += static_cast<unsigned>(got);
    received_ += static_cast<unsigned>(got);
    tproxy_received_ += static_cast<unsigned>(got);
    for (int i = 0; i < got; ++i) {
      const msghdr& h = g_tp_msgs[i].msg_hdr;
      const sa_family_t family = g_round_from[i].sa.sa_family;
      const uint16_t port = original_destination_port(h);
      MediaSocket* s = ports && port ? ports[port] : nullptr;
      // A port between two calls (no socket, or an idle one): nobody's.
      if (!s || !s->owner_) {
        ++tproxy_unclaimed_;
        continue;
      }
      if ((h.msg_flags & MSG_TRUNC) || (family != AF_INET && family != AF_INET6)) continue;
      g_round_from[i].len = h.msg_namelen;
      s->owner_->on_datagram(s->tag_, g_round_from[i], g_round_rx[i], g_tp_msgs[i].msg_len);
    }
    flush();                                       // before the buffers are read into again
    if (static_cast<unsigned>(got) < want) break;  // drained
  }
  return handled;
}

unsigned MediaPump::read_ready_batched(int n, unsigned budget) {
  // Sockets past the budget are not read: they stay ready (level-triggered)
  // for the next pass.
  const unsigned limit = std::min(kRoundReads, budget);
  // A full epoll_wait() means the relay is behind: sockets then hold more
  // than one datagram each, and reading them one per visit would cost an
  // epoll event and a receive per datagram (and lose GSO on the way out).
  const bool behind = n == kEvents;
  unsigned queued = 0;
  for (int i = 0; i < n && queued < limit; ++i) {
    auto* s = static_cast<MediaSocket*>(g_events[i].data.ptr);
    if (s->fd_ < 0) continue;
    // A socket whose last reads were full holds a backlog: read more of it
    // per round (as recvmmsg would), at least one receive kept for each
    // socket still to come.
    const unsigned later = static_cast<unsigned>(n - 1 - i);
    const unsigned room = limit - queued > later ? limit - queued - later : 1;
    const unsigned want = std::min<unsigned>(
        behind ? std::max<unsigned>(s->reads_wanted_, kBehindReads) : s->reads_wanted_, room);
    for (unsigned k = 0; k < want; ++k) {
      const unsigned x = queued++;
      g_round_iov[x].iov_base = g_round_rx[x];
      g_round_iov[x].iov_len = kMaxDatagram;
      msghdr& h = g_round_msgs[x];
      h = msghdr{};
      h.msg_name = &g_round_from[x].sa;
      h.msg_namelen = sizeof g_round_from[x].v6;
      h.msg_iov = &g_round_iov[x];
      h.msg_iovlen = 1;
      g_round_socket[x] = s;
      batched_->recv(s->fd_, &h, x);
    }
  }
  BatchedIo::Completion done[kMaxOps];
  const int got = batched_->complete(done);
  if (got < 0) {
    // Nothing was read: the sockets are still ready and the next round
    // reads them one system call at a time.
    stop_batched_io(-got);
    return 1;
  }
  for (unsigned x = 0; x < queued; ++x) g_round_result[x] = -EAGAIN;
  for (int i = 0; i < got; ++i)
    if (done[i].tag < queued) g_round_result[done[i].tag] = done[i].result;
  unsigned handled = 0;
  for (unsigned x = 0; x < queued;) {
    MediaSocket* s = g_round_socket[x];
    unsigned end = x + 1;
    while (end < queued && g_round_socket[end] == s) ++end;
    const unsigned asked = end - x;
    unsigned filled = 0;
    for (; x < end; ++x) {
      const int r = g_round_result[x];
      // An error (a pending ICMP one) is cleared by reading it, as with
      // recvmmsg; the socket counts as one unit of the pass's budget.
      if (r < 0) {
        if (r != -EAGAIN && r != -EWOULDBLOCK && r != -EINTR)
          LOG_DEBUG("receive error on %s: %s", format_ip_endpoint(s->local_).c_str(),
                    std::strerror(-r));
        if (filled == 0) ++handled;
        continue;
      }
      ++filled;
      ++handled;
      ++received_;
      // r is the datagram's full length (MSG_TRUNC): larger than the buffer
      // means truncated, dropped as by read_batch.
      const sa_family_t family = g_round_from[x].sa.sa_family;
      if (!s->owner_ || static_cast<size_t>(r) > kMaxDatagram ||
          (family != AF_INET && family != AF_INET6))
        continue;
      g_round_from[x].len = family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
      s->owner_->on_datagram(s->tag_, g_round_from[x], g_round_rx[x], static_cast<size_t>(r));
    }
    // Two reads in a row that found as many datagrams as they asked for
    // mean a backlog (a hot stream, or a relay that fell behind): ask for
    // twice as many next time. One datagram per visit, RTP's normal case,
    // then costs an empty receive every third visit at most.
    if (filled == asked) {
      if (s->full_reads_ < 2) ++s->full_reads_;
      if (s->full_reads_ == 2) s->reads_wanted_ = static_cast<uint8_t>(std::min(asked * 2, kBatch));
    } else {
      s->full_reads_ = 0;
      s->reads_wanted_ = static_cast<uint8_t>(std::max(filled, 1u));
    }
  }
  flush();  // before the buffers are read into again
  return handled;
}

void MediaPump::send(int fd, const IpEndpoint* from, const SocketAddress& to, const uint8_t* data,
                     size_t len, SendFailureSink* sink, int cookie) {
  if (!in_pass_) {
    ssize_t r = ::sendto(fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL, &to.sa, to.len);
    if (r < 0) {
      ++send_failures_;
      if (sink) sink->on_send_failed(cookie, len);
    }
    return;
  }
  if (out_count_ == sizeof out_ / sizeof out_[0]) flush();
  out_[out_count_++] = Outgoing{fd, from, to, data, len, sink, cookie};
}

namespace {
// Larger datagrams go singly: a GSO segment plus headers must fit the path
// MTU (the kernel refuses the send otherwise), and RTP stays well below this.
constexpr size_t kGsoMaxSegment = 1400;

bool same_destination(const SocketAddress& a, const SocketAddress& b) {
  return a.same_as(b);
}
}  // namespace

// Sends the queue. Consecutive datagrams of one length from one socket to
// one destination (RTP of one stream) become a single UDP GSO send
// (UDP_SEGMENT): the kernel builds and routes one buffer and cuts it into
// the same datagrams on the way out, which costs much less than sending them
// one by one. The messages then go in one io_uring submission, or in one
// sendmmsg() per run of messages leaving the same socket. Where GSO is
// refused (old kernel, IPsec route) it is switched off and the datagrams go
// singly. With raw sends (use_raw_send), a datagram that goes alone takes
// the raw path instead (queue_raw), all of them in one sendmmsg() per IP
// version.
namespace {
mmsghdr g_msgs[kMaxOps];
iovec g_iov[kMaxOps];
int g_msg_fd[kMaxOps];
unsigned g_group_begin[kMaxOps];
unsigned g_group_end[kMaxOps];
alignas(cmsghdr) char g_control[kMaxOps][CMSG_SPACE(sizeof(uint16_t))];
// The raw path's messages, per IP version (0: IPv4, 1: IPv6): headers and
// payload of each, and its out_ index.
mmsghdr g_raw_msgs[2][kMaxOps];
iovec g_raw_iov[2][kMaxOps][2];
uint8_t g_raw_headers[2][kMaxOps][RawUdpSender::kMaxHeaderBytes];
unsigned g_raw_out[2][kMaxOps];
// IPv6 destinations with port 0: a raw IPv6 socket takes the port as the
// protocol number and refuses anything above 255.
sockaddr_in6 g_raw_to6[kMaxOps];
// Sockets with a GSO run in the flush being sent.
int g_gso_fd[kMaxOps];
}  // namespace

bool MediaPump::queue_raw(unsigned j) {
  const Outgoing& o = out_[j];
  if (!raw_ || !raw_->suits(*o.from, o.to, o.len)) return false;
  const unsigned v6 = o.from->ip.is_v6() ? 1 : 0;
  const unsigned r = raw_count_[v6]++;
  const size_t header = RawUdpSender::write_headers(g_raw_headers[v6][r], *o.from, o.to, o.data,
                                                    o.len, raw_->hop_limit(v6 != 0));
  g_raw_iov[v6][r][0] = iovec{g_raw_headers[v6][r], header};
  g_raw_iov[v6][r][1] = iovec{const_cast<uint8_t*>(o.data), o.len};
  msghdr& h = g_raw_msgs[v6][r].msg_hdr;
  h = msghdr{};
  if (v6) {
    g_raw_to6[r] = o.to.v6;
    g_raw_to6[r].sin6_port = 0;
    h.msg_name = &g_raw_to6[r];
  } else {
    h.msg_name = const_cast<sockaddr*>(&o.to.sa);
  }
  h.msg_namelen = o.to.len;
  h.msg_iov = g_raw_iov[v6][r];
  h.msg_iovlen = 2;
  g_raw_out[v6][r] = j;
  return true;
}

void MediaPump::send_raw() {
  for (unsigned v6 = 0; v6 < 2; ++v6) {
    if (raw_count_[v6] == 0) continue;
    raw_sending_v6_ = v6;
    raw_->send(v6 != 0, g_raw_msgs[v6], raw_count_[v6], raw_failed, this);
    raw_count_[v6] = 0;
  }
}

void MediaPump::raw_failed(unsigned message, int err, void* arg) {
  auto* self = static_cast<MediaPump*>(arg);
  const Outgoing& o = self->out_[g_raw_out[self->raw_sending_v6_][message]];
  // Larger than the route's MTU: the port's own socket fragments it, as it
  // would have without the raw path.
  if (err == EMSGSIZE &&
      ::sendto(o.fd, o.data, o.len, MSG_DONTWAIT | MSG_NOSIGNAL, &o.to.sa, o.to.len) >= 0)
    return;
  ++self->send_failures_;
  if (o.sink) o.sink->on_send_failed(o.cookie, o.len);
}

unsigned MediaPump::run_end(unsigned j) const {
  unsigned k = j + 1;
  if (gso_ && out_[j].len <= kGsoMaxSegment) {
    // All segments but the last have the GSO size; the last may be shorter.
    while (k < out_count_ && out_[k].fd == out_[j].fd && same_destination(out_[k].to, out_[j].to) &&
           out_[k - 1].len == out_[j].len && out_[k].len <= out_[j].len)
      ++k;
  }
  return k;
}

void MediaPump::flush() {
  static_assert(sizeof out_ / sizeof out_[0] <= kMaxOps);
  // A datagram that goes alone (RTP's shape: one per stream and pass) takes
  // the raw path when there is one, unless its socket also sends a GSO run
  // in this flush: the raw datagrams leave first, and must not overtake
  // their socket's earlier ones.
  unsigned gso_fds = 0;
  if (raw_) {
    for (unsigned j = 0; j < out_count_;) {
      const unsigned k = run_end(j);
      if (k > j + 1 && std::find(g_gso_fd, g_gso_fd + gso_fds, out_[j].fd) == g_gso_fd + gso_fds)
        g_gso_fd[gso_fds++] = out_[j].fd;
      j = k;
    }
  }
  unsigned m = 0;
  for (unsigned j = 0; j < out_count_;) {
    const unsigned k = run_end(j);
    if (k == j + 1 && std::find(g_gso_fd, g_gso_fd + gso_fds, out_[j].fd) == g_gso_fd + gso_fds &&
        queue_raw(j)) {
      j = k;
      continue;
    }
    for (unsigned x = j; x < k; ++x) {
      g_iov[x].iov_base = const_cast<uint8_t*>(out_[x].data);
      g_iov[x].iov_len = out_[x].len;
    }
    msghdr& h = g_msgs[m].msg_hdr;
    h = msghdr{};
    h.msg_name = const_cast<sockaddr*>(&out_[j].to.sa);
    h.msg_namelen = out_[j].to.len;
    h.msg_iov = &g_iov[j];
    h.msg_iovlen = k - j;
    if (k - j > 1) {
      h.msg_control = g_control[m];
      h.msg_controllen = sizeof g_control[m];
      cmsghdr* c = CMSG_FIRSTHDR(&h);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      const uint16_t segment = static_cast<uint16_t>(out_[j].len);
      std::memcpy(CMSG_DATA(c), &segment, sizeof segment);
    }
    g_msg_fd[m] = out_[j].fd;
    g_group_begin[m] = j;
    g_group_end[m] = k;
    ++m;
    j = k;
  }
  // Messages leaving by one socket take one sendmmsg() anyway.
  bool one_socket = true;
  for (unsigned g = 1; g < m && one_socket; ++g) one_socket = g_msg_fd[g] == g_msg_fd[0];
  send_raw();
  if (batched_ && !one_socket)
    send_batched(m);
  else
    send_each_socket(m);
  out_count_ = 0;
}

void MediaPump::send_batched(unsigned messages) {
  for (unsigned g = 0; g < messages; ++g) batched_->send(g_msg_fd[g], &g_msgs[g].msg_hdr, g);
  BatchedIo::Completion done[kMaxOps];
  const int got = batched_->complete(done);
  if (got < 0) {
    stop_batched_io(-got);
    send_each_socket(messages);
    return;
  }
  for (int i = 0; i < got; ++i)
    if (done[i].result < 0 && done[i].tag < messages) send_failed(done[i].tag, -done[i].result);
}

void MediaPump::send_each_socket(unsigned messages) {
  for (unsigned g = 0; g < messages;) {
    const int fd = g_msg_fd[g];
    unsigned end = g + 1;
    while (end < messages && g_msg_fd[end] == fd) ++end;
    while (g < end) {
      int r = ::sendmmsg(fd, &g_msgs[g], end - g, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (r > 0) {
        g += static_cast<unsigned>(r);
        continue;
      }
      send_failed(g, errno);  // message g was refused (buffer full, ICMP error pending...)
      ++g;
    }
  }
}

void MediaPump::send_failed(unsigned g, int err) {
  const int fd = g_msg_fd[g];
  const bool gso_refused = g_group_end[g] - g_group_begin[g] > 1 &&
                           (err == EINVAL || err == EIO || err == EOPNOTSUPP || err == ENOPROTOOPT);
  // Those errors may be about GSO or about the datagrams (port 0...): send
  // them singly, and if that works, GSO was the problem.
  bool singly_ok = false;
  for (unsigned x = g_group_begin[g]; x < g_group_end[g]; ++x) {
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
}

}  // namespace mp::relay
