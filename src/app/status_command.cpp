// Management-interface client and table printer (status_command.h).
#include "app/status_command.h"

#include <arpa/inet.h>
#include <poll.h>
#include <rapidjson/document.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>

#include "app/options.h"
#include "common/config.h"

namespace mp::app {

namespace {

constexpr int kTimeoutMs = 3000;

std::string usage(const char* what) {
  return std::string("Usage: mediaproxy ") + what +
         " [--config FILE] [--management ADDRESS:PORT] [--json] [--watch SECONDS]\n"
         "Asks the dispatcher's management interface (listen_management in [Dispatcher])\n"
         "and prints " +
         (std::string(what) == "sessions" ? "every session and stream" : "every relay") +
         ". --json prints the dispatcher's JSON line as is.\n";
}

// Sends `command` and returns the reply line, or "" with `error` set.
std::string ask(const Endpoint& where, const std::string& command, std::string& error) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::string("socket: ") + std::strerror(errno);
    return {};
  }
  sockaddr_in sa = where.to_sockaddr();
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    error = "cannot connect to the management interface at " + format_endpoint(where) + ": " +
            std::strerror(errno) +
            " (is mediaproxy running, with listen_management set to this address and "
            "management_use_tls = no?)";
    close(fd);
    return {};
  }
  std::string out = command + "\r\n";
  if (send(fd, out.data(), out.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(out.size())) {
    error = std::string("cannot send the command: ") + std::strerror(errno);
    close(fd);
    return {};
  }
  std::string reply;
  char buf[65536];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int r = poll(&p, 1, kTimeoutMs);
    if (r <= 0) {
      error = "no answer from " + format_endpoint(where) + " within 3 s";
      break;
    }
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      error = "the dispatcher closed the connection without answering";
      break;
    }
    reply.append(buf, static_cast<size_t>(n));
    size_t nl = reply.find("\r\n");
    if (nl != std::string::npos) {
      reply.resize(nl);
      error.clear();
      close(fd);
      return reply;
    }
  }
  close(fd);
  return {};
}

std::string str(const rapidjson::Value& v, const char* key) {
  if (!v.IsObject()) return "?";
  auto it = v.FindMember(key);
  if (it == v.MemberEnd() || it->value.IsNull()) return "-";
  if (it->value.IsString()) return it->value.GetString();
  if (it->value.IsInt64()) return std::to_string(it->value.GetInt64());
  if (it->value.IsUint64()) return std::to_string(it->value.GetUint64());
  if (it->value.IsDouble()) {
    char b[64];
    std::snprintf(b, sizeof b, "%.0f", it->value.GetDouble());
    return b;
  }
  return "?";
}

uint64_t num(const rapidjson::Value& v, const char* key) {
  auto it = v.FindMember(key);
  if (it == v.MemberEnd()) return 0;
  if (it->value.IsUint64()) return it->value.GetUint64();
  if (it->value.IsInt64()) return static_cast<uint64_t>(std::max<int64_t>(0, it->value.GetInt64()));
  return 0;
}

bool print_sessions(const rapidjson::Document& d) {
  if (!d.IsArray()) return false;
  std::printf("%zu session(s)\n", static_cast<size_t>(d.Size()));
  for (const auto& s : d.GetArray()) {
    if (!s.IsObject()) return false;
    std::printf("\n%s  %s -> %s  duration %ss\n", str(s, "call_id").c_str(),
                str(s, "from_uri").c_str(), str(s, "to_uri").c_str(), str(s, "duration").c_str());
    std::printf("  caller UA: %s   callee UA: %s\n", str(s, "caller_ua").c_str(),
                str(s, "callee_ua").c_str());
    auto it = s.FindMember("streams");
    if (it == s.MemberEnd() || !it->value.IsArray()) continue;
    if (it->value.Empty()) std::printf("  (no answered stream yet)\n");
    for (const auto& st : it->value.GetArray()) {
      std::printf("  %-6s %-18s %-9s caller %s <-> %s | %s <-> %s callee\n",
                  str(st, "media_type").c_str(), str(st, "status").c_str(),
                  str(st, "forwarding").c_str(), str(st, "caller_remote").c_str(),
                  str(st, "caller_local").c_str(), str(st, "callee_local").c_str(),
                  str(st, "callee_remote").c_str());
      std::printf("         codecs %s/%s  caller->callee %" PRIu64 " pkts %" PRIu64
                  " bytes (kernel %" PRIu64 ")  callee->caller %" PRIu64 " pkts %" PRIu64
                  " bytes (kernel %" PRIu64 ")\n",
                  str(st, "caller_codec").c_str(), str(st, "callee_codec").c_str(),
                  num(st, "caller_packets"), num(st, "caller_bytes"),
                  num(st, "caller_kernel_packets"), num(st, "callee_packets"),
                  num(st, "callee_bytes"), num(st, "callee_kernel_packets"));
    }
  }
  return true;
}

