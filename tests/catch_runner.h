// Runs the Catch2 session of a test program (implemented once, in
// catch_runner.cpp, for every test program).
#pragma once

namespace mp::test {
int run_catch_session(int argc, char** argv);
}
