// TLS (or plain) TCP connection on the libuv loop (connection.h).
//
// Data path: uv_read appends ciphertext to `in`; mbedTLS pulls it through
// bio_recv (WANT_READ when empty) and pushes records through bio_send into
// `out`, which flush_out() hands to uv_write. Nothing blocks: a handshake or
// read that needs more bytes simply returns and resumes on the next read.
#include "tls/connection.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "common/error.h"
#include "common/log.h"
#include "tls/connection_text.h"
#include "tls/mbedtls_glue.h"

namespace mp::tls {
namespace {

constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kFlushThreshold = 64 * 1024;
// Ciphertext received but not yet consumed by mbedTLS; more than a few
// records means the peer floods us without the TLS layer making progress.
constexpr size_t kMaxPendingInput = 256 * 1024;

struct WriteReq {
  uv_write_t req;
  Connection::Impl* owner = nullptr;
  std::string data;
};

}  // namespace

struct Connection::Impl {
  enum class TimerUse { None, Handshake, Deferred, Linger };

  uv_loop_t* loop = nullptr;
  std::shared_ptr<const TlsContext> tls;
  ConnectionCallbacks cb;
  ConnectionOptions opt;
  State state = State::Idle;
  bool server = false;

  uv_tcp_t tcp{};
  uv_timer_t timer{};
  uv_connect_t connect_req{};
  uv_shutdown_t shutdown_req{};
  TimerUse timer_use = TimerUse::None;
  int open_handles = 0;
  bool handles_closing = false;

  mbedtls_ssl_context ssl;
  bool ssl_ready = false;
  VerifyNotes verify_notes;

  std::string in;  // ciphertext from the socket not yet consumed by mbedTLS
  size_t in_off = 0;
  std::string out;    // bytes waiting for flush_out()
  std::string early;  // plaintext written before the connection was open
  size_t in_flight = 0;
  bool reading = false;
  bool paused = false;
  bool detached = false;
  bool first_bytes_checked = false;

  std::string reason;
  bool abnormal = false;
  Subject peer_subject;
  sockaddr_storage peer_addr{};
  std::string peer_text = "?";

  std::shared_ptr<Connection> self;  // keeps everything alive while handles are open

