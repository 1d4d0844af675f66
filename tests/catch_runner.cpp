// Catch2's implementation, compiled once for every test program (unit and
// kernel) instead of once per program's main: it is the slowest file of the
// build. Each program's main.cpp calls run_catch_session().
//
// GCC 12 with -O2 and sanitizers reports a false -Wmaybe-uninitialized inside
// libstdc++'s <regex>, which Catch2's runner instantiates; silence it here so
// -Werror builds keep working.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "catch_runner.h"

int mp::test::run_catch_session(int argc, char** argv) {
  return Catch::Session().run(argc, argv);
}
