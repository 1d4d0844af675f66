// Route and interface lookups over rtnetlink (route_lookup.h).
#include "kernel/route_lookup.h"

#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace mp::kernel {

RouteLookup::~RouteLookup() {
  if (fd_ >= 0) ::close(fd_);
  if (watch_fd_ >= 0) ::close(watch_fd_);
}

size_t RouteLookup::CacheKeyHash::operator()(const CacheKey& k) const {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (uint8_t b : k) h = (h ^ b) * 1099511628211ull;
  return static_cast<size_t>(h);
}

bool RouteLookup::watch(bool ipv6, std::string& error) {
  watch_fd_ = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
  if (watch_fd_ < 0) {
    error = std::string("cannot open an rtnetlink socket: ") + std::strerror(errno);
    return false;
  }
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE;
  if (ipv6) sa.nl_groups |= RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE;
  if (::bind(watch_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    error = std::string("cannot subscribe to route changes: ") + std::strerror(errno);
    ::close(watch_fd_);
    watch_fd_ = -1;
    return false;
  }
  return true;
}

bool RouteLookup::drain_changes() {
  if (watch_fd_ < 0) return false;
  bool any = false;
  alignas(nlmsghdr) char buf[16384];
  for (;;) {
    ssize_t n = ::recv(watch_fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      any = true;
      cache_.clear();
      continue;
    }
    if (n < 0 && errno == ENOBUFS) {  // notifications were lost: assume a change
      any = true;
      continue;
    }
    return any;  // EAGAIN (drained), or an error that reading again will not fix
  }
}

bool RouteLookup::open(std::string& error) {
  fd_ = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd_ < 0) {
    error = std::string("cannot open an rtnetlink socket: ") + std::strerror(errno);
    return false;
  }
  timeval tv{1, 0};
  setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return true;
}

namespace {
const char* route_type_name(unsigned char t) {
  switch (t) {
    case RTN_LOCAL:
      return "it is an address of this host";
    case RTN_BROADCAST:
      return "it is a broadcast address";
    case RTN_MULTICAST:
      return "it is a multicast address";
    case RTN_BLACKHOLE:
      return "its route is a blackhole";
    case RTN_UNREACHABLE:
      return "its route is unreachable";
    case RTN_PROHIBIT:
      return "its route is prohibited";
    default:
      return "its route is not a unicast route";
  }
}
}  // namespace

bool RouteLookup::resolve(const IpAddress& src, const IpAddress& dst, NextHop& out,
                          std::string& why) {
  if (watch_fd_ < 0) return ask(src, dst, out, why);
  // A pending change notification: the cached answers may be stale (the
  // notification itself is read by drain_changes()).
  pollfd p{watch_fd_, POLLIN, 0};
  if (::poll(&p, 1, 0) > 0 || cache_.size() > 65536) cache_.clear();
  CacheKey key{};
  key[0] = static_cast<uint8_t>(dst.family);
  std::copy(src.bytes.begin(), src.bytes.end(), key.begin() + 1);
  std::copy(dst.bytes.begin(), dst.bytes.end(), key.begin() + 17);
  if (auto it = cache_.find(key); it != cache_.end()) {
    out = it->second.hop;
    why = it->second.why;
    return it->second.ok;
  }
  Answer a;
  a.ok = ask(src, dst, a.hop, a.why);
  out = a.hop;
  why = a.why;
  const bool ok = a.ok;
  cache_.emplace(key, std::move(a));
  return ok;
}