  Impl() { mbedtls_ssl_init(&ssl); }
  ~Impl() { mbedtls_ssl_free(&ssl); }

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp); }

  // ---- lifecycle ----------------------------------------------------------

  void init_handles() {
    uv_tcp_init(loop, &tcp);
    uv_timer_init(loop, &timer);
    tcp.data = this;
    timer.data = this;
    open_handles = 2;
  }

  void start_timer(TimerUse use, uint64_t ms) {
    timer_use = use;
    uv_timer_start(&timer, on_timer, ms, 0);
  }

  void stop_timer() {
    timer_use = TimerUse::None;
    uv_timer_stop(&timer);
  }

  void set_reason(std::string_view why, bool bad) {
    if (!reason.empty()) return;
    reason = why.empty() ? std::string("closed") : std::string(why);
    abnormal = bad;
  }

  // Closes both handles now; on_closed follows from their close callbacks.
  void finish(std::string_view why, bool bad) {
    set_reason(why, bad);
    if (handles_closing || open_handles == 0) return;
    handles_closing = true;
    state = State::Closing;
    out.clear();
    early.clear();
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp), on_handle_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), on_handle_closed);
  }

  // Stops reading, flushes what is queued (plus close_notify if asked), shuts
  // the socket down and closes once the output drained or the linger timer fires.
  void linger(std::string_view why, bool bad, bool notify) {
    set_reason(why, bad);
    if (handles_closing) return;
    if (state == State::Closing) return;
    state = State::Closing;
    stop_reading();
    early.clear();
    if (ssl_ready && notify) mbedtls_ssl_close_notify(&ssl);
    if (!flush_out()) return;
    start_timer(TimerUse::Linger, std::max<uint64_t>(opt.close_timeout_ms, 1));
    shutdown_req.data = this;
    if (uv_shutdown(&shutdown_req, stream(), on_shutdown) != 0) finish(reason, abnormal);
  }

  // An error after the socket is connected: let a pending TLS alert reach the peer.
  void fail(std::string_view why) { linger(why, true, false); }

  void final_close() {
    auto keep = std::move(self);
    state = State::Closed;
    if (abnormal)
      LOG_WARN("%s %s: %s", opt.label.c_str(), peer_text.c_str(), reason.c_str());
    else
      LOG_DEBUG("%s %s closed: %s", opt.label.c_str(), peer_text.c_str(), reason.c_str());
    auto on_closed = std::move(cb.on_closed);
    cb = {};
    if (!detached && on_closed) on_closed(reason);
    // `keep` may release the last reference here: nothing may follow.
  }

  static void on_handle_closed(uv_handle_t* h) {
    auto* self = static_cast<Impl*>(h->data);
    if (--self->open_handles == 0) self->final_close();
  }

  static void on_shutdown(uv_shutdown_t* req, int) {
    auto* self = static_cast<Impl*>(req->data);
    self->finish(self->reason, self->abnormal);
  }

  static void on_timer(uv_timer_t* t) {
    auto* self = static_cast<Impl*>(t->data);
    TimerUse use = self->timer_use;
    self->timer_use = TimerUse::None;
    switch (use) {
      case TimerUse::None:
        break;
      case TimerUse::Handshake:
        if (self->state == State::Connecting)
          self->finish("cannot connect to " + self->peer_text + ": no answer within " +
                           std::to_string(self->opt.handshake_timeout_ms) + " ms",
                       true);
        else
          self->finish("TLS handshake not completed within " +
                           std::to_string(self->opt.handshake_timeout_ms) + " ms",
                       true);
        break;
      case TimerUse::Deferred:
        if (self->state == State::Handshaking && !self->tls)
          self->become_open();
        else if (self->state == State::Open)
          self->pump();
        break;
      case TimerUse::Linger:
        self->finish(self->reason, self->abnormal);
        break;
    }
  }

  // ---- reading -------------------------------------------------------------

  void start_reading() {
    if (reading || paused || handles_closing) return;
    if (uv_read_start(stream(), on_alloc, on_read) == 0) reading = true;
  }

  void stop_reading() {
    if (!reading) return;
    uv_read_stop(stream());
    reading = false;
  }

  static void on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
    static thread_local char buffer[kReadChunk];
    buf->base = buffer;
    buf->len = sizeof buffer;
  }

  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
    auto* self = static_cast<Impl*>(s->data);
    if (nread == 0) return;
    if (self->state != State::Handshaking && self->state != State::Open) return;
    if (nread < 0) {
      bool handshaking = self->state == State::Handshaking && self->tls;
      if (nread == UV_EOF && handshaking)
        self->finish("peer closed the connection during the TLS handshake", true);
      else if (nread == UV_EOF)
        self->finish("closed by peer", false);
      else if (nread == UV_ECONNRESET)
        self->finish("connection reset by peer", handshaking);
      else
        self->finish(std::string("read error: ") + uv_strerror(static_cast<int>(nread)), true);
      return;
    }
    self->received(std::string_view(buf->base, static_cast<size_t>(nread)));
  }

  void received(std::string_view data) {
    if (!tls) {
      if (state == State::Handshaking) become_open();
      if (state == State::Open && !detached && cb.on_data) cb.on_data(data);
      return;
    }
    if (!first_bytes_checked) {
      first_bytes_checked = true;
      // Every TLS stream starts with a handshake (22) or alert (21) record.
      if (data[0] != 22 && data[0] != 21) {
        fail("not TLS: the peer sent '" + preview(data) + "'" +
             (server ? " (a plain TCP client?)" : " (a plain TCP server?)"));
        return;
      }
    }
    in.erase(0, in_off);
    in_off = 0;
    in.append(data);
    if (in.size() - in_off > kMaxPendingInput) {
      fail("peer sent more than " + std::to_string(kMaxPendingInput) +
           " bytes the TLS layer could not use");
      return;
    }
    if (state == State::Handshaking)
      handshake_step();
    else
      pump();
  }

  static int bio_recv(void* ctx, unsigned char* buf, size_t len) {
    auto* self = static_cast<Impl*>(ctx);
    size_t avail = self->in.size() - self->in_off;
    if (avail == 0) return MBEDTLS_ERR_SSL_WANT_READ;
    size_t n = std::min(avail, len);
    std::memcpy(buf, self->in.data() + self->in_off, n);
    self->in_off += n;
    if (self->in_off == self->in.size()) {
      self->in.clear();
      self->in_off = 0;
    }
    return static_cast<int>(n);
  }

  static int bio_send(void* ctx, const unsigned char* buf, size_t len) {
    auto* self = static_cast<Impl*>(ctx);
    self->out.append(reinterpret_cast<const char*>(buf), len);
    return static_cast<int>(len);
  }

  // Decrypts and delivers everything available.
  void pump() {
    if (!tls) return;
    unsigned char buf[16384];
    while (state == State::Open && !paused) {
      int r = mbedtls_ssl_read(&ssl, buf, sizeof buf);
      if (r > 0) {
        if (!detached && cb.on_data)
          cb.on_data(std::string_view(reinterpret_cast<const char*>(buf), static_cast<size_t>(r)));
        continue;
      }
      if (!flush_out()) return;
      if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) return;
      if (r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
        linger("closed by peer", false, true);
      } else if (r == 0) {
        finish("closed by peer", false);
      } else {
        fail("TLS error: " + mbedtls_error_text(r));
      }
      return;
    }
  }

  // ---- handshake -------------------------------------------------------------

  bool setup_ssl() {
    int r = mbedtls_ssl_setup(&ssl, &Connection::context_impl(*tls).conf);
    if (r != 0) {
      set_reason("cannot set up TLS: " + mbedtls_error_text(r), true);
      return false;
    }
    mbedtls_ssl_set_bio(&ssl, this, bio_send, bio_recv, nullptr);
    mbedtls_ssl_set_verify(&ssl, VerifyNotes::callback, &verify_notes);
    if (!server && !opt.server_name.empty()) {
      r = mbedtls_ssl_set_hostname(&ssl, opt.server_name.c_str());
      if (r != 0) {
        set_reason("invalid server name '" + opt.server_name + "': " + mbedtls_error_text(r), true);
        return false;
      }
    }
    ssl_ready = true;
    return true;
  }

  std::string handshake_error(int r) {
    switch (r) {
      case MBEDTLS_ERR_X509_CERT_VERIFY_FAILED: {
        std::string why = verify_notes.reason;
        if (why.empty())
          why = describe_verify_flags(mbedtls_ssl_get_peer_cert(&ssl),
                                      mbedtls_ssl_get_verify_result(&ssl));
        return "peer certificate refused: " + why;
      }
      case MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE:
        return "peer sent no certificate (one signed by the CA is required)";
      case MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE:
        return "peer refused the handshake: " + alert_text(ssl.in_msg ? ssl.in_msg[1] : 0);
      case MBEDTLS_ERR_SSL_BAD_HS_PROTOCOL_VERSION:
        return "peer does not support TLS 1.2";
      case MBEDTLS_ERR_SSL_NO_CIPHER_CHOSEN:
      case MBEDTLS_ERR_SSL_NO_USABLE_CIPHERSUITE:
        return "no cipher suite in common with the peer";
      default:
        return "TLS handshake failed: " + mbedtls_error_text(r);
    }
  }

  void handshake_step() {
    int r = mbedtls_ssl_handshake(&ssl);
    if (!flush_out()) return;
    if (state != State::Handshaking) return;
    if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) return;
    if (r != 0) {
      fail(handshake_error(r));
      return;
    }
    const mbedtls_x509_crt* peer = mbedtls_ssl_get_peer_cert(&ssl);
    peer_subject = peer ? subject_of(&peer->subject) : Subject{};
    std::string why;
    if (!opt.passport.disabled() && !opt.passport.accepts(peer_subject, why)) {
      linger("peer certificate '" + format_subject(peer_subject) +
                 "' does not match the passport '" + opt.passport.to_string() + "': " + why,
             true, true);
      return;
    }
    become_open();
  }

  void become_open() {
    state = State::Open;
    stop_timer();
    if (ssl_ready)
      LOG_DEBUG("%s %s: TLS established (%s %s), peer '%s'", opt.label.c_str(), peer_text.c_str(),
                mbedtls_ssl_get_version(&ssl), mbedtls_ssl_get_ciphersuite(&ssl),
                format_subject(peer_subject).c_str());
    else
      LOG_DEBUG("%s %s: connected (plain TCP)", opt.label.c_str(), peer_text.c_str());
    if (!early.empty()) {
      std::string pending = std::move(early);
      early.clear();
      if (!send(pending)) return;
    }
    if (!detached && cb.on_connected) cb.on_connected(peer_subject);
    if (state == State::Open) pump();
  }

  // ---- writing ---------------------------------------------------------------

  // Encrypts (or copies) `data` into `out`, flushing every kFlushThreshold bytes.
  bool send(std::string_view data) {
    size_t off = 0;
    while (off < data.size()) {
      if (ssl_ready) {
        int r = mbedtls_ssl_write(&ssl, reinterpret_cast<const unsigned char*>(data.data() + off),
                                  data.size() - off);
        if (r < 0) {
          fail("TLS write failed: " + mbedtls_error_text(r));
          return false;
        }
        off += static_cast<size_t>(r);
      } else {
        size_t n = std::min(data.size() - off, kFlushThreshold);
        out.append(data.substr(off, n));
        off += n;
      }
      if (out.size() >= kFlushThreshold && !flush_out()) return false;
    }
    return flush_out();
  }

  // Hands `out` to libuv; enforces the output limit. False if the connection died.
  bool flush_out() {
    if (handles_closing) {
      out.clear();
      return false;
    }
    if (out.empty()) return true;
    auto* w = new WriteReq;
    w->owner = this;
    w->data.swap(out);
    w->req.data = w;
    uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
    int r = uv_write(&w->req, stream(), &b, 1, on_write);
    if (r != 0) {
      delete w;
      finish(std::string("write failed: ") + uv_strerror(r), true);
      return false;
    }
    in_flight += b.len;
    size_t queued = uv_stream_get_write_queue_size(stream());
    if (queued > opt.max_queued_bytes) {
      finish("peer is not reading: " + std::to_string(queued) + " bytes of output waiting (limit " +
                 std::to_string(opt.max_queued_bytes) + ")",
             true);
      return false;
    }
    return true;
  }

  static void on_write(uv_write_t* req, int status) {
    auto* w = static_cast<WriteReq*>(req->data);
    Impl* self = w->owner;
    self->in_flight -= w->data.size();
    delete w;
    if (status < 0) {
      if (status == UV_EPIPE || status == UV_ECONNRESET)
        self->finish("connection reset by peer", self->state == State::Handshaking);
      else if (status != UV_ECANCELED)
        self->finish(std::string("write error: ") + uv_strerror(status), true);
      return;
    }
    if (self->in_flight == 0 && self->state == State::Open && !self->detached && self->cb.on_drain)
      self->cb.on_drain();
  }

  static void on_connect(uv_connect_t* req, int status) {
    auto* self = static_cast<Impl*>(req->data);
    if (self->handles_closing) return;
    if (status < 0) {
      self->finish("cannot connect to " + self->peer_text + ": " + uv_strerror(status), true);
      return;
    }
    self->connected();
  }

  // The TCP connection exists (accepted or connected): start TLS or go open.
  void connected() {
    sockaddr_storage ss{};
    int len = sizeof ss;
    if (uv_tcp_getpeername(&tcp, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      peer_addr = ss;
      peer_text = format_sockaddr(ss);
    }
    uv_tcp_nodelay(&tcp, 1);
    state = State::Handshaking;
    start_reading();
    if (!tls) {
      if (server)
        start_timer(TimerUse::Deferred, 0);  // on_connected from the loop, not from accept()
      else
        become_open();
      return;
    }
    if (opt.handshake_timeout_ms > 0 && timer_use == TimerUse::None)
      start_timer(TimerUse::Handshake, opt.handshake_timeout_ms);
    handshake_step();
  }
};

