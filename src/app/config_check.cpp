// Static checks of a loaded configuration (config_check.h).
#include "app/config_check.h"

#include "tls/passport.h"

namespace mp::app {

std::vector<std::string> config_problems(const Config& cfg) {
  std::vector<std::string> out;
  if (cfg.role == Role::Relay && cfg.relay.dispatchers.empty())
    out.push_back("role relay needs [Relay] dispatchers (the dispatchers' addresses)");
  if (cfg.role == Role::Dispatcher && !cfg.dispatcher.listen)
    out.push_back("role dispatcher needs [Dispatcher] listen for its relays");
  auto passport = [&out](const std::string& text, const char* option) {
    std::string why;
    if (!tls::Passport::parse(text, why)) out.push_back(std::string(option) + ": " + why);
  };
  if (cfg.role == Role::Dispatcher) passport(cfg.dispatcher.passport, "[Dispatcher] passport");
  if (cfg.role == Role::Relay) passport(cfg.relay.passport, "[Relay] passport");
  if (cfg.role != Role::Relay && cfg.dispatcher.listen_management)
    passport(cfg.dispatcher.management_passport, "[Dispatcher] management_passport");
  return out;
}

}  // namespace mp::app
