// One TCP connection on the libuv loop, encrypted with TLS (mbedTLS) or plain.
//
// Owns the uv_tcp_t and its timer, the TLS session layered on it (mbedTLS
// reads from and writes to in-memory buffers that uv_read fills and uv_write
// drains, so nothing ever blocks the loop), the handshake and its timeout,
// the peer certificate checks (CA/CRL by mbedTLS, the spec B.1.1 passport,
// periodic re-verification), bounded output buffering, and an orderly or
// abrupt close that is reported exactly once.
//
// TLS or plain TCP is decided by the context given to create(): with nullptr
// the same class speaks plain TCP (management_use_tls = no, spec C.1) with the
// same callbacks, on_connected reporting an empty subject.
//
// Usage:
//   auto c = Connection::create(loop, ctx, {.on_connected = ..., .on_data = ...,
//                                           .on_closed = ...}, options);
//   c->accept(listener);           // server: from the listener's connection callback
//   c->connect(addr);              // or client
//   c->write("summary\r\n");       // any time; buffered until the handshake is done
//   c->close("quit");              // flushes, sends close_notify, then closes
//
// Callback contract: on_connected once the peer is authenticated (and matched
// the passport); on_data for decrypted bytes in arbitrary chunks; on_drain
// when every byte written so far has been handed to the kernel; on_closed
// exactly once for every connection that accept() or connect() was called on,
// including failed handshakes, always from the loop (never from inside a
// call the owner makes on this object). Callbacks may call any method,
// including close(). The connection keeps itself alive until on_closed has
// run, so owners may drop their shared_ptr at any time, but must close()
// connections they no longer want, or detach() before they go away.
//
// Threading: a connection and its callbacks belong to the thread running its
// loop; contexts may be shared by all connections of that loop.
//
// Logging: abnormal ends (handshake failure, certificate refused, timeout,
// output limit, TLS errors) are logged at warning level with options.label
// and the peer address; normal ones at debug. on_closed gets the same reason.
#pragma once

#include <sys/socket.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "tls/passport.h"
#include "tls/tls_context.h"

namespace mp::tls {

struct ConnectionCallbacks {
  std::function<void(const Subject& peer)> on_connected;
  std::function<void(std::string_view data)> on_data;
  std::function<void(const std::string& reason)> on_closed;
  std::function<void()> on_drain;  // optional
};

struct ConnectionOptions {
  std::string label = "TLS connection";  // log prefix, e.g. "relay link", "management"
  // TCP connect plus TLS handshake must complete within this; 0 = no limit.
  uint64_t handshake_timeout_ms = 10000;
  // Output not yet accepted by the kernel (TLS records queued in libuv, plus
  // anything written before the handshake finished). Exceeding it means the
  // peer does not read: the connection is closed. Owners streaming large
  // answers write in pieces and continue from on_drain.
  size_t max_queued_bytes = 8u * 1024 * 1024;
  // How long close() waits for queued output to drain before cutting the connection.
  uint64_t close_timeout_ms = 2000;
  // Checked against the peer certificate subject right after the handshake
  // (TLS only); a mismatch closes the connection.
  Passport passport;
  // Client only: the name (DNS SAN, IP SAN or CN) the server certificate must
  // carry, also sent as SNI. Empty: any certificate from the CA (the spec's
  // model, where the passport does the naming).
  std::string server_name;
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  enum class State { Idle, Connecting, Handshaking, Open, Closing, Closed };

  // `tls` null: plain TCP. Otherwise its role must match accept() (Server)
  // or connect() (Client).
  static std::shared_ptr<Connection> create(uv_loop_t* loop, std::shared_ptr<const TlsContext> tls,
                                            ConnectionCallbacks callbacks,
                                            ConnectionOptions options = {});
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Server side: accepts the pending connection of `listener` (call from its
  // connection callback) and starts the handshake. Client side: connects to
  // `address` (IPv4 or IPv6) and then handshakes. Both return false with
  // `error` (libuv's text for the failure) if they fail at once; either way
  // on_closed follows if the connection fails. Only one of them, once.
  bool accept(uv_stream_t* listener, std::string& error);
  bool connect(const sockaddr* address, std::string& error);

  // Queues bytes for the peer (encrypting them under TLS). False if the
  // connection is closing/closed or the output limit was just exceeded (the
  // connection is then being closed).
  bool write(std::string_view data);

  // Orderly close: sends TLS close_notify, lets queued output drain (at most
  // close_timeout_ms), then closes. Before the handshake completes this is
  // the same as abort(). `reason` is what on_closed and the log report.
  void close(std::string_view reason);
  // Immediate close; queued output is dropped.
  void abort(std::string_view reason);
  // No more callbacks of any kind (for an owner being destroyed); the
  // connection still needs close() or abort() unless already closing.
  void detach();

  // Flow control for the owner: stop/restart delivering on_data (and reading
  // from the socket, so TCP pushes back on the peer).
  void pause_reading();
  void resume_reading();

  // Periodic re-verification ([TLS] verify_interval): checks the peer's
  // certificate chain against `ctx` (the newest context, e.g. with a fresh
  // CRL) at the current time. On failure the connection is closed with the
  // reason (logged) and false is returned. Plain or not-yet-open connections
  // pass.
  bool reverify(const TlsContext& ctx);

  State state() const;
  bool is_open() const { return state() == State::Open; }
  bool is_tls() const;
  // Authenticated peer subject (empty for plain TCP or before on_connected).
  const Subject& peer_subject() const;
  // Peer address as given by the socket ("192.0.2.1:40312", "[2001:db8::1]:40312").
  const sockaddr_storage& peer_sockaddr() const;
  std::string peer_address() const;
  // "TLSv1.2 TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384" once open; "plain TCP" without TLS.
  std::string protocol_description() const;
  // Output bytes not yet accepted by the kernel (see max_queued_bytes).
  size_t queued_bytes() const;

  struct Impl;

 private:
  Connection();
  static const TlsContext::Impl& context_impl(const TlsContext& ctx);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mp::tls
