// Implementation of the relay's UDP port socket (media_socket.h).
#include "relay/media_socket.h"

#include "common/log.h"

namespace mp::relay {

namespace {
// libuv's recvmmsg mode reads one datagram per 64 KiB chunk of the buffer it
// is given, up to 20 per call.
constexpr size_t kChunk = 64 * 1024;
constexpr size_t kBatch = 20;
constexpr int kReceiveBuffer = 256 * 1024;
alignas(64) unsigned char g_rx[kChunk * kBatch];
DataPathStats g_stats;
}  // namespace

DataPathStats& data_path_stats() {
  return g_stats;
}

MediaSocket* MediaSocket::open(uv_loop_t* loop, Endpoint local, MediaSocketOwner* owner, int tag,
                               int& error) {
  auto* s = new MediaSocket();
  s->local_ = local;
  s->owner_ = owner;
  s->tag_ = tag;
  s->handle_.data = s;
  error = uv_udp_init_ex(loop, &s->handle_, AF_INET | UV_UDP_RECVMMSG);
  if (error) {
    delete s;
    return nullptr;
  }
  sockaddr_in sa = local.to_sockaddr();
  error = uv_udp_bind(&s->handle_, reinterpret_cast<const sockaddr*>(&sa), 0);
  if (!error) {
    // Room for a burst while the loop is busy elsewhere (the kernel caps it
    // at net.core.rmem_max); the default drops packets of one hot stream.
    int size = kReceiveBuffer;
    uv_recv_buffer_size(reinterpret_cast<uv_handle_t*>(&s->handle_), &size);
    error = uv_udp_recv_start(&s->handle_, on_alloc, on_recv);
  }
  if (error) {
    s->owner_ = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&s->handle_), on_closed);
    return nullptr;
  }
  return s;
}

void MediaSocket::close() {
  owner_ = nullptr;
  uv_udp_recv_stop(&handle_);
  uv_close(reinterpret_cast<uv_handle_t*>(&handle_), on_closed);
}

void MediaSocket::on_closed(uv_handle_t* h) {
  delete static_cast<MediaSocket*>(h->data);
}

void MediaSocket::on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
  buf->base = reinterpret_cast<char*>(g_rx);
  buf->len = sizeof g_rx;
}

void MediaSocket::on_recv(uv_udp_t* h, ssize_t nread, const uv_buf_t* buf, const sockaddr* addr,
                          unsigned flags) {
  if (flags & UV_UDP_MMSG_FREE) return;  // static buffer: nothing to free
  auto* s = static_cast<MediaSocket*>(h->data);
  if (nread < 0) {
    LOG_DEBUG("receive error on %s: %s", format_endpoint(s->local_).c_str(),
              uv_strerror(static_cast<int>(nread)));
    return;
  }
  if (!addr || !s->owner_ || addr->sa_family != AF_INET) return;
  ++g_stats.received;
  s->owner_->on_datagram(s->tag_, *reinterpret_cast<const sockaddr_in*>(addr),
                         reinterpret_cast<const uint8_t*>(buf->base), static_cast<size_t>(nread));
}

bool MediaSocket::send(const sockaddr_in& to, const uint8_t* data, size_t len) {
  uv_buf_t b = uv_buf_init(const_cast<char*>(reinterpret_cast<const char*>(data)),
                           static_cast<unsigned>(len));
  int r = uv_udp_try_send(&handle_, &b, 1, reinterpret_cast<const sockaddr*>(&to));
  if (r < 0) {
    ++g_stats.send_failures;
    return false;
  }
  return true;
}

}  // namespace mp::relay