// ---------------------------------------------------------------------------

Connection::Connection() : impl_(std::make_unique<Impl>()) {}
Connection::~Connection() = default;

const TlsContext::Impl& Connection::context_impl(const TlsContext& ctx) {
  return *ctx.impl_;
}

std::shared_ptr<Connection> Connection::create(uv_loop_t* loop,
                                               std::shared_ptr<const TlsContext> tls,
                                               ConnectionCallbacks callbacks,
                                               ConnectionOptions options) {
  std::shared_ptr<Connection> c(new Connection());
  c->impl_->loop = loop;
  c->impl_->tls = std::move(tls);
  c->impl_->cb = std::move(callbacks);
  c->impl_->opt = std::move(options);
  return c;
}

bool Connection::accept(uv_stream_t* listener, std::string& error) {
  Impl& m = *impl_;
  if (m.state != State::Idle) return fail(error, uv_strerror(UV_EALREADY));
  m.server = true;
  m.self = shared_from_this();
  m.init_handles();
  m.state = State::Handshaking;
  int r = uv_accept(listener, m.stream());
  if (r != 0) {
    m.finish(std::string("accept failed: ") + uv_strerror(r), true);
    return fail(error, uv_strerror(r));
  }
  if (m.tls && m.tls->role() != Role::Server) {
    m.finish("TLS context is for a client; cannot accept connections with it", true);
    return fail(error, uv_strerror(UV_EINVAL));
  }
  if (m.tls && !m.setup_ssl()) {
    m.finish(m.reason, true);
    return fail(error, uv_strerror(UV_ENOMEM));
  }
  m.connected();
  return true;
}

