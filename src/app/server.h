// The running process: builds the parts a role needs and runs the event loop.
//
// Owns start-up (runtime directory, relay address, open-file limit,
// daemonising, pid file), the wiring of dispatcher, relay engine and module
// socket for the chosen role, the signal handlers (SIGTERM/SIGINT clean exit,
// SIGHUP graceful halt, SIGUSR1 debug toggle) and the orderly shutdown.
#pragma once

#include "common/config.h"

namespace mp::app {

// Runs until shutdown and returns the process exit status (mediaproxy.8).
int run_server(Config cfg, bool foreground, bool upgrade = false);

}  // namespace mp::app
