// The relay engine's receive path through one socket per IP family
// ([Relay] media_receive; relay_engine.h, tproxy_socket.h).
//
// Set up after the restore (the sessions kept across a restart have bound
// their ports again, so the tproxy socket's port, which the kernel picks,
// cannot take one of theirs): a tproxy socket per family, handed over by
// the previous process in a live upgrade (same port, with what the kernel
// queued on it) or opened here, then the nftables table `inet <nft_table>`
// that steers the media ports to them (kernel/nft_tproxy.h), created or
// replaced in one transaction. Until that commit datagrams reach each
// port's own socket, as they do whenever the rule or the socket is gone.
// With media_receive = auto, anything in the way (no CAP_NET_ADMIN, a
// kernel without nftables tproxy or socket, the table name taken by another
// relay instance) leaves the relay on its per-port sockets with a warning;
// with tproxy it refuses to start.
// A live upgrade leaves the table to the successor; any other exit
// deletes it.
#include <unistd.h>

#include "common/log.h"
#include "kernel/nft_tproxy.h"
#include "relay/relay_engine.h"
#include "relay/tproxy_socket.h"

namespace mp::relay {

void RelayEngine::inherit_sockets(const std::vector<std::pair<IpEndpoint, int>>& sockets) {
  if (!pump_) return;
  for (const auto& [local, fd] : sockets) {
    IpEndpoint bound;
    if (is_tproxy_socket(fd, bound)) {
      int& slot = inherited_tproxy_[bound.ip.is_v6() ? 1 : 0];
      if (slot >= 0) ::close(slot);
      slot = fd;
      continue;
    }
    pump_->inherit(local, fd);
  }
}

bool RelayEngine::start_tproxy(std::string& error) {
  const uint16_t lo = static_cast<uint16_t>(cfg_.port_start);
  const uint16_t hi = static_cast<uint16_t>(cfg_.port_end - 1);
  if (cfg_.media_receive == MediaReceive::Sockets) {
    for (int& fd : inherited_tproxy_)
      if (fd >= 0) ::close(fd), fd = -1;
    // A table a crashed predecessor left behind steers nothing (its socket
    // is gone), but it is ours to clear.
    // Only where the process may (CAP_NET_ADMIN); errors say nothing new.
    std::string why;
    kernel::NftTproxy::remove(cfg_.nft_table, ctx_.relay_ip, lo, hi, why);
    return true;
  }
  const bool strict = cfg_.media_receive == MediaReceive::Tproxy;
  std::string why;
  int fd[2] = {inherited_tproxy_[0], inherited_tproxy_[1]};
  inherited_tproxy_[0] = inherited_tproxy_[1] = -1;
  IpEndpoint bound[2];
  const bool v6 = ctx_.relay_ip6.has_value();
  bool ok = true;
  for (int f = 0; f < (v6 ? 2 : 1) && ok; ++f) {
    const IpAddress ip = f == 0 ? IpAddress(ctx_.relay_ip) : *ctx_.relay_ip6;
    if (fd[f] >= 0 && is_tproxy_socket(fd[f], bound[f]) && bound[f].ip == ip) continue;
    if (fd[f] >= 0) ::close(fd[f]);  // handed over for another address
    fd[f] = open_tproxy_socket(ip, lo, hi, bound[f], why);
    ok = fd[f] >= 0;
  }
  if (ok) {
    tproxy_table_ = kernel::NftTproxy::create(cfg_.nft_table, ctx_.relay_ip, bound[0].port,
                                              ctx_.relay_ip6, v6 ? bound[1].port : 0, lo, hi, why);
    ok = tproxy_table_ != nullptr;
  }
  for (int f = 0; f < 2 && ok; ++f)
    if (fd[f] >= 0 && (ok = pump_->add_tproxy_socket(fd[f], bound[f], why))) fd[f] = -1;
  // The port sockets last: the rule steers only what would reach a
  // transparent one, so nothing is steered before the pump reads the tproxy
  // sockets, and nothing at all if any step failed.
  if (ok) ok = pump_->set_ports_transparent(true, why);
  if (!ok) {
    tproxy_table_.reset();            // nothing steered to sockets the pump does not read
    pump_->release_tproxy_sockets();  // closed with the pump
    for (int f = 0; f < 2; ++f)
      if (fd[f] >= 0) ::close(fd[f]);
    std::string ignored;
    pump_->set_ports_transparent(false, ignored);
    if (strict) {
      error = "media_receive = tproxy, but " + why;
      return false;
    }
    LOG_WARN("media receive: through each port's own socket (media_receive = auto: %s)",
             why.c_str());
    return true;
  }
  // Its port inside the media range (every port the kernel tried was):
  // that pair is not handed out.
  for (int f = 0; f < (v6 ? 2 : 1); ++f) {
    uint16_t bad = 0;
    if (bound[f].port >= lo && bound[f].port <= hi)
      pool_.reserve({static_cast<uint16_t>(bound[f].port & ~1u)}, bad);
  }
  LOG_INFO(
      "media receive: every media port through one socket per IP family (nftables table 'inet "
      "%s' steers them to %s%s%s)",
      cfg_.nft_table.c_str(), format_ip_endpoint(bound[0]).c_str(), v6 ? " and " : "",
      v6 ? format_ip_endpoint(bound[1]).c_str() : "");
  return true;
}

void RelayEngine::stop_tproxy(std::vector<std::pair<IpEndpoint, int>>* hand_over_to) {
  if (hand_over_to && pump_) {
    for (auto& t : pump_->release_tproxy_sockets()) hand_over_to->push_back(t);
    if (tproxy_table_) tproxy_table_->keep_table_on_exit(true);
    return;
  }
  tproxy_table_.reset();  // deletes the table: datagrams go to each port's socket
  for (int& fd : inherited_tproxy_)
    if (fd >= 0) ::close(fd), fd = -1;
}

}  // namespace mp::relay
