// The rtpproxy control protocol (Sippy rtpproxy, as Kamailio's and OpenSIPS's
// `rtpproxy` modules speak it): parsing one command and formatting replies.
//
// A command is one line of tokens separated by spaces, tabs, CRs or LFs (as
// rtpproxy splits them). Over UDP and the stream sockets that carry cookies,
// the first token is the client's cookie, echoed at the start of the reply;
// over Kamailio's `unix:` transport there is no cookie. The first letter of the
// command token is the verb (either case), the rest its modifiers:
//
//   V                                   protocol version        -> "20040107"
//   VF <yyyymmdd>                       capability probe        -> "1" / "0"
//   U<mods> <callid> <addr> <port> <ftag>[;n] [<ttag>[;n]] [<notify_socket> <notify_tag>]
//   L<mods> <callid> <addr> <port> <ftag>[;n] [<ttag>[;n]]
//   D[w] <callid> <ftag> [<ttag>]
//   Q[v] <callid> <ftag> [<ttag> [<counter> ...]]
//   I[b][l]                             information
//   G[v] [<counter> ...]                statistics
//   X                                   delete every session
//   P, S, R, C, N                       play/stop/record/copy/norecord (not implemented here)
//
// Argument counts, modifier letters and error codes are rtpproxy's (3.x,
// src/rtpp_command_parse.c and src/commands/rpcpv1_*.c); where rtpproxy is
// lax (media numbers, codec lists, address syntax) this parser is strict.
//
// parse_rtpproxy_command() is a pure function: no I/O, no allocation beyond the
// returned strings, never throws. Every identifier (call-id, tags, notify tag)
// is kept byte-exact; lengths are bounded (kMaxRtpproxyCommand and the per-token
// limits below). Errors carry the rtpproxy `E<n>` code the client must receive.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mp::protocol {

// rtpproxy error codes (the numbers rtpproxy itself sends; rtpp_command_ecodes.h).
namespace rtpp_error {
inline constexpr int kUnknownCommand = 0;   // ECODE_CMDUNKN
inline constexpr int kWrongArgCount = 1;    // ECODE_PARSE_NARGS
inline constexpr int kBadModifiers = 2;     // ECODE_PARSE_MODS (modifiers on V, VF, X, S)
inline constexpr int kBadArgument = 31;     // ECODE_INVLARG_1 (media number, l<addr>)
inline constexpr int kTooBig = 25;          // ECODE_RTOOBIG_1 (command too long)
inline constexpr int kSessionUnknown = 50;  // ECODE_SESUNKN
inline constexpr int kPlayFailed = 60;      // ECODE_PLRFAIL (P not implemented)
inline constexpr int kQueryFailed = 62;     // ECODE_QRYFAIL
inline constexpr int kCopyFailed = 65;      // ECODE_CPYFAIL (R, C, N not implemented)
inline constexpr int kStatsFailed = 68;     // ECODE_STSFAIL
inline constexpr int kNoPorts = 71;         // ECODE_LSTFAIL_1 (no relay / no ports)
inline constexpr int kNotifyRefused = 75;   // ECODE_NSOFF (notify target not permitted)
inline constexpr int kOutOfMemory = 81;     // ECODE_NOMEM_1
inline constexpr int kOverload = 98;        // ECODE_OVERLOAD
inline constexpr int kShuttingDown = 99;    // ECODE_SLOWSHTDN (relays halting)
// The other codes the parser can answer, each where rtpproxy answers it.
inline constexpr int kSubcommand = 3;          // ECODE_PARSE_SUBC ("&&" sub-commands: unsupported)
inline constexpr int kSyntax = 5;              // ECODE_PARSE_1 (empty, NUL byte, > 23 tokens)
inline constexpr int kModifierMisplaced = 6;   // ECODE_PARSE_2 (N a<more>, R p)
inline constexpr int kRecordModifiers = 7;     // ECODE_PARSE_3 (R, C, N unknown modifier)
inline constexpr int kDeleteModifiers = 8;     // ECODE_PARSE_4 (D: only w)
inline constexpr int kStatsModifiers = 9;      // ECODE_PARSE_5 (G: only v)
inline constexpr int kBadUrlEncoding = 10;     // ECODE_PARSE_10 (notify tag %XX)
inline constexpr int kBridgeExternal = 11;     // ECODE_PARSE_11 (a third i/e letter, an e)
inline constexpr int kBridgeInternal = 12;     // ECODE_PARSE_12 (a third i/e letter, an i)
inline constexpr int kBadPtime = 13;           // ECODE_PARSE_13 (z: not 1..999)
inline constexpr int kBadCodecs = 14;          // ECODE_PARSE_14 (c: empty, repeated, malformed)
inline constexpr int kBadLocalModifier = 15;   // ECODE_PARSE_15 (l: no address after it)
inline constexpr int kBadRemoteModifier = 16;  // ECODE_PARSE_16 (r: no address after it)
inline constexpr int kPlayModifiers = 17;      // ECODE_PARSE_6 (P: count not decimal)
inline constexpr int kInfoModifiers = 18;      // ECODE_PARSE_7 (I: only b, l)
inline constexpr int kQueryModifiers = 19;     // ECODE_PARSE_8 (Q: only v)
inline constexpr int kQueryTooBig = 26;        // ECODE_RTOOBIG_2
inline constexpr int kBadRemoteAddress = 32;   // ECODE_INVLARG_2 (r<addr> invalid)
inline constexpr int kUnknownModifier = 35;    // ECODE_INVLARG_5 (U/L: unknown modifier letter)
inline constexpr int kBadAddress = 37;         // ECODE_INVLARG_7 (U/L: address or port invalid)
}  // namespace rtpp_error

