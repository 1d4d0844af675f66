// Log text of connections (connection_text.h).
#include "tls/connection_text.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <uv.h>

#include <cstdio>

#include "tls/mbedtls_glue.h"

namespace mp::tls {

std::string format_sockaddr(const sockaddr_storage& ss) {
  char ip[INET6_ADDRSTRLEN + 1] = "?";
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    uv_ip4_name(a, ip, sizeof ip);
    return std::string(ip) + ":" + std::to_string(ntohs(a->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    uv_ip6_name(a, ip, sizeof ip);
    return "[" + std::string(ip) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  return "?";
}

// Up to 24 bytes of what a non-TLS peer sent, printable, for the log.
std::string preview(std::string_view data) {
  std::string out;
  for (unsigned char c : data.substr(0, 24)) {
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

std::string alert_text(unsigned char alert) {
  switch (alert) {
    case MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE:
      return "handshake failure (no common cipher suite or parameters)";
    case MBEDTLS_SSL_ALERT_MSG_BAD_CERT:
      return "bad certificate (it refused our certificate)";
    case MBEDTLS_SSL_ALERT_MSG_UNSUPPORTED_CERT:
      return "unsupported certificate (it refused our certificate)";
    case MBEDTLS_SSL_ALERT_MSG_CERT_REVOKED:
      return "certificate revoked (our certificate is on its CRL)";
    case MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED:
      return "certificate expired (our certificate, or its clock is wrong)";
    case MBEDTLS_SSL_ALERT_MSG_CERT_UNKNOWN:
      return "certificate unknown (it refused our certificate)";
    case MBEDTLS_SSL_ALERT_MSG_UNKNOWN_CA:
      return "unknown CA (our certificate is not signed by a CA it trusts)";
    case MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED:
      return "access denied";
    case MBEDTLS_SSL_ALERT_MSG_PROTOCOL_VERSION:
      return "protocol version (it does not accept TLS 1.2)";
    case MBEDTLS_SSL_ALERT_MSG_INSUFFICIENT_SECURITY:
      return "insufficient security (no acceptable cipher suite)";
    case MBEDTLS_SSL_ALERT_MSG_DECODE_ERROR:
      return "decode error";
    case MBEDTLS_SSL_ALERT_MSG_DECRYPT_ERROR:
      return "decrypt error";
    case MBEDTLS_SSL_ALERT_MSG_ILLEGAL_PARAMETER:
      return "illegal parameter";
    case MBEDTLS_SSL_ALERT_MSG_UNRECOGNIZED_NAME:
      return "unrecognized name";
    case MBEDTLS_SSL_ALERT_MSG_INTERNAL_ERROR:
      return "internal error";
    default:
      return "alert " + std::to_string(alert);
  }
}

}  // namespace mp::tls
