// Unit tests for the rtpproxy control protocol codec (protocol/rtpproxy_command.h):
// the exact lines Kamailio 5.6's rtpproxy module sends, every verb and
// modifier, every argument count rtpproxy accepts or refuses, each malformed
// input mapped to the E<n> code rtpproxy answers, byte-exact identifiers,
// the size limits, cookie splitting, URL unquoting, the VF capability table
// and the reply formats of U/L, Q, I and G.
#include <catch2/catch.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/rtpproxy_command.h"

using namespace mp::protocol;

namespace {

// The input, printable, for INFO().
std::string shown(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c >= 0x7f) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += ch;
    }
  }
  return out.size() > 300 ? out.substr(0, 300) + "..." : out;
}

void check_reason(const std::string& reason) {
  INFO("reason: " << shown(reason));
  CHECK_FALSE(reason.empty());
  CHECK(reason.size() <= 200);
  for (char ch : reason) {
    const auto c = static_cast<unsigned char>(ch);
    CHECK((c >= 0x20 && c < 0x7f));
  }
}

RtpproxyCommand parse_ok(std::string_view text) {
  RtpproxyParseError error;
  auto cmd = parse_rtpproxy_command(text, error);
  INFO("command: " << shown(text) << " -> E" << error.code << " " << error.reason);
  REQUIRE(cmd);
  return *cmd;
}

// The E<n> code the command is answered with; the reason must be loggable.
int parse_error(std::string_view text) {
  RtpproxyParseError error;
  auto cmd = parse_rtpproxy_command(text, error);
  INFO("command: " << shown(text));
  REQUIRE_FALSE(cmd);
  check_reason(error.reason);
  return error.code;
}

RtpproxyTag tag(const char* text, unsigned n = 0) {
  return RtpproxyTag{text, n};
}

}  // namespace

TEST_CASE("Kamailio 5.6 rtpproxy module commands", "[rtpproxy]") {
  SECTION("offer with codec list, no to-tag") {
    auto c = parse_ok("Uc8,101 1-2@10.0.0.1 10.200.1.2 6000 14271SIPpTag091;1");
    CHECK(c.verb == RtpproxyVerb::Update);
    CHECK(c.letters == "Uc8,101");
    CHECK(c.modifiers.codecs == std::vector<unsigned>{8, 101});
    CHECK(c.call_id == "1-2@10.0.0.1");
    CHECK(c.address == "10.200.1.2");
    CHECK(c.port == 6000);
    CHECK(c.from_tag == tag("14271SIPpTag091", 1));
    CHECK_FALSE(c.to_tag);
    CHECK(c.notify_socket.empty());
    CHECK(c.notify_tag.empty());
    CHECK_FALSE(c.modifiers.ipv6);
  }
  SECTION("answer") {
    auto c = parse_ok("Lc0,8,101 1-2@x 10.200.2.2 6002 ftag;1 ttag;1");
    CHECK(c.verb == RtpproxyVerb::Lookup);
    CHECK(c.modifiers.codecs == std::vector<unsigned>{0, 8, 101});
    CHECK(c.call_id == "1-2@x");
    CHECK(c.address == "10.200.2.2");
    CHECK(c.port == 6002);
    CHECK(c.from_tag == tag("ftag", 1));
    REQUIRE(c.to_tag);
    CHECK(*c.to_tag == tag("ttag", 1));
  }
  SECTION("delete with and without to-tag") {
    auto c = parse_ok("D 1-2@x ftag ttag");
    CHECK(c.verb == RtpproxyVerb::Delete);
    CHECK(c.call_id == "1-2@x");
    CHECK(c.from_tag == tag("ftag"));
    REQUIRE(c.to_tag);
    CHECK(*c.to_tag == tag("ttag"));
    c = parse_ok("D 1-2@x ftag");
    CHECK(c.from_tag == tag("ftag"));
    CHECK_FALSE(c.to_tag);
    // Via-branch / extra id appended to the call-id with ';' stays in it.
    c = parse_ok("D 1-2@x;z9hG4bK776asdhds ftag");
    CHECK(c.call_id == "1-2@x;z9hG4bK776asdhds");
  }
  SECTION("version probes") {
    auto c = parse_ok("V");
    CHECK(c.verb == RtpproxyVerb::Version);
    c = parse_ok("VF 20050322");
    CHECK(c.verb == RtpproxyVerb::VersionFeature);
    CHECK(c.feature == "20050322");
    CHECK(parse_ok("VF 20071116").feature == "20071116");
    CHECK(parse_ok("VF 20081102").feature == "20081102");
  }
  SECTION("IPv6 offer") {
    auto c = parse_ok("U6 cid fd00::2 6000 ftag;1");
    CHECK(c.modifiers.ipv6);
    CHECK(c.address == "fd00::2");
    CHECK(c.port == 6000);
    CHECK(c.from_tag == tag("ftag", 1));
  }
  SECTION("bridging flags") {
    auto c = parse_ok("UIE cid 1.2.3.4 5 f;1");
    CHECK(c.modifiers.bridge == "ie");
    CHECK(c.modifiers.internal);
    CHECK(c.modifiers.external);
    CHECK(parse_ok("UEI cid 1.2.3.4 5 f;1").modifiers.bridge == "ei");
    // Kamailio's 'x' flag on an IPv6 stream: "EI" then '6'.
    c = parse_ok("UEI6 cid fd00::1 5 f;1");
    CHECK(c.modifiers.bridge == "ei");
    CHECK(c.modifiers.ipv6);
  }
  SECTION("timeout notification, without and with to-tag") {
    auto c = parse_ok("U cid 1.2.3.4 5000 ftag;1 tcp:127.0.0.1:8000 tag%20x");
    CHECK(c.from_tag == tag("ftag", 1));
    CHECK_FALSE(c.to_tag);
    CHECK(c.notify_socket == "tcp:127.0.0.1:8000");
    CHECK(c.notify_tag == "tag x");
    c = parse_ok("U cid 1.2.3.4 5000 ftag;1 ttag;1 unix:/run/k.sock tag%20x");
    REQUIRE(c.to_tag);
    CHECK(*c.to_tag == tag("ttag", 1));
    CHECK(c.notify_socket == "unix:/run/k.sock");
    CHECK(c.notify_tag == "tag x");
  }
  SECTION("all of force_rtp_proxy's letters in one token") {
    // 'a' -> A, 'w' -> S, 'z20' -> Z20, then the codec list (rtpproxy.c).
    auto c = parse_ok("UASZ20c0,8,101 cid 192.0.2.1 49170 f;2 t;2");
    CHECK_FALSE(c.modifiers.asymmetric);  // S came after A: the last one wins
    CHECK(c.modifiers.symmetric);
    CHECK(c.modifiers.repacketize_ms == 20);
    CHECK(c.modifiers.codecs == std::vector<unsigned>{0, 8, 101});
    CHECK(c.from_tag == tag("f", 2));
    CHECK(*c.to_tag == tag("t", 2));
  }
  SECTION("query, with to-tag and with the trailing space Kamailio leaves") {
    auto c = parse_ok("Q cid ftag;1 ttag;1");
    CHECK(c.verb == RtpproxyVerb::Query);
    CHECK(c.from_tag == tag("ftag", 1));
    CHECK(*c.to_tag == tag("ttag", 1));
    CHECK(c.stats_names.empty());
    c = parse_ok("Q cid ftag;1 ");
    CHECK_FALSE(c.to_tag);
  }
  SECTION("record") {
    auto c = parse_ok("R cid ftag ttag");
    CHECK(c.verb == RtpproxyVerb::Record);
    CHECK(c.call_id == "cid");
    CHECK(*c.to_tag == tag("ttag"));
  }
  SECTION("line endings") {
    CHECK(parse_ok("V\n").verb == RtpproxyVerb::Version);
    CHECK(parse_ok("V\r\n").verb == RtpproxyVerb::Version);
    CHECK(parse_ok("D 1-2@x ftag\r\n").from_tag == tag("ftag"));
  }
}

