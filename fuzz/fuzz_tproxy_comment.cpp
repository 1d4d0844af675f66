// Fuzz target for the tproxy table's comment (kernel/tproxy_comment.h),
// text a relay reads back from the kernel, where any process with
// CAP_NET_ADMIN can have written it.
//
// Invariants checked on every input:
//   * parsing never reads past the input and accepts nothing over-long;
//   * an accepted comment names a coherent owner (ports in order, an IPv6
//     address only of the IPv6 family), and formatting that owner gives a
//     comment that parses back to the same owner.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "kernel/tproxy_comment.h"

using namespace mp;
using namespace mp::kernel;

namespace {
void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_tproxy_comment: invariant violated: %s\n", what);
    std::abort();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto owner = parse_tproxy_comment(text);
  if (!owner) return 0;
  check(size <= 200, "an over-long comment accepted");
  check(owner->port_lo > 0 && owner->port_lo <= owner->port_hi, "ports out of order");
  check(!owner->relay_ip6 || owner->relay_ip6->is_v6(), "an IPv6 address of another family");
  const auto again = parse_tproxy_comment(format_tproxy_comment(*owner));
  check(again && *again == *owner, "format then parse changed the owner");
  return 0;
}
