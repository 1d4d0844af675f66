// The orderly stop of the running process and its status text for systemd
// (server_process.h).
#include "app/server_process.h"

#include <pthread.h>

namespace mp::app::server {

void Process::stop(const char* why) {
  if (stopping) return;
  stopping = true;
  LOG_INFO("shutting down (%s)", why);
  if (notifier) notifier->stopping();
  if (module_server) module_server->close();
  if (rtpproxy_server) rtpproxy_server->close();
  if (management) management->close();
  if (metrics_http) metrics_http->close();
  loop_turns.reset();  // its handle closes with the others
  if (relay_listener) relay_listener->close();
  if (upgrade) upgrade->close();
  // every session ends now and is reported, unless a successor carries them on
  if (engine && !handed_over) engine->shutdown();
  if (dispatcher_client) dispatcher_client->close();  // after the reports are queued
  if (engine) engine->close();
  if (rtpproxy) rtpproxy->close();
  if (dispatcher) dispatcher->close();
  if (hangup) hangup->close();
  // Closing a libuv signal handle restores the default action; a second
  // SIGTERM during shutdown must not kill us, so ignore them first with the
  // signals blocked in between.
  sigset_t block, old;
  sigemptyset(&block);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&block, sig);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  for (uv_signal_t* s : {&sig_term, &sig_int, &sig_hup, &sig_usr1})
    uv_close(reinterpret_cast<uv_handle_t*>(s), nullptr);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) signal(sig, SIG_IGN);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

std::string Process::status_text() const {
  auto n = [](size_t count, const char* what) {
    return std::to_string(count) + " " + what + (count == 1 ? "" : "s");
  };
  if (engine && engine->halting())
    return "halting (SIGHUP): " + n(engine->session_count(), "session") +
           " left, exits when the last ends";
  if (cfg.role == Role::Combined)
    return n(engine->session_count(), "session") + ", " +
           (engine->kernel_forwarding() ? "kernel" : "userspace") + " forwarding";
  if (cfg.role == Role::Dispatcher)
    return n(dispatcher->live_session_count(), "session") + ", " +
           n(dispatcher->usable_relay_count(), "relay") + " taking calls of " +
           std::to_string(dispatcher->relay_count()) + " connected";
  return n(engine->session_count(), "session") + ", " +
         std::to_string(dispatcher_client ? dispatcher_client->connected_count() : 0) + " of " +
         n(cfg.relay.dispatchers.size(), "dispatcher") + " connected";
}

}  // namespace mp::app::server
