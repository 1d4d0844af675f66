// Fuzz target for the hang-up requests and replies (protocol/proxy_rpc.h).
//
// Invariants checked on every input:
//   * parse_rpc_reply() never accepts more than kMaxReplyLength bytes, and a
//     reply it calls ok carries no error code (a plain line's 2xx aside);
//   * classify_dialog_id() accepts at most kMaxDialogIdLength bytes; an
//     OpenSIPS id is decimal digits whose value is h_entry << 32 | h_id, a
//     Kamailio id is "A:B" whose numbers are h_entry and h_id as signed or
//     unsigned 32-bit values;
//   * the requests built for an accepted id are JSON (rapidjson parses them)
//     with the right method and parameters: OpenSIPS's did reads back, in
//     reversed hex, as h_entry and h_id; Kamailio's params are the two
//     numbers as signed 32-bit values;
//   * format_request_id() is lowercase hex without padding that reads back.
#include <rapidjson/document.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "protocol/proxy_rpc.h"

using namespace mp::protocol;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_proxy_rpc: invariant violated: %s\n", what);
    std::abort();
  }
}

// A reversed lowercase hex number ("0" for zero) back to its value.
bool read_reversed_hex(std::string_view s, uint32_t& out) {
  if (s.empty() || s.size() > 8) return false;
  uint64_t v = 0;
  for (size_t i = s.size(); i-- > 0;) {
    const char c = s[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return false;
    v = v * 16 + static_cast<uint64_t>(d);
  }
  out = static_cast<uint32_t>(v);
  return v <= 0xffffffffu;
}

void check_requests(const DialogTarget& t) {
  rapidjson::Document d;
  const std::string os = build_opensips_end_dlg("1f", t);
  d.Parse(os.c_str(), os.size());
  check(!d.HasParseError() && d.IsObject(), "OpenSIPS request is a JSON object");
  check(std::string(d["method"].GetString()) == "dlg_end_dlg", "OpenSIPS method");
  const std::string did = d["params"][0].GetString();
  check(did == opensips_did(t.h_entry, t.h_id), "OpenSIPS param is the did");
  const size_t dot = did.find('.');
  uint32_t e = 0, i = 0;
  check(dot != std::string::npos && read_reversed_hex(std::string_view(did).substr(0, dot), e) &&
            read_reversed_hex(std::string_view(did).substr(dot + 1), i) && e == t.h_entry &&
            i == t.h_id,
        "did reads back as h_entry.h_id");
  const std::string km = build_kamailio_end_dlg("1f", t);
  rapidjson::Document k;
  k.Parse(km.c_str(), km.size());
  check(!k.HasParseError() && k.IsObject(), "Kamailio request is a JSON object");
  check(std::string(k["method"].GetString()) == "dlg.end_dlg", "Kamailio method");
  const auto& p = k["params"];
  check(p.IsArray() && p.Size() == 2 && p[0].IsInt() && p[1].IsInt(), "two int params");
  check(static_cast<uint32_t>(p[0].GetInt()) == t.h_entry &&
            static_cast<uint32_t>(p[1].GetInt()) == t.h_id,
        "Kamailio params are h_entry and h_id");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);

  if (auto r = parse_rpc_reply(in)) {
    check(size <= kMaxReplyLength, "reply length bounded");
    check(!r->ok || r->code == 0 || (r->code >= 200 && r->code < 300), "ok has no error code");
  }

  std::string reason;
  if (auto t = classify_dialog_id(in, reason)) {
    check(size <= kMaxDialogIdLength && size > 0, "dialog id length bounded");
    if (t->kind == ProxyKind::OpenSips) {
      uint64_t v = 0;
      for (char c : in) {
        check(c >= '0' && c <= '9', "OpenSIPS id is decimal digits");
        v = v * 10 + static_cast<uint64_t>(c - '0');
      }
      check(v == ((static_cast<uint64_t>(t->h_entry) << 32) | t->h_id),
            "OpenSIPS id is h_entry << 32 | h_id");
    } else {
      const size_t colon = in.find(':');
      check(colon != std::string_view::npos, "Kamailio id has a colon");
      auto num = [](std::string_view s) {
        return static_cast<uint32_t>(std::strtoll(std::string(s).c_str(), nullptr, 10));
      };
      check(num(in.substr(0, colon)) == t->h_entry && num(in.substr(colon + 1)) == t->h_id,
            "Kamailio id is h_entry:h_id");
    }
    check_requests(*t);
  } else {
    check(!reason.empty(), "a refused id has a reason");
  }

  if (size >= 4) {
    const uint32_t n = static_cast<uint32_t>(data[0]) | static_cast<uint32_t>(data[1]) << 8 |
                       static_cast<uint32_t>(data[2]) << 16 | static_cast<uint32_t>(data[3]) << 24;
    const std::string id = format_request_id(n);
    check(!id.empty() && (id == "0" || id[0] != '0'), "request id unpadded");
    check(std::strtoull(id.c_str(), nullptr, 16) == n, "request id reads back");
    for (char c : id) check((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'), "lowercase hex");
  }
  return 0;
}
