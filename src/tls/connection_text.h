// How a connection describes itself in log lines: the peer's address, what
// a non-TLS peer sent, and the TLS alert a peer refused the handshake with.
// Pure functions; the escaping keeps bytes from the network out of the log
// as they are.
#pragma once

#include <sys/socket.h>

#include <string>
#include <string_view>

namespace mp::tls {

// "a.b.c.d:port" or "[v6]:port" ("?" for other families).
std::string format_sockaddr(const sockaddr_storage& ss);
// Up to 24 bytes of what a non-TLS peer sent, printable (\r, \n, \xNN).
std::string preview(std::string_view data);
// The words for an mbedTLS alert number ("handshake failure", ...).
std::string alert_text(unsigned char alert);

}  // namespace mp::tls
