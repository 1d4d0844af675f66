// Unit tests of the dialog-ending requests and their replies
// (src/protocol/proxy_rpc.cpp): which proxy a dialog id belongs to, the
// OpenSIPS did form, the byte layout of both requests, and the replies both
// proxies send (JSON-RPC result and error, OpenSIPS' plain "<code> <text>").
#include <catch2/catch.hpp>

#include <string>

#include "protocol/proxy_rpc.h"

using namespace mp::protocol;

TEST_CASE("decimal dialog ids belong to OpenSIPS", "[proxy_rpc]") {
  std::string reason;
  // 11751849276301 = 2736 << 32 | 818754445 (the example of the vendor notes)
  auto t = classify_dialog_id("11751849276301", reason);
  REQUIRE(t);
  CHECK(t->kind == ProxyKind::OpenSips);
  CHECK(t->h_entry == 2736);
  CHECK(t->h_id == 818754445);
  t = classify_dialog_id("0", reason);
  REQUIRE(t);
  CHECK(t->kind == ProxyKind::OpenSips);
  CHECK((t->h_entry == 0 && t->h_id == 0));
  t = classify_dialog_id("18446744073709551615", reason);
  REQUIRE(t);
  CHECK((t->h_entry == 0xffffffffu && t->h_id == 0xffffffffu));
  CHECK_FALSE(classify_dialog_id("18446744073709551616", reason));
  CHECK(reason.find("64-bit") != std::string::npos);
}

TEST_CASE("h_entry:h_id dialog ids belong to Kamailio", "[proxy_rpc]") {
  std::string reason;
  auto t = classify_dialog_id("438:10795", reason);
  REQUIRE(t);
  CHECK(t->kind == ProxyKind::Kamailio);
  CHECK(t->h_entry == 438);
  CHECK(t->h_id == 10795);
  // Kamailio prints "%d:%d": an h_id above 2^31-1 shows as a negative number
  t = classify_dialog_id("5:-1294967296", reason);
  REQUIRE(t);
  CHECK(t->h_id == 3000000000u);
  t = classify_dialog_id("0:4294967295", reason);
  REQUIRE(t);
  CHECK(t->h_id == 0xffffffffu);
  CHECK(classify_dialog_id("0:-2147483648", reason));
  CHECK_FALSE(classify_dialog_id("0:-2147483649", reason));
  CHECK_FALSE(classify_dialog_id("0:4294967296", reason));
}

TEST_CASE("other dialog ids are refused with a reason", "[proxy_rpc]") {
  for (const char* bad : {"", "abc", "12a", "1:2:3", ":1", "1:", "-1", "1 :2", "1:+2", " 12", "12 ",
                          "0x10", "1.2", "--1:2", "1:-", "\xff", "١٢"}) {
    std::string reason;
    INFO(bad);
    CHECK_FALSE(classify_dialog_id(bad, reason));
    CHECK_FALSE(reason.empty());
  }
  std::string reason;
  CHECK_FALSE(classify_dialog_id(std::string(33, '1'), reason));
  CHECK(reason.find("longer") != std::string::npos);
  CHECK(classify_dialog_id("00000000000000000000000000001:2", reason));  // within the bound
}

TEST_CASE("request ids are lowercase hex without padding", "[proxy_rpc]") {
  CHECK(format_request_id(0) == "0");
  CHECK(format_request_id(0x5f3a9c2e) == "5f3a9c2e");
  CHECK(format_request_id(0xa) == "a");
  CHECK(format_request_id(0xffffffffu) == "ffffffff");
}

TEST_CASE("OpenSIPS did: reversed hex of h_entry and h_id", "[proxy_rpc]") {
  CHECK(opensips_did(0, 0) == "0.0");
  CHECK(opensips_did(0xab0, 0x30cd338d) == "0ba.d833dc03");
  CHECK(opensips_did(1, 0x10) == "1.01");
  CHECK(opensips_did(0xffffffffu, 0x12345678) == "ffffffff.87654321");
}

TEST_CASE("OpenSIPS dlg_end_dlg request has the layout of spec F.3", "[proxy_rpc]") {
  std::string reason;
  auto t = classify_dialog_id("11751849276301", reason);
  REQUIRE(t);
  CHECK(build_opensips_end_dlg("5f3a9c2e", *t) ==
        "{\"jsonrpc\": \"2.0\", \"id\": \"5f3a9c2e\", \"method\": \"dlg_end_dlg\", "
        "\"params\": [\"0ba.d833dc03\"]}");
}