TEST_CASE("rtpproxy verbs are case-insensitive and all recognised", "[rtpproxy]") {
  CHECK(parse_ok("u cid 1.2.3.4 5 f").verb == RtpproxyVerb::Update);
  CHECK(parse_ok("l cid 1.2.3.4 5 f t").verb == RtpproxyVerb::Lookup);
  CHECK(parse_ok("d cid f").verb == RtpproxyVerb::Delete);
  CHECK(parse_ok("q cid f t").verb == RtpproxyVerb::Query);
  CHECK(parse_ok("v").verb == RtpproxyVerb::Version);
  CHECK(parse_ok("vf 20040107").verb == RtpproxyVerb::VersionFeature);
  CHECK(parse_ok("vF 20040107").verb == RtpproxyVerb::VersionFeature);
  CHECK(parse_ok("Vf 20040107").verb == RtpproxyVerb::VersionFeature);
  CHECK(parse_ok("i").verb == RtpproxyVerb::Info);
  CHECK(parse_ok("I").verb == RtpproxyVerb::Info);
  CHECK(parse_ok("g").verb == RtpproxyVerb::Stats);
  CHECK(parse_ok("G").verb == RtpproxyVerb::Stats);
  CHECK(parse_ok("x").verb == RtpproxyVerb::DeleteAll);
  CHECK(parse_ok("X").verb == RtpproxyVerb::DeleteAll);

  auto p = parse_ok("P cid prompt session f t");
  CHECK(p.verb == RtpproxyVerb::Play);
  CHECK(p.call_id == "cid");
  CHECK(p.from_tag == tag("f"));
  CHECK(*p.to_tag == tag("t"));
  CHECK(parse_ok("p3 cid prompt 0,8 f").verb == RtpproxyVerb::Play);
  auto s = parse_ok("S cid f");
  CHECK(s.verb == RtpproxyVerb::StopPlay);
  CHECK(s.from_tag == tag("f"));
  CHECK_FALSE(s.to_tag);
  auto r = parse_ok("r cid f;1 t;1");
  CHECK(r.verb == RtpproxyVerb::Record);
  CHECK(r.from_tag == tag("f", 1));
  CHECK(parse_ok("Rs cid f").verb == RtpproxyVerb::Record);
  auto c = parse_ok("C cid /tmp/rec f t");
  CHECK(c.verb == RtpproxyVerb::Copy);
  CHECK(c.call_id == "cid");
  CHECK(c.from_tag == tag("f"));
  CHECK(*c.to_tag == tag("t"));
  CHECK(parse_ok("Csp cid udp:1.2.3.4:5 f").verb == RtpproxyVerb::Copy);
  auto n = parse_ok("N cid f t");
  CHECK(n.verb == RtpproxyVerb::NoRecord);
  CHECK(parse_ok("Na cid f").verb == RtpproxyVerb::NoRecord);
  CHECK(parse_ok("nA cid f").verb == RtpproxyVerb::NoRecord);
}

TEST_CASE("rtpproxy unknown commands answer E0", "[rtpproxy]") {
  CHECK(parse_error("Z") == rtpp_error::kUnknownCommand);
  CHECK(parse_error("Hello world") == rtpp_error::kUnknownCommand);
  CHECK(parse_error("7 cid") == rtpp_error::kUnknownCommand);
  CHECK(parse_error("\x80\xff\x01 cid") == rtpp_error::kUnknownCommand);
  CHECK(parse_error(std::string(1000, '\x1b')) == rtpp_error::kUnknownCommand);
}

