// Unit tests for the module reply line (protocol/reply.h, spec A.6): the
// "<ip> <port>..." form, the keywords removed / error / None, and garbage.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "protocol/reply.h"

using namespace mp;
using namespace mp::protocol;

namespace {
Ipv4 ip(const char* text) {
  return *parse_ipv4(text);
}
}  // namespace

TEST_CASE("format_ports_reply", "[reply]") {
  CHECK(format_ports_reply(ip("192.0.2.5"), {40002, 40006}) == "192.0.2.5 40002 40006");
  CHECK(format_ports_reply(ip("192.0.2.5"), {40000, 0}) == "192.0.2.5 40000 0");
  CHECK(format_ports_reply(ip("192.0.2.5"), {65535}) == "192.0.2.5 65535");
  CHECK(format_ports_reply(ip("192.0.2.5"), {}) == "192.0.2.5");
}

TEST_CASE("keyword constants", "[reply]") {
  CHECK(kReplyRemoved == "removed");
  CHECK(kReplyError == "error");
  CHECK(kReplyNone == "None");
  CHECK(kReplyHalting == "halting");
}

TEST_CASE("parse_module_reply: ports", "[reply]") {
  auto r = parse_module_reply("192.0.2.5 40002 40006");
  REQUIRE(r);
  CHECK(r->kind == ModuleReply::Kind::Ports);
  CHECK(r->ip == ip("192.0.2.5"));
  CHECK(r->ports == std::vector<uint16_t>{40002, 40006});

  auto answer = parse_module_reply("192.0.2.5 40000 0");
  REQUIRE(answer);
  CHECK(answer->ports == std::vector<uint16_t>{40000, 0});

  auto single = parse_module_reply("192.0.2.5 1 2");
  REQUIRE(single);
  CHECK(single->ports.size() == 2);

  auto bare_ip = parse_module_reply("192.0.2.5");
  REQUIRE(bare_ip);
  CHECK(bare_ip->kind == ModuleReply::Kind::Ports);
  CHECK(bare_ip->ports.empty());
}

TEST_CASE("parse_module_reply: keywords", "[reply]") {
  auto removed = parse_module_reply("removed");
  REQUIRE(removed);
  CHECK(removed->kind == ModuleReply::Kind::Removed);
  auto error = parse_module_reply("error");
  REQUIRE(error);
  CHECK(error->kind == ModuleReply::Kind::Error);
  auto none = parse_module_reply("None");
  REQUIRE(none);
  CHECK(none->kind == ModuleReply::Kind::None);
  CHECK(none->ports.empty());
}

TEST_CASE("parse_module_reply: blanks are separators, as in the module", "[reply]") {
  auto r = parse_module_reply("  192.0.2.5\t40002   40006 ");
  REQUIRE(r);
  CHECK(r->ports == std::vector<uint16_t>{40002, 40006});
  auto e = parse_module_reply(" error ");
  REQUIRE(e);
  CHECK(e->kind == ModuleReply::Kind::Error);
}

TEST_CASE("parse_module_reply: garbage", "[reply]") {
  const char* bad[] = {"",
                       "   ",
                       "Error",
                       "none",
                       "REMOVED",
                       "halting",  // relay-only payload, never sent to the module
                       "error extra",
                       "removed 1",
                       "None 1",
                       "192.0.2 40000",
                       "192.0.2.5 65536",
                       "192.0.2.5 -1",
                       "192.0.2.5 40000 x",
                       "192.0.2.5 40000/1",
                       "192.0.2.5,40000",
                       "40000 192.0.2.5",
                       "{\"call_id\": \"x\"}",
                       "\xff\xfe"};
  for (const char* text : bad) {
    INFO("reply: " << text);
    CHECK_FALSE(parse_module_reply(text));
  }
}

TEST_CASE("format / parse round-trip", "[reply]") {
  std::vector<uint16_t> ports;
  for (uint16_t p = 0; p < 32; ++p) ports.push_back(static_cast<uint16_t>(40000 + 2 * p));
  auto r = parse_module_reply(format_ports_reply(ip("203.0.113.1"), ports));
  REQUIRE(r);
  CHECK(r->kind == ModuleReply::Kind::Ports);
  CHECK(r->ip == ip("203.0.113.1"));
  CHECK(r->ports == ports);
}

TEST_CASE("update replies carry an IPv6 relay address as plain text", "[reply]") {
  const auto v6 = *mp::parse_ip("2001:db8::7");
  CHECK(mp::protocol::format_ports_reply(v6, {30000, 0}) == "2001:db8::7 30000 0");
  auto r = mp::protocol::parse_module_reply("2001:db8::7 30000 0");
  REQUIRE(r);
  CHECK(r->ip == v6);
  CHECK(r->ports == std::vector<uint16_t>{30000, 0});
  CHECK_FALSE(mp::protocol::parse_module_reply("[2001:db8::7] 30000"));
}