bool RouteLookup::ask(const IpAddress& src, const IpAddress& dst, NextHop& out, std::string& why) {
  if (fd_ < 0) {
    why = "no rtnetlink socket";
    return false;
  }
  const bool v4 = dst.is_v4();
  const uint16_t len = v4 ? 4 : 16;
  const bool with_src = src.family == dst.family && !src.is_any();
  alignas(nlmsghdr) char buf[8192];
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
  nlh->nlmsg_type = RTM_GETROUTE;
  nlh->nlmsg_flags = NLM_F_REQUEST;
  nlh->nlmsg_seq = ++seq_;
  auto* rtm = static_cast<rtmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(rtmsg)));
  rtm->rtm_family = v4 ? AF_INET : AF_INET6;
  rtm->rtm_dst_len = static_cast<unsigned char>(len * 8);
  mnl_attr_put(nlh, RTA_DST, len, dst.bytes.data());
  if (with_src) {
    rtm->rtm_src_len = static_cast<unsigned char>(len * 8);
    mnl_attr_put(nlh, RTA_SRC, len, src.bytes.data());
  }
  if (::send(fd_, nlh, nlh->nlmsg_len, 0) < 0) {
    why = std::string("route lookup failed: ") + std::strerror(errno);
    return false;
  }
  for (;;) {
    ssize_t got = ::recv(fd_, buf, sizeof buf, 0);
    if (got < 0) {
      why = std::string("route lookup failed: ") + std::strerror(errno);
      return false;
    }
    int n = static_cast<int>(got);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); mnl_nlmsg_ok(h, n);
         h = mnl_nlmsg_next(h, &n)) {
      if (h->nlmsg_seq != seq_) continue;  // an answer to an earlier, timed-out request
      if (h->nlmsg_type == NLMSG_ERROR) {
        auto* e = static_cast<nlmsgerr*>(mnl_nlmsg_get_payload(h));
        why = std::string("no route: ") + std::strerror(-e->error);
        return false;
      }
      if (h->nlmsg_type != RTM_NEWROUTE) continue;
      auto* r = static_cast<rtmsg*>(mnl_nlmsg_get_payload(h));
      if (r->rtm_type != RTN_UNICAST) {
        why = route_type_name(r->rtm_type);
        return false;
      }
      NextHop hop;
      hop.via = dst;
      bool other_family = false;
      const auto* a = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(h, sizeof(rtmsg)));
      const char* tail = static_cast<const char*>(mnl_nlmsg_get_payload_tail(h));
      for (; mnl_attr_ok(a, static_cast<int>(tail - reinterpret_cast<const char*>(a)));
           a = mnl_attr_next(a)) {
        if (mnl_attr_get_type(a) == RTA_OIF && mnl_attr_get_payload_len(a) >= 4)
          hop.ifindex = mnl_attr_get_u32(a);
        else if (mnl_attr_get_type(a) == RTA_GATEWAY && mnl_attr_get_payload_len(a) == len)
          std::memcpy(hop.via.bytes.data(), mnl_attr_get_payload(a), len);
        else if (mnl_attr_get_type(a) == RTA_VIA)
          other_family = true;
      }
      if (other_family) {
        why = "its route's gateway is of the other address family";
        return false;
      }
      if (hop.ifindex == 0) {
        why = "its route has no output interface (multipath routes are not supported)";
        return false;
      }
      out = hop;
      return true;
    }
  }
}

bool RouteLookup::interfaces(std::vector<Interface>& out, std::string& why) {
  out.clear();
  if (fd_ < 0) {
    why = "no rtnetlink socket";
    return false;
  }
  alignas(nlmsghdr) char buf[16384];
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
  nlh->nlmsg_type = RTM_GETLINK;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  nlh->nlmsg_seq = ++seq_;
  auto* ifm = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
  ifm->ifi_family = AF_UNSPEC;
  if (::send(fd_, nlh, nlh->nlmsg_len, 0) < 0) {
    why = std::string("listing interfaces failed: ") + std::strerror(errno);
    return false;
  }
  for (;;) {
    ssize_t got = ::recv(fd_, buf, sizeof buf, 0);
    if (got < 0) {
      why = std::string("listing interfaces failed: ") + std::strerror(errno);
      return false;
    }
    int n = static_cast<int>(got);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); mnl_nlmsg_ok(h, n);
         h = mnl_nlmsg_next(h, &n)) {
      if (h->nlmsg_seq != seq_) continue;
      if (h->nlmsg_type == NLMSG_DONE) return true;
      if (h->nlmsg_type == NLMSG_ERROR) {
        auto* e = static_cast<nlmsgerr*>(mnl_nlmsg_get_payload(h));
        why = std::string("listing interfaces failed: ") + std::strerror(-e->error);
        return false;
      }
      if (h->nlmsg_type != RTM_NEWLINK) continue;
      auto* info = static_cast<ifinfomsg*>(mnl_nlmsg_get_payload(h));
      if (info->ifi_flags & IFF_LOOPBACK) continue;
      Interface i;
      i.ifindex = static_cast<uint32_t>(info->ifi_index);
      const auto* a =
          static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(h, sizeof(ifinfomsg)));
      const char* tail = static_cast<const char*>(mnl_nlmsg_get_payload_tail(h));
      for (; mnl_attr_ok(a, static_cast<int>(tail - reinterpret_cast<const char*>(a)));
           a = mnl_attr_next(a))
        if (mnl_attr_get_type(a) == IFLA_IFNAME) i.name = mnl_attr_get_str(a);
      if (!i.name.empty()) out.push_back(std::move(i));
    }
  }
}

}  // namespace mp::kernel
