// Command-line options of the mediaproxy binary (documented in mediaproxy.8).
//
// Owns parsing argv into CommandLine and the --help text. Command-line values
// override the configuration file; applying them is the caller's job.
#pragma once

#include <optional>
#include <string>

#include "common/config.h"
#include "common/log.h"

namespace mp::app {

// prefix/sysconfdir/mediaproxy/mediaproxy.ini: /etc/mediaproxy/mediaproxy.ini
// for a --prefix=/usr build (Debian), /usr/local/etc/... for meson's default.
inline constexpr const char* kDefaultConfigPath = MEDIAPROXY_CONFIG_PATH;

struct CommandLine {
  std::optional<Role> role;
  std::optional<std::string> config;
  std::optional<std::string> runtime_dir;
  std::optional<std::string> pid_file;
  std::optional<log::Level> log_level;
  bool foreground = false;
  bool upgrade = false;
  std::optional<std::string> check_config;  // --check-config FILE: validate and exit  // take the
                                            // sockets and calls over from the running process
  bool help = false;
  bool version = false;
};

// Returns false with `error` set for a usage error.
bool parse_command_line(int argc, char** argv, CommandLine& out, std::string& error);
std::string usage_text();

}  // namespace mp::app
