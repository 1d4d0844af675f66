// The parts of the running process (src/app only): every component a role
// may own, shared by start-up (server.cpp), the signal handlers
// (server_signals.cpp) and the orderly stop with the STATUS= text for systemd
// (server_process.cpp). run_server() fills in the parts its role needs; the
// others stay empty.
#pragma once

#include <signal.h>
#include <uv.h>

#include <memory>
#include <string>

#include "accounting/accounting.h"
#include "app/in_process_link.h"
#include "app/service_notify.h"
#include "app/upgrade.h"
#include "common/config.h"
#include "common/log.h"
#include "dispatcher/dispatcher.h"
#include "dispatcher/hangup_client.h"
#include "dispatcher/module_server.h"
#include "dispatcher/relay_listener.h"
#include "dispatcher/rtpproxy_front_end.h"
#include "dispatcher/rtpproxy_server.h"
#include "management/management_server.h"
#include "metrics/http_server.h"
#include "metrics/loop_turns.h"
#include "relay/dispatcher_client.h"
#include "relay/relay_engine.h"

namespace mp::app::server {

struct Process {
  uv_loop_t* loop = nullptr;
  Config cfg;
  log::Level configured_level = log::Level::Info;
  std::unique_ptr<relay::RelayEngine> engine;
  std::unique_ptr<app::InProcessLink> link;
  std::unique_ptr<dispatcher::Dispatcher> dispatcher;
  std::unique_ptr<accounting::Accounting> accounting;
  std::unique_ptr<dispatcher::HangupClient> hangup;
  std::unique_ptr<dispatcher::ModuleServer> module_server;
  std::unique_ptr<dispatcher::RtpproxyFrontEnd> rtpproxy;
  std::unique_ptr<dispatcher::RtpproxyServer> rtpproxy_server;
  std::unique_ptr<management::ManagementServer> management;
  std::unique_ptr<metrics::HttpServer> metrics_http;
  std::unique_ptr<metrics::LoopTurnMeter> loop_turns;
  std::unique_ptr<dispatcher::RelayListener> relay_listener;
  std::unique_ptr<relay::DispatcherClient> dispatcher_client;
  std::unique_ptr<app::UpgradeListener> upgrade;
  std::unique_ptr<app::ServiceNotifier> notifier;
  bool handed_over = false;  // a new process took the sockets and calls over
  uv_signal_t sig_term, sig_int, sig_hup, sig_usr1;
  uv_timer_t halt_timer;
  bool stopping = false;

  // Closes every listener and component in order, then ignores further
  // termination signals; the event loop ends once the handles are closed.
  // Only the first call acts.
  void stop(const char* why);

  // The STATUS= line systemctl status shows (ServiceNotifier).
  std::string status_text() const;

  // SIGTERM/SIGINT: stop(); SIGHUP: graceful halt of the relay (the
  // dispatcher role stops, as AG does); SIGUSR1: debug logging on or off.
  // In server_signals.cpp.
  void start_signal_handlers();
};

}  // namespace mp::app::server
