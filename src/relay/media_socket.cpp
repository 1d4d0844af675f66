// Implementation of the relay's UDP port socket (media_socket.h).
#include "relay/media_socket.h"

#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>

#include "relay/tproxy_socket.h"

namespace mp::relay {

namespace {
// Room for a burst while the loop is busy elsewhere (the kernel caps it at
// net.core.rmem_max); the default drops packets of one hot stream.
constexpr int kReceiveBuffer = 256 * 1024;
// Idle sockets closed at once when descriptors run out: room for a burst of
// new streams before the next eviction.
constexpr size_t kEvictOnExhaustion = 256;
}  // namespace

MediaSocket* MediaSocket::open(MediaPump* pump, const IpEndpoint& local, MediaSocketOwner* owner,
                               int tag, int& error) {
  if (MediaSocket* idle = pump->unpark(local)) {
    idle->owner_ = owner;
    idle->tag_ = tag;
    return idle;
  }
  // A live upgrade hands the previous process's socket over, with what the
  // kernel has queued on it.
  int fd = pump->take_inherited(local);
  const int family = local.ip.is_v6() ? AF_INET6 : AF_INET;
  if (fd < 0) {
    fd = ::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    // Out of descriptors while other ports' sockets are parked: those give
    // way (the port pool hands out the longest-free port, so parked sockets
    // of ports not due for reuse pile up to idle_capacity).
    if (fd < 0 && (errno == EMFILE || errno == ENFILE) && pump->evict_idle(kEvictOnExhaustion) > 0)
      fd = ::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      error = uv_translate_sys_error(errno);
      return nullptr;
    }
    if (pump->ports_transparent()) {
      // Its datagrams go to the tproxy socket (media_pump.h): its own buffer
      // takes only what the rule leaves, and the default does for that. The
      // system call a set-up would spend on the size marks it instead.
      if (int err = make_transparent(fd, family)) {
        error = uv_translate_sys_error(err);
        ::close(fd);
        return nullptr;
      }
    } else {
      int size = kReceiveBuffer;
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    }
    if (family == AF_INET6) {
      int on = 1;  // an IPv6 socket never takes IPv4-mapped traffic
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
    }
    const SocketAddress sa = SocketAddress::of(local);
    if (::bind(fd, &sa.sa, sa.len) != 0) {
      error = uv_translate_sys_error(errno);
      ::close(fd);
      return nullptr;
    }
  }
  auto* s = new MediaSocket();
  s->pump_ = pump;
  s->local_ = local;
  s->owner_ = owner;
  s->tag_ = tag;
  s->fd_ = fd;
  int rc = pump->watch(fd, s);
  if (rc != 0) {
    error = uv_translate_sys_error(-rc);
    ::close(fd);
    delete s;
    return nullptr;
  }
  return s;
}

void MediaSocket::close() {
  owner_ = nullptr;
  if (pump_->park(this)) return;  // kept bound for the port's next stream
  pump_->unwatch(this);
  ::close(fd_);
  fd_ = -1;
  pump_->retire(this);
}

bool MediaSocket::send_now(const SocketAddress& to, const uint8_t* data, size_t len) {
  ssize_t r = ::sendto(fd_, data, len, MSG_DONTWAIT | MSG_NOSIGNAL, &to.sa, to.len);
  return r >= 0;
}

}  // namespace mp::relay