inline constexpr size_t kMaxRtpproxyCommand = 4096;  // bytes, without the cookie
inline constexpr size_t kMaxRtpproxyCookie = 128;
inline constexpr size_t kMaxRtpproxyToken = 1024;  // call-id, tags, notify tag
inline constexpr size_t kMaxRtpproxyTokens = 23;   // per command, as rtpproxy (RTPC_MAX_ARGC - 1)
inline constexpr size_t kMaxRtpproxyCodecs = 64;   // entries of a c<pt>,... list
inline constexpr unsigned kMaxRtpproxyMediaNumber = 1000;  // the n of "<tag>;<n>"

// The base version V answers, and the VF capabilities this implementation
// really supports (each documented in mediaproxy.8, RTPPROXY PROTOCOL).
inline constexpr std::string_view kRtpproxyBaseVersion = "20040107";
bool rtpproxy_capability_supported(std::string_view yyyymmdd);

// The capabilities VF answers "1" for, in rtpproxy's order, with the line the
// man page shows. Every other date (copy/record, statistics v2, load, new port,
// "&&", labels, ...) is answered "0".
struct RtpproxyCapability {
  std::string_view id;           // the yyyymmdd VF token
  std::string_view description;  // one line
};
inline constexpr std::array<RtpproxyCapability, 7> kRtpproxyCapabilities = {{
    {"20040107", "basic RTP proxy functionality (U, L, D, V, VF, I, X)"},
    {"20050322", "several RTP streams per call (\"<tag>;<n>\"); play-out (P) is not implemented"},
    {"20060704", "extra parameter in the V command (as rtpproxy: V takes none)"},
    // The z<ms> modifier is parsed and validated, then ignored: mediaproxy
    // never re-packetizes.
    {"20071116", "RTP re-packetization: the z<ms> modifier is accepted and ignored"},
    {"20081102", "codec list in U/L (c<pt>,<pt>...): accepted"},
    {"20081224", "session timeout notifications (U ... <notify_socket> <notify_tag>)"},
    {"20090810", "automatic bridging flags (i/e modifiers): accepted"},
}};

enum class RtpproxyVerb {
  Version,         // V
  VersionFeature,  // VF
  Update,          // U
  Lookup,          // L
  Delete,          // D
  Query,           // Q
  Info,            // I
  Stats,           // G
  DeleteAll,       // X
  Play,            // P  (recognised, not implemented)
  StopPlay,        // S  (recognised, not implemented)
  Record,          // R  (recognised, not implemented)
  Copy,            // C  (recognised, not implemented)
  NoRecord,        // N  (recognised, not implemented)
};

// A tag as sent: "<tag>" or "<tag>;<medianum>". media_number 0: no suffix.
struct RtpproxyTag {
  std::string tag;
  unsigned media_number = 0;  // 1-based; 0 when absent
  friend bool operator==(const RtpproxyTag&, const RtpproxyTag&) = default;
};

