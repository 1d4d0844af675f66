// The `media` header of an update request (spec A.5).
//
// Grammar, no whitespace anywhere:
//   media  = stream *( "," stream )
//   stream = type ":" ( ipv4 / "[" ipv6 "]" ) ":" port ":" direction *( ":" key "=" value )
// Empty items between commas are ignored. Only the `ice` and `asymmetric`
// parameters are interpreted (absent means no); empty parameters are
// tolerated; a parameter without '=' makes the whole header invalid.
// parse_media() is a pure function.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip_address.h"

namespace mp::protocol {

enum class Direction { SendRecv, SendOnly, RecvOnly, Inactive };

std::string_view to_string(Direction d);
std::optional<Direction> parse_direction(std::string_view text);

struct MediaItem {
  std::string type;  // "audio", "video", "image", ...
  IpAddress ip;      // IPv6 written "[...]" in the header
  uint16_t port = 0;
  Direction direction = Direction::SendRecv;
  bool ice = false;
  // `asymmetric=yes` (rtpproxy's `a` modifier, set by the rtpproxy front end):
  // the party does not send from where it receives; media goes to the SDP
  // address, never to the latched source.
  bool asymmetric = false;
  friend bool operator==(const MediaItem&, const MediaItem&) = default;
};

inline constexpr size_t kMaxMediaItems = 32;  // the modules never send more

// Returns the streams in order, or nullopt with `error` set to the reason.
std::optional<std::vector<MediaItem>> parse_media(std::string_view value, std::string& error);

// Inverse of parse_media (always emits the ice parameter, as the modules do).
std::string format_media(const std::vector<MediaItem>& items);

}  // namespace mp::protocol
