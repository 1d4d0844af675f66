// Fuzz target for the INI configuration loader (common/config.h).
//
// Invariants: loading never crashes; a failure always names the file and a
// line ("fuzz.ini:N: ..."); on success the values are inside their documented
// ranges (port_range even and ordered, timeouts positive).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/config.h"

namespace {
void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_config: invariant violated: %s\n", what);
    std::abort();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  mp::Config cfg;
  std::string error;
  if (!mp::load_config_text(text, "fuzz.ini", cfg, error)) {
    check(error.rfind("fuzz.ini:", 0) == 0, "error names the file");
    check(error.size() > 9 && error[9] >= '1' && error[9] <= '9', "error names a line");
    return 0;
  }
  check(cfg.relay.port_start % 2 == 0 && cfg.relay.port_end % 2 == 0, "even port range");
  check(cfg.relay.port_start < cfg.relay.port_end, "ordered port range");
  check(cfg.relay.stream_timeout > 0 && cfg.relay.answer_timeout > 0, "positive timeouts");
  check(cfg.dispatcher.relay_timeout > 0, "positive relay_timeout");
  return 0;
}
