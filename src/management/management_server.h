// The management interface (spec section C): one command per line, one reply
// line per command, over TLS by default or plain TCP when configured (then
// only on loopback unless explicitly allowed), so that AG MediaProxy's tools
// and web page keep working.
//
// Owns the listener, the client connections (tls::Connection, which also
// speaks plain TCP) with their bounded buffers (a 16 KiB command line; a
// client that stops reading is closed once its unsent output passes
// kMaxPendingOutput), and the mapping of commands to the dispatcher's
// queries: `summary`, `sessions`, `version`, `quit`/`exit`; anything else is
// answered `error`. Cutting lines and naming commands is the pure code of
// management_command.h.
#pragma once

#include <uv.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "common/address.h"
#include "dispatcher/dispatcher.h"
#include "management/management_command.h"
#include "tls/connection.h"
#include "tls/tls_context.h"

namespace mp::management {

class ManagementServer {
 public:
  static constexpr size_t kMaxLine = kMaxCommandLine;
  static constexpr size_t kMaxPendingOutput = 64 * 1024 * 1024;

  // `tls` null: plain TCP. `passport` is checked on TLS clients' certificates.
  ManagementServer(uv_loop_t* loop, dispatcher::Dispatcher& dispatcher,
                   std::shared_ptr<const tls::TlsContext> tls, tls::Passport passport);
  ~ManagementServer();

  bool listen(Endpoint where, std::string& error);
  void close();

 private:
  struct Client {
    std::shared_ptr<tls::Connection> conn;
    std::string buffer;
  };
  void on_data(uint64_t id, std::string_view data);
  void handle_line(uint64_t id, std::string_view line);

  uv_loop_t* loop_;
  dispatcher::Dispatcher& dispatcher_;
  std::shared_ptr<const tls::TlsContext> tls_;
  tls::Passport passport_;
  uv_tcp_t listener_;
  bool listening_ = false;
  std::map<uint64_t, Client> clients_;
  uint64_t next_id_ = 1;
};

}  // namespace mp::management
