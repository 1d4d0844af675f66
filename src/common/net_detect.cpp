// Implementation of net_detect.h.
#include "common/net_detect.h"

#include <ifaddrs.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace mp {

std::optional<Ipv4> default_route_address(std::string& why) {
  std::ifstream routes("/proc/net/route");
  if (!routes) {
    why = "cannot read /proc/net/route";
    return std::nullopt;
  }
  std::string line, iface;
  std::getline(routes, line);  // header
  while (std::getline(routes, line)) {
    std::istringstream in(line);
    std::string name, dest;
    in >> name >> dest;
    if (dest == "00000000") {
      iface = name;
      break;
    }
  }
  if (iface.empty()) {
    why = "no default route; set relay_ip in [Relay]";
    return std::nullopt;
  }
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) {
    why = std::string("getifaddrs failed: ") + std::strerror(errno);
    return std::nullopt;
  }
  std::optional<Ipv4> found;
  for (ifaddrs* a = list; a; a = a->ifa_next) {
    if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET || iface != a->ifa_name) continue;
    found = Ipv4{reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr.s_addr};
    break;
  }
  freeifaddrs(list);
  if (!found)
    why = "default-route interface " + iface + " has no IPv4 address; set relay_ip in [Relay]";
  return found;
}

bool is_local_address(Ipv4 ip) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return false;
  bool found = false;
  for (ifaddrs* a = list; a; a = a->ifa_next)
    if (a->ifa_addr && a->ifa_addr->sa_family == AF_INET &&
        reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr.s_addr == ip.be)
      found = true;
  freeifaddrs(list);
  return found;
}

bool is_local_address(const IpAddress& ip) {
  if (auto v4 = ip.v4()) return is_local_address(*v4);
  // Binding says it best: it fails for addresses not here or still tentative.
  const int fd = ::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const SocketAddress sa = SocketAddress::of(IpEndpoint{ip, 0});
  const bool ok = ::bind(fd, &sa.sa, sa.len) == 0;
  ::close(fd);
  return ok;
}

}  // namespace mp
