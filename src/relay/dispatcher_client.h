// The relay's side of the dispatcher-relay link (spec B.1-B.5, B.8, B.9).
//
// Owns one TLS client connection per configured dispatcher ([Relay]
// dispatchers: IPv4 "address[:port]" entries, default port 25060), the
// relay-side framing of commands ("<command> <seq>", headers, blank line;
// lines up to 16 KiB), answering each command with "<seq> <payload>" from
// RelayEngine::handle() (the owner id of a session is its dispatcher's
// entry, so sessions stay bound to that dispatcher across reconnects),
// `expired <json>` reports to the owning dispatcher, a `ping` every
// keepalive_interval (three unanswered: the connection is dropped and made
// again), and reconnecting with the spec's delays (1 s after an established
// connection is lost, reconnect_delay after a failed attempt, a connection
// that lasted under 5 s, or a certificate error). The relay keeps forwarding
// media while disconnected.
#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "common/address.h"
#include "common/config.h"
#include "relay/relay_engine.h"
#include "tls/connection.h"
#include "tls/passport.h"
#include "tls/tls_context.h"

namespace mp::relay {

class DispatcherClient {
 public:
  // Owner ids handed to the engine are kFirstOwner + index in `dispatchers`.
  static constexpr uint64_t kFirstOwner = 100;

  DispatcherClient(uv_loop_t* loop, RelayEngine& engine, std::shared_ptr<const tls::TlsContext> tls,
                   tls::Passport passport, const RelayConfig& cfg,
                   std::vector<Endpoint> dispatchers);
  ~DispatcherClient();

  void start();
  // Routes an expired report (engine's expired sink) to the owning dispatcher;
  // lost (and logged) if that dispatcher is not connected.
  void deliver_expired(uint64_t owner, const std::string& json);
  // Closes every connection (after flushing what is queued).
  void close();

  size_t connected_count() const;

  struct Peer;

 private:
  uv_loop_t* loop_;
  RelayEngine& engine_;
  std::shared_ptr<const tls::TlsContext> tls_;
  tls::Passport passport_;
  RelayConfig cfg_;
  std::vector<std::unique_ptr<Peer>> peers_;
  bool closing_ = false;
};

}  // namespace mp::relay