TEST_CASE("rtpproxy U/L modifiers", "[rtpproxy]") {
  const auto mods = [](const std::string& letters) {
    return parse_ok(letters + " cid 1.2.3.4 5 f").modifiers;
  };
  CHECK(mods("U") == RtpproxyModifiers{});
  CHECK(mods("Ua").asymmetric);
  CHECK(mods("UA").asymmetric);
  CHECK(mods("Us").symmetric);
  CHECK_FALSE(mods("Uas").asymmetric);
  CHECK(mods("Usa").asymmetric);
  CHECK_FALSE(mods("Usa").symmetric);
  CHECK(mods("Uw").weak);
  CHECK(mods("UW").weak);
  CHECK(mods("Ui").bridge == "i");
  CHECK(mods("Ui").internal);
  CHECK_FALSE(mods("Ui").external);
  CHECK(mods("Ue").bridge == "e");
  CHECK(mods("Ue").external);
  CHECK(mods("Uii").bridge == "ii");
  CHECK(mods("U4").ipv4);
  CHECK(mods("Un").new_port);
  CHECK(mods("UN").new_port);
  CHECK(mods("Uz20").repacketize_ms == 20);
  CHECK(mods("UZ30").repacketize_ms == 30);
  CHECK(mods("Uz1").repacketize_ms == 1);
  CHECK(mods("Uz999").repacketize_ms == 999);
  CHECK(mods("Uz10z20").repacketize_ms == 20);
  CHECK(mods("Uc0").codecs == std::vector<unsigned>{0});
  CHECK(mods("UC18,4,127").codecs == std::vector<unsigned>{18, 4, 127});
  CHECK(mods("Uc0,8z20a").codecs == std::vector<unsigned>{0, 8});
  CHECK(mods("Uc0,8z20a").repacketize_ms == 20);
  CHECK(mods("Uc0,8z20a").asymmetric);
  {
    std::string list = "Uc0";
    for (int i = 1; i < 64; ++i) list += "," + std::to_string(i);
    CHECK(mods(list).codecs.size() == 64);
    CHECK(parse_error(list + ",64 cid 1.2.3.4 5 f") == rtpp_error::kBadCodecs);
  }
  // l<addr> / r<addr>: digits and dots, or [IPv6]; the next letter follows.
  CHECK(mods("Ul192.0.2.1").local_address == "192.0.2.1");
  CHECK(mods("UL192.0.2.1a").local_address == "192.0.2.1");
  CHECK(mods("UL192.0.2.1a").asymmetric);
  CHECK(mods("Ul[2001:db8::1]c8").local_address == "2001:db8::1");
  CHECK(mods("Ul[2001:db8::1]c8").codecs == std::vector<unsigned>{8});
  CHECK(mods("Ur198.51.100.7").remote_address == "198.51.100.7");
  CHECK(mods("UR[::1]w").remote_address == "::1");
  CHECK(mods("UR[::1]w").weak);
  CHECK(mods("Ul1.1.1.1l2.2.2.2").local_address == "2.2.2.2");
  // 4 and 6 override each other.
  CHECK_FALSE(parse_ok("U46 cid ::1 5 f").modifiers.ipv4);
  CHECK(parse_ok("U46 cid ::1 5 f").modifiers.ipv6);
  CHECK_FALSE(parse_ok("U64 cid 1.2.3.4 5 f").modifiers.ipv6);
  // L takes the same letters.
  auto l = parse_ok("LAc8n cid 1.2.3.4 5 f t");
  CHECK(l.modifiers.asymmetric);
  CHECK(l.modifiers.new_port);
  CHECK(l.modifiers.codecs == std::vector<unsigned>{8});
}

TEST_CASE("rtpproxy U/L modifier errors use rtpproxy's codes", "[rtpproxy]") {
  const auto code = [](const std::string& letters) {
    return parse_error(letters + " cid 1.2.3.4 5 f");
  };
  CHECK(code("Ux") == rtpp_error::kUnknownModifier);
  CHECK(code("Ub") == rtpp_error::kUnknownModifier);
  CHECK(code("U-") == rtpp_error::kUnknownModifier);
  CHECK(code("U\x01") == rtpp_error::kUnknownModifier);
  CHECK(code("Lv") == rtpp_error::kUnknownModifier);
  // A third i/e letter: the code names the letter that overflowed.
  CHECK(code("Uiie") == rtpp_error::kBridgeExternal);
  CHECK(code("Ueei") == rtpp_error::kBridgeInternal);
  CHECK(code("Uz") == rtpp_error::kBadPtime);
  CHECK(code("Uz0") == rtpp_error::kBadPtime);
  CHECK(code("Uz1000") == rtpp_error::kBadPtime);
  CHECK(code("Uz99999999999999999999") == rtpp_error::kBadPtime);
  CHECK(code("Uz+20") == rtpp_error::kBadPtime);
  CHECK(code("Uz-20") == rtpp_error::kBadPtime);
  CHECK(code("Uc") == rtpp_error::kBadCodecs);
  CHECK(code("Uca") == rtpp_error::kBadCodecs);
  CHECK(code("Uc8c0") == rtpp_error::kBadCodecs);
  CHECK(code("Uc128") == rtpp_error::kBadCodecs);
  CHECK(code("Uc8,,0") == rtpp_error::kBadCodecs);
  CHECK(code("Uc,8") == rtpp_error::kBadCodecs);
  CHECK(code("Uc8,") == rtpp_error::kBadCodecs);
  CHECK(code("Uc99999999999999999999") == rtpp_error::kBadCodecs);
  CHECK(code("Ul") == rtpp_error::kBadLocalModifier);
  CHECK(code("Ula") == rtpp_error::kBadLocalModifier);
  CHECK(code("Ul[") == rtpp_error::kBadLocalModifier);
  CHECK(code("Ul[]") == rtpp_error::kBadLocalModifier);
  CHECK(code("Ul[::1") == rtpp_error::kBadLocalModifier);
  CHECK(code("Ul[::ffff:1.2.3.4]") == rtpp_error::kBadLocalModifier);
  CHECK(code("Ul{") == rtpp_error::kBadLocalModifier);
  CHECK(code("Ul{}") == rtpp_error::kBadLocalModifier);
  CHECK(code("Ul{lan}") == rtpp_error::kBadArgument);  // rtpproxy: label not found
  CHECK(code("Ul1.2.3") == rtpp_error::kBadArgument);
  CHECK(code("Ul1.2.3.4.5") == rtpp_error::kBadArgument);
  CHECK(code("Ul[1::2::3]") == rtpp_error::kBadArgument);
  CHECK(code("Ur") == rtpp_error::kBadRemoteModifier);
  CHECK(code("Ur[1") == rtpp_error::kBadRemoteModifier);
  CHECK(code("Ur300.1.1.1") == rtpp_error::kBadRemoteAddress);
  CHECK(code("Ur[:::]") == rtpp_error::kBadRemoteAddress);
  // The first faulty letter decides.
  CHECK(code("Uz0x") == rtpp_error::kBadPtime);
  CHECK(code("Uxz0") == rtpp_error::kUnknownModifier);
}