TEST_CASE("Kamailio dlg.end_dlg request carries two numbers", "[proxy_rpc]") {
  std::string reason;
  auto t = classify_dialog_id("438:10795", reason);
  REQUIRE(t);
  CHECK(build_kamailio_end_dlg("1a2b", *t) ==
        "{\"jsonrpc\": \"2.0\", \"id\": \"1a2b\", \"method\": \"dlg.end_dlg\", "
        "\"params\": [438, 10795]}");
  // back as Kamailio printed it: its "dd" scan stores the bits in the unsigned field
  t = classify_dialog_id("5:-1294967296", reason);
  REQUIRE(t);
  CHECK(build_kamailio_end_dlg("1", *t) ==
        "{\"jsonrpc\": \"2.0\", \"id\": \"1\", \"method\": \"dlg.end_dlg\", "
        "\"params\": [5, -1294967296]}");
  t = classify_dialog_id("5:3000000000", reason);
  REQUIRE(t);
  CHECK(build_kamailio_end_dlg("1", *t).find("[5, -1294967296]") != std::string::npos);
}

TEST_CASE("JSON-RPC results and errors", "[proxy_rpc]") {
  // OpenSIPS 3.4 (init_mi_result_ok)
  auto r = parse_rpc_reply("{\"jsonrpc\":\"2.0\",\"result\":\"OK\",\"id\":\"5f3a9c2e\"}");
  REQUIRE(r);
  CHECK(r->ok);
  CHECK(r->id == std::optional<std::string>("5f3a9c2e"));
  // Kamailio 5.6 (no value added: an empty object), with a trailing newline
  r = parse_rpc_reply("{\n\t\"jsonrpc\":\t\"2.0\",\n\t\"result\":\t{},\n\t\"id\":\t\"ab\"\n}\n");
  REQUIRE(r);
  CHECK(r->ok);
  CHECK(r->id == std::optional<std::string>("ab"));
  r = parse_rpc_reply(
      "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": 404, \"message\": \"Requested Dialog not "
      "found\"}, \"id\": \"7\"}");
  REQUIRE(r);
  CHECK_FALSE(r->ok);
  CHECK(r->code == 404);
  CHECK(r->message == "Requested Dialog not found");
  CHECK(r->id == std::optional<std::string>("7"));
  r = parse_rpc_reply(
      "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32601,\"message\":\"Method Not Found\"},"
      "\"id\":\"c\"}");
  REQUIRE(r);
  CHECK(r->code == -32601);
  // a numeric id is matched by its decimal text; a null id is no id
  r = parse_rpc_reply("{\"jsonrpc\":\"2.0\",\"result\":null,\"id\":42}");
  REQUIRE(r);
  CHECK(r->ok);
  CHECK(r->id == std::optional<std::string>("42"));
  r = parse_rpc_reply("{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32700},\"id\":null}");
  REQUIRE(r);
  CHECK_FALSE(r->ok);
  CHECK_FALSE(r->id);
  // an error without an object still is an error
  r = parse_rpc_reply("{\"error\":\"boom\",\"id\":\"1\"}");
  REQUIRE(r);
  CHECK_FALSE(r->ok);
  CHECK(r->code == 0);
}

TEST_CASE("OpenSIPS mi_datagram plain replies", "[proxy_rpc]") {
  auto r = parse_rpc_reply("400 Parse_error");
  REQUIRE(r);
  CHECK_FALSE(r->ok);
  CHECK(r->code == 400);
  CHECK(r->message == "Parse_error");
  CHECK_FALSE(r->id);
  r = parse_rpc_reply("500 Internal error\n");
  REQUIRE(r);
  CHECK(r->code == 500);
  CHECK(r->message == "Internal error");
  r = parse_rpc_reply("200 OK");
  REQUIRE(r);
  CHECK(r->ok);
  r = parse_rpc_reply("404");
  REQUIRE(r);
  CHECK(r->code == 404);
  CHECK(r->message.empty());
}

TEST_CASE("unreadable replies are refused", "[proxy_rpc]") {
  for (const char* bad : {"", "  \n", "OK", "40 x", "4000 x", "{", "{\"id\":\"1\"}", "[1,2]",
                          "{\"result\":1} trailing", "abc 200", "\x01\x02"}) {
    INFO(bad);
    CHECK_FALSE(parse_rpc_reply(bad));
  }
  CHECK_FALSE(parse_rpc_reply(std::string(kMaxReplyLength + 1, ' ')));
}
