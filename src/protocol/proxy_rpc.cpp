// Dialog-ending requests to OpenSIPS and Kamailio and their replies
// (proxy_rpc.h). Owns the dialog id forms, the byte layout of both requests
// and the reply parser. The reply parser accepts what either proxy sends and
// nothing else: a JSON object with `result` or `error`, or a line of three
// digits, a blank and a text; the id comes back as the string we sent (a
// numeric id is written in decimal so it can still be matched).
#include "protocol/proxy_rpc.h"

#include <rapidjson/document.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>

namespace mp::protocol {

namespace {

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// Decimal digits into `out`; false on overflow or anything but digits.
bool parse_u64(std::string_view s, uint64_t& out) {
  if (!all_digits(s)) return false;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

// One part of Kamailio's "%d:%d": an optional '-' and digits, within the
// range of int32 (negative) or uint32 (positive); the stored unsigned value.
bool parse_kamailio_part(std::string_view s, uint32_t& out) {
  const bool negative = !s.empty() && s.front() == '-';
  if (negative) s.remove_prefix(1);
  uint64_t v = 0;
  if (!parse_u64(s, v)) return false;
  if (negative) {
    if (v > uint64_t{1} << 31) return false;
    out = static_cast<uint32_t>(0 - v);  // two's complement, as Kamailio printed it
    return true;
  }
  if (v > std::numeric_limits<uint32_t>::max()) return false;
  out = static_cast<uint32_t>(v);
  return true;
}

void append_reverse_hex(std::string& out, uint32_t v) {
  static constexpr char kDigits[] = "0123456789abcdef";
  if (v == 0) {
    out += '0';
    return;
  }
  while (v) {
    out += kDigits[v & 0xf];
    v >>= 4;
  }
}

// The JSON string of a request id: ids are ours (hex digits), but quote
// anything else safely anyway.
std::string quoted(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += b;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

std::optional<RpcReply> parse_plain(std::string_view line) {
  if (line.size() < 3 || !all_digits(line.substr(0, 3))) return std::nullopt;
  if (line.size() > 3 && line[3] != ' ' && line[3] != '\t') return std::nullopt;
  RpcReply r;
  r.code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
  r.ok = r.code >= 200 && r.code < 300;
  r.message = std::string(trim(line.substr(3)));
  return r;
}

}  // namespace

std::string_view proxy_kind_name(ProxyKind k) {
  return k == ProxyKind::OpenSips ? "opensips" : "kamailio";
}

std::optional<DialogTarget> classify_dialog_id(std::string_view dialog_id, std::string& reason) {
  if (dialog_id.empty()) {
    reason = "empty dialog id";
    return std::nullopt;
  }
  if (dialog_id.size() > kMaxDialogIdLength) {
    reason = "dialog id longer than " + std::to_string(kMaxDialogIdLength) + " bytes";
    return std::nullopt;
  }
  DialogTarget t;
  if (all_digits(dialog_id)) {
    uint64_t v = 0;
    if (!parse_u64(dialog_id, v)) {
      reason = "OpenSIPS dialog id out of the 64-bit range";
      return std::nullopt;
    }
    t.kind = ProxyKind::OpenSips;
    t.h_entry = static_cast<uint32_t>(v >> 32);
    t.h_id = static_cast<uint32_t>(v & 0xffffffffu);
    return t;
  }
  const size_t colon = dialog_id.find(':');
  if (colon != std::string_view::npos &&
      parse_kamailio_part(dialog_id.substr(0, colon), t.h_entry) &&
      parse_kamailio_part(dialog_id.substr(colon + 1), t.h_id)) {
    t.kind = ProxyKind::Kamailio;
    return t;
  }
  reason = "neither an OpenSIPS (decimal) nor a Kamailio (h_entry:h_id) dialog id";
  return std::nullopt;
}

std::string format_request_id(uint32_t n) {
  char b[16];
  const auto r = std::to_chars(b, b + sizeof b, n, 16);
  return std::string(b, r.ptr);
}

std::string opensips_did(uint32_t h_entry, uint32_t h_id) {
  std::string out;
  append_reverse_hex(out, h_entry);
  out += '.';
  append_reverse_hex(out, h_id);
  return out;
}

std::string build_opensips_end_dlg(std::string_view request_id, const DialogTarget& dialog) {
  return "{\"jsonrpc\": \"2.0\", \"id\": " + quoted(request_id) +
         ", \"method\": \"dlg_end_dlg\", \"params\": [\"" +
         opensips_did(dialog.h_entry, dialog.h_id) + "\"]}";
}

std::string build_kamailio_end_dlg(std::string_view request_id, const DialogTarget& dialog) {
  return "{\"jsonrpc\": \"2.0\", \"id\": " + quoted(request_id) +
         ", \"method\": \"dlg.end_dlg\", \"params\": [" +
         std::to_string(static_cast<int32_t>(dialog.h_entry)) + ", " +
         std::to_string(static_cast<int32_t>(dialog.h_id)) + "]}";
}

std::optional<RpcReply> parse_rpc_reply(std::string_view datagram) {
  if (datagram.size() > kMaxReplyLength) return std::nullopt;
  const std::string_view text = trim(datagram);
  if (text.empty()) return std::nullopt;
  if (text.front() != '{') return parse_plain(text);

  rapidjson::Document d;
  d.Parse(text.data(), text.size());
  if (d.HasParseError() || !d.IsObject()) return std::nullopt;
  RpcReply r;
  if (auto id = d.FindMember("id"); id != d.MemberEnd()) {
    if (id->value.IsString())
      r.id = std::string(id->value.GetString(), id->value.GetStringLength());
    else if (id->value.IsUint64())
      r.id = std::to_string(id->value.GetUint64());
    else if (id->value.IsInt64())
      r.id = std::to_string(id->value.GetInt64());
  }
  if (auto err = d.FindMember("error"); err != d.MemberEnd() && !err->value.IsNull()) {
    r.ok = false;
    if (err->value.IsObject()) {
      if (auto c = err->value.FindMember("code"); c != err->value.MemberEnd()) {
        if (c->value.IsInt64())
          r.code = c->value.GetInt64();
        else if (c->value.IsNumber() && std::fabs(c->value.GetDouble()) < 1e18)
          r.code = static_cast<int64_t>(c->value.GetDouble());
      }
      if (auto m = err->value.FindMember("message");
          m != err->value.MemberEnd() && m->value.IsString())
        r.message = std::string(m->value.GetString(), m->value.GetStringLength());
    }
    return r;
  }
  if (d.HasMember("result")) {
    r.ok = true;
    return r;
  }
  return std::nullopt;
}

}  // namespace mp::protocol
