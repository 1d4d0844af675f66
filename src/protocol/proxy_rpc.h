// Requests that ask a SIP proxy to end a dialog, and their replies (spec
// F.3; issue #12). Pure functions, no I/O: dispatcher/hangup_client.cpp
// sends what these build over the proxy's datagram socket.
//
// The dialog id the proxy module sent says which proxy owns the dialog.
// OpenSIPS's mediaproxy module sends one decimal number, h_entry << 32 |
// h_id; Kamailio's sends "h_entry:h_id" printed with "%d:%d" (so a part can
// be negative). Anything else is refused. OpenSIPS 3.4's `dlg_end_dlg`
// (modules/dialog/dlg_req_within.c, get_dlg_by_dialog_id()) looks a dialog
// up by its "did", h_entry and h_id in reversed lowercase hex joined by "."
// (dlg_get_did()), or else by SIP Call-ID; the decimal number itself is
// neither and would be answered 404, so the request carries the did form
// computed from the number. Kamailio 5.6's `dlg.end_dlg` scans its
// parameters with "dd": two JSON numbers (strings read as 0), an optional
// third string of extra headers.
//
// Replies are JSON-RPC 2.0 (`result`, or `error` {code, message}) with the
// request's id, or OpenSIPS mi_datagram's plain "<code> <text>" (e.g. "400
// Parse_error", "500 Internal error"), which carries no id.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mp::protocol {

enum class ProxyKind { OpenSips, Kamailio };
std::string_view proxy_kind_name(ProxyKind k);  // "opensips", "kamailio"

// Longest dialog id accepted: OpenSIPS' 20 digits of a 64-bit number,
// Kamailio's two signed 32-bit numbers and a colon are all shorter.
inline constexpr size_t kMaxDialogIdLength = 32;

struct DialogTarget {
  ProxyKind kind = ProxyKind::OpenSips;
  // h_entry and h_id as the proxy stores them (unsigned 32-bit).
  uint32_t h_entry = 0;
  uint32_t h_id = 0;
};

// Which proxy owns `dialog_id` and the dialog's hash coordinates; nullopt
// with `reason` set when the id is neither form (or out of range).
std::optional<DialogTarget> classify_dialog_id(std::string_view dialog_id, std::string& reason);

// The request id: a 32-bit number in lowercase hex without padding.
std::string format_request_id(uint32_t n);

// OpenSIPS' dialog "did" for h_entry and h_id: each in reversed lowercase hex
// (least significant digit first, "0" for zero), joined by ".".
std::string opensips_did(uint32_t h_entry, uint32_t h_id);

// The OpenSIPS MI request, byte for byte in the layout of spec F.3:
// {"jsonrpc": "2.0", "id": "<id>", "method": "dlg_end_dlg", "params": ["<did>"]}
std::string build_opensips_end_dlg(std::string_view request_id, const DialogTarget& dialog);

// The Kamailio JSON-RPC request, h_entry and h_id as the signed 32-bit
// numbers the RPC's "dd" scan reads back into the unsigned fields:
// {"jsonrpc": "2.0", "id": "<id>", "method": "dlg.end_dlg", "params": [<h_entry>, <h_id>]}
std::string build_kamailio_end_dlg(std::string_view request_id, const DialogTarget& dialog);

struct RpcReply {
  bool ok = false;                // `result`, or a plain 2xx line
  std::optional<std::string> id;  // nullopt: the reply carries no id (plain line, id null)
  int64_t code = 0;               // error code (0 when ok by `result`)
  std::string message;            // error message, or the plain line's text
};

// Longest reply read; a longer datagram is refused.
inline constexpr size_t kMaxReplyLength = 65536;

// Parses one reply datagram; nullopt when it is neither a JSON-RPC response
// object nor a "<3-digit code> <text>" line.
std::optional<RpcReply> parse_rpc_reply(std::string_view datagram);

}  // namespace mp::protocol