TEST_CASE("rtpproxy argument counts", "[rtpproxy]") {
  // U: 5, 6, 7 or 8 tokens counting the command.
  CHECK(parse_error("U cid 1.2.3.4 5") == rtpp_error::kWrongArgCount);
  CHECK(parse_error("U cid 1.2.3.4") == rtpp_error::kWrongArgCount);
  CHECK(parse_error("U") == rtpp_error::kWrongArgCount);
  CHECK(parse_error("U cid 1.2.3.4 5 f t sock tag extra") == rtpp_error::kWrongArgCount);
  // L: 5 or 6.
  CHECK_FALSE(parse_ok("L cid 1.2.3.4 5 f").to_tag);
  CHECK(parse_error("L cid 1.2.3.4 5 f t sock") == rtpp_error::kWrongArgCount);
  CHECK(parse_error("L cid 1.2.3.4 5 f t sock tag") == rtpp_error::kWrongArgCount);
  CHECK(parse_error("L cid 1.2.3.4 5") == rtpp_error::kWrongArgCount);
  // D: 3 or 4.
  CHECK(parse_error("D cid") == rtpp_error::kWrongArgCount);
  CHECK(parse_error("D") == rtpp_error::kWrongArgCount);
  CHECK(parse_error("D cid f t x") == rtpp_error::kWrongArgCount);
  // Q: 3 up to 4 + 11 counter names.
  CHECK(parse_error("Q cid") == rtpp_error::kWrongArgCount);
  {
    std::string q = "Q cid f t";
    for (int i = 0; i < 11; ++i) q += " ttl";
    CHECK(parse_ok(q).stats_names.size() == 11);
    CHECK(parse_error(q + " ttl") == rtpp_error::kWrongArgCount);
  }
  // V, X, I: the command alone. VF: exactly one feature.
  CHECK(parse_error("V 20040107") == rtpp_error::kWrongArgCount);
  CHECK(parse_error("X all") == rtpp_error::kWrongArgCount);
  CHECK(parse_error("I b") == rtpp_error::kWrongArgCount);
  CHECK(parse_error("VF") == rtpp_error::kWrongArgCount);
  CHECK(parse_error("VF 20040107 20050322") == rtpp_error::kWrongArgCount);
  // P: 5 or 6; R, S, N: 3 or 4; C: 4 or 5.
  CHECK(parse_error("P cid prompt f") == rtpp_error::kWrongArgCount);
  CHECK(parse_error("P cid prompt codecs f t x") == rtpp_error::kWrongArgCount);
  CHECK(parse_error("R cid") == rtpp_error::kWrongArgCount);
  CHECK(parse_error("R cid f t x") == rtpp_error::kWrongArgCount);
  CHECK(parse_error("S cid") == rtpp_error::kWrongArgCount);
  CHECK(parse_error("N cid f t x") == rtpp_error::kWrongArgCount);
  CHECK(parse_error("C cid f") == rtpp_error::kWrongArgCount);
  CHECK(parse_error("C cid name f t x") == rtpp_error::kWrongArgCount);
  // The count is checked before the modifiers and the arguments.
  CHECK(parse_error("Ux cid 1.2.3.4") == rtpp_error::kWrongArgCount);
  CHECK(parse_error("Vx 1") == rtpp_error::kWrongArgCount);
}

TEST_CASE("rtpproxy modifiers of the other verbs", "[rtpproxy]") {
  // Verbs without modifiers: E2.
  CHECK(parse_error("Vx") == rtpp_error::kBadModifiers);
  CHECK(parse_error("VFx 20040107") == rtpp_error::kBadModifiers);
  CHECK(parse_error("VFF 20040107") == rtpp_error::kBadModifiers);
  CHECK(parse_error("Xa") == rtpp_error::kBadModifiers);
  CHECK(parse_error("Sa cid f") == rtpp_error::kBadModifiers);
  // D[w].
  CHECK(parse_ok("Dw cid f").modifiers.weak);
  CHECK(parse_ok("DW cid f").modifiers.weak);
  CHECK_FALSE(parse_ok("D cid f").modifiers.weak);
  CHECK(parse_error("Dx cid f") == rtpp_error::kDeleteModifiers);
  CHECK(parse_error("Dwa cid f") == rtpp_error::kDeleteModifiers);
  // Q[v].
  CHECK(parse_ok("Qv cid f t").verbose);
  CHECK(parse_ok("QV cid f").verbose);
  CHECK_FALSE(parse_ok("Q cid f").verbose);
  CHECK(parse_error("Qx cid f t") == rtpp_error::kQueryModifiers);
  // I[b][l]: verbose unless b.
  auto i = parse_ok("I");
  CHECK(i.verbose);
  CHECK_FALSE(i.load);
  CHECK_FALSE(parse_ok("Ib").verbose);
  CHECK_FALSE(parse_ok("IB").verbose);
  CHECK(parse_ok("Il").load);
  CHECK(parse_ok("IbL").load);
  CHECK(parse_error("Ix") == rtpp_error::kInfoModifiers);
  // G[v].
  CHECK(parse_ok("Gv").verbose);
  CHECK_FALSE(parse_ok("G").verbose);
  CHECK(parse_error("Gx nsess_created") == rtpp_error::kStatsModifiers);
  // P<count>.
  CHECK(parse_ok("P12 cid prompt session f").verb == RtpproxyVerb::Play);
  CHECK(parse_error("Px cid prompt session f") == rtpp_error::kPlayModifiers);
  CHECK(parse_error("P1x cid prompt session f") == rtpp_error::kPlayModifiers);
  // R[s], C[s][p], N[a].
  CHECK(parse_error("Rp cid f") == rtpp_error::kModifierMisplaced);
  CHECK(parse_error("Rx cid f") == rtpp_error::kRecordModifiers);
  CHECK(parse_error("Cx cid name f") == rtpp_error::kRecordModifiers);
  CHECK(parse_error("Nab cid f") == rtpp_error::kModifierMisplaced);
  CHECK(parse_error("Nx cid f") == rtpp_error::kRecordModifiers);
}