// Modifiers of U and L (letters after the verb, case-insensitive). a and s
// override each other (the last one wins), so do 4 and 6. D's w sets `weak`.
struct RtpproxyModifiers {
  bool asymmetric = false;  // a: the party's media comes from elsewhere; send to the SDP address
  bool symmetric = false;   // s: the default; accepted
  bool weak = false;        // w: accepted and ignored
  bool internal = false;    // i: bridge side (first i/e letter = first leg)
  bool external = false;    // e
  std::string bridge;       // the i/e letters in order, e.g. "ie", "ei", "" (none)
  bool ipv6 = false;        // 6: the address in the command is IPv6
  bool ipv4 = false;        // 4
  std::vector<unsigned> codecs;  // c<pt>[,<pt>...]
  unsigned repacketize_ms = 0;   // z<ms>
  bool new_port = false;         // n
  std::string local_address;     // l<addr>: accepted, recorded, ignored
  std::string remote_address;    // r<addr>: accepted, recorded, ignored
  friend bool operator==(const RtpproxyModifiers&, const RtpproxyModifiers&) = default;
};

struct RtpproxyCommand {
  RtpproxyVerb verb = RtpproxyVerb::Version;
  std::string letters;          // the whole first token (verb + modifiers), for logs
  RtpproxyModifiers modifiers;  // U and L (D: only weak)
  std::string call_id;          // U L D Q P S R C N (byte-exact)
  std::string address;   // U L: the party's address as text (validated: IPv4 or IPv6 literal)
  uint16_t port = 0;     // U L (0 allowed: a disabled stream)
  RtpproxyTag from_tag;  // U L D Q P S R C N
  std::optional<RtpproxyTag> to_tag;  // U L D Q: optional (as rtpproxy)
  std::string notify_socket;          // U: where to report this session's media timeout, "" if none
  std::string notify_tag;             // U: URL-decoded tag to send there
  std::string feature;                // VF: the yyyymmdd token
  bool verbose = false;               // Q v, G v, I b(brief = false)
  std::vector<std::string> stats_names;  // G, Q: counters asked for, in order
  bool load = false;                     // I l: add the "average load" line
  friend bool operator==(const RtpproxyCommand&, const RtpproxyCommand&) = default;
};

struct RtpproxyParseError {
  int code = rtpp_error::kUnknownCommand;  // E<code>
  std::string reason;                      // for the log (already safe to print: no control bytes)
};

// Splits the cookie off a datagram or stream line: the first token (leading
// separators skipped). Returns false when there is no command after the cookie
// (then `cookie` is still set, so the caller may answer "<cookie> E5" as
// rtpproxy does) or when there is no cookie or it is longer than
// kMaxRtpproxyCookie (then `cookie` is empty). Trailing spaces, tabs, "\n" and
// "\r\n" on `line` are not part of the command.
bool split_rtpproxy_cookie(std::string_view line, std::string_view& cookie,
                           std::string_view& command);

// Parses one command (no cookie, trailing CR/LF tolerated). On failure returns
// nullopt and fills `error`.
std::optional<RtpproxyCommand> parse_rtpproxy_command(std::string_view text,
                                                      RtpproxyParseError& error);

// Replies, without cookie and without the final "\n":
// `family`: '6' or '4' appended as a third token (Kamailio writes "IN IP6"
// only when told '6'), 0 for none: "40000 192.0.2.1" / "40000 2001:db8::1 6".
std::string format_rtpproxy_port(uint16_t port, std::string_view address, char family);
std::string format_rtpproxy_error(int code);  // "E50"
// (format_rtpproxy_port with an empty address gives the bare port: "0" is
// rtpproxy's answer to an L for an unknown session.)

