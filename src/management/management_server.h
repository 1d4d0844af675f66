// The management interface (spec section C): one command per line, one reply
// line per command, over TLS by default or plain TCP when configured (then
// only on loopback unless explicitly allowed), so that AG MediaProxy's tools
// and web page keep working.
//
// Owns the listener, the client connections (tls::Connection, which also
// speaks plain TCP) with their bounded buffers, and the mapping of commands
// to the dispatcher's queries: `summary`, `sessions`, `version`,
// `quit`/`exit`; anything else is answered `error`. Cutting lines and naming
// commands is the pure code of management_command.h.
//
// A client's commands are answered one at a time, in order: while an answer
// is in progress the client's further lines wait and its socket is not read
// (TCP pushes back), so a client's input never grows past a command line.
// The `sessions` answer is streamed (dispatcher/sessions_dump.h) while the
// client's unsent output stays under kHighWater; a client that lets a dump
// wait for it longer than kStallTimeoutMs is disconnected, and one whose
// unsent output passes kMaxPendingOutput anyway is closed by its connection.
#pragma once

#include <uv.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "common/address.h"
#include "dispatcher/dispatcher.h"
#include "dispatcher/sessions_dump.h"
#include "management/management_command.h"
#include "tls/connection.h"
#include "tls/tls_context.h"

namespace mp::management {

class ManagementServer {
 public:
  static constexpr size_t kMaxLine = kMaxCommandLine;
  static constexpr size_t kMaxPendingOutput = 16 * 1024 * 1024;
  // A `sessions` answer pauses while more than this is unsent.
  static constexpr size_t kHighWater = 256 * 1024;
  // A client that reads nothing of a `sessions` answer for this long is dropped.
  static constexpr uint64_t kStallTimeoutMs = 30 * 1000;

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
    bool busy = false;        // a command's answer is in progress
    bool processing = false;  // process() is on the stack
    std::shared_ptr<dispatcher::SessionsDump> dump;
  };
  void on_data(uint64_t id, std::string_view data);
  // Answers the client's buffered lines until one answer has to wait.
  void process(uint64_t id);
  void handle_line(uint64_t id, std::string_view line);
  void command_done(uint64_t id);
  void start_dump(uint64_t id);
  static void on_stall_check(uv_timer_t* t);

  uv_loop_t* loop_;
  dispatcher::Dispatcher& dispatcher_;
  std::shared_ptr<const tls::TlsContext> tls_;
  tls::Passport passport_;
  uv_tcp_t listener_;
  bool listening_ = false;
  uv_timer_t stall_timer_;  // runs while a dump exists
  bool stall_timer_init_ = false;
  bool stall_timer_running_ = false;
  std::map<uint64_t, Client> clients_;
  uint64_t next_id_ = 1;
};

}  // namespace mp::management
