// The management interface (spec section C): one command per line, one reply
// line per command, over TCP (plain only when configured, and then only on
// loopback unless explicitly allowed) so that AG MediaProxy's tools and web
// page keep working.
//
// Owns the listener, the client connections with their bounded buffers (a
// 16 KiB command line; a client that stops reading is closed once its unsent
// output passes kMaxPendingOutput), and the mapping of commands to the
// dispatcher's queries: `summary`, `sessions`, `version`, `quit`/`exit`;
// anything else is answered `error`.
#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <unordered_set>

#include "common/address.h"
#include "dispatcher/dispatcher.h"

namespace mp::management {

class ManagementServer {
 public:
  static constexpr size_t kMaxLine = 16384;
  static constexpr size_t kMaxPendingOutput = 64 * 1024 * 1024;

  ManagementServer(uv_loop_t* loop, dispatcher::Dispatcher& dispatcher);
  ~ManagementServer();

  bool listen(Endpoint where, std::string& error);
  void close();

  struct Client;

 private:
  static void on_connection(uv_stream_t* server, int status);
  void handle_line(Client* c, std::string line);
  void send_line(Client* c, std::string line);
  void close_client(Client* c, const char* why);

  uv_loop_t* loop_;
  dispatcher::Dispatcher& dispatcher_;
  uv_tcp_t listener_;
  bool listening_ = false;
  std::unordered_set<std::shared_ptr<Client>> clients_;
  uint64_t next_id_ = 1;
};

}  // namespace mp::management
