// The relay's one receive socket per IP family ([Relay] media_receive).
//
// With one socket per port, a relay carrying RTP pays an epoll event and a
// receive call per datagram: real RTP puts one datagram at a time on each
// socket. An nftables `tproxy` rule (kernel/nft_tproxy.h) can instead steer
// every datagram for the relay's media ports to a single socket, which one
// recvmmsg() drains whatever the number of streams; the kernel reports each
// datagram's original destination (IP_ORIGDSTADDR), so the pump still knows
// which port, hence which stream, it was for (media_pump.h). The per-port
// sockets stay bound: they reserve the ports, send, and receive whenever the
// tproxy socket is gone (the rule then finds no socket and the datagram goes
// on to its port as before).
//
// This file owns the socket itself: opening it (IP_TRANSPARENT, which needs
// CAP_NET_ADMIN), recognising one handed over by a live upgrade, and reading
// the original destination port of a received datagram; and the mark the
// rule looks for on the per-port sockets (IP_TRANSPARENT too).
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/ip_address.h"

namespace mp::relay {

// Control-message room per received datagram for its original destination.
constexpr size_t kOriginalDestinationSpace = CMSG_SPACE(sizeof(sockaddr_in6));

// Opens a non-blocking UDP socket of `ip`'s family that takes datagrams a
// tproxy rule steers to it and reports their original destination, bound to
// `ip` and a port the kernel picks outside [avoid_lo, avoid_hi] (the media
// ports) when it can. Returns the descriptor and the bound address in
// `bound`, or -1 with the reason (EPERM: no CAP_NET_ADMIN).
int open_tproxy_socket(const IpAddress& ip, uint16_t avoid_lo, uint16_t avoid_hi, IpEndpoint& bound,
                       std::string& error);

// Whether `fd` is such a socket (a live upgrade hands it over with the
// per-port ones, which are transparent too but do not ask for the original
// destination), and its bound address in `bound`.
bool is_tproxy_socket(int fd, IpEndpoint& bound);

// Makes a port's socket of `family` transparent (or, `on` false, plain
// again), which is what the tproxy rule asks of the socket a datagram would
// otherwise reach before steering it (kernel/nft_tproxy.h). 0 or errno.
int make_transparent(int fd, int family, bool on = true);

// The destination port a received datagram was addressed to, from its
// IP_ORIGDSTADDR or IPV6_ORIGDSTADDR control message; 0 if it has none.
uint16_t original_destination_port(const msghdr& received);

}  // namespace mp::relay