bool print_summary(const rapidjson::Document& d) {
  if (!d.IsArray()) return false;
  std::printf("%-16s %-8s %-8s %10s %9s %-24s %14s\n", "RELAY", "VERSION", "STATUS", "UPTIME",
              "SESSIONS", "STREAMS", "BPS");
  for (const auto& r : d.GetArray()) {
    if (!r.IsObject()) return false;
    std::string streams;
    auto it = r.FindMember("stream_count");
    if (it != r.MemberEnd() && it->value.IsObject())
      for (const auto& m : it->value.GetObject())
        streams += (streams.empty() ? "" : ",") + std::string(m.name.GetString()) + "=" +
                   (m.value.IsInt64() ? std::to_string(m.value.GetInt64()) : "?");
    std::printf("%-16s %-8s %-8s %10s %9s %-24s %14s\n", str(r, "ip").c_str(),
                str(r, "version").c_str(), str(r, "status").c_str(), str(r, "uptime").c_str(),
                str(r, "session_count").c_str(), streams.empty() ? "-" : streams.c_str(),
                str(r, "bps_relayed").c_str());
  }
  return true;
}

}  // namespace

int run_status_command(int argc, char** argv) {
  const std::string what = argv[1];
  std::string config_path;
  std::optional<Endpoint> where;
  bool json = false;
  int watch = 0;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--json") {
      json = true;
    } else if (a == "--config") {
      const char* v = value();
      if (!v) break;
      config_path = v;
    } else if (a == "--management") {
      const char* v = value();
      auto ep = v ? parse_endpoint(v) : std::nullopt;
      if (!ep) {
        std::fprintf(stderr, "mediaproxy %s: --management needs ADDRESS:PORT\n", what.c_str());
        return 2;
      }
      where = ep;
    } else if (a == "--watch") {
      const char* v = value();
      watch = v ? std::atoi(v) : 0;
      if (watch <= 0) {
        std::fprintf(stderr, "mediaproxy %s: --watch needs a number of seconds > 0\n",
                     what.c_str());
        return 2;
      }
    } else if (a == "--help" || a == "-h") {
      std::fputs(usage(what.c_str()).c_str(), stdout);
      return 0;
    } else {
      std::fprintf(stderr, "mediaproxy %s: unknown option '%s'\n%s", what.c_str(), a.c_str(),
                   usage(what.c_str()).c_str());
      return 2;
    }
  }
  if (!where) {
    Config cfg;
    std::string error;
    struct stat st;
    if (config_path.empty() && stat(kDefaultConfigPath, &st) == 0) config_path = kDefaultConfigPath;
    if (!config_path.empty() && !load_config_file(config_path, cfg, error)) {
      std::fprintf(stderr, "mediaproxy %s: %s\n", what.c_str(), error.c_str());
      return 1;
    }
    if (!cfg.dispatcher.listen_management) {
      std::fprintf(stderr,
                   "mediaproxy %s: the management interface is switched off "
                   "(listen_management) in %s\n",
                   what.c_str(), config_path.c_str());
      return 1;
    }
    if (cfg.dispatcher.management_use_tls) {
      std::fprintf(stderr,
                   "mediaproxy %s: the configuration asks for TLS on the management interface "
                   "(management_use_tls), which this version does not provide; set "
                   "management_use_tls = no or pass --management ADDRESS:PORT\n",
                   what.c_str());
      return 1;
    }
    where = *cfg.dispatcher.listen_management;
    if (where->ip.is_any()) where->ip = *parse_ipv4("127.0.0.1");
  }
  for (;;) {
    std::string error;
    std::string line = ask(*where, what, error);
    if (line.empty()) {
      std::fprintf(stderr, "mediaproxy %s: %s\n", what.c_str(), error.c_str());
      return 1;
    }
    if (watch) std::printf("\033[H\033[2J");
    if (json) {
      std::printf("%s\n", line.c_str());
    } else {
      rapidjson::Document d;
      d.Parse(line.c_str(), line.size());
      bool ok = !d.HasParseError() && (what == "sessions" ? print_sessions(d) : print_summary(d));
      if (!ok) {
        std::fprintf(stderr, "mediaproxy %s: unexpected answer: %.200s\n", what.c_str(),
                     line.c_str());
        return 1;
      }
    }
    std::fflush(stdout);
    if (!watch) return 0;
    sleep(static_cast<unsigned>(watch));
  }
}

}  // namespace mp::app
