// TLS credentials and policy shared by many connections (spec B.1, C.1, E.2 [TLS]).
//
// Owns loading the CA certificate(s), the optional CRL, our own certificate
// chain and private key from files, the mbedTLS configuration built from them
// (role server or client, peer certificate required and verified against the
// CA and CRL, TLS 1.2 only, ECDHE + AEAD cipher suites) and the random number
// generator. Load errors are sentences an operator can act on ("cannot read
// /etc/mediaproxy/tls/ca.pem: No such file or directory", "certificate ...
// expired on ...").
//
// A TlsContext is immutable once loaded and shared (shared_ptr) by the
// connections made with it, so reloading never disturbs a live connection:
// reload_if_changed() builds a fresh context when a file's mtime, size or
// inode changed and the owner swaps it in; connections keep the credentials
// they were made with, and Connection::reverify() checks them against the
// newest context (new CRL, expiry) every [TLS] verify_interval.
//
// mbedTLS types stay out of this header; connection.cpp reaches the
// configuration through the private Impl.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tls/passport.h"

namespace mp::tls {

enum class Role {
  Server,  // accepts connections (dispatcher: relay link, management interface)
  Client,  // makes connections (relay; management command-line client)
};

struct TlsSettings {
  Role role = Role::Server;
  std::string ca_file;    // trusted CA certificate(s), PEM or DER; required
  std::string crl_file;   // revocation list(s) of that CA; a path that does not exist, an
                          // empty file or an empty path means "no CRL" (noted in warnings())
  std::string cert_file;  // our certificate, optionally followed by intermediates; required
  std::string key_file;   // its private key (PEM/DER, PKCS#1/SEC1/PKCS#8, unencrypted); required
  // Load an expired or not-yet-valid own certificate with a warning instead
  // of failing. Only for tests that must present such a certificate.
  bool allow_invalid_own_cert = false;

  // The spec B.1 layout: <dir>/ca.pem, <dir>/crl.pem, <dir>/<name>.crt and
  // <dir>/<name>.key, where name is "dispatcher" or "relay".
  static TlsSettings from_certs_path(const std::string& dir, std::string_view name, Role role);
};

class Connection;

class TlsContext {
 public:
  // Reads and checks every file. nullptr with `error` set on failure: an
  // unreadable or unparseable file, an own certificate that is expired or not
  // yet valid, a key that does not belong to the certificate, an expired CRL.
  static std::shared_ptr<const TlsContext> load(const TlsSettings& settings, std::string& error);

  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  const TlsSettings& settings() const;
  Role role() const { return settings().role; }
  bool has_crl() const;
  // Subject of our own certificate, e.g. for a startup log line.
  const Subject& own_subject() const;
  // Non-fatal findings for the owner to log (own certificate not accepted by
  // ca.pem, expiring within 30 days, no CRL, ...).
  const std::vector<std::string>& warnings() const;

  // True if any of the files changed on disk (or appeared/vanished) since load.
  bool files_changed() const;

  struct Impl;

 private:
  friend class Connection;
  TlsContext();
  std::unique_ptr<Impl> impl_;
};

enum class ReloadResult { Unchanged, Reloaded, Failed };

// If `ctx`'s files changed, loads them again: on success `ctx` is replaced by
// the new context (Reloaded); on failure `ctx` is kept, `error` says why
// (Failed) and the next call tries again.
ReloadResult reload_if_changed(std::shared_ptr<const TlsContext>& ctx, std::string& error);

}  // namespace mp::tls
