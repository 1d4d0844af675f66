// Process start-up, role wiring and shutdown (server.h): checks the
// configuration and the host (runtime directory, relay address, open-file
// limit), daemonises, takes over a predecessor's sockets on --upgrade, builds
// the parts of the chosen role into a Process (server_process.h) and joins
// them, opens the listeners with the module socket last, runs the event loop
// and tears the parts down in order. The signal handlers are in
// server_signals.cpp, the orderly stop in server_process.cpp.
#include "app/server.h"

#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>

#include "accounting/accounting.h"
#include "app/config_check.h"
#include "app/daemon.h"
#include "app/in_process_link.h"
#include "app/server_process.h"
#include "app/service_notify.h"
#include "app/upgrade.h"
#include "common/log.h"
#include "common/net_detect.h"
#include "dispatcher/dispatcher.h"
#include "dispatcher/hangup_client.h"
#include "dispatcher/module_server.h"
#include "dispatcher/relay_listener.h"
#include "dispatcher/rtpproxy_front_end.h"
#include "dispatcher/rtpproxy_server.h"
#include "management/management_server.h"
#include "metrics/exposition.h"
#include "metrics/http_server.h"
#include "relay/dispatcher_client.h"
#include "relay/relay_engine.h"
#include "relay/tproxy_socket.h"
#include "tls/passport.h"
#include "tls/tls_context.h"

namespace mp::app {

namespace {

using server::Process;

constexpr uint64_t kInProcessOwner = 1;

bool make_dirs(const std::string& path, std::string& error) {
  std::string partial;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    partial = path.substr(0, pos);
    if (partial.empty()) continue;
    if (mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST) {
      error = "cannot create runtime directory " + partial + ": " + std::strerror(errno);
      return false;
    }
  }
  return true;
}

std::string absolute(const std::string& path) {
  if (!path.empty() && path[0] == '/') return path;
  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) return path;
  return std::string(cwd) + "/" + path;
}

// Raises the soft open-file limit to the hard one; returns the new limit.
rlim_t raise_file_limit() {
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur;
}

}  // namespace

