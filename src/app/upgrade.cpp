// Live upgrade channel (upgrade.h): SOCK_SEQPACKET with SCM_RIGHTS.
#include "app/upgrade.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "common/log.h"

namespace mp::app {

namespace {

constexpr size_t kMaxFds = 200;  // below the kernel's SCM_MAX_FD (253)
constexpr const char* kHello = "takeover 1";
constexpr size_t kMaxMessage = 1 << 20;

bool make_addr(const std::string& path, sockaddr_un& sa, std::string& error) {
  if (path.size() >= sizeof sa.sun_path) {
    error = "upgrade socket path too long: " + path;
    return false;
  }
  std::memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  return true;
}

// Sends one message with `fds`; false with `error`.
bool send_message(int fd, const std::string& text, const std::vector<int>& fds,
                  std::string& error) {
  iovec iov{const_cast<char*>(text.data()), text.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFds));
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    if (::sendmsg(fd, &msg, MSG_NOSIGNAL) >= 0) return true;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, 5000) > 0) continue;
    }
    error = std::string("sending the sockets failed: ") + std::strerror(errno);
    return false;
  }
}

}  // namespace

std::string to_hex(const std::string& bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

bool from_hex(const std::string& hex, std::string& bytes) {
  if (hex.size() % 2) return false;
  bytes.clear();
  auto val = [](char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
  };
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = val(hex[i]), lo = val(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    bytes += static_cast<char>(hi * 16 + lo);
  }
  return true;
}

bool UpgradeListener::listen(const std::string& path, std::string& error) {
  sockaddr_un sa;
  if (!make_addr(path, sa, error)) return false;
  // A live process listening there is another instance sharing the runtime
  // directory: leave it alone. A stale file is replaced.
  int probe = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (probe >= 0) {
    const bool live = ::connect(probe, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
    ::close(probe);
    if (live) {
      error = "another process listens on " + path;
      return false;
    }
  }
  ::unlink(path.c_str());
  fd_ = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      ::chmod(path.c_str(), 0600) != 0 || ::listen(fd_, 1) != 0) {
    error = "cannot listen on " + path + ": " + std::strerror(errno);
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    return false;
  }
  path_ = path;
  uv_poll_init(loop_, &poll_, fd_);
  poll_.data = this;
  uv_poll_start(&poll_, UV_READABLE, on_listen);
  polling_ = true;
  return true;
}

void UpgradeListener::on_listen(uv_poll_t* p, int, int) {
  auto* self = static_cast<UpgradeListener*>(p->data);
  int peer = ::accept4(self->fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (peer < 0) return;
  if (self->peer_ >= 0) {  // one takeover at a time
    ::close(peer);
    return;
  }
  self->peer_ = peer;
  uv_poll_init(self->loop_, &self->peer_poll_, peer);
  self->peer_poll_.data = self;
  uv_poll_start(&self->peer_poll_, UV_READABLE, on_peer);
  self->peer_polling_ = true;
}

void UpgradeListener::on_peer(uv_poll_t* p, int, int) {
  static_cast<UpgradeListener*>(p->data)->serve_peer();
}

void UpgradeListener::serve_peer() {
  char buf[64];
  ssize_t n = ::recv(peer_, buf, sizeof buf, 0);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  const bool hello = n == static_cast<ssize_t>(std::strlen(kHello)) &&
                     std::memcmp(buf, kHello, static_cast<size_t>(n)) == 0;
  uv_poll_stop(&peer_poll_);
  uv_close(reinterpret_cast<uv_handle_t*>(&peer_poll_), nullptr);
  peer_polling_ = false;
  if (!hello) {
    LOG_WARN("upgrade socket: a peer sent something else than a takeover request; closed");
    ::close(peer_);
    peer_ = -1;
    return;
  }
  LOG_INFO("upgrade: a new process takes over; handing over the sockets");
  std::vector<HandedSocket> sockets = gather_();
  std::string error;
  bool ok = true;
  for (size_t i = 0; ok && i < sockets.size(); i += kMaxFds) {
    std::string text;
    std::vector<int> fds;
    for (size_t j = i; j < sockets.size() && j < i + kMaxFds; ++j) {
      text += sockets[j].what;
      text += '\n';
      fds.push_back(sockets[j].fd);
    }
    ok = send_message(peer_, text, fds, error);
  }
  for (const HandedSocket& s : sockets) ::close(s.fd);  // the new process has its own
  if (ok) {
    LOG_INFO("upgrade: %zu socket(s) handed over; exiting, the calls go on", sockets.size());
    handed_peer_ = peer_;  // "end" once this process has let go of everything (finish)
  } else {
    LOG_ERROR("upgrade: %s; exiting anyway, a new start restores the calls from the state file",
              error.c_str());
    ::close(peer_);
  }
  peer_ = -1;
  handed_();
}

void UpgradeListener::finish() {
  if (handed_peer_ < 0) return;
  std::string error;
  if (!send_message(handed_peer_, "end", {}, error)) LOG_WARN("upgrade: %s", error.c_str());
  ::close(handed_peer_);
  handed_peer_ = -1;
}

void UpgradeListener::close() {
  if (polling_) {
    uv_poll_stop(&poll_);
    uv_close(reinterpret_cast<uv_handle_t*>(&poll_), nullptr);
    polling_ = false;
  }
  if (peer_polling_) {
    uv_poll_stop(&peer_poll_);
    uv_close(reinterpret_cast<uv_handle_t*>(&peer_poll_), nullptr);
    peer_polling_ = false;
  }
  if (peer_ >= 0) ::close(peer_);
  peer_ = -1;
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
    ::unlink(path_.c_str());
  }
}

bool take_over(const std::string& path, int timeout_ms, std::vector<HandedSocket>& out,
               std::string& error) {
  out.clear();
  sockaddr_un sa;
  if (!make_addr(path, sa, error)) return false;
  int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    error = "no running mediaproxy to take over from at " + path + ": " + std::strerror(errno);
    if (fd >= 0) ::close(fd);
    return false;
  }
  if (::send(fd, kHello, std::strlen(kHello), MSG_NOSIGNAL) < 0) {
    error = std::string("cannot ask for the sockets: ") + std::strerror(errno);
    ::close(fd);
    return false;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::vector<char> text(kMaxMessage);
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFds));
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) {
      error = "the running process did not hand its sockets over in time";
      break;
    }
    iovec iov{text.data(), text.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    ssize_t n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error = n == 0 ? "the running process closed the upgrade socket before the end"
                     : std::string("receiving the sockets failed: ") + std::strerror(errno);
      break;
    }
    std::vector<int> fds;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const size_t at = fds.size();
      fds.resize(at + count);
      std::memcpy(fds.data() + at, CMSG_DATA(c), count * sizeof(int));
    }
    const std::string body(text.data(), static_cast<size_t>(n));
    if (body == "end" && fds.empty()) {
      ::close(fd);
      return true;
    }
    size_t start = 0, i = 0;
    for (; start < body.size() && i < fds.size(); ++i) {
      size_t nl = body.find('\n', start);
      if (nl == std::string::npos) nl = body.size();
      out.push_back(HandedSocket{body.substr(start, nl - start), fds[i]});
      start = nl + 1;
    }
    for (; i < fds.size(); ++i) ::close(fds[i]);  // descriptors without a line
    if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
      error = "a hand-over message was cut short";
      break;
    }
  }
  for (const HandedSocket& s : out) ::close(s.fd);
  out.clear();
  ::close(fd);
  return false;
}

}  // namespace mp::app
