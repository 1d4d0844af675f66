// `mediaproxy sessions` and `mediaproxy summary`: the operator's command-line
// view of a running dispatcher, through its management interface (spec C).
//
// Owns the client side of the management protocol (one command line, one
// JSON reply line), the readable tables, `--json` output for scripts and
// `--watch N` refreshing. Exit status: 0 shown, 1 the dispatcher could not be
// asked (the message says why and what to check), 2 usage error.
#pragma once

namespace mp::app {

// argv[1] is "sessions" or "summary".
int run_status_command(int argc, char** argv);

}  // namespace mp::app
