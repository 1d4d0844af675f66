// Loading and checking TLS credentials, and the mbedTLS helpers shared with
// connection.cpp (tls_context.h, mbedtls_glue.h).
#include "tls/tls_context.h"

#include <fcntl.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/platform_util.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "common/error.h"
#include "tls/mbedtls_glue.h"

namespace mp::tls {
namespace {

// TLS 1.2, forward secrecy and AEAD only; both ECDSA and RSA certificates.
const int kCipherSuites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    0,
};

// Key exchange groups, fastest first (mbedTLS would otherwise prefer P-521).
const mbedtls_ecp_group_id kCurves[] = {
    MBEDTLS_ECP_DP_CURVE25519, MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_SECP384R1,
    MBEDTLS_ECP_DP_SECP521R1,  MBEDTLS_ECP_DP_NONE,
};

constexpr time_t kExpiryWarning = 30 * 24 * 3600;

// Whole file into `out`, plus a terminating NUL (mbedTLS wants it for PEM).
bool read_file(const std::string& path, std::string& out, std::string& error) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = "cannot read " + path + ": " + std::strerror(errno);
    return false;
  }
  out.clear();
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error = "cannot read " + path + ": " + std::strerror(errno);
      ::close(fd);
      return false;
    }
    if (n == 0) break;
    if (out.size() > 16u * 1024 * 1024) {
      error = path + " is larger than 16 MiB; not a certificate, key or CRL file";
      ::close(fd);
      return false;
    }
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return true;
}

bool only_blanks(const std::string& s) {
  for (char c : s)
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') return false;
  return true;
}

// Length to hand to mbedTLS: PEM text including the NUL we add, DER exactly.
size_t parse_length(std::string& data, const char* pem_marker) {
  bool pem = data.find(pem_marker) != std::string::npos;
  size_t n = data.size();
  data.push_back('\0');
  return pem ? n + 1 : n;
}

time_t to_time_t(const mbedtls_x509_time& t) {
  tm parts{};
  parts.tm_year = t.year - 1900;
  parts.tm_mon = t.mon - 1;
  parts.tm_mday = t.day;
  parts.tm_hour = t.hour;
  parts.tm_min = t.min;
  parts.tm_sec = t.sec;
  return timegm(&parts);
}

bool load_certificates(mbedtls_x509_crt* chain, const std::string& path, const char* what,
                       std::string& error) {
  std::string data;
  if (!read_file(path, data, error)) return false;
  size_t len = parse_length(data, "-----BEGIN CERTIFICATE-----");
  int r = mbedtls_x509_crt_parse(chain, reinterpret_cast<const unsigned char*>(data.data()), len);
  if (r < 0) {
    error =
        path + ": not a valid " + what + " (PEM or DER X.509 expected): " + mbedtls_error_text(r);
    return false;
  }
  if (r > 0) {
    error = path + ": " + std::to_string(r) + " of the certificates in it could not be parsed";
    return false;
  }
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------
// Helpers (mbedtls_glue.h)

FileStamp FileStamp::of(const std::string& path) {
  FileStamp s;
  s.path = path;
  struct stat st;
  if (!path.empty() && ::stat(path.c_str(), &st) == 0) {
    s.exists = true;
    s.dev = st.st_dev;
    s.ino = st.st_ino;
    s.size = st.st_size;
    s.mtime = st.st_mtim;
  }
  return s;
}

bool FileStamp::same_as(const FileStamp& o) const {
  return exists == o.exists && dev == o.dev && ino == o.ino && size == o.size &&
         mtime.tv_sec == o.mtime.tv_sec && mtime.tv_nsec == o.mtime.tv_nsec;
}

std::string mbedtls_error_text(int code) {
  char buf[256];
  mbedtls_strerror(code, buf, sizeof buf);
  return buf;
}

std::string describe_time(const mbedtls_x509_time& t) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02d %02d:%02d:%02d UTC", t.year, t.mon, t.day, t.hour,
                t.min, t.sec);
  return buf;
}

Subject subject_of(const mbedtls_x509_name* name) {
  Subject out;
  for (const mbedtls_x509_name* p = name; p; p = p->next) {
    if (!p->oid.p) continue;
    SubjectAttribute a;
    const char* short_name = nullptr;
    if (mbedtls_oid_get_attr_short_name(&p->oid, &short_name) == 0 && short_name) {
      a.name = short_name;
      if (a.name == "emailAddress") a.name = "EMAIL";
    } else {
      char buf[128];
      int n = mbedtls_oid_get_numeric_string(buf, sizeof buf, &p->oid);
      a.name = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "?";
    }
    a.value.assign(reinterpret_cast<const char*>(p->val.p), p->val.len);
    out.push_back(std::move(a));
  }
  return out;
}

