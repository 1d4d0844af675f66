// Log text of TLS connections (tls/connection_text.h): peer addresses of
// both families and the escaping of what a non-TLS peer sent.
#include <arpa/inet.h>
#include <catch2/catch.hpp>

#include <cstring>

#include "tls/connection_text.h"

using namespace mp::tls;

TEST_CASE("peer addresses print as a.b.c.d:port and [v6]:port", "[tls]") {
  sockaddr_storage ss{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  v4->sin_family = AF_INET;
  v4->sin_port = htons(25060);
  inet_pton(AF_INET, "192.0.2.1", &v4->sin_addr);
  CHECK(format_sockaddr(ss) == "192.0.2.1:25060");
  std::memset(&ss, 0, sizeof ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  v6->sin6_family = AF_INET6;
  v6->sin6_port = htons(25060);
  inet_pton(AF_INET6, "2001:db8::1", &v6->sin6_addr);
  CHECK(format_sockaddr(ss) == "[2001:db8::1]:25060");
}

TEST_CASE("what a non-TLS peer sent is cut and escaped for the log", "[tls]") {
  CHECK(preview("GET / HTTP/1.1\r\nHost: x\r\n") == "GET / HTTP/1.1\\r\\nHost: x\\r");
  CHECK(preview(std::string_view("a\0\x7f\\", 4)) == "a\\x00\\x7f\\\\");
}
