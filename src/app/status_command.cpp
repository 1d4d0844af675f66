// Management-interface client and table printer (status_command.h).
#include "app/status_command.h"

#include <rapidjson/document.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>

#include "app/options.h"
#include "common/config.h"
#include "common/log.h"
#include "tls/connection.h"
#include "tls/passport.h"
#include "tls/tls_context.h"

namespace mp::app {

namespace {

constexpr int kTimeoutMs = 3000;

std::string usage(const char* what) {
  return std::string("Usage: mediaproxy ") + what +
         " [--config FILE] [--management ADDRESS:PORT] [--tls | --plain]\n"
         "       [--certs DIR] [--json] [--watch SECONDS]\n"
         "Asks the dispatcher's management interface (listen_management in [Dispatcher])\n"
         "and prints " +
         (std::string(what) == "sessions" ? "every session and stream" : "every relay") +
         ". --json prints the dispatcher's JSON line as is. TLS (the default when\n"
         "the configuration says management_use_tls = yes) presents management.crt and\n"
         "management.key from the certificate directory ([TLS] certs_path, or --certs;\n"
         "made by certs/make-certs.sh), or dispatcher.crt if there is no management.crt.\n";
}

// Sends `command` over plain TCP (`tls` null) or TLS and returns the reply
// line, or "" with `error` set; `connected` tells whether the connection (and
// TLS handshake) was made, e.g. before the server refused our certificate.
std::string ask(const Endpoint& where, const std::string& command,
                std::shared_ptr<const tls::TlsContext> tls, std::string& error, bool& connected) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  std::string reply, buffer;
  bool done = false;
  std::shared_ptr<tls::Connection> conn;
  tls::ConnectionCallbacks cb;
  connected = false;
  cb.on_connected = [&](const tls::Subject&) {
    connected = true;
    conn->write(command + "\r\n");
  };
  cb.on_data = [&](std::string_view data) {
    buffer.append(data);
    size_t nl = buffer.find("\r\n");
    if (nl != std::string::npos && !done) {
      reply = buffer.substr(0, nl);
      done = true;
      conn->close("answered");
    }
  };
  cb.on_closed = [&](const std::string& reason) {
    if (!done) {
      error = "no answer from the management interface at " + format_endpoint(where) + ": " +
              reason + " (is mediaproxy running with listen_management set to this address" +
              (tls ? ", and does it accept this client certificate: signed by its CA and "
                     "matching its management_passport?)"
                   : ", and management_use_tls = no?)");
    }
  };
  tls::ConnectionOptions opts;
  opts.label = "management client";
  opts.handshake_timeout_ms = kTimeoutMs;
  conn = tls::Connection::create(&loop, tls, std::move(cb), std::move(opts));
  uv_timer_t timer;
  uv_timer_init(&loop, &timer);
  timer.data = &conn;
  uv_timer_start(
      &timer,
      [](uv_timer_t* t) {
        (*static_cast<std::shared_ptr<tls::Connection>*>(t->data))->abort("timed out after 3 s");
      },
      kTimeoutMs, 0);
  sockaddr_in sa = where.to_sockaddr();
  if (std::string why; !conn->connect(reinterpret_cast<const sockaddr*>(&sa), why))
    error = "cannot connect to " + format_endpoint(where) + ": " + why;
  // Runs until the connection has closed; then only the timer is left.
  while (conn->state() != tls::Connection::State::Closed && uv_run(&loop, UV_RUN_ONCE)) {
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
  conn.reset();
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return done ? reply : std::string();
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
  // A dispatcher that refuses our certificate closes right after the
  // handshake, while our command may still be on its way: report that, do
  // not die of SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  const std::string what = argv[1];
  std::string config_path;
  std::optional<Endpoint> where;
  bool json = false;
  int watch = 0;
  std::optional<bool> use_tls;
  std::string certs;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--json") {
      json = true;
    } else if (a == "--tls") {
      use_tls = true;
    } else if (a == "--plain") {
      use_tls = false;
    } else if (a == "--certs") {
      const char* v = value();
      if (!v) break;
      certs = v;
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
  Config cfg;
  {
    std::string error;
    struct stat st;
    if (config_path.empty() && stat(kDefaultConfigPath, &st) == 0) config_path = kDefaultConfigPath;
    if (!config_path.empty() && !load_config_file(config_path, cfg, error)) {
      std::fprintf(stderr, "mediaproxy %s: %s\n", what.c_str(), error.c_str());
      return 1;
    }
  }
  if (!where) {
    if (!cfg.dispatcher.listen_management) {
      std::fprintf(stderr,
                   "mediaproxy %s: the management interface is switched off "
                   "(listen_management) in %s\n",
                   what.c_str(), config_path.c_str());
      return 1;
    }
    where = *cfg.dispatcher.listen_management;
    if (where->ip.is_any()) where->ip = *parse_ipv4("127.0.0.1");
  }
  std::shared_ptr<const tls::TlsContext> ctx;
  std::string hint;  // added to a failure to get an answer
  if (use_tls.value_or(cfg.dispatcher.management_use_tls)) {
    std::string error;
    log::set_level(log::Level::Critical);  // errors are reported below, once
    const std::string dir = certs.empty() ? cfg.certs_dir() : certs;
    // The dispatcher admits only management certificates by default
    // (management_passport); dispatcher.crt is the fallback for sets made
    // before management.crt existed, accepted only with a passport that
    // admits it.
    struct stat st;
    const bool have_management = stat((dir + "/management.crt").c_str(), &st) == 0;
    const char* name = have_management ? "management" : "dispatcher";
    auto settings = tls::TlsSettings::from_certs_path(dir, name, tls::Role::Client);
    ctx = tls::TlsContext::load(settings, error);
    if (!ctx) {
      const std::string missing = have_management
                                      ? std::string()
                                      : "there is no management.crt in " + dir +
                                            " either: make one with certs/make-certs.sh; ";
      std::fprintf(stderr,
                   "mediaproxy %s: cannot use TLS: %s (%suse --certs DIR, or --plain "
                   "for a plain-TCP management interface)\n",
                   what.c_str(), error.c_str(), missing.c_str());
      return 1;
    }
    std::string why;
    auto passport = tls::Passport::parse(cfg.dispatcher.management_passport, why);
    const std::string subject = tls::format_subject(ctx->own_subject());
    if (!have_management) {
      hint = "there is no management.crt in " + dir + ", so dispatcher.crt ('" + subject +
             "') was presented, and the dispatcher's management_passport (default '" +
             kDefaultManagementPassport +
             "') refuses it: put a management certificate of the same CA and its key in " + dir +
             " as management.crt and management.key (certs/make-certs.sh makes one with a new "
             "set, CN 'mediaproxy management'; certs/README shows how to issue one with an "
             "existing CA), or use --certs DIR for a directory that has them";
    } else if (passport && !passport->accepts(ctx->own_subject(), why)) {
      hint = "the certificate " + dir + "/management.crt ('" + subject +
             "') does not match management_passport '" + passport->to_string() + "'" +
             (config_path.empty() ? std::string() : " of " + config_path) + ": " + why;
    }
  } else {
    log::set_level(log::Level::Critical);
  }
  for (;;) {
    std::string error;
    bool connected = false;
    std::string line = ask(*where, what, ctx, error, connected);
    if (line.empty()) {
      std::fprintf(stderr, "mediaproxy %s: %s\n", what.c_str(), error.c_str());
      // A server that completed the handshake and then closed refused our
      // certificate (its log names the passport); say what to do about it.
      if (connected && !hint.empty())
        std::fprintf(stderr, "mediaproxy %s: note: %s\n", what.c_str(), hint.c_str());
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
