// The sockets of the rtpproxy front end ([Rtpproxy] listen).
//
// Owns the listeners and the client connections of every configured
// transport, and the framing each one uses, as the rtpproxy modules expect:
//   udp:, udp6:   one command per datagram, "<cookie> <command>", the reply
//                 "<cookie> <reply>\n" to the sender. An identical
//                 retransmission (same sender, same cookie) gets the cached
//                 reply, or nothing while the first is still being answered;
//                 it never reaches the front end twice.
//   unix:         Kamailio's form: a stream connection per command, no cookie,
//                 no line end required: what one read brings is the command.
//   cunix:, tcp:  persistent stream connections, "<cookie> <command>\n" each.
// Sizes are bounded everywhere (kMaxRtpproxyCommand); a bad command is
// answered with its E code and never closes a datagram listener.
#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "dispatcher/rtpproxy_front_end.h"

namespace mp::dispatcher {

class RtpproxyServer {
 public:
  RtpproxyServer(uv_loop_t* loop, RtpproxyFrontEnd& front_end, const RtpproxyConfig& cfg);
  ~RtpproxyServer();
  RtpproxyServer(const RtpproxyServer&) = delete;
  RtpproxyServer& operator=(const RtpproxyServer&) = delete;

  // Opens every configured listener; false with `error` naming the first
  // that failed.
  bool listen(std::string& error);
  void close();

  struct Udp;
  struct Stream;
  struct Connection;

  // Parses one command line (cookie already split off) and hands it to the
  // front end; `reply` gets the reply text (no cookie, no newline).
  void dispatch(std::string_view command, const std::string& client_ip,
                std::function<void(std::string)> reply);
  RtpproxyFrontEnd& front_end() { return front_end_; }
  const RtpproxyConfig& config() const { return cfg_; }
  uv_loop_t* loop() const { return loop_; }
  std::vector<std::shared_ptr<Connection>>& connections() { return connections_; }

 private:
  bool listen_udp(const RtpproxyListen& l, std::string& error);
  bool listen_stream(const RtpproxyListen& l, std::string& error);

  uv_loop_t* loop_;
  RtpproxyFrontEnd& front_end_;
  RtpproxyConfig cfg_;
  std::vector<std::shared_ptr<Udp>> udp_;
  std::vector<std::unique_ptr<Stream>> streams_;
  std::vector<std::shared_ptr<Connection>> connections_;
};

}  // namespace mp::dispatcher