TEST_CASE("rtpproxy Q and G counter names", "[rtpproxy]") {
  auto q = parse_ok("Qv cid f;1 t;1 ttl nrelayed rtpa_jmax");
  CHECK(q.stats_names == std::vector<std::string>{"ttl", "nrelayed", "rtpa_jmax"});
  // Unknown names parse: rtpproxy checks them after finding the session.
  CHECK(parse_ok("Q cid f t bogus").stats_names == std::vector<std::string>{"bogus"});
  auto g = parse_ok("G nsess_created npkts_rcvd");
  CHECK(g.stats_names == std::vector<std::string>{"nsess_created", "npkts_rcvd"});
  CHECK(parse_ok("G").stats_names.empty());
  // 22 names fill the 23-token limit; one more is E5 (rtpproxy's RTPC_MAX_ARGC).
  std::string many = "G";
  for (int i = 0; i < 22; ++i) many += " nsess_created";
  CHECK(parse_ok(many).stats_names.size() == 22);
  CHECK(parse_error(many + " nsess_created") == rtpp_error::kSyntax);
}

TEST_CASE("rtpproxy U/L address and port", "[rtpproxy]") {
  CHECK(parse_ok("U cid 0.0.0.0 0 f").port == 0);  // on hold / disabled stream
  CHECK(parse_ok("U cid 255.255.255.255 65535 f").port == 65535);
  CHECK(parse_ok("U cid 1.2.3.4 0080 f").port == 80);
  CHECK(parse_ok("U6 cid :: 0 f").address == "::");
  CHECK(parse_ok("U6 cid ::1 5 f").address == "::1");
  CHECK(parse_ok("U6 cid 2001:db8:0:0:0:0:0:1 5 f").address == "2001:db8:0:0:0:0:0:1");
  CHECK(parse_ok("U6 cid ::ffff:192.0.2.1 5 f").address == "::ffff:192.0.2.1");
  CHECK(parse_ok("U6 cid 1:: 5 f").address == "1::");
  CHECK(parse_ok("L6 cid FD00::ABCD 5 f t").address == "FD00::ABCD");

  const auto code = [](const std::string& text) { return parse_error(text); };
  CHECK(code("U cid 1.2.3.4 65536 f") == rtpp_error::kBadAddress);
  CHECK(code("U cid 1.2.3.4 -1 f") == rtpp_error::kBadAddress);
  CHECK(code("U cid 1.2.3.4 +5 f") == rtpp_error::kBadAddress);
  CHECK(code("U cid 1.2.3.4 http f") == rtpp_error::kBadAddress);
  CHECK(code("U cid 1.2.3.4 99999999999999999999 f") == rtpp_error::kBadAddress);
  CHECK(code("U cid 1.2.3 5 f") == rtpp_error::kBadAddress);
  CHECK(code("U cid 1.2.3.256 5 f") == rtpp_error::kBadAddress);
  CHECK(code("U cid host.example.com 5 f") == rtpp_error::kBadAddress);
  CHECK(code("U cid fd00::2 5 f") == rtpp_error::kBadAddress);  // IPv6 needs '6'
  CHECK(code("U cid ::1 5 f") == rtpp_error::kBadAddress);
  CHECK(code("U6 cid 1.2.3.4 5 f") == rtpp_error::kBadAddress);
  CHECK(code("U6 cid [fd00::2] 5 f") == rtpp_error::kBadAddress);
  CHECK(code("U6 cid fe80::1%eth0 5 f") == rtpp_error::kBadAddress);
  CHECK(code("U6 cid 1:2:3:4:5:6:7 5 f") == rtpp_error::kBadAddress);
  CHECK(code("U6 cid 1:2:3:4:5:6:7:8:9 5 f") == rtpp_error::kBadAddress);
  CHECK(code("U6 cid ::1:2:3:4:5:6:7:8 5 f") == rtpp_error::kBadAddress);
  CHECK(code("U6 cid 1::2::3 5 f") == rtpp_error::kBadAddress);
  CHECK(code("U6 cid :1 5 f") == rtpp_error::kBadAddress);
  CHECK(code("U6 cid 1: 5 f") == rtpp_error::kBadAddress);
  CHECK(code("U6 cid 12345::1 5 f") == rtpp_error::kBadAddress);
  CHECK(code("U6 cid ::1.2.3.4:1 5 f") == rtpp_error::kBadAddress);
  CHECK(code("U6 cid g::1 5 f") == rtpp_error::kBadAddress);
  CHECK(code("L cid 1.2.3.4 port f t") == rtpp_error::kBadAddress);
  // Modifiers are checked before the address.
  CHECK(code("Ux cid nonsense 5 f") == rtpp_error::kUnknownModifier);
}