int run_server(Config cfg, bool foreground, bool upgrade) {
  const bool has_relay = cfg.role != Role::Dispatcher;
  const bool has_dispatcher = cfg.role != Role::Relay;
  if (auto problems = config_problems(cfg); !problems.empty()) {
    for (const std::string& problem : problems)
      std::fprintf(stderr, "mediaproxy: %s\n", problem.c_str());
    return 1;
  }
  Process p;
  p.configured_level = cfg.log_level;
  if (cfg.relay.log_level && *cfg.relay.log_level > p.configured_level)
    p.configured_level = *cfg.relay.log_level;
  if (cfg.dispatcher.log_level && *cfg.dispatcher.log_level > p.configured_level)
    p.configured_level = *cfg.dispatcher.log_level;
  log::set_level(p.configured_level);
  for (const std::string& w : cfg.warnings) LOG_WARN("%s", w.c_str());
  if (cfg.dispatcher.relay_timeout >= 0.5)
    LOG_WARN(
        "relay_timeout %.3g s is not below the proxy module's 500 ms timeout: a late relay "
        "answer would be lost and its session orphaned; use 0.2",
        cfg.dispatcher.relay_timeout);

  cfg.runtime_dir = absolute(cfg.runtime_dir);
  if (!cfg.pid_file.empty()) cfg.pid_file = absolute(cfg.pid_file);
  if (!cfg.relay.state_file.empty() && cfg.relay.state_file[0] != '/')
    cfg.relay.state_file = cfg.runtime_dir + "/" + cfg.relay.state_file;
  if (!cfg.dispatcher.socket_path.empty() && cfg.dispatcher.socket_path[0] != '/' &&
      cfg.dispatcher.socket_path.find('/') != std::string::npos)
    LOG_DEBUG("socket_path %s is relative to %s", cfg.dispatcher.socket_path.c_str(),
              cfg.runtime_dir.c_str());
  std::string error;
  if (!make_dirs(cfg.runtime_dir, error)) {
    LOG_CRIT("%s", error.c_str());
    return 1;
  }

  Ipv4 relay_ip;
  if (!has_relay) {
    // no media here
  } else if (cfg.relay.relay_ip) {
    relay_ip = *cfg.relay.relay_ip;
    if (!is_local_address(relay_ip)) {
      LOG_CRIT("relay_ip %s is not an address of this host; set [Relay] relay_ip to one that is",
               format_ipv4(relay_ip).c_str());
      return 1;
    }
  } else {
    std::string why;
    auto ip = default_route_address(why);
    if (!ip) {
      LOG_CRIT("cannot choose a relay address: %s", why.c_str());
      return 1;
    }
    relay_ip = *ip;
    LOG_INFO("relay_ip not set: using %s, the address of the default-route interface",
             format_ipv4(relay_ip).c_str());
  }

  if (has_relay && cfg.relay.relay_ip6 && !is_local_address(*cfg.relay.relay_ip6)) {
    LOG_CRIT(
        "relay_ip %s is not a usable address of this host (not assigned, or still in "
        "duplicate address detection); set [Relay] relay_ip to one that is",
        format_ip(*cfg.relay.relay_ip6).c_str());
    return 1;
  }
  if (has_relay && cfg.relay.advertised_ip6 && !cfg.relay.relay_ip6) {
    LOG_CRIT(
        "advertised_ip gives an IPv6 address but relay_ip has none: add the relay's own "
        "IPv6 address to relay_ip");
    return 1;
  }

  rlim_t files = raise_file_limit();
  const size_t pairs = static_cast<size_t>(cfg.relay.port_end - cfg.relay.port_start) / 2;
  const size_t fd_streams = files > 64 ? static_cast<size_t>(files - 64) / 4 : 0;
  if (has_relay && fd_streams < pairs / 2)
    LOG_WARN(
        "open-file limit %llu allows about %zu streams, fewer than port_range offers (%zu); "
        "raise the limit (LimitNOFILE=) to use the whole range",
        static_cast<unsigned long long>(files), fd_streams, pairs / 2);

  int ready_fd = -1;
  if (!foreground) {
    if (daemonize(ready_fd) != 0) {
      LOG_CRIT("cannot daemonise: %s", std::strerror(errno));
      return 1;
    }
    log::use_syslog(true);
    if (cfg.pid_file.empty()) cfg.pid_file = cfg.runtime_dir + "/mediaproxy.pid";
  }
  signal(SIGPIPE, SIG_IGN);

  p.cfg = cfg;
  p.loop = uv_default_loop();
  // Only where someone can read it: the meter costs a few clock reads per
  // loop turn (~0.15 us), which the media path pays too.
  if (cfg.metrics.listen)
    p.loop_turns = std::make_unique<metrics::LoopTurnMeter>(p.loop, cfg.metrics.turn_cpu);
  p.notifier = std::make_unique<app::ServiceNotifier>(p.loop, [&p] { return p.status_text(); });
  // Live upgrade: the running process hands its sockets over, writes its
  // state file and exits; the calls are restored from that file on them.
  const std::string upgrade_path = cfg.runtime_dir + "/upgrade.sock";
  std::vector<std::pair<IpEndpoint, int>> handed_media;
  int handed_listener = -1;
  std::vector<std::pair<int, std::string>> handed_connections;
  if (upgrade) {
    if (has_relay && cfg.relay.state_file.empty()) {
      LOG_CRIT("--upgrade needs [Relay] state_file: the calls are carried over through it");
      report_ready(ready_fd, false);
      return 1;
    }
    std::vector<app::HandedSocket> handed;
    if (!app::take_over(upgrade_path, 30000, handed, error)) {
      LOG_CRIT("upgrade: %s", error.c_str());
      report_ready(ready_fd, false);
      return 1;
    }
    for (app::HandedSocket& h : handed) {
      std::string unread;
      if (h.what.rfind("media ", 0) == 0) {
        if (auto ep = parse_ip_endpoint(std::string_view(h.what).substr(6))) {
          handed_media.emplace_back(*ep, h.fd);
          continue;
        }
      } else if (h.what == "module-listener" && handed_listener < 0) {
        handed_listener = h.fd;
        continue;
      } else if (h.what.rfind("module-connection ", 0) == 0 &&
                 app::from_hex(h.what.substr(18), unread)) {
        handed_connections.emplace_back(h.fd, unread);
        continue;
      }
      LOG_WARN("upgrade: unknown socket '%s' closed", log_safe(h.what).c_str());
      ::close(h.fd);
    }
    // The media_receive sockets travel as media sockets; counted apart.
    size_t tproxy = 0;
    for (const auto& [local, fd] : handed_media) {
      IpEndpoint bound;
      if (relay::is_tproxy_socket(fd, bound)) ++tproxy;
    }
    LOG_INFO("upgrade: took over %zu media socket(s), %s and %zu module connection(s)%s",
             handed_media.size() - tproxy,
             handed_listener >= 0 ? "the module socket" : "no module socket",
             handed_connections.size(),
             tproxy ? ("; " + std::to_string(tproxy) + " tproxy receive socket(s)").c_str() : "");
  }
  if (has_relay) {
    p.engine = std::make_unique<relay::RelayEngine>(p.loop, cfg.relay, relay_ip);
    p.engine->inherit_sockets(handed_media);
    if (!p.engine->start_forwarding(error)) {
      LOG_CRIT("%s", error.c_str());
      report_ready(ready_fd, false);
      p.engine->close();
      uv_run(p.loop, UV_RUN_DEFAULT);
      return 1;
    }
  }
  if (has_dispatcher) {
    p.dispatcher = std::make_unique<dispatcher::Dispatcher>(p.loop, cfg.dispatcher);
    // Accounting and hang-up: a configuration mistake stops start-up; a
    // backend or proxy that is down does not (records wait in the journal).
    if (!accounting::Accounting::create(cfg, p.accounting, error) || !p.accounting->start(error)) {
      LOG_CRIT("%s", error.c_str());
      report_ready(ready_fd, false);
      p.accounting.reset();
      p.dispatcher->close();
      if (p.engine) p.engine->close();
      uv_run(p.loop, UV_RUN_DEFAULT);
      return 1;
    }
    if (p.accounting->backend_count() > 0)
      p.dispatcher->set_record_sink(
          [&p](const std::string& record) { p.accounting->submit(record); });
    if (!cfg.hangup.opensips_socket.empty() || !cfg.hangup.kamailio_socket.empty()) {
      p.hangup = std::make_unique<dispatcher::HangupClient>(p.loop, cfg.hangup, cfg.runtime_dir);
      if (!p.hangup->start(error)) {
        LOG_CRIT("%s", error.c_str());
        report_ready(ready_fd, false);
        p.accounting->close();
        p.hangup->close();
        p.dispatcher->close();
        if (p.engine) p.engine->close();
        uv_run(p.loop, UV_RUN_DEFAULT);
        return 1;
      }
      // A process that is stopping does not hang up the calls its own
      // relay ends on the way out.
      p.dispatcher->set_hangup([&p](const std::string& dialog_id, const std::string& call_id) {
        if (!p.stopping) p.hangup->hang_up(dialog_id, call_id);
      });
    }
    p.module_server =
        std::make_unique<dispatcher::ModuleServer>(p.loop, *p.dispatcher, cfg.dispatcher);
    if (!cfg.rtpproxy.listen.empty()) {
      p.rtpproxy =
          std::make_unique<dispatcher::RtpproxyFrontEnd>(p.loop, *p.dispatcher, cfg.rtpproxy);
      p.rtpproxy_server =
          std::make_unique<dispatcher::RtpproxyServer>(p.loop, *p.rtpproxy, cfg.rtpproxy);
    }
  }
  if (cfg.role == Role::Combined) {
    p.link =
        std::make_unique<app::InProcessLink>(*p.engine, format_ipv4(relay_ip), kInProcessOwner);
    p.dispatcher->add_relay(p.link.get());
    // Sessions restored from the state file: the module's `update`s and
    // `remove`s for them find their relay again.
    if (p.engine->session_count() > 0) {
      std::vector<dispatcher::AdoptedSession> held;
      for (auto& s : p.engine->summaries())
        held.push_back({std::move(s.call_id), std::move(s.dialog_id), std::move(s.from_tag),
                        std::move(s.to_tag), s.answered_at});
      p.dispatcher->adopt_sessions(p.link.get(), held);
    }
    p.engine->set_expired_sink([&p](uint64_t owner, const std::string& json) {
      if (owner == kInProcessOwner) p.link->deliver_expired(json);
    });
  }

  p.start_signal_handlers();

  bool ok = true;
  if (ok && cfg.role == Role::Dispatcher) {
    std::string why;
    auto passport = tls::Passport::parse(cfg.dispatcher.passport, why);
    auto ctx = passport
                   ? tls::TlsContext::load(tls::TlsSettings::from_certs_path(
                                               cfg.certs_dir(), "dispatcher", tls::Role::Server),
                                           why)
                   : nullptr;
    if (!ctx) {
      ok = false;
      error = "relay link: " + why + " (certificates are read from " + cfg.certs_dir() +
              ", [TLS] certs_path)";
    } else if (!cfg.dispatcher.listen) {
      ok = false;
      error = "role dispatcher needs [Dispatcher] listen for its relays";
    } else {
      for (const std::string& w : ctx->warnings()) LOG_WARN("relay link TLS: %s", w.c_str());
      p.relay_listener = std::make_unique<dispatcher::RelayListener>(
          p.loop, *p.dispatcher, ctx, std::move(*passport), cfg.dispatcher);
      ok = p.relay_listener->listen(*cfg.dispatcher.listen, error);
    }
  }
  if (ok && cfg.role == Role::Relay) {
    std::string why;
    auto passport = tls::Passport::parse(cfg.relay.passport, why);
    auto ctx = passport ? tls::TlsContext::load(tls::TlsSettings::from_certs_path(
                                                    cfg.certs_dir(), "relay", tls::Role::Client),
                                                why)
                        : nullptr;
    if (!ctx) {
      ok = false;
      error = "dispatcher link: " + why + " (certificates are read from " + cfg.certs_dir() +
              ", [TLS] certs_path)";
    } else {
      for (const std::string& w : ctx->warnings()) LOG_WARN("dispatcher link TLS: %s", w.c_str());
      p.dispatcher_client = std::make_unique<relay::DispatcherClient>(
          p.loop, *p.engine, ctx, std::move(*passport), cfg.relay, cfg.relay.dispatchers);
      p.engine->set_expired_sink([&p](uint64_t owner, const std::string& json) {
        p.dispatcher_client->deliver_expired(owner, json);
      });
      p.dispatcher_client->start();
    }
  }
  if (ok && has_dispatcher && cfg.dispatcher.listen_management) {
    const Endpoint where = *cfg.dispatcher.listen_management;
    const bool loopback = (where.ip.host_order() >> 24) == 127;
    std::string why;
    auto passport = tls::Passport::parse(cfg.dispatcher.management_passport, why);
    std::shared_ptr<const tls::TlsContext> ctx;
    bool serve = true;
    if (!passport) {
      ok = false;
      error = "management_passport: " + why;
    } else if (cfg.dispatcher.management_use_tls) {
      auto settings =
          tls::TlsSettings::from_certs_path(cfg.certs_dir(), "dispatcher", tls::Role::Server);
      ctx = tls::TlsContext::load(settings, why);
      if (!ctx) {
        serve = false;
        LOG_WARN(
            "management interface not started: %s (put ca.pem, crl.pem, dispatcher.crt "
            "and dispatcher.key in %s, set [TLS] certs_path, or set management_use_tls = "
            "no for plain TCP on loopback)",
            why.c_str(), cfg.certs_dir().c_str());
      } else {
        for (const std::string& w : ctx->warnings()) LOG_WARN("management TLS: %s", w.c_str());
        if (passport->disabled())
          LOG_WARN(
              "management_passport = None: every certificate signed by %s/ca.pem, relay and "
              "dispatcher certificates included, may read every call on the management "
              "interface; remove the option to admit only management certificates (%s)",
              cfg.certs_dir().c_str(), kDefaultManagementPassport);
      }
    } else if (!loopback && !cfg.dispatcher.management_allow_remote_plain) {
      ok = false;
      error = "listen_management " + format_endpoint(where) +
              " is not a loopback address: plain TCP management would expose every call to "
              "the network; use 127.0.0.1, TLS, or set management_allow_remote_plain = yes";
    }
    if (ok && serve) {
      p.management = std::make_unique<management::ManagementServer>(p.loop, *p.dispatcher, ctx,
                                                                    std::move(*passport));
      ok = p.management->listen(where, error);
    }
  }
  if (ok && cfg.metrics.listen) {
    p.metrics_http = std::make_unique<metrics::HttpServer>(p.loop, [&p]() {
      metrics::Exposition e;
      e.gauge("mediaproxy_build_info", "Version of the running mediaproxy.", 1,
              {{"version", MEDIAPROXY_VERSION}, {"role", std::string(role_name(p.cfg.role))}});
      e.gauge("mediaproxy_module_connections", "Open proxy-module connections.",
              static_cast<double>(p.module_server ? p.module_server->connection_count() : 0));
      e.counter("mediaproxy_module_connections_paused_total",
                "Times a proxy-module connection was not read from because its client left "
                "too many replies unread.",
                static_cast<double>(p.module_server ? p.module_server->paused_count() : 0));
      e.counter("mediaproxy_log_lines_suppressed_total",
                "Log lines about bad input held back by the rate limit.",
                static_cast<double>(log::suppressed_total()));
      if (p.loop_turns) p.loop_turns->write_metrics(e);
      if (p.dispatcher) p.dispatcher->write_metrics(e);
      if (p.accounting) p.accounting->write_metrics(e);
      if (p.hangup) p.hangup->write_metrics(e);
      if (p.rtpproxy) p.rtpproxy->write_metrics(e);
      if (p.engine) p.engine->write_metrics(e);
      return e.text();
    });
    ok = p.metrics_http->listen(*cfg.metrics.listen, error);
  }
  if (ok && p.rtpproxy_server) ok = p.rtpproxy_server->listen(error);
  // The module socket comes last: once it accepts connections everything
  // else (relay links, management, metrics) is listening too, so its
  // presence is the readiness signal for the proxy and for scripts.
  if (ok && p.module_server) {
    if (handed_listener >= 0) {
      ok = p.module_server->adopt_listener(cfg.module_socket_path(), handed_listener, error);
      for (auto& [fd, unread] : handed_connections) p.module_server->adopt_connection(fd, unread);
    } else {
      ok = p.module_server->listen(cfg.module_socket_path(), error);
    }
  }
  // A later `mediaproxy --upgrade` asks here for the sockets and calls.
  if (ok && (!has_relay || !cfg.relay.state_file.empty())) {
    p.upgrade = std::make_unique<app::UpgradeListener>(
        p.loop,
        [&p] {
          std::vector<app::HandedSocket> out;
          if (p.module_server)
            for (auto& h : p.module_server->hand_over())
              out.push_back({h.listener ? std::string("module-listener")
                                        : "module-connection " + app::to_hex(h.unread),
                             h.fd});
          if (p.engine)
            for (auto& [local, fd] : p.engine->hand_over())
              out.push_back({"media " + format_ip_endpoint(local), fd});
          return out;
        },
        [&p] {
          p.handed_over = true;
          p.stop("handed over to a new process");
        });
    std::string why;
    if (!p.upgrade->listen(upgrade_path, why)) {
      LOG_WARN("live upgrade not available: %s", why.c_str());
      p.upgrade.reset();
    }
  }
  if (ok && !cfg.pid_file.empty()) {
    std::ofstream pid(cfg.pid_file, std::ios::trunc);
    pid << getpid() << "\n";
    if (!pid) {
      error = "cannot write pid file " + cfg.pid_file;
      ok = false;
    }
  }
  if (!ok) {
    LOG_CRIT("%s", error.c_str());
    report_ready(ready_fd, false);
    p.stop("start-up failed");
    uv_run(p.loop, UV_RUN_DEFAULT);
    return 1;
  }
  if (p.engine)
    LOG_INFO(
        "mediaproxy %s started: role %s, relay %s%s%s, ports %d-%d (%zu streams), %s forwarding",
        MEDIAPROXY_VERSION, std::string(role_name(cfg.role)).c_str(), format_ipv4(relay_ip).c_str(),
        cfg.relay.relay_ip6 ? " and " : "",
        cfg.relay.relay_ip6 ? format_ip(*cfg.relay.relay_ip6).c_str() : "", cfg.relay.port_start,
        cfg.relay.port_end - 1, pairs / 2, p.engine->kernel_forwarding() ? "kernel" : "userspace");
  else
    LOG_INFO("mediaproxy %s started: role dispatcher", MEDIAPROXY_VERSION);
  report_ready(ready_fd, true);
  // Every listener accepts by now (the module socket came last).
  p.notifier->ready();

  uv_run(p.loop, UV_RUN_DEFAULT);
  // Every session's final record has been submitted by now: the workers
  // finish their current delivery and the journals keep the rest.
  if (p.accounting && !p.accounting->close()) {
    // A backend is stuck inside a request: end here, without destroying
    // what its thread still uses; its journal keeps every undelivered record.
    if (!cfg.pid_file.empty()) unlink(cfg.pid_file.c_str());
    if (p.upgrade) p.upgrade->finish();
    LOG_INFO("mediaproxy stopped");
    std::_Exit(0);
  }
  if (!cfg.pid_file.empty()) unlink(cfg.pid_file.c_str());
  // The successor goes on once this process has let go of everything.
  if (p.upgrade) p.upgrade->finish();
  p.module_server.reset();
  p.rtpproxy_server.reset();
  p.rtpproxy.reset();
  p.dispatcher.reset();
  p.hangup.reset();
  p.accounting.reset();
  p.link.reset();
  p.engine.reset();
  int rc = uv_loop_close(p.loop);
  if (rc != 0) LOG_DEBUG("event loop closed with handles still open: %s", uv_strerror(rc));
  LOG_INFO("mediaproxy stopped");
  return 0;
}

}  // namespace mp::app
