// Live upgrade: a new process takes over the sockets of the running one.
//
// Every server listens on <runtime_dir>/upgrade.sock (SOCK_SEQPACKET, mode
// 0600). `mediaproxy --upgrade` connects there before it opens anything and
// asks for a takeover; the running process stops reading, writes its state
// file, and sends the descriptors of its media sockets, of the module
// socket's listener and of the module connections (with the request bytes it
// had read but not yet handled) over the socket (SCM_RIGHTS), then exits
// without ending any call and leaves its nftables table to its successor.
// The new process restores the sessions from the state file on those very
// sockets: what the kernel had queued on them is read by the new process,
// so no datagram is lost, and the proxy's connections stay open.
//
// Wire format: messages of up to kMaxFds descriptors, each with one text line
// per descriptor ("media <ip>:<port>", "module-listener", "module-connection
// <hex of unread bytes>"); the last message is "end" without descriptors.
#pragma once

#include <uv.h>

#include <functional>
#include <string>
#include <vector>

namespace mp::app {

struct HandedSocket {
  std::string what;  // one line of the wire format, without its newline
  int fd = -1;
};

// The running process's side.
class UpgradeListener {
 public:
  // Gathers the sockets (the process stops serving them) when a takeover is
  // asked; `handed` runs once they have been sent.
  using Gather = std::function<std::vector<HandedSocket>()>;
  using Handed = std::function<void()>;

  UpgradeListener(uv_loop_t* loop, Gather gather, Handed handed)
      : loop_(loop), gather_(std::move(gather)), handed_(std::move(handed)) {}
  // false with `error` if the socket cannot be made (a live process already
  // listens there: then no upgrade can reach this one, which is logged).
  bool listen(const std::string& path, std::string& error);
  void close();
  // After a hand-over, once this process has released everything the new
  // one may need (accounting journals, the state file): tells it to go on.
  void finish();

 private:
  static void on_listen(uv_poll_t* p, int status, int events);
  static void on_peer(uv_poll_t* p, int status, int events);
  void serve_peer();

  uv_loop_t* loop_;
  Gather gather_;
  Handed handed_;
  std::string path_;
  int fd_ = -1;
  int peer_ = -1;
  int handed_peer_ = -1;
  uv_poll_t poll_{};
  uv_poll_t peer_poll_{};
  bool polling_ = false;
  bool peer_polling_ = false;
};

// The new process's side: asks the process listening at `path` for its
// sockets. Blocks (the loop is not running yet) up to `timeout_ms`. false
// with `error` when nothing listens there or the hand-over fails.
bool take_over(const std::string& path, int timeout_ms, std::vector<HandedSocket>& out,
               std::string& error);

// Hex of bytes, and back (false on a malformed text).
std::string to_hex(const std::string& bytes);
bool from_hex(const std::string& hex, std::string& bytes);

}  // namespace mp::app
