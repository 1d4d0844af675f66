// Process-wide logging.
//
// Owns the log level, the sink (stderr in the foreground, syslog when
// daemonised, stderr with sd-daemon priority prefixes when stderr is the
// systemd journal) and the printf-style entry points used everywhere. The level can
// be flipped to debug at run time (SIGUSR1). Logging is for operators: every
// message says what happened and, where it helps, what to do about it.
// Messages about bad input from peers go through LOG_LIMITED: a client that
// floods bad requests must not flood the log (mediaproxy.8, LIMITS).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mp::log {

enum class Level { Critical = 0, Error, Warning, Info, Debug };

bool parse_level(std::string_view text, Level& out);
std::string_view level_name(Level l);

void use_syslog(bool enable);
// When standard error is the journal's stream (systemd sets JOURNAL_STREAM to
// its device:inode), lines are written "<N>message": N is the syslog priority
// the journal files them under, and the journal adds the time itself.
// Returns whether it is.
bool use_journal_if_connected();
void set_level(Level l);
Level level();
// Switches between debug and `configured`; returns the new level.
Level toggle_debug(Level configured);

bool enabled(Level l);
void write(Level l, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

// Rate limit for lines about bad input: at most one line per source (a
// connection) per kSourceInterval seconds and kLinesPerSecond lines per second
// in the whole process. A line held back is counted; the next line written
// ends with how many were held back since the previous one.
inline constexpr double kSourceInterval = 10.0;
inline constexpr unsigned kLinesPerSecond = 10;
struct LimitSource {
  double next_allowed = 0;  // monotonic seconds
};
// Whether a limited line may be written now for `source` (nullptr: only the
// process-wide limit applies). If so, `note` is the suffix to append ("" or
// " [N similar line(s) suppressed]"); if not, the line is counted.
bool admit(LimitSource* source, std::string& note);
// Lines held back so far (the mediaproxy_log_lines_suppressed_total metric).
uint64_t suppressed_total();
// Forgets the process-wide state (tests).
void reset_limits();

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

// MP_LOG under the limit of log::admit(); `source` is a log::LimitSource* or
// nullptr. The format must be a string literal.
#define LOG_LIMITED(lvl, source, fmt, ...)                                                     \
  do {                                                                                         \
    std::string mp_log_note_;                                                                  \
    if (::mp::log::enabled(::mp::log::Level::lvl) && ::mp::log::admit((source), mp_log_note_)) \
      ::mp::log::write(::mp::log::Level::lvl, fmt "%s" __VA_OPT__(, ) __VA_ARGS__,             \
                       mp_log_note_.c_str());                                                  \
  } while (0)