TEST_CASE("rtpproxy tags and media numbers", "[rtpproxy]") {
  CHECK(parse_ok("U cid 1.2.3.4 5 f;1000").from_tag == tag("f", 1000));
  CHECK(parse_ok("U cid 1.2.3.4 5 f;007").from_tag == tag("f", 7));
  CHECK(parse_ok("U cid 1.2.3.4 5 a;b;2").from_tag == tag("a;b", 2));
  CHECK(parse_ok("L cid 1.2.3.4 5 f t;3").to_tag == tag("t", 3));
  CHECK(parse_ok("D cid f;2 t;2").from_tag == tag("f", 2));
  CHECK(parse_ok("Q cid f;2 t;2").to_tag == tag("t", 2));

  CHECK(parse_error("U cid 1.2.3.4 5 f;0") == rtpp_error::kBadArgument);
  CHECK(parse_error("U cid 1.2.3.4 5 f;1001") == rtpp_error::kBadArgument);
  CHECK(parse_error("U cid 1.2.3.4 5 f;") == rtpp_error::kBadArgument);
  CHECK(parse_error("U cid 1.2.3.4 5 f;x") == rtpp_error::kBadArgument);
  CHECK(parse_error("U cid 1.2.3.4 5 f;-1") == rtpp_error::kBadArgument);
  CHECK(parse_error("U cid 1.2.3.4 5 ;1") == rtpp_error::kBadArgument);
  CHECK(parse_error("U cid 1.2.3.4 5 a;b") == rtpp_error::kBadArgument);
  CHECK(parse_error("U cid 1.2.3.4 5 f;1 t;99999999999") == rtpp_error::kBadArgument);
  CHECK(parse_error("D cid f t;0") == rtpp_error::kBadArgument);
  // The address is checked before the tags.
  CHECK(parse_error("U cid 1.2.3 5 f;0") == rtpp_error::kBadAddress);
}

TEST_CASE("rtpproxy notify tag is URL-decoded", "[rtpproxy]") {
  CHECK(parse_ok("U cid 1.2.3.4 5 f sock a+b").notify_tag == "a b");
  CHECK(parse_ok("U cid 1.2.3.4 5 f sock %2B%2b").notify_tag == "++");
  CHECK(parse_ok("U cid 1.2.3.4 5 f sock %00").notify_tag == std::string(1, '\0'));
  CHECK(parse_ok("U cid 1.2.3.4 5 f sock \xff%ff").notify_tag == "\xff\xff");
  CHECK(parse_ok("U cid 1.2.3.4 5 f sock%25 x").notify_socket == "sock%25");  // not decoded
  CHECK(parse_error("U cid 1.2.3.4 5 f sock %zz") == rtpp_error::kBadUrlEncoding);
  CHECK(parse_error("U cid 1.2.3.4 5 f t sock tag%4") == rtpp_error::kBadUrlEncoding);
  CHECK(parse_error("U cid 1.2.3.4 5 f t sock %") == rtpp_error::kBadUrlEncoding);
  // rtpproxy decodes the notify tag before it looks at the modifiers.
  CHECK(parse_error("Ux cid 1.2.3.4 5 f sock %zz") == rtpp_error::kBadUrlEncoding);
}

TEST_CASE("rtpproxy tokenizing", "[rtpproxy]") {
  auto c = parse_ok("  D\tcid \t  ftag\t\tttag  \r\n");
  CHECK(c.call_id == "cid");
  CHECK(c.from_tag == tag("ftag"));
  CHECK(*c.to_tag == tag("ttag"));
  // CR and LF separate tokens anywhere, as in rtpproxy.
  c = parse_ok("D cid\nftag\rttag");
  CHECK(c.from_tag == tag("ftag"));
  CHECK(*c.to_tag == tag("ttag"));

  CHECK(parse_error("") == rtpp_error::kSyntax);
  CHECK(parse_error("   ") == rtpp_error::kSyntax);
  CHECK(parse_error("\r\n") == rtpp_error::kSyntax);
  CHECK(parse_error(std::string_view("D cid f\0x", 9)) == rtpp_error::kSyntax);
  CHECK(parse_error(std::string_view("\0", 1)) == rtpp_error::kSyntax);
  std::string many = "D cid f";
  for (int i = 0; i < 20; ++i) many += " x";
  CHECK(parse_error(many) == rtpp_error::kWrongArgCount);  // 23 tokens
  CHECK(parse_error(many + " x") == rtpp_error::kSyntax);  // 24: rtpproxy's E5 comes before E1

  // "&&" sub-commands: not supported (E3); malformed ones are E5 first.
  CHECK(parse_error("U cid 1.2.3.4 5 f && S") == rtpp_error::kSubcommand);
  CHECK(parse_error("D cid f && G") == rtpp_error::kSubcommand);
  CHECK(parse_error("&& D cid f") == rtpp_error::kSyntax);
  CHECK(parse_error("D cid f &&") == rtpp_error::kSyntax);
  CHECK(parse_error("D cid f && && G") == rtpp_error::kSyntax);
  std::string subs = "V";
  for (int i = 0; i < 15; ++i) subs += " && G";
  CHECK(parse_error(subs) == rtpp_error::kSubcommand);
  CHECK(parse_error(subs + " && G") == rtpp_error::kSyntax);
  CHECK(parse_ok("D cid f&&").from_tag == tag("f&&"));
}

TEST_CASE("rtpproxy identifiers are kept byte-exact", "[rtpproxy]") {
  const std::string call_id = "a\x80\xff;%41+b@\x7f";
  auto c = parse_ok("U " + call_id + " 1.2.3.4 5 \xfe\x80;1 \xc3\xa9;2");
  CHECK(c.call_id == call_id);
  CHECK(c.from_tag == tag("\xfe\x80", 1));
  CHECK(*c.to_tag == tag("\xc3\xa9", 2));
  c = parse_ok("D \xff \x80");
  CHECK(c.call_id == "\xff");
  CHECK(c.from_tag == tag("\x80"));
  c = parse_ok("U cid 1.2.3.4 5 f \x01sock\x7f x");
  CHECK(c.notify_socket == "\x01sock\x7f");
  CHECK(parse_ok("VF \x80\x81").feature == "\x80\x81");
}

