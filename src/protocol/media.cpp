// Implementation of the `media` header codec (media.h, spec A.5).
//
// Owns the decoding of "type:ip:port:direction[:k=v...]" items separated by
// commas and their re-encoding. Validation is stricter than the original
// relay where the original would have failed later anyway: the IP must be a
// dotted quad or an IPv6 address: in brackets ("audio:[2001:db8::5]:6000:..."),
// as this relay's protocol writes it, or bare, as Kamailio's stock module
// does (the address then ends at the field before the direction),
// the port a plain decimal 0-65535, the direction one of the four
// SDP words (any letter case, as the modules copy it from the SDP), and the
// media type a non-empty run of visible ASCII characters. Any violation
// rejects the whole header, which the relay then treats as "no media".
#include "protocol/media.h"

#include "common/error.h"
#include "common/ip_address.h"

#include <array>
#include <vector>

namespace mp::protocol {

namespace {

constexpr std::array<std::pair<Direction, std::string_view>, 4> kDirections = {{
    {Direction::SendRecv, "sendrecv"},
    {Direction::SendOnly, "sendonly"},
    {Direction::RecvOnly, "recvonly"},
    {Direction::Inactive, "inactive"},
}};

bool iequals_lower(std::string_view text, std::string_view lower) {
  if (text.size() != lower.size()) return false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != lower[i]) return false;
  }
  return true;
}

// Splits off the text before the next `sep` (or all of it) from `rest`.
std::string_view next_field(std::string_view& rest, char sep, bool& found) {
  const size_t pos = rest.find(sep);
  found = pos != std::string_view::npos;
  std::string_view field = rest.substr(0, pos);
  rest = found ? rest.substr(pos + 1) : std::string_view();
  return field;
}

// With `first` the text before the first ':' after the type and `rest`
// what follows that ':': the length of a bare IPv6 address starting at
// `first` ("2001:db8::5" of "2001:db8::5:6000:sendrecv"), or 0 when the
// field after `first` is already the port (IPv4, or no direction found).
size_t unbracketed_v6_length(std::string_view first, std::string_view rest) {
  // Fields after `first`: the address goes on while the field after the
  // next one is not a direction.
  std::vector<std::string_view> fields;
  bool more = true;
  while (more && fields.size() < 10) fields.push_back(next_field(rest, ':', more));
  for (size_t i = 1; i < fields.size(); ++i) {
    if (!parse_direction(fields[i])) continue;
    if (i == 1) return 0;  // first : port : direction
    // The address is `first` and fields[0 .. i-2]; fields[i-1] is the port.
    const char* end = fields[i - 2].data() + fields[i - 2].size();
    return static_cast<size_t>(end - first.data());
  }
  return 0;
}

bool parse_item(std::string_view text, size_t index, MediaItem& item, std::string& error) {
  const std::string where = "media item " + std::to_string(index) + ": ";
  std::string_view rest = text;
  bool more = false;
  const std::string_view type = next_field(rest, ':', more);
  if (type.empty()) {
    return fail(error, where + "empty media type");
  }
  for (char c : type) {
    if (c <= ' ' || c > '~') {  // an SDP token: visible ASCII only
      return fail(error, where + "invalid character in media type");
    }
  }
  if (!more) {
    return fail(error, where + "missing ip, port and direction");
  }
  std::string_view ip_text;
  if (!rest.empty() && rest.front() == '[') {  // "[v6]:" : the address holds colons
    const size_t close = rest.find(']');
    if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':') {
      return fail(error, where + "unterminated [IPv6] address");
    }
    ip_text = rest.substr(1, close - 1);
    rest = rest.substr(close + 2);
    more = true;
  } else {
    ip_text = next_field(rest, ':', more);
    // Kamailio's stock module writes an IPv6 party's address bare
    // ("audio:2001:db8::5:6000:sendrecv"): the address then runs up to the
    // field before the direction (hex fields never spell a direction).
    const size_t length = more ? unbracketed_v6_length(ip_text, rest) : 0;
    if (length > 0) {
      ip_text = std::string_view(ip_text.data(), length);
      rest = std::string_view(
          ip_text.data() + length + 1,
          static_cast<size_t>(text.data() + text.size() - ip_text.data()) - length - 1);
    }
  }
  if (!more) {
    return fail(error, where + "missing port and direction");
  }
  const std::string_view port_text = next_field(rest, ':', more);
  if (!more) {
    return fail(error, where + "missing direction");
  }
  const std::string_view direction_text = next_field(rest, ':', more);

  const bool bracketed = ip_text.data() != text.data() + type.size() + 1;
  const auto ip = parse_ip(ip_text);
  if (!ip || (bracketed && ip->is_v4())) {
    return fail(error, where + (bracketed || ip_text.find(':') != std::string_view::npos
                                    ? "invalid IPv6 address"
                                    : "invalid IPv4 address"));
  }
  const auto port = parse_port(port_text);
  if (!port) {
    return fail(error, where + "invalid port");
  }
  const auto direction = parse_direction(direction_text);
  if (!direction) {
    return fail(error, where + "unknown direction");
  }
  item.type.assign(type);
  item.ip = *ip;
  item.port = *port;
  item.direction = *direction;
  item.ice = false;

  // Parameters: ":"-separated key=value pairs; empty ones are skipped, the
  // last occurrence of a key wins, only `ice` and `asymmetric` are interpreted.
  while (more) {
    const std::string_view param = next_field(rest, ':', more);
    if (param.empty()) continue;
    const size_t eq = param.find('=');
    if (eq == std::string_view::npos) {
      return fail(error, where + "parameter without '='");
    }
    if (param.substr(0, eq) == "ice") item.ice = param.substr(eq + 1) == "yes";
    if (param.substr(0, eq) == "asymmetric") item.asymmetric = param.substr(eq + 1) == "yes";
  }
  return true;
}

}  // namespace

std::string_view to_string(Direction d) {
  for (const auto& [dir, name] : kDirections)
    if (dir == d) return name;
  return "sendrecv";
}

std::optional<Direction> parse_direction(std::string_view text) {
  for (const auto& [dir, name] : kDirections)
    if (iequals_lower(text, name)) return dir;
  return std::nullopt;
}

std::optional<std::vector<MediaItem>> parse_media(std::string_view value, std::string& error) {
  std::vector<MediaItem> items;
  std::string_view rest = value;
  bool more = true;
  size_t index = 0;
  while (more) {
    const std::string_view text = next_field(rest, ',', more);
    if (text.empty()) continue;  // empty items between commas are ignored
    ++index;
    if (items.size() >= kMaxMediaItems) {
      error = "more than " + std::to_string(kMaxMediaItems) + " media items";
      return std::nullopt;
    }
    MediaItem item;
    if (!parse_item(text, index, item, error)) return std::nullopt;
    items.push_back(std::move(item));
  }
  return items;
}

std::string format_media(const std::vector<MediaItem>& items) {
  std::string out;
  for (const MediaItem& item : items) {
    if (!out.empty()) out.push_back(',');
    out += item.type;
    out.push_back(':');
    if (item.ip.is_v4()) {
      out += format_ip(item.ip);
    } else {
      out.push_back('[');
      out += format_ip(item.ip);
      out.push_back(']');
    }
    out.push_back(':');
    out += std::to_string(item.port);
    out.push_back(':');
    out += to_string(item.direction);
    out += item.ice ? ":ice=yes" : ":ice=no";
    if (item.asymmetric) out += ":asymmetric=yes";
  }
  return out;
}

}  // namespace mp::protocol
