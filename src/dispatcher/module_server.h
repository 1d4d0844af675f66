// The UNIX stream socket served to the SIP proxy's mediaproxy module (spec A.1).
//
// Owns the listening socket file (stale files replaced, mode and group
// applied, a live owner detected), the persistent connections of the proxy's
// worker processes, request framing with bounded buffers, and writing exactly
// one CRLF-terminated reply per request. A malformed request gets `error`
// and the connection lives on; an oversized line closes that connection only.
// A client that does not read its replies is not read from while more than
// kMaxQueuedReplyBytes of them wait (nothing is dropped); warnings about bad
// input are rate-limited (log::admit) and counted in the metrics.
#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "common/config.h"
#include "dispatcher/dispatcher.h"

namespace mp::dispatcher {

class ModuleServer {
 public:
  // Replies waiting for one client beyond which its requests are not read.
  static constexpr size_t kMaxQueuedReplyBytes = 256 * 1024;

  ModuleServer(uv_loop_t* loop, Dispatcher& dispatcher, const DispatcherConfig& cfg);
  ~ModuleServer();

  // Creates and listens on `path`; false with `error` on failure.
  bool listen(const std::string& path, std::string& error);
  // Stops listening, closes every connection and unlinks the socket file.
  void close();

  // Live upgrade (app/upgrade.h), old process: stops accepting and reading
  // and returns the listener's descriptor and each idle connection's with
  // the bytes of a request it had started to read. A connection waiting for
  // an answer or with replies not yet written is closed instead. close()
  // then leaves the socket file to the new process.
  struct Handed {
    int fd = -1;
    bool listener = false;
    std::string unread;
  };
  std::vector<Handed> hand_over();
  // New process: serves the listener and connections handed over.
  bool adopt_listener(const std::string& path, int fd, std::string& error);
  void adopt_connection(int fd, const std::string& unread);

  size_t connection_count() const { return connections_.size(); }
  // How often a connection was paused because its client did not read.
  uint64_t paused_count() const { return paused_; }

  struct Connection;

 private:
  static void on_connection(uv_stream_t* server, int status);
  void start_reading(Connection* c);
  void on_read(Connection* c, std::string_view data);
  // Hands queued replies to libuv and pauses or resumes reading by backlog.
  void flush(Connection* c);
  void close_connection(Connection* c);

  uv_loop_t* loop_;
  Dispatcher& dispatcher_;
  DispatcherConfig cfg_;
  uv_pipe_t listener_;
  bool listening_ = false;
  std::string path_;
  std::unordered_set<std::shared_ptr<Connection>> connections_;
  uint64_t next_id_ = 1;
  uint64_t refused_ = 0;
  uint64_t paused_ = 0;
};

}  // namespace mp::dispatcher
