// What start-up refuses in a configuration that loaded without a syntax
// error: options that contradict the role (a relay without dispatchers, a
// dispatcher without a relay listener) and passports that do not parse. No
// file, socket or certificate is touched, so `mediaproxy --check-config`
// can run it anywhere; run_server() runs it first, so both say the same.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"

namespace mp::app {

// One line per problem, empty when the configuration can start.
std::vector<std::string> config_problems(const Config& cfg);

}  // namespace mp::app
