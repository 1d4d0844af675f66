// Payload-type names and STUN recognition for the relay data path.
#include "relay/codec.h"

namespace mp::relay {

std::string codec_name(uint8_t pt) {
  pt &= 0x7f;
  static const char* kStatic[35] = {"G711u", "1016",  "G721",  "GSM",   "G723", "DVI4",  "DVI4",
                                    "LPC",   "G711a", "G722",  "L16",   "L16",  nullptr, nullptr,
                                    "MPA",   "G728",  nullptr, nullptr, "G729", nullptr, nullptr,
                                    nullptr, nullptr, nullptr, nullptr, "CelB", "JPEG",  nullptr,
                                    "nv",    nullptr, nullptr, "H261",  "MPV",  "MP2T",  "H263"};
  if (pt >= 96) return "Dynamic(" + std::to_string(pt) + ")";
  if (pt < 35 && kStatic[pt]) return kStatic[pt];
  return "Unknown(" + std::to_string(pt) + ")";
}

bool is_stun(const uint8_t* d, size_t len) {
  // RFC 5389: the first two bits of a STUN message are zero and bytes 4-7
  // hold the magic cookie. The original checks the 16-bit type against
  // 0x000C after reading it in host order, which on x86 means the two top
  // bits of the first byte; we test those bits directly.
  if (len < 20) return false;
  if ((d[0] & 0xc0) != 0) return false;
  return d[4] == 0x21 && d[5] == 0x12 && d[6] == 0xa4 && d[7] == 0x42;
}

}  // namespace mp::relay