std::string describe_verify_flags(const mbedtls_x509_crt* crt, uint32_t flags) {
  std::vector<std::string> parts;
  std::string who = crt ? "certificate '" + format_subject(subject_of(&crt->subject)) + "'"
                        : std::string("certificate");
  auto take = [&](uint32_t bit) {
    bool set = (flags & bit) != 0;
    flags &= ~bit;
    return set;
  };
  if (take(MBEDTLS_X509_BADCERT_EXPIRED))
    parts.push_back(who + (crt ? " expired on " + describe_time(crt->valid_to) : " expired"));
  if (take(MBEDTLS_X509_BADCERT_FUTURE))
    parts.push_back(who + " is not valid yet" +
                    (crt ? " (valid from " + describe_time(crt->valid_from) + "; check the clocks)"
                         : std::string()));
  if (take(MBEDTLS_X509_BADCERT_REVOKED)) {
    std::string serial;
    if (crt) {
      char buf[128];
      if (mbedtls_x509_serial_gets(buf, sizeof buf, &crt->serial) > 0) serial = buf;
    }
    parts.push_back(who + (serial.empty() ? "" : " (serial " + serial + ")") +
                    " is revoked by the CRL");
  }
  if (take(MBEDTLS_X509_BADCERT_NOT_TRUSTED))
    parts.push_back(
        who + " is not signed by a trusted CA" +
        (crt ? " (issuer '" + format_subject(subject_of(&crt->issuer)) + "')" : std::string()));
  if (take(MBEDTLS_X509_BADCERT_CN_MISMATCH))
    parts.push_back(who + " is not issued for the expected host name");
  if (take(MBEDTLS_X509_BADCRL_EXPIRED))
    parts.push_back("the CRL is out of date (its next update time has passed; renew crl.pem)");
  if (take(MBEDTLS_X509_BADCRL_FUTURE)) parts.push_back("the CRL is not valid yet");
  if (take(MBEDTLS_X509_BADCRL_NOT_TRUSTED)) parts.push_back("the CRL is not signed by the CA");
  if (take(MBEDTLS_X509_BADCERT_BAD_MD | MBEDTLS_X509_BADCERT_BAD_PK |
           MBEDTLS_X509_BADCERT_BAD_KEY))
    parts.push_back(who + " uses a hash, key type or key size that is not accepted");
  if (take(MBEDTLS_X509_BADCERT_KEY_USAGE | MBEDTLS_X509_BADCERT_EXT_KEY_USAGE |
           MBEDTLS_X509_BADCERT_NS_CERT_TYPE))
    parts.push_back(who + " is not allowed for TLS authentication (key usage)");
  if (flags) {
    char buf[512];
    int n = mbedtls_x509_crt_verify_info(buf, sizeof buf, "", flags);
    std::string rest = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "verification failed";
    for (char& c : rest)
      if (c == '\n') c = ';';
    while (!rest.empty() && (rest.back() == ';' || rest.back() == ' ')) rest.pop_back();
    parts.push_back(who + ": " + rest);
  }
  std::string out;
  for (const auto& p : parts) {
    if (!out.empty()) out += "; ";
    out += p;
  }
  return out;
}

int VerifyNotes::callback(void* self, mbedtls_x509_crt* crt, int, uint32_t* flags) {
  if (*flags) static_cast<VerifyNotes*>(self)->reason = describe_verify_flags(crt, *flags);
  return 0;
}

// ---------------------------------------------------------------------------
// TlsContext::Impl

TlsContext::Impl::Impl() {
  mbedtls_entropy_init(&entropy);
  mbedtls_ctr_drbg_init(&drbg);
  mbedtls_x509_crt_init(&ca);
  mbedtls_x509_crl_init(&crl);
  mbedtls_x509_crt_init(&own);
  mbedtls_pk_init(&key);
  mbedtls_ssl_config_init(&conf);
}

TlsContext::Impl::~Impl() {
  mbedtls_ssl_config_free(&conf);
  mbedtls_pk_free(&key);
  mbedtls_x509_crt_free(&own);
  mbedtls_x509_crl_free(&crl);
  mbedtls_x509_crt_free(&ca);
  mbedtls_ctr_drbg_free(&drbg);
  mbedtls_entropy_free(&entropy);
}

