// Fuzz target for the `media` header codec (protocol/media.h) and the IPv4
// helpers it relies on (common/address.h).
//
// Invariants checked on every input:
//   * parse_media() either yields items or an error; at most kMaxMediaItems
//     items, each with a non-empty media type free of ':' and ',';
//   * parse -> format -> parse gives the same items, and format is a fixed
//     point (formatting the re-parsed items gives the same text);
//   * parse_direction / parse_ipv4 / parse_endpoint / parse_cidr /
//     parse_port results survive their formatters.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/address.h"
#include "protocol/media.h"

using namespace mp;
using namespace mp::protocol;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_media: invariant violated: %s\n", what);
    std::abort();
  }
}

void check_addresses(std::string_view input) {
  if (auto ip = parse_ipv4(input)) {
    const std::string text = format_ipv4(*ip);
    check(parse_ipv4(text) == ip, "ipv4 round-trip");
  }
  if (auto ep = parse_endpoint(input)) {
    const std::string text = format_endpoint(*ep);
    check(parse_endpoint(text) == ep, "endpoint round-trip");
    check(Endpoint::from_sockaddr(ep->to_sockaddr()) == *ep, "sockaddr round-trip");
  }
  if (auto cidr = parse_cidr(input)) {
    check(cidr->prefix >= 0 && cidr->prefix <= 32, "cidr prefix range");
    check(cidr->contains(cidr->network), "cidr contains its network");
    (void)is_publicly_routable(cidr->network, {*cidr});
  }
  if (auto port = parse_port(input))
    check(std::to_string(*port) == input || input[0] == '0',
          "port text is canonical or zero-padded");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  std::string error;
  const auto items = parse_media(input, error);
  check(items.has_value() == error.empty(), "exactly one of items / error");
  if (items) {
    check(items->size() <= kMaxMediaItems, "item limit");
    for (const MediaItem& item : *items) {
      check(!item.type.empty(), "non-empty media type");
      check(item.type.find_first_of(":,") == std::string::npos, "media type is a token");
    }
    const std::string text = format_media(*items);
    std::string error2;
    const auto again = parse_media(text, error2);
    check(again.has_value(), "formatted media parses");
    check(*again == *items, "parse -> format -> parse round-trip");
    check(format_media(*again) == text, "format is a fixed point");
  }

  if (auto dir = parse_direction(input)) {
    check(parse_direction(to_string(*dir)) == dir, "direction round-trip");
  }
  check_addresses(input);
  return 0;
}