bool Connection::connect(const sockaddr* address, std::string& error) {
  Impl& m = *impl_;
  if (m.state != State::Idle) return fail(error, uv_strerror(UV_EALREADY));
  m.server = false;
  m.self = shared_from_this();
  m.init_handles();
  m.state = State::Connecting;
  size_t len = address->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  std::memcpy(&m.peer_addr, address, len);
  m.peer_text = format_sockaddr(m.peer_addr);
  if (m.tls && m.tls->role() != Role::Client) {
    m.finish("TLS context is for a server; cannot connect with it", true);
    return fail(error, uv_strerror(UV_EINVAL));
  }
  if (m.tls && !m.setup_ssl()) {
    m.finish(m.reason, true);
    return fail(error, uv_strerror(UV_ENOMEM));
  }
  m.connect_req.data = &m;
  int r = uv_tcp_connect(&m.connect_req, &m.tcp, address, Impl::on_connect);
  if (r != 0) {
    m.finish("cannot connect to " + m.peer_text + ": " + uv_strerror(r), true);
    return fail(error, uv_strerror(r));
  }
  if (m.opt.handshake_timeout_ms > 0)
    m.start_timer(Impl::TimerUse::Handshake, m.opt.handshake_timeout_ms);
  return true;
}

bool Connection::write(std::string_view data) {
  Impl& m = *impl_;
  switch (m.state) {
    case State::Closing:
    case State::Closed:
      return false;
    case State::Open:
      return m.send(data);
    default:
      if (m.early.size() + data.size() > m.opt.max_queued_bytes) {
        if (m.open_handles > 0)
          m.finish("more than " + std::to_string(m.opt.max_queued_bytes) +
                       " bytes written before the connection was established",
                   true);
        return false;
      }
      m.early.append(data);
      return true;
  }
}

