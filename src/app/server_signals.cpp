// The signal handlers of the running process (server_process.h): SIGTERM and
// SIGINT stop it at once; SIGHUP halts a relay gracefully (no new sessions,
// exit when the last one ends) and stops a dispatcher, as AG MediaProxy does;
// SIGUSR1 toggles debug logging. libuv delivers them on the event loop, so
// the handlers may touch every part of the process.
#include <signal.h>

#include <string>
#include <utility>

#include "app/server_process.h"

namespace mp::app::server {

void Process::start_signal_handlers() {
  for (auto [sig, handle] : {std::pair{SIGTERM, &sig_term}, std::pair{SIGINT, &sig_int},
                             std::pair{SIGHUP, &sig_hup}, std::pair{SIGUSR1, &sig_usr1}}) {
    uv_signal_init(loop, handle);
    handle->data = this;
    uv_signal_start(
        handle,
        [](uv_signal_t* h, int signum) {
          auto* proc = static_cast<Process*>(h->data);
          switch (signum) {
            case SIGTERM:
              proc->stop("SIGTERM");
              break;
            case SIGINT:
              proc->stop("SIGINT");
              break;
            case SIGUSR1: {
              log::Level l = log::toggle_debug(proc->configured_level);
              log::write(log::Level::Info, "SIGUSR1: log level is now %s",
                         std::string(log::level_name(l)).c_str());
              break;
            }
            case SIGHUP:
              if (!proc->engine) {  // dispatcher role: as AG, SIGHUP terminates
                proc->stop("SIGHUP");
                break;
              }
              if (proc->engine->halting()) break;
              LOG_INFO("SIGHUP: graceful halt, exiting when the last session ends");
              // The last session usually ends inside a `remove`: stop on the
              // next loop turn, once its reply has been written.
              proc->engine->halt([proc] {
                uv_timer_init(proc->loop, &proc->halt_timer);
                proc->halt_timer.data = proc;
                uv_timer_start(
                    &proc->halt_timer,
                    [](uv_timer_t* t) {
                      auto* pr = static_cast<Process*>(t->data);
                      uv_close(reinterpret_cast<uv_handle_t*>(t), nullptr);
                      pr->stop("halted, last session ended");
                    },
                    0, 0);
              });
              proc->notifier->status_changed();
              break;
          }
        },
        sig);
  }
}

}  // namespace mp::app::server
