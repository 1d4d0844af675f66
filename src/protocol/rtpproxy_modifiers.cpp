// The modifier grammar of the rtpproxy U and L commands (rtpproxy_modifiers.h):
// the flag letters, z<ms>, the c<pt>,... codec list and the l<addr>/r<addr>
// addresses, each fault with the E<code> rtpproxy sends for it.
#include "protocol/rtpproxy_modifiers.h"

#include <utility>
#include <vector>

#include "common/address.h"

namespace mp::protocol::rtpproxy_syntax {

namespace {

constexpr unsigned kMaxPtime = 999;  // z<ms>: rtpproxy accepts 1..999
constexpr unsigned kMaxPayloadType = 127;

class ModifierParser {
 public:
  ModifierParser(const std::string& verb, Faults& faults) : name_(verb), faults_(faults) {}

  bool parse(std::string_view mods, RtpproxyModifiers& m) {
    bool have_codecs = false;
    for (size_t i = 0; i < mods.size(); ++i) {
      const char c = lower(mods[i]);
      switch (c) {
        case 'a':
          m.asymmetric = true;
          m.symmetric = false;
          break;
        case 's':
          m.symmetric = true;
          m.asymmetric = false;
          break;
        case 'w':
          m.weak = true;
          break;
        case 'i':
        case 'e':
          if (m.bridge.size() >= 2)
            return fail(c == 'e' ? rtpp_error::kBridgeExternal : rtpp_error::kBridgeInternal,
                        name_ + ": more than two i/e letters in " + quoted(mods));
          m.bridge.push_back(c);
          (c == 'i' ? m.internal : m.external) = true;
          break;
        case '6':
          m.ipv6 = true;
          m.ipv4 = false;
          break;
        case '4':
          m.ipv4 = true;
          m.ipv6 = false;
          break;
        case 'n':
          m.new_port = true;
          break;
        case 'z': {
          size_t j = i + 1;
          while (j < mods.size() && is_digit(mods[j])) ++j;
          unsigned ms = 0;
          if (!parse_number(mods.substr(i + 1, j - i - 1), kMaxPtime, ms) || ms == 0)
            return fail(rtpp_error::kBadPtime,
                        name_ + ": z needs a packetization time of 1..999 ms in " + quoted(mods));
          m.repacketize_ms = ms;
          i = j - 1;
          break;
        }
        case 'c': {
          if (have_codecs)
            return fail(rtpp_error::kBadCodecs, name_ + ": two codec lists in " + quoted(mods));
          size_t j = i + 1;
          while (j < mods.size() && (is_digit(mods[j]) || mods[j] == ',')) ++j;
          if (!parse_codecs(mods.substr(i + 1, j - i - 1), m.codecs)) return false;
          have_codecs = true;
          i = j - 1;
          break;
        }
        case 'l':
        case 'r':
          if (!parse_address_modifier(mods, i, m)) return false;
          break;
        default:
          return fail(rtpp_error::kUnknownModifier,
                      name_ + ": unknown modifier " + quoted(mods.substr(i, 1)));
      }
    }
    return true;
  }

 private:
  bool fail(int code, std::string reason) { return faults_.fail(code, std::move(reason)); }

  bool parse_codecs(std::string_view list, std::vector<unsigned>& codecs) {
    const auto bad = [&](const std::string& why) {
      return fail(rtpp_error::kBadCodecs, name_ + ": codec list " + quoted(list) + " " + why);
    };
    if (list.empty()) return bad("is empty");
    size_t start = 0;
    for (;;) {
      const size_t comma = list.find(',', start);
      const std::string_view item =
          list.substr(start, comma == std::string_view::npos ? comma : comma - start);
      unsigned pt = 0;
      if (!parse_number(item, kMaxPayloadType, pt))
        return bad("has an item that is not a payload type 0..127");
      if (codecs.size() == kMaxRtpproxyCodecs)
        return bad("has more than " + std::to_string(kMaxRtpproxyCodecs) + " items");
      codecs.push_back(pt);
      if (comma == std::string_view::npos) return true;
      start = comma + 1;
    }
  }

  // l<addr> / r<addr>: as rtpproxy's extractaddr(), the address runs over
  // digits and dots, or is an IPv6 literal of hex digits and colons in
  // brackets; the next modifier letter follows directly.
  bool parse_address_modifier(std::string_view mods, size_t& i, RtpproxyModifiers& m) {
    const bool local = lower(mods[i]) == 'l';
    const int syntax_code = local ? rtpp_error::kBadLocalModifier : rtpp_error::kBadRemoteModifier;
    const char* which = local ? "local address (l)" : "remote address (r)";
    size_t j = i + 1;
    if (local && j < mods.size() && mods[j] == '{') {
      const size_t close = mods.find('}', j + 1);
      if (close == std::string_view::npos || close == j + 1)
        return fail(syntax_code, name_ + ": malformed address label in " + quoted(mods));
      return fail(rtpp_error::kBadArgument, name_ + ": address labels (l{...}) are not supported");
    }
    std::string_view address;
    bool v6 = false;
    size_t next = j;
    if (j < mods.size() && mods[j] == '[') {
      size_t k = j + 1;
      while (k < mods.size() && (hex_value(mods[k]) >= 0 || mods[k] == ':')) ++k;
      if (k == mods.size() || mods[k] != ']' || k == j + 1)
        return fail(syntax_code, name_ + ": malformed " + which + " in " + quoted(mods));
      address = mods.substr(j + 1, k - j - 1);
      v6 = true;
      next = k + 1;
    } else {
      size_t k = j;
      while (k < mods.size() && (is_digit(mods[k]) || mods[k] == '.')) ++k;
      if (k == j) return fail(syntax_code, name_ + ": no " + which + " in " + quoted(mods));
      address = mods.substr(j, k - j);
      next = k;
    }
    if (v6 ? !is_ipv6_literal(address) : !parse_ipv4(address))
      return fail(local ? rtpp_error::kBadArgument : rtpp_error::kBadRemoteAddress,
                  name_ + ": invalid " + which + " " + quoted(address));
    (local ? m.local_address : m.remote_address).assign(address);
    i = next - 1;
    return true;
  }

  const std::string& name_;  // the verb's name, for reasons
  Faults& faults_;
};

}  // namespace

bool parse_ul_modifiers(std::string_view mods, const std::string& verb, Faults& faults,
                        RtpproxyModifiers& m) {
  return ModifierParser(verb, faults).parse(mods, m);
}

}  // namespace mp::protocol::rtpproxy_syntax