bool TlsContext::Impl::verify(const mbedtls_x509_crt* chain, const char* expected_name,
                              std::string& error) const {
  uint32_t flags = 0;
  VerifyNotes notes;
  int r = mbedtls_x509_crt_verify_with_profile(
      const_cast<mbedtls_x509_crt*>(chain), const_cast<mbedtls_x509_crt*>(&ca),
      has_crl ? const_cast<mbedtls_x509_crl*>(&crl) : nullptr, &mbedtls_x509_crt_profile_default,
      expected_name, &flags, VerifyNotes::callback, &notes);
  if (r == 0) return true;
  if (!notes.reason.empty()) return fail(error, notes.reason);
  if (flags) return fail(error, describe_verify_flags(chain, flags));
  return fail(error, "certificate verification failed: " + mbedtls_error_text(r));
}

// ---------------------------------------------------------------------------
// TlsSettings / TlsContext

TlsSettings TlsSettings::from_certs_path(const std::string& dir, std::string_view name, Role role) {
  std::string base = dir.empty() ? std::string(".") : dir;
  if (base.back() != '/') base += '/';
  TlsSettings s;
  s.role = role;
  s.ca_file = base + "ca.pem";
  s.crl_file = base + "crl.pem";
  s.cert_file = base + std::string(name) + ".crt";
  s.key_file = base + std::string(name) + ".key";
  return s;
}

TlsContext::TlsContext() : impl_(std::make_unique<Impl>()) {}
TlsContext::~TlsContext() = default;

const TlsSettings& TlsContext::settings() const {
  return impl_->settings;
}
bool TlsContext::has_crl() const {
  return impl_->has_crl;
}
const Subject& TlsContext::own_subject() const {
  return impl_->own_subject;
}
const std::vector<std::string>& TlsContext::warnings() const {
  return impl_->warnings;
}

bool TlsContext::files_changed() const {
  for (const FileStamp& s : impl_->stamps)
    if (!s.same_as(FileStamp::of(s.path))) return true;
  return false;
}

