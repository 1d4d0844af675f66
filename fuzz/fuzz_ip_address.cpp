// Fuzz target for addresses of both families (common/ip_address.h).
//
// Invariants checked on every input:
//   * parse_ip -> format_ip -> parse_ip gives the same address, and the text
//     is a fixed point of format(parse(.)); IPv4 text stays IPv4;
//   * the same for parse_ip_endpoint / format_ip_endpoint, whose IPv6 form
//     is bracketed and whose IPv4 form is never;
//   * is_publicly_routable answers for every parsed address, and an
//     IPv4-mapped address gets the answer of the IPv4 address it maps.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "common/ip_address.h"

using namespace mp;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_ip_address: invariant violated: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (auto ip = parse_ip(input)) {
    const std::string text = format_ip(*ip);
    const auto again = parse_ip(text);
    check(again && *again == *ip, "address round-trip");
    check(format_ip(*again) == text, "address text is a fixed point");
    check(ip->is_v4() == (text.find(':') == std::string::npos), "family shows in the text");
    const bool routable = is_publicly_routable(*ip, {});
    if (ip->is_v4_mapped()) {
      Ipv4 v4;
      std::memcpy(&v4.be, ip->bytes.data() + 12, 4);
      check(routable == is_publicly_routable(IpAddress::from_v4(v4), {}),
            "a mapped address is judged as its IPv4 address");
    }
  }
  if (auto ep = parse_ip_endpoint(input)) {
    const std::string text = format_ip_endpoint(*ep);
    const auto again = parse_ip_endpoint(text);
    check(again && *again == *ep, "endpoint round-trip");
    check((text[0] == '[') == !ep->ip.is_v4(), "brackets exactly for IPv6");
  }
  return 0;
}
