// Parsing of the [Rtpproxy] address forms (config.h): the `listen` entries
// (udp:IP:PORT, udp6:[IP6]:PORT, tcp:IP:PORT, tcp6:[IP6]:PORT, unix:/path,
// cunix:/path, as the rtpproxy modules write them) and the timeout
// notification targets a U command may name (tcp:IP:PORT, unix:/path).
// Pure functions; the loader in config.cpp calls them.
#include <arpa/inet.h>
#include <sys/un.h>

#include "common/config.h"

namespace mp {

namespace {

constexpr uint16_t kDefaultRtpproxyPort = 22222;

bool valid_ip(const std::string& text, bool v6) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(v6 ? AF_INET6 : AF_INET, text.c_str(), buf) == 1;
}

// "IP:PORT", "[IP6]:PORT", "IP6" (v6 only, no port) or "IP". False on a bad
// address or port; `error` says why.
bool split_host_port(std::string_view rest, bool v6, std::string& host, uint16_t& port,
                     std::string& error) {
  port = kDefaultRtpproxyPort;
  std::string_view h = rest;
  std::string_view p;
  if (!rest.empty() && rest.front() == '[') {
    size_t close = rest.find(']');
    if (close == std::string_view::npos) {
      error = "missing ']' in '" + std::string(rest) + "'";
      return false;
    }
    h = rest.substr(1, close - 1);
    std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        error = "expected ':PORT' after ']' in '" + std::string(rest) + "'";
        return false;
      }
      p = after.substr(1);
    }
  } else if (size_t colon = rest.rfind(':'); colon != std::string_view::npos) {
    // An IPv6 literal without brackets has several colons: the last group is
    // the port only when the remainder still is a valid IPv6 address.
    if (!v6 || valid_ip(std::string(rest.substr(0, colon)), true)) {
      h = rest.substr(0, colon);
      p = rest.substr(colon + 1);
    }
  }
  host.assign(h);
  if (!valid_ip(host, v6)) {
    error = std::string("expected an IPv") + (v6 ? "6" : "4") + " address, got '" + host + "'";
    return false;
  }
  if (!p.empty() || rest.back() == ':') {
    auto parsed = parse_port(p);
    if (!parsed || *parsed == 0) {
      error = "bad port '" + std::string(p) + "'";
      return false;
    }
    port = *parsed;
  }
  return true;
}

bool valid_path(std::string_view path, std::string& error) {
  if (path.empty() || path.front() != '/') {
    error = "expected an absolute socket path, got '" + std::string(path) + "'";
    return false;
  }
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    error = "socket path '" + std::string(path) + "' is too long";
    return false;
  }
  return true;
}

}  // namespace

std::optional<RtpproxyListen> parse_rtpproxy_listen(std::string_view text, std::string& error) {
  using T = RtpproxyListen::Transport;
  static const std::pair<std::string_view, T> kSchemes[] = {
      {"udp:", T::Udp},   {"udp6:", T::Udp6}, {"tcp:", T::Tcp},
      {"tcp6:", T::Tcp6}, {"unix:", T::Unix}, {"cunix:", T::Cunix}};
  RtpproxyListen out;
  out.text.assign(text);
  for (const auto& [scheme, transport] : kSchemes) {
    if (text.substr(0, scheme.size()) != scheme) continue;
    out.transport = transport;
    std::string_view rest = text.substr(scheme.size());
    if (transport == T::Unix || transport == T::Cunix) {
      if (!valid_path(rest, error)) return std::nullopt;
      out.address.assign(rest);
      return out;
    }
    const bool v6 = transport == T::Udp6 || transport == T::Tcp6;
    if (!split_host_port(rest, v6, out.address, out.port, error)) return std::nullopt;
    return out;
  }
  error =
      "expected udp:IP:PORT, udp6:[IP]:PORT, tcp:IP:PORT, tcp6:[IP]:PORT, unix:PATH or "
      "cunix:PATH, got '" +
      std::string(text) + "'";
  return std::nullopt;
}

std::optional<RtpproxyNotifyTarget> parse_rtpproxy_notify_target(std::string_view text,
                                                                 std::string& error) {
  RtpproxyNotifyTarget out;
  if (text.substr(0, 5) == "unix:") {
    if (!valid_path(text.substr(5), error)) return std::nullopt;
    out.unix_socket = true;
    out.address.assign(text.substr(5));
    return out;
  }
  if (text.substr(0, 4) == "tcp:") {
    std::string_view rest = text.substr(4);
    const bool v6 = !rest.empty() && rest.front() == '[';
    if (!split_host_port(rest, v6, out.address, out.port, error)) return std::nullopt;
    if (text.find(':', 4) == std::string_view::npos ||
        (v6 && rest.find("]:") == std::string_view::npos)) {
      error = "a tcp: notification target needs a port";
      return std::nullopt;
    }
    return out;
  }
  error = "expected tcp:IP:PORT or unix:PATH, got '" + std::string(text.substr(0, 64)) + "'";
  return std::nullopt;
}

}  // namespace mp
