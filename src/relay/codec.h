// Names of RTP payload types as the statistics records report them (spec D.12).
#pragma once

#include <cstdint>
#include <string>

namespace mp::relay {

// "G711u", "Dynamic(101)", "Unknown(19)" ...; from the second byte of an RTP header.
std::string codec_name(uint8_t payload_type);

// True if the datagram is a STUN message (spec D.6, RFC 5389): at least 20
// bytes, the two top bits zero and the magic cookie 0x2112A442 in bytes 4-7.
bool is_stun(const uint8_t* data, size_t len);

}  // namespace mp::relay