void Connection::close(std::string_view reason) {
  Impl& m = *impl_;
  if (m.state == State::Idle) {
    m.state = State::Closed;
    return;
  }
  if (m.state == State::Open)
    m.linger(reason, false, true);
  else
    m.finish(reason, false);
}

void Connection::abort(std::string_view reason) {
  Impl& m = *impl_;
  if (m.state == State::Idle) {
    m.state = State::Closed;
    return;
  }
  m.finish(reason, false);
}

void Connection::detach() {
  impl_->detached = true;
}

void Connection::pause_reading() {
  impl_->paused = true;
  impl_->stop_reading();
}

void Connection::resume_reading() {
  Impl& m = *impl_;
  if (!m.paused) return;
  m.paused = false;
  if (m.state != State::Handshaking && m.state != State::Open) return;
  m.start_reading();
  // Records already decrypted or buffered are delivered from the loop.
  if (m.state == State::Open && m.tls && m.timer_use == Impl::TimerUse::None)
    m.start_timer(Impl::TimerUse::Deferred, 0);
}

bool Connection::reverify(const TlsContext& ctx) {
  Impl& m = *impl_;
  if (!m.ssl_ready || m.state != State::Open) return true;
  const mbedtls_x509_crt* peer = mbedtls_ssl_get_peer_cert(&m.ssl);
  if (!peer) return true;
  std::string why;
  const char* name = !m.server && !m.opt.server_name.empty() ? m.opt.server_name.c_str() : nullptr;
  if (context_impl(ctx).verify(peer, name, why)) return true;
  m.linger("peer certificate no longer accepted: " + why, true, true);
  return false;
}

Connection::State Connection::state() const {
  return impl_->state;
}
bool Connection::is_tls() const {
  return impl_->tls != nullptr;
}
const Subject& Connection::peer_subject() const {
  return impl_->peer_subject;
}
const sockaddr_storage& Connection::peer_sockaddr() const {
  return impl_->peer_addr;
}
std::string Connection::peer_address() const {
  return impl_->peer_text;
}

std::string Connection::protocol_description() const {
  const Impl& m = *impl_;
  if (!m.tls) return "plain TCP";
  if (m.state != State::Open && m.state != State::Closing) return "TLS (not established)";
  return std::string(mbedtls_ssl_get_version(&m.ssl)) + " " + mbedtls_ssl_get_ciphersuite(&m.ssl);
}

size_t Connection::queued_bytes() const {
  const Impl& m = *impl_;
  size_t n = m.early.size() + m.out.size();
  if (m.open_handles > 0 && !m.handles_closing)
    n += uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(&m.tcp));
  return n;
}

}  // namespace mp::tls
