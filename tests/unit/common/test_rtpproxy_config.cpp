// The [Rtpproxy] section (common/config.h, rtpproxy_config.cpp): the listen
// forms the rtpproxy modules write, notification targets and the policy.
#include <catch2/catch.hpp>

#include <string>

#include "common/config.h"

using mp::RtpproxyListen;
using T = mp::RtpproxyListen::Transport;

namespace {

std::optional<RtpproxyListen> listen(const std::string& text) {
  std::string error;
  auto l = mp::parse_rtpproxy_listen(text, error);
  if (!l) CHECK_FALSE(error.empty());
  return l;
}

}  // namespace

TEST_CASE("rtpproxy listen forms", "[config][rtpproxy]") {
  auto u = listen("udp:127.0.0.1:22222");
  REQUIRE(u);
  CHECK(u->transport == T::Udp);
  CHECK(u->address == "127.0.0.1");
  CHECK(u->port == 22222);
  CHECK(u->datagram());
  CHECK(u->has_cookie());

  auto d = listen("udp:10.0.0.1");
  REQUIRE(d);
  CHECK(d->port == 22222);

  auto v6 = listen("udp6:[::1]:7722");
  REQUIRE(v6);
  CHECK(v6->transport == T::Udp6);
  CHECK(v6->address == "::1");
  CHECK(v6->port == 7722);
  auto v6bare = listen("udp6:fd00::1");
  REQUIRE(v6bare);
  CHECK(v6bare->address == "fd00::1");
  CHECK(v6bare->port == 22222);

  auto x = listen("unix:/run/x.sock");
  REQUIRE(x);
  CHECK(x->transport == T::Unix);
  CHECK_FALSE(x->has_cookie());
  CHECK_FALSE(x->datagram());
  auto c = listen("cunix:/run/c.sock");
  REQUIRE(c);
  CHECK(c->has_cookie());
  auto t = listen("tcp:127.0.0.1:9");
  REQUIRE(t);
  CHECK(t->transport == T::Tcp);

  CHECK_FALSE(listen("udp:host.example:1"));
  CHECK_FALSE(listen("udp:1.2.3.4:0"));
  CHECK_FALSE(listen("udp:1.2.3.4:70000"));
  CHECK_FALSE(listen("udp:1.2.3.4:"));
  CHECK_FALSE(listen("udp6:[::1"));
  CHECK_FALSE(listen("unix:relative.sock"));
  CHECK_FALSE(listen("unix:/" + std::string(200, 'a')));
  CHECK_FALSE(listen("sctp:1.2.3.4:5"));
  CHECK_FALSE(listen(""));
}

TEST_CASE("rtpproxy notification targets", "[config][rtpproxy]") {
  std::string error;
  auto t = mp::parse_rtpproxy_notify_target("tcp:127.0.0.1:8000", error);
  REQUIRE(t);
  CHECK_FALSE(t->unix_socket);
  CHECK(t->address == "127.0.0.1");
  CHECK(t->port == 8000);
  auto u = mp::parse_rtpproxy_notify_target("unix:/run/k.sock", error);
  REQUIRE(u);
  CHECK(u->unix_socket);
  CHECK(mp::parse_rtpproxy_notify_target("tcp:[::1]:8000", error));
  CHECK_FALSE(mp::parse_rtpproxy_notify_target("tcp:127.0.0.1", error));
  CHECK_FALSE(mp::parse_rtpproxy_notify_target("udp:127.0.0.1:8000", error));
  CHECK_FALSE(mp::parse_rtpproxy_notify_target("http://x", error));
}

TEST_CASE("[Rtpproxy] section in the INI file", "[config][rtpproxy]") {
  mp::Config cfg;
  std::string error;
  CHECK(cfg.rtpproxy.listen.empty());
  CHECK(cfg.rtpproxy.notify_policy == mp::RtpproxyConfig::NotifyPolicy::Local);
  REQUIRE(
      mp::load_config_text("[Rtpproxy]\nlisten = udp:127.0.0.1:22222, unix:/tmp/r.sock\n"
                           "notify_targets = tcp:127.0.0.1:8000, unix:/tmp/n.sock\n"
                           "retransmit_cache = 10\n",
                           "t.ini", cfg, error));
  REQUIRE(cfg.rtpproxy.listen.size() == 2);
  CHECK(cfg.rtpproxy.listen[1].transport == T::Unix);
  CHECK(cfg.rtpproxy.notify_policy == mp::RtpproxyConfig::NotifyPolicy::List);
  CHECK(cfg.rtpproxy.notify_targets.size() == 2);
  CHECK(cfg.rtpproxy.retransmit_cache == 10);

  mp::Config bad;
  CHECK_FALSE(mp::load_config_text("[Rtpproxy]\nlisten = udp:nowhere\n", "t.ini", bad, error));
  CHECK(error.rfind("t.ini:2:", 0) == 0);
  CHECK_FALSE(
      mp::load_config_text("[Rtpproxy]\nnotify_targets = udp:1.2.3.4:5\n", "t.ini", bad, error));
  mp::Config none;
  REQUIRE(mp::load_config_text("[Rtpproxy]\nnotify_targets = none\n", "t.ini", none, error));
  CHECK(none.rtpproxy.notify_policy == mp::RtpproxyConfig::NotifyPolicy::None);
}
