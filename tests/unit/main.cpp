// Entry point of the unit-test executable; every other file under tests/unit
// only contributes test cases. Catch2's implementation is compiled once for
// all test programs (tests/catch_runner.cpp).
#include "catch_runner.h"

int main(int argc, char** argv) {
  return mp::test::run_catch_session(argc, argv);
}
