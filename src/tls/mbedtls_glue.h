// Private to src/tls: the mbedTLS side of TlsContext and the helpers both
// tls_context.cpp and connection.cpp need.
//
// Owns the layout of TlsContext::Impl (the loaded certificates, key, CRL,
// random generator and ssl configuration), turning mbedTLS names, times,
// error codes and certificate verification flags into operator-readable
// text, and the shared verification routine used at handshake time (via the
// per-connection verify callback) and for periodic re-verification.
#pragma once

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crl.h>
#include <mbedtls/x509_crt.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "tls/tls_context.h"

namespace mp::tls {

struct FileStamp {
  std::string path;
  bool exists = false;
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  timespec mtime{};

  static FileStamp of(const std::string& path);
  bool same_as(const FileStamp& other) const;
};

struct TlsContext::Impl {
  TlsSettings settings;
  std::vector<FileStamp> stamps;
  std::vector<std::string> warnings;
  Subject own_subject;
  bool has_crl = false;

  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_x509_crt ca;
  mbedtls_x509_crl crl;
  mbedtls_x509_crt own;
  mbedtls_pk_context key;
  mbedtls_ssl_config conf;

  Impl();
  ~Impl();
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  // Verifies `chain` (leaf first) against this context's CA and CRL at the
  // current time; `expected_name` (may be null) must match a SAN or the CN.
  // False with `error` ("certificate 'CN=x' is revoked by the CRL") on failure.
  bool verify(const mbedtls_x509_crt* chain, const char* expected_name, std::string& error) const;
};

// Accumulates the most specific problem seen by mbedtls_x509_crt_verify's
// per-certificate callback (the one nearest the leaf wins).
struct VerifyNotes {
  std::string reason;
  static int callback(void* self, mbedtls_x509_crt* crt, int depth, uint32_t* flags);
};

Subject subject_of(const mbedtls_x509_name* name);
std::string describe_time(const mbedtls_x509_time& t);  // "2036-12-31 23:59:59 UTC"
// "certificate 'O=x, CN=y' expired on ...; ..." for the set bits of `flags`.
std::string describe_verify_flags(const mbedtls_x509_crt* crt, uint32_t flags);
// mbedtls_strerror() text for a (negative) mbedTLS error code.
std::string mbedtls_error_text(int code);

}  // namespace mp::tls
