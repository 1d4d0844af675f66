// Process-wide logging.
//
// Owns the log level, the sink (stderr in the foreground, syslog when
// daemonised) and the printf-style entry points used everywhere. The level can
// be flipped to debug at run time (SIGUSR1). Logging is for operators: every
// message says what happened and, where it helps, what to do about it.
#pragma once

#include <string>
#include <string_view>

namespace mp::log {

enum class Level { Critical = 0, Error, Warning, Info, Debug };

bool parse_level(std::string_view text, Level& out);
std::string_view level_name(Level l);

void use_syslog(bool enable);
void set_level(Level l);
Level level();
// Switches between debug and `configured`; returns the new level.
Level toggle_debug(Level configured);

bool enabled(Level l);
void write(Level l, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace mp::log

namespace mp {
// `text` made safe for one log line: bytes below 0x20, 0x7f and above 0x7e
// become \xNN, a backslash becomes \\, and more than `max` input bytes are
// cut with "..." appended. For every value that came from the network.
std::string log_safe(std::string_view text, size_t max = 256);
}  // namespace mp

#define MP_LOG(lvl, ...)                                    \
  do {                                                      \
    if (::mp::log::enabled(::mp::log::Level::lvl))          \
      ::mp::log::write(::mp::log::Level::lvl, __VA_ARGS__); \
  } while (0)
#define LOG_CRIT(...) MP_LOG(Critical, __VA_ARGS__)
#define LOG_ERROR(...) MP_LOG(Error, __VA_ARGS__)
#define LOG_WARN(...) MP_LOG(Warning, __VA_ARGS__)
#define LOG_INFO(...) MP_LOG(Info, __VA_ARGS__)
#define LOG_DEBUG(...) MP_LOG(Debug, __VA_ARGS__)