std::shared_ptr<const TlsContext> TlsContext::load(const TlsSettings& settings,
                                                   std::string& error) {
  std::shared_ptr<TlsContext> ctx(new TlsContext());
  Impl& m = *ctx->impl_;
  m.settings = settings;
  for (const std::string* p :
       {&settings.ca_file, &settings.crl_file, &settings.cert_file, &settings.key_file})
    m.stamps.push_back(FileStamp::of(*p));

  if (settings.ca_file.empty() || settings.cert_file.empty() || settings.key_file.empty()) {
    error = "TLS needs a CA file, a certificate and a key";
    return nullptr;
  }

  // Trusted CA(s).
  if (!load_certificates(&m.ca, settings.ca_file, "CA certificate file", error)) return nullptr;
  for (const mbedtls_x509_crt* c = &m.ca; c && c->raw.p; c = c->next) {
    if (mbedtls_x509_time_is_past(&c->valid_to))
      m.warnings.push_back("CA certificate '" + format_subject(subject_of(&c->subject)) + "' in " +
                           settings.ca_file + " expired on " + describe_time(c->valid_to) +
                           "; no peer certificate it issued will be accepted");
  }

  // Revocation list (optional).
  if (!settings.crl_file.empty()) {
    std::string data;
    if (!m.stamps[1].exists) {
      m.warnings.push_back("no CRL at " + settings.crl_file +
                           "; revoked certificates cannot be refused");
    } else if (!read_file(settings.crl_file, data, error)) {
      return nullptr;
    } else if (only_blanks(data)) {
      m.warnings.push_back("CRL " + settings.crl_file +
                           " is empty; revoked certificates cannot be refused");
    } else {
      size_t len = parse_length(data, "-----BEGIN X509 CRL-----");
      int r =
          mbedtls_x509_crl_parse(&m.crl, reinterpret_cast<const unsigned char*>(data.data()), len);
      if (r != 0) {
        error = settings.crl_file +
                ": not a valid CRL (PEM or DER X.509 CRL expected): " + mbedtls_error_text(r);
        return nullptr;
      }
      m.has_crl = true;
      for (const mbedtls_x509_crl* c = &m.crl; c && c->raw.p; c = c->next) {
        if (c->next_update.year != 0 && mbedtls_x509_time_is_past(&c->next_update)) {
          error = "CRL " + settings.crl_file + " is out of date (next update was due " +
                  describe_time(c->next_update) +
                  "); every peer would be refused: issue a new one (openssl ca -gencrl)";
          return nullptr;
        }
      }
    }
  } else {
    m.warnings.push_back("no CRL configured; revoked certificates cannot be refused");
  }

  // Our own certificate chain.
  if (!load_certificates(&m.own, settings.cert_file, "certificate file", error)) return nullptr;
  m.own_subject = subject_of(&m.own.subject);
  std::string own_name =
      "certificate " + settings.cert_file + " ('" + format_subject(m.own_subject) + "')";
  std::string invalid;
  if (mbedtls_x509_time_is_past(&m.own.valid_to))
    invalid = own_name + " expired on " + describe_time(m.own.valid_to);
  else if (mbedtls_x509_time_is_future(&m.own.valid_from))
    invalid = own_name + " is not valid before " + describe_time(m.own.valid_from) +
              " (check the system clock)";
  if (!invalid.empty() && !settings.allow_invalid_own_cert) {
    error = invalid;
    return nullptr;
  }
  time_t left = to_time_t(m.own.valid_to) - std::time(nullptr);
  if (!invalid.empty())
    m.warnings.push_back(invalid);
  else if (left < kExpiryWarning)
    m.warnings.push_back(own_name + " expires on " + describe_time(m.own.valid_to) +
                         "; renew it soon");

  // Its private key.
  {
    std::string data;
    if (!read_file(settings.key_file, data, error)) return nullptr;
    size_t len = parse_length(data, "-----BEGIN");
    int r = mbedtls_pk_parse_key(&m.key, reinterpret_cast<const unsigned char*>(data.data()), len,
                                 nullptr, 0);
    mbedtls_platform_zeroize(data.data(), data.size());
    if (r == MBEDTLS_ERR_PK_PASSWORD_REQUIRED || r == MBEDTLS_ERR_PK_PASSWORD_MISMATCH) {
      error = "key " + settings.key_file +
              " is protected by a passphrase; store it unencrypted (mode 0600)";
      return nullptr;
    }
    if (r != 0) {
      error = settings.key_file + ": not a valid private key: " + mbedtls_error_text(r);
      return nullptr;
    }
  }
  if (mbedtls_pk_check_pair(&m.own.pk, &m.key) != 0) {
    error = "key " + settings.key_file + " does not belong to " + own_name;
    return nullptr;
  }

  // Would a peer using the same CA and CRL accept us?
  {
    std::string why;
    if (!m.verify(&m.own, nullptr, why))
      m.warnings.push_back("our " + own_name + " would be refused by peers trusting " +
                           settings.ca_file + ": " + why);
  }

  // Random generator and the ssl configuration.
  static const char kPersonalisation[] = "mediaproxy tls";
  int r = mbedtls_ctr_drbg_seed(&m.drbg, mbedtls_entropy_func, &m.entropy,
                                reinterpret_cast<const unsigned char*>(kPersonalisation),
                                sizeof kPersonalisation - 1);
  if (r != 0) {
    error = "cannot seed the TLS random generator: " + mbedtls_error_text(r);
    return nullptr;
  }
  r = mbedtls_ssl_config_defaults(
      &m.conf, settings.role == Role::Server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
      MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
  if (r != 0) {
    error = "cannot set up the TLS configuration: " + mbedtls_error_text(r);
    return nullptr;
  }
  mbedtls_ssl_conf_min_version(&m.conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
  mbedtls_ssl_conf_max_version(&m.conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
  mbedtls_ssl_conf_ciphersuites(&m.conf, kCipherSuites);
  mbedtls_ssl_conf_curves(&m.conf, kCurves);
  mbedtls_ssl_conf_authmode(&m.conf, MBEDTLS_SSL_VERIFY_REQUIRED);
  mbedtls_ssl_conf_ca_chain(&m.conf, &m.ca, m.has_crl ? &m.crl : nullptr);
  mbedtls_ssl_conf_rng(&m.conf, mbedtls_ctr_drbg_random, &m.drbg);
  mbedtls_ssl_conf_renegotiation(&m.conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
  if (settings.role == Role::Client)
    mbedtls_ssl_conf_session_tickets(&m.conf, MBEDTLS_SSL_SESSION_TICKETS_DISABLED);
  r = mbedtls_ssl_conf_own_cert(&m.conf, &m.own, &m.key);
  if (r != 0) {
    error = "cannot use " + own_name + ": " + mbedtls_error_text(r);
    return nullptr;
  }
  return ctx;
}

ReloadResult reload_if_changed(std::shared_ptr<const TlsContext>& ctx, std::string& error) {
  if (!ctx || !ctx->files_changed()) return ReloadResult::Unchanged;
  auto fresh = TlsContext::load(ctx->settings(), error);
  if (!fresh) return ReloadResult::Failed;
  ctx = std::move(fresh);
  return ReloadResult::Reloaded;
}

}  // namespace mp::tls