TEST_CASE("rtpproxy size limits", "[rtpproxy]") {
  const std::string max_token(kMaxRtpproxyToken, 'c');
  CHECK(parse_ok("D " + max_token + " f").call_id == max_token);
  CHECK(parse_error("D " + max_token + "c f") == rtpp_error::kTooBig);
  CHECK(parse_error("U cid 1.2.3.4 5 f sock " + max_token + "t") == rtpp_error::kTooBig);

  // 4096 bytes of command (leading blanks count), then a CRLF that does not.
  const std::string full = std::string(kMaxRtpproxyCommand - 9, ' ') + "D cid f t";
  REQUIRE(full.size() == kMaxRtpproxyCommand);
  CHECK(parse_ok(full + "\r\n").verb == RtpproxyVerb::Delete);
  CHECK(parse_error(full + "y") == rtpp_error::kTooBig);
  CHECK(parse_error(std::string(100000, 'V')) == rtpp_error::kTooBig);
}

TEST_CASE("rtpproxy error reasons are safe to log", "[rtpproxy]") {
  const std::string nasty =
      std::string("\x1b[31m\r\x00\x80\xff\"\\", 11) + std::string(500, '\x07');
  for (const std::string& text :
       {std::string("Z") + nasty, "U" + nasty + " cid 1.2.3.4 5 f", "U cid " + nasty + " 5 f",
        "U cid 1.2.3.4 " + nasty + " f", "U cid 1.2.3.4 5 f;" + nasty,
        "U cid 1.2.3.4 5 f s %" + nasty, "Vx" + nasty, "D" + nasty + " cid f", "Q" + nasty + " c f",
        "I" + nasty, "G" + nasty, "P" + nasty + " c p s f", "Uc" + nasty + " cid 1.2.3.4 5 f",
        "Ul" + nasty + " cid 1.2.3.4 5 f", "Ul1.2.3.4.5" + nasty + " cid 1.2.3.4 5 f"}) {
    RtpproxyParseError error;
    INFO("command: " << shown(text));
    REQUIRE_FALSE(parse_rtpproxy_command(text, error));
    check_reason(error.reason);
  }
}

TEST_CASE("rtpproxy cookie splitting", "[rtpproxy]") {
  std::string_view cookie, command;
  REQUIRE(split_rtpproxy_cookie("8842_3 V\n", cookie, command));
  CHECK(cookie == "8842_3");
  CHECK(command == "V");
  REQUIRE(split_rtpproxy_cookie("8842_3 Uc8,101 cid 1.2.3.4 5 f;1\r\n", cookie, command));
  CHECK(cookie == "8842_3");
  CHECK(command == "Uc8,101 cid 1.2.3.4 5 f;1");
  REQUIRE(split_rtpproxy_cookie(" \tc1\t  D cid f  \r\n", cookie, command));
  CHECK(cookie == "c1");
  CHECK(command == "D cid f");
  REQUIRE(split_rtpproxy_cookie("\xff\x80 V", cookie, command));
  CHECK(cookie == "\xff\x80");

  // A cookie alone: false, but the cookie is there to answer "<cookie> E5".
  CHECK_FALSE(split_rtpproxy_cookie("8842_3", cookie, command));
  CHECK(cookie == "8842_3");
  CHECK(command.empty());
  CHECK_FALSE(split_rtpproxy_cookie("8842_3 \r\n", cookie, command));
  CHECK(cookie == "8842_3");
  CHECK_FALSE(split_rtpproxy_cookie("", cookie, command));
  CHECK(cookie.empty());
  CHECK_FALSE(split_rtpproxy_cookie(" \r\n", cookie, command));
  CHECK(cookie.empty());

  const std::string max_cookie(kMaxRtpproxyCookie, 'k');
  const std::string fits = max_cookie + " V";
  const std::string too_long = max_cookie + "k V";
  REQUIRE(split_rtpproxy_cookie(fits, cookie, command));
  CHECK(cookie == max_cookie);
  CHECK_FALSE(split_rtpproxy_cookie(too_long, cookie, command));
  CHECK(cookie.empty());
  CHECK(command.empty());
}

TEST_CASE("rtpproxy URL unquoting", "[rtpproxy]") {
  CHECK(rtpproxy_url_unquote("") == "");
  CHECK(rtpproxy_url_unquote("abc") == "abc");
  CHECK(rtpproxy_url_unquote("%41%42c") == "ABc");
  CHECK(rtpproxy_url_unquote("%4a%4A") == "JJ");
  CHECK(rtpproxy_url_unquote("a+b") == "a b");
  CHECK(rtpproxy_url_unquote("%2B") == "+");
  CHECK(rtpproxy_url_unquote("%25") == "%");
  CHECK(rtpproxy_url_unquote("%ff\xfe") == "\xff\xfe");
  CHECK(rtpproxy_url_unquote("%00") == std::string(1, '\0'));
  CHECK_FALSE(rtpproxy_url_unquote("%"));
  CHECK_FALSE(rtpproxy_url_unquote("%4"));
  CHECK_FALSE(rtpproxy_url_unquote("ab%4"));
  CHECK_FALSE(rtpproxy_url_unquote("%g1"));
  CHECK_FALSE(rtpproxy_url_unquote("%1g"));
  CHECK_FALSE(rtpproxy_url_unquote("%\xff\xff"));
  CHECK_FALSE(rtpproxy_url_unquote("ok%zzok"));
}

TEST_CASE("rtpproxy VF capabilities", "[rtpproxy]") {
  for (const char* yes :
       {"20040107", "20050322", "20060704", "20071116", "20081102", "20081224", "20090810"})
    CHECK(rtpproxy_capability_supported(yes));
  for (const char* no : {"20071218", "20080403", "20140323", "20140617", "20141004", "20150330",
                         "20150420", "20150617", "20191015", "20200226", "20230314", "20260306", "",
                         "2004010", "200401070", "20040107 ", "x"})
    CHECK_FALSE(rtpproxy_capability_supported(no));
  CHECK(kRtpproxyCapabilities.front().id == kRtpproxyBaseVersion);
  for (const auto& cap : kRtpproxyCapabilities) {
    CHECK(cap.id.size() == 8);
    CHECK_FALSE(cap.description.empty());
    CHECK(cap.description.find('\n') == std::string_view::npos);
  }
}

