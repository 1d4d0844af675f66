// Entry point: parses the command line and the configuration file, then hands
// over to the server for the chosen role. Exit status: 0 clean exit,
// 1 start-up error, 2 usage error (mediaproxy.8, EXIT STATUS).
#include <sys/stat.h>

#include <cstdio>
#include <string>

#include "app/config_check.h"
#include "app/daemon.h"
#include "app/options.h"
#include "app/server.h"
#include "app/status_command.h"
#include "common/config.h"
#include "common/log.h"

int main(int argc, char** argv) {
  if (argc >= 2 && (std::string(argv[1]) == "sessions" || std::string(argv[1]) == "summary"))
    return mp::app::run_status_command(argc, argv);
  mp::app::CommandLine cl;
  std::string error;
  if (!mp::app::parse_command_line(argc, argv, cl, error)) {
    std::fprintf(stderr, "mediaproxy: %s\n%s", error.c_str(), mp::app::usage_text().c_str());
    return 2;
  }
  if (cl.help) {
    std::fputs(mp::app::usage_text().c_str(), stdout);
    return 0;
  }
  if (cl.version) {
    std::printf("mediaproxy %s\n", MEDIAPROXY_VERSION);
    return 0;
  }
  // Under systemd, standard error is the journal: lines get priorities.
  mp::log::use_journal_if_connected();
  mp::Config cfg;
  if (cl.check_config) {
    // The loader stops at the first error; then the checks start-up makes.
    if (!mp::load_config_file(*cl.check_config, cfg, error)) {
      std::fprintf(stderr, "mediaproxy: %s\n", error.c_str());
      return 1;
    }
    if (cl.role) cfg.role = *cl.role;
    for (const std::string& w : cfg.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    const auto problems = mp::app::config_problems(cfg);
    for (const std::string& p : problems)
      std::fprintf(stderr, "mediaproxy: %s: %s\n", cl.check_config->c_str(), p.c_str());
    if (!problems.empty()) return 1;
    std::printf("%s: configuration OK (role %s)\n", cl.check_config->c_str(),
                std::string(mp::role_name(cfg.role)).c_str());
    return 0;
  }
  std::string path;
  struct stat st;
  if (cl.config)
    path = *cl.config;
  else if (stat(mp::app::kDefaultConfigPath, &st) == 0)
    path = mp::app::kDefaultConfigPath;
  if (!path.empty() && !mp::load_config_file(path, cfg, error)) {
    std::fprintf(stderr, "mediaproxy: %s\n", error.c_str());
    return 1;
  }
  if (cl.role) cfg.role = *cl.role;
  if (cl.runtime_dir) cfg.runtime_dir = *cl.runtime_dir;
  if (cl.pid_file) cfg.pid_file = *cl.pid_file;
  if (cl.log_level) {
    cfg.log_level = *cl.log_level;
    cfg.dispatcher.log_level.reset();
    cfg.relay.log_level.reset();
  }
  // A service manager supervises the process itself: never fork away from it.
  const bool foreground = cl.foreground || mp::app::started_by_service_manager();
  return mp::app::run_server(std::move(cfg), foreground, cl.upgrade);
}
