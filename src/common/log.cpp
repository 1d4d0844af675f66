// Implementation of the logging sink declared in log.h, and of the rate limit
// for lines about bad input (a one-second window for the process, a next-
// allowed time per source, a count of the lines held back).
#include "common/log.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <mutex>

namespace mp::log {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::Info)};
std::atomic<bool> g_syslog{false};
std::atomic<bool> g_journal{false};
constexpr std::string_view kNames[] = {"critical", "error", "warning", "info", "debug"};
constexpr int kPrio[] = {LOG_CRIT, LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
}  // namespace

bool parse_level(std::string_view text, Level& out) {
  for (int i = 0; i < 5; ++i) {
    std::string_view n = kNames[i];
    if (n.size() != text.size()) continue;
    bool same = true;
    for (size_t k = 0; k < n.size(); ++k)
      if ((text[k] | 0x20) != n[k]) same = false;
    if (same) {
      out = static_cast<Level>(i);
      return true;
    }
  }
  return false;
}

std::string_view level_name(Level l) {
  return kNames[static_cast<int>(l)];
}

void use_syslog(bool enable) {
  if (enable && !g_syslog) openlog("mediaproxy", LOG_PID | LOG_NDELAY, LOG_DAEMON);
  g_syslog = enable;
}

bool use_journal_if_connected() {
  const char* stream = getenv("JOURNAL_STREAM");
  unsigned long long dev = 0, ino = 0;
  struct stat st;
  const bool is = stream && std::sscanf(stream, "%llu:%llu", &dev, &ino) == 2 &&
                  fstat(2, &st) == 0 && static_cast<unsigned long long>(st.st_dev) == dev &&
                  static_cast<unsigned long long>(st.st_ino) == ino;
  g_journal = is;
  return is;
}

void set_level(Level l) {
  g_level = static_cast<int>(l);
}
Level level() {
  return static_cast<Level>(g_level.load());
}

Level toggle_debug(Level configured) {
  Level next = level() == Level::Debug ? configured : Level::Debug;
  set_level(next);
  return next;
}

bool enabled(Level l) {
  return static_cast<int>(l) <= g_level.load(std::memory_order_relaxed);
}

void write(Level l, const char* fmt, ...) {
  static thread_local char msg[65536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (g_syslog) {
    syslog(kPrio[static_cast<int>(l)], "%s", msg);
    return;
  }
  if (g_journal) {
    std::fprintf(stderr, "<%d>%s\n", kPrio[static_cast<int>(l)], msg);
    return;
  }
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t;
  gmtime_r(&ts.tv_sec, &t);
  std::fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-7s %s\n", t.tm_year + 1900,
               t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, ts.tv_nsec / 1000000,
               kNames[static_cast<int>(l)].data(), msg);
}

namespace {
struct Limits {
  std::mutex mutex;
  double window_start = -1;  // monotonic seconds
  unsigned in_window = 0;    // lines written in the current one-second window
  uint64_t held_back = 0;    // since the last limited line written
  uint64_t suppressed = 0;   // ever
};
Limits g_limits;

double monotonic_now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}
}  // namespace

bool admit(LimitSource* source, std::string& note) {
  const double now = monotonic_now();
  std::lock_guard<std::mutex> lock(g_limits.mutex);
  if (g_limits.window_start < 0 || now - g_limits.window_start >= 1.0) {
    g_limits.window_start = now;
    g_limits.in_window = 0;
  }
  if ((source && now < source->next_allowed) || g_limits.in_window >= kLinesPerSecond) {
    ++g_limits.held_back;
    ++g_limits.suppressed;
    return false;
  }
  ++g_limits.in_window;
  if (source) source->next_allowed = now + kSourceInterval;
  note.clear();
  if (g_limits.held_back)
    note = " [" + std::to_string(g_limits.held_back) + " similar line(s) suppressed]";
  g_limits.held_back = 0;
  return true;
}

uint64_t suppressed_total() {
  std::lock_guard<std::mutex> lock(g_limits.mutex);
  return g_limits.suppressed;
}

void reset_limits() {
  std::lock_guard<std::mutex> lock(g_limits.mutex);
  g_limits.window_start = -1;
  g_limits.in_window = 0;
  g_limits.held_back = 0;
  g_limits.suppressed = 0;
}

}  // namespace mp::log

namespace mp {

std::string log_safe(std::string_view text, size_t max) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  const size_t n = text.size() > max ? max : text.size();
  out.reserve(n + 8);
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c >= 0x7f) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > max) out += "...";
  return out;
}

}  // namespace mp
