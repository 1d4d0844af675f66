// Implementation of the relay's UDP port socket (media_socket.h).
#include "relay/media_socket.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace mp::relay {

namespace {
// Datagrams read per readiness event and socket: small enough that one hot
// socket cannot starve the rest of the loop, large enough to amortise the
// system call.
constexpr unsigned kBatch = 8;
constexpr size_t kMaxDatagram = 2048;  // RTP/RTCP/UDPTL; larger ones are truncated and dropped
constexpr int kReceiveBuffer = 256 * 1024;

alignas(64) unsigned char g_rx[kBatch][kMaxDatagram];
mmsghdr g_msgs[kBatch];
iovec g_iov[kBatch];
sockaddr_in g_from[kBatch];
DataPathStats g_stats;
}  // namespace

DataPathStats& data_path_stats() {
  return g_stats;
}

MediaSocket* MediaSocket::open(uv_loop_t* loop, Endpoint local, MediaSocketOwner* owner, int tag,
                               int& error) {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = uv_translate_sys_error(errno);
    return nullptr;
  }
  // Room for a burst while the loop is busy elsewhere (the kernel caps it at
  // net.core.rmem_max); the default drops packets of one hot stream.
  int size = kReceiveBuffer;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  sockaddr_in sa = local.to_sockaddr();
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0) {
    error = uv_translate_sys_error(errno);
    ::close(fd);
    return nullptr;
  }
  auto* s = new MediaSocket();
  s->local_ = local;
  s->owner_ = owner;
  s->tag_ = tag;
  s->fd_ = fd;
  s->poll_.data = s;
  error = uv_poll_init(loop, &s->poll_, fd);
  if (error) {
    ::close(fd);
    delete s;
    return nullptr;
  }
  error = uv_poll_start(&s->poll_, UV_READABLE, on_readable);
  if (error) {
    s->owner_ = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&s->poll_), on_closed);
    return nullptr;
  }
  return s;
}

void MediaSocket::close() {
  owner_ = nullptr;
  // uv_close() of a poll handle forgets the descriptor at once; closing the
  // descriptor right after (not in the close callback) frees the port
  // immediately, as a new stream may want it before the loop turns.
  uv_close(reinterpret_cast<uv_handle_t*>(&poll_), on_closed);
  ::close(fd_);
  fd_ = -1;
}

void MediaSocket::on_closed(uv_handle_t* h) {
  auto* s = static_cast<MediaSocket*>(h->data);
  if (s->fd_ >= 0) ::close(s->fd_);
  delete s;
}

void MediaSocket::on_readable(uv_poll_t* p, int status, int) {
  auto* s = static_cast<MediaSocket*>(p->data);
  if (status < 0 || !s->owner_) return;
  for (unsigned i = 0; i < kBatch; ++i) {
    g_iov[i].iov_base = g_rx[i];
    g_iov[i].iov_len = kMaxDatagram;
    g_msgs[i].msg_hdr.msg_name = &g_from[i];
    g_msgs[i].msg_hdr.msg_namelen = sizeof g_from[i];
    g_msgs[i].msg_hdr.msg_iov = &g_iov[i];
    g_msgs[i].msg_hdr.msg_iovlen = 1;
    g_msgs[i].msg_hdr.msg_control = nullptr;
    g_msgs[i].msg_hdr.msg_controllen = 0;
    g_msgs[i].msg_hdr.msg_flags = 0;
  }
  int n = ::recvmmsg(s->fd_, g_msgs, kBatch, MSG_DONTWAIT, nullptr);
  if (n <= 0) {
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      LOG_DEBUG("receive error on %s: %s", format_endpoint(s->local_).c_str(),
                std::strerror(errno));
    return;
  }
  for (int i = 0; i < n && s->owner_; ++i) {
    const msghdr& h = g_msgs[i].msg_hdr;
    if ((h.msg_flags & MSG_TRUNC) || g_from[i].sin_family != AF_INET) continue;
    ++g_stats.received;
    s->owner_->on_datagram(s->tag_, g_from[i], g_rx[i], g_msgs[i].msg_len);
  }
}

bool MediaSocket::send(const sockaddr_in& to, const uint8_t* data, size_t len) {
  ssize_t r = ::sendto(fd_, data, len, MSG_DONTWAIT | MSG_NOSIGNAL,
                       reinterpret_cast<const sockaddr*>(&to), sizeof to);
  if (r < 0) {
    ++g_stats.send_failures;
    return false;
  }
  return true;
}

}  // namespace mp::relay
