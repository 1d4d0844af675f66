// argv parsing for the mediaproxy binary (options.h).
#include "app/options.h"

#include <cstring>
#include <string_view>

namespace mp::app {

std::string usage_text() {
  return "Usage: mediaproxy [OPTIONS]\n"
         "SIP media relay compatible with the Kamailio/OpenSIPS mediaproxy module.\n\n"
         "  --role ROLE          dispatcher, relay or combined (default: from config, else "
         "combined)\n"
         "  --config FILE        configuration file (default: " +
         std::string(kDefaultConfigPath) +
         " if it exists)\n"
         "  --runtime-dir DIR    directory for the module socket and pid file (default "
         "/run/mediaproxy)\n"
         "  --foreground         stay in the foreground and log to stderr\n"
         "  --check-config FILE  validate FILE (same errors as at start, with file:line)\n"
         "                       and exit: 0 if it can start, 1 if not\n"
         "  --upgrade            take the sockets and calls over from the running process\n"
         "                       (live upgrade, see mediaproxy(8))\n"
         "  --pid-file FILE      write the process id to FILE\n"
         "  --log-level LEVEL    critical, error, warning, info or debug\n"
         "  --version            print the version and exit\n"
         "  --help               print this help and exit\n\n"
         "See mediaproxy(8) and mediaproxy.ini(5).\n";
}

bool parse_command_line(int argc, char** argv, CommandLine& out, std::string& error) {
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view value;
    bool has_inline = false;
    if (size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_inline = true;
    }
    auto take = [&](std::string& into) -> bool {
      if (has_inline) {
        into = std::string(value);
        return true;
      }
      if (i + 1 >= argc) {
        error = std::string(arg) + " needs a value";
        return false;
      }
      into = argv[++i];
      return true;
    };
    auto no_value = [&]() {
      if (has_inline) error = std::string(arg) + " takes no value";
      return !has_inline;
    };
    std::string v;
    if (arg == "--help" || arg == "-h") {
      if (!no_value()) return false;
      out.help = true;
    } else if (arg == "--version") {
      if (!no_value()) return false;
      out.version = true;
    } else if (arg == "--foreground") {
      if (!no_value()) return false;
      out.foreground = true;
    } else if (arg == "--check-config") {
      if (!take(v)) return false;
      out.check_config = v;
    } else if (arg == "--upgrade") {
      if (!no_value()) return false;
      out.upgrade = true;
    } else if (arg == "--role") {
      if (!take(v)) return false;
      out.role = parse_role(v);
      if (!out.role) {
        error = "unknown role '" + v + "' (use dispatcher, relay or combined)";
        return false;
      }
    } else if (arg == "--config") {
      if (!take(v)) return false;
      out.config = v;
    } else if (arg == "--runtime-dir") {
      if (!take(v)) return false;
      if (v.empty()) {
        error = "--runtime-dir needs a directory";
        return false;
      }
      out.runtime_dir = v;
    } else if (arg == "--pid-file") {
      if (!take(v)) return false;
      out.pid_file = v;
    } else if (arg == "--log-level") {
      if (!take(v)) return false;
      log::Level l;
      if (!log::parse_level(v, l)) {
        error = "unknown log level '" + v + "' (use critical, error, warning, info, debug)";
        return false;
      }
      out.log_level = l;
    } else {
      error = "unknown option '" + std::string(argv[i]) + "'";
      return false;
    }
  }
  return true;
}

}  // namespace mp::app
