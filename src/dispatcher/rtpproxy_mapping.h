// How the rtpproxy front end maps one U or L command onto the relay's
// `update`, and the relay's reply back onto an rtpproxy reply.
//
// Pure functions (unit tested in tests/unit/dispatcher): the media item of
// one party's stream (IPv6 in brackets, the relay protocol's extension), the
// party's address checked against its `6`/`4` modifier, the family the
// reply must have (the bridge letters: `i` is the relay's IPv4 side, `e` its
// IPv6 side, as Kamailio's `x` flag assumes), the family token that ends the
// rtpproxy reply, and the N-th port of a relay reply.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "common/ip_address.h"
#include "protocol/rtpproxy_command.h"

namespace mp::dispatcher {

// "audio:IP:PORT:sendrecv:ice=no" (spec A.5), "[v6]" for IPv6, with
// ":asymmetric=yes" for the `a` modifier.
std::string rtpproxy_media_item(const std::string& ip, uint16_t port, bool asymmetric = false);

// The address of a U or L, or nullopt: not a literal, IPv4-mapped, or of
// another family than its `6`/`4` modifier says.
std::optional<IpAddress> rtpproxy_party_address(const protocol::RtpproxyCommand& cmd);

// The family of the relay address the reply must carry: the second bridge
// letter if there are two, else the party's own.
IpAddress::Family rtpproxy_reply_family(const protocol::RtpproxyCommand& cmd,
                                        const IpAddress& party);

// '6' for an IPv6 relay address, '4' for an IPv4 one given to an IPv6 party
// or across a bridge, 0 otherwise (rtpproxy's IPv4 replies have no token).
char rtpproxy_reply_family_token(const protocol::RtpproxyCommand& cmd, const std::string& relay_ip);

// The `index`-th port (0-based) of a relay reply "IP P1 P2 ...", with the IP.
bool rtpproxy_pick_port(const std::string& reply, size_t index, std::string& ip, uint16_t& port);

}  // namespace mp::dispatcher