TEST_CASE("rtpproxy U/L and error replies", "[rtpproxy]") {
  CHECK(format_rtpproxy_port(40000, "192.0.2.1", 0) == "40000 192.0.2.1");
  CHECK(format_rtpproxy_port(40000, "2001:db8::1", '6') == "40000 2001:db8::1 6");
  CHECK(format_rtpproxy_port(40000, "192.0.2.1", '4') == "40000 192.0.2.1 4");  // a bridge's reply
  CHECK(format_rtpproxy_port(0, "", 0) == "0");  // L for an unknown session
  CHECK(format_rtpproxy_port(65535, "", '6') == "65535");
  CHECK(format_rtpproxy_error(rtpp_error::kSessionUnknown) == "E50");
  CHECK(format_rtpproxy_error(0) == "E0");
  CHECK(format_rtpproxy_error(rtpp_error::kBadUrlEncoding) == "E10");
}

TEST_CASE("rtpproxy Q reply", "[rtpproxy]") {
  RtpproxyQueryFigures f;
  f.ttl = 58;
  f.packets_from_caller = 1500;
  f.packets_from_callee = 1499;
  f.relayed = 2999;
  f.dropped = 3;
  f.longest_ipi = 0.25;
  f.jitter_last = 1.5;
  f.jitter_max = 12.125;
  f.jitter_avg = 2;
  f.rtp_sent = 10;
  f.rtp_received = 9;
  f.rtp_duplicates = 1;
  f.rtp_lost = 2;
  f.rtp_parse_errors = 4;
  CHECK(format_rtpproxy_query(parse_ok("Q cid f t"), f) == "58 1500 1499 2999 3");
  CHECK(format_rtpproxy_query(parse_ok("Qv cid f t"), f) ==
        "ttl=58 npkts_ina=1500 npkts_ino=1499 nrelayed=2999 ndropped=3");
  CHECK(format_rtpproxy_query(parse_ok("Q cid f t nrelayed ttl"), f) == "2999 58");
  CHECK(format_rtpproxy_query(parse_ok("Qv cid f t ndropped npkts_ino"), f) ==
        "ndropped=3 npkts_ino=1499");
  CHECK(format_rtpproxy_query(parse_ok("Q cid f t longest_ipi rtpa_jlast rtpa_jmax rtpa_javg"),
                              f) == "0.250000 1.500000 12.125000 2.000000");
  CHECK(format_rtpproxy_query(
            parse_ok("Qv cid f t rtpa_nsent rtpa_nrcvd rtpa_ndups rtpa_nlost rtpa_perrs"), f) ==
        "rtpa_nsent=10 rtpa_nrcvd=9 rtpa_ndups=1 rtpa_nlost=2 rtpa_perrs=4");
  CHECK(format_rtpproxy_query(parse_ok("Q cid f t ttl bogus"), f) == "E62");
  CHECK(format_rtpproxy_query(parse_ok("Qv cid f t TTL"), f) == "E62");  // names are exact
  f.ttl = -1;
  f.relayed = UINT64_MAX;
  CHECK(format_rtpproxy_query(parse_ok("Q cid f"), f) == "-1 1500 1499 18446744073709551615 3");
  for (std::string_view name : kRtpproxyQueryCounters)
    CHECK(format_rtpproxy_query(parse_ok("Q cid f t " + std::string(name)), f) != "E62");
}

TEST_CASE("rtpproxy I reply", "[rtpproxy]") {
  RtpproxyInfo info;
  info.sessions_created = 12;
  info.active_sessions = 2;
  info.active_streams = 4;
  info.packets_received = 1000;
  info.packets_transmitted = 990;
  const std::string expected =
      "sessions created: 12\nactive sessions: 2\nactive streams: 4\n"
      "packets received: 1000\npackets transmitted: 990";
  CHECK(format_rtpproxy_info(false, info) == expected);
  CHECK(format_rtpproxy_info(true, info) == expected);
  info.average_load = 0.5;
  CHECK(format_rtpproxy_info(true, info) == expected + "\naverage load: 0.500000");
}

TEST_CASE("rtpproxy G reply", "[rtpproxy]") {
  RtpproxyStatsValues v;
  v.set("nsess_created", 12);
  v.set("nsess_destroyed", 10);
  v.set("nsess_created", 13);  // replaces
  v.set_real("total_duration", 61.5);
  REQUIRE(v.find("nsess_created"));
  CHECK(v.find("nsess_created")->count == 13);
  CHECK_FALSE(v.find("nsess_timeout"));
  CHECK(v.entries.size() == 3);

  CHECK(format_rtpproxy_stats(parse_ok("G nsess_created nsess_destroyed"), v) == "13 10");
  CHECK(format_rtpproxy_stats(parse_ok("Gv nsess_destroyed nsess_created"), v) ==
        "nsess_destroyed=10 nsess_created=13");
  CHECK(format_rtpproxy_stats(parse_ok("G total_duration"), v) == "61.500000");
  CHECK(format_rtpproxy_stats(parse_ok("Gv total_duration"), v) == "total_duration=61.500000");
  CHECK(format_rtpproxy_stats(parse_ok("G"), v).empty());
  CHECK(format_rtpproxy_stats(parse_ok("Gv"), v).empty());
  CHECK(format_rtpproxy_stats(parse_ok("G nsess_created nsess_timeout"), v) == "E68");
  CHECK(format_rtpproxy_stats(parse_ok("G \x01\xff"), v) == "E68");
  v.set("total_duration", 7);  // back to an integer
  CHECK(format_rtpproxy_stats(parse_ok("G total_duration"), v) == "7");
  CHECK(kRtpproxyStatsCounters.front() == "nsess_created");
}
