// The dispatcher's side of the dispatcher-relay link (spec B.1-B.4, B.7).
//
// Owns the TLS listener on [Dispatcher] listen (default 0.0.0.0:25060), one
// TlsRelayLink per connected relay (a RelayLink: sequenced commands with a
// relay_timeout each, replies matched by sequence number, `expired`
// reports, ping answered with pong), relay identity by source IP (a new
// connection from the same IP replaces the old one), the `sessions 0` query
// at connect whose call ids are handed to Dispatcher::adopt_sessions, and
// cleanup of sessions a relay created after the dispatcher had given up on
// it (a late successful `update` reply is followed by a `remove`).
#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <unordered_map>

#include "common/address.h"
#include "common/config.h"
#include "dispatcher/dispatcher.h"
#include "tls/connection.h"
#include "tls/passport.h"
#include "tls/tls_context.h"

namespace mp::dispatcher {

class TlsRelayLink;

class RelayListener {
 public:
  RelayListener(uv_loop_t* loop, Dispatcher& dispatcher, std::shared_ptr<const tls::TlsContext> tls,
                tls::Passport passport, const DispatcherConfig& cfg);
  ~RelayListener();

  bool listen(Endpoint where, std::string& error);
  // Closes every relay link (their pending commands fail) and the listener.
  void close();

  size_t relay_count() const;

 private:
  uv_loop_t* loop_;
  Dispatcher& dispatcher_;
  std::shared_ptr<const tls::TlsContext> tls_;
  tls::Passport passport_;
  DispatcherConfig cfg_;
  uv_tcp_t listener_;
  bool listening_ = false;
  // By relay IP; at most one link per IP.
  std::unordered_map<std::string, std::unique_ptr<TlsRelayLink>> links_;
  friend class TlsRelayLink;
};

}  // namespace mp::dispatcher
