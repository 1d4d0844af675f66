// Entry point of the unit-test executable: Catch2 generates main() here, and
// every other file under tests/unit only contributes test cases.
//
// GCC 12 with -O2 and sanitizers reports a false -Wmaybe-uninitialized inside
// libstdc++'s <regex>, which Catch2's runner instantiates; silence it here so
// -Werror builds keep working.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