// Q reply. Without counter names: "<ttl> <npkts_ina> <npkts_ino> <nrelayed>
// <ndropped>", with v "ttl=.. npkts_ina=.. npkts_ino=.. nrelayed=.. ndropped=..".
// With names (Q ... <ttag> ttl nrelayed ...): the values asked for in that
// order, separated by one space, each preceded by "<name>=" with v; the
// floating-point ones printed as "%f". Answers "E62" when a name is not one of
// kRtpproxyQueryCounters (rtpproxy checks the names only once the session is
// found, so an unknown session answers E50 first).
struct RtpproxyQueryFigures {
  int ttl = 0;  // seconds before the session times out (ttl)
  uint64_t packets_from_caller =
      0;  // received from the party of the command's from-tag (npkts_ina)
  uint64_t packets_from_callee = 0;  // received from the other party (npkts_ino)
  uint64_t relayed = 0;              // nrelayed
  uint64_t dropped = 0;              // ndropped
  double longest_ipi = 0;            // longest_ipi (seconds)
  double jitter_last = 0;            // rtpa_jlast
  double jitter_max = 0;             // rtpa_jmax
  double jitter_avg = 0;             // rtpa_javg
  uint64_t rtp_sent = 0;             // rtpa_nsent (unique packets the peer sent, by SEQ)
  uint64_t rtp_received = 0;         // rtpa_nrcvd
  uint64_t rtp_duplicates = 0;       // rtpa_ndups
  uint64_t rtp_lost = 0;             // rtpa_nlost
  uint64_t rtp_parse_errors = 0;     // rtpa_perrs
};
inline constexpr std::array<std::string_view, 14> kRtpproxyQueryCounters = {
    "ttl",      "npkts_ina", "npkts_ino",  "longest_ipi", "rtpa_jlast", "rtpa_jmax",  "rtpa_javg",
    "nrelayed", "ndropped",  "rtpa_nsent", "rtpa_nrcvd",  "rtpa_ndups", "rtpa_nlost", "rtpa_perrs",
};
std::string format_rtpproxy_query(const RtpproxyCommand& command, const RtpproxyQueryFigures& f);

// I reply, several lines joined by "\n" (the caller adds the final one):
//   sessions created: N / active sessions: N / active streams: N /
//   packets received: N / packets transmitted: N [/ average load: %f]
// `brief` changes nothing: rtpproxy's per-session listing is compiled out.
// The load line appears when average_load is set (the caller sets it for I l).
struct RtpproxyInfo {
  uint64_t sessions_created = 0;
  uint64_t active_sessions = 0;
  uint64_t active_streams = 0;
  uint64_t packets_received = 0;
  uint64_t packets_transmitted = 0;  // relayed + played
  std::optional<double> average_load;
};
std::string format_rtpproxy_info(bool brief, const RtpproxyInfo& info);

// G reply: the values of the counters asked for, in that order, separated by
// one space, each preceded by "<name>=" with v; "" when none was asked for
// (rtpproxy answers an empty line). A name with no value set answers "E68".
struct RtpproxyStatsValues {
  struct Entry {
    std::string name;
    uint64_t count = 0;
    std::optional<double> real;  // set: printed as "%f" (total_duration, pps_in)
  };
  std::vector<Entry> entries;

  void set(std::string_view name, uint64_t value);
  void set_real(std::string_view name, double value);
  const Entry* find(std::string_view name) const;
};
// rtpproxy's counter names (rtpp_stats.c), for callers filling the values.
inline constexpr std::array<std::string_view, 29> kRtpproxyStatsCounters = {
    "nsess_created", "nsess_destroyed",  "nsess_timeout",     "nsess_complete",
    "nsess_nortp",   "nsess_owrtp",      "nsess_nortcp",      "nsess_owrtcp",
    "nplrs_created", "nplrs_destroyed",  "npkts_rcvd",        "npkts_played",
    "npkts_relayed", "npkts_resizer_in", "npkts_resizer_out", "npkts_resizer_discard",
    "npkts_discard", "total_duration",   "ncmds_rcvd",        "ncmds_rcvd_ndups",
    "ncmds_succd",   "ncmds_errs",       "ncmds_repld",       "rtpa_nsent",
    "rtpa_nrcvd",    "rtpa_ndups",       "rtpa_nlost",        "rtpa_perrs",
    "pps_in",
};
std::string format_rtpproxy_stats(const RtpproxyCommand& command,
                                  const RtpproxyStatsValues& values);

// URL-decodes %XX sequences (rtpproxy's url_unquote); nullopt on a malformed escape.
// As rtpproxy, "+" decodes to a space.
std::optional<std::string> rtpproxy_url_unquote(std::string_view text);

}  // namespace mp::protocol
