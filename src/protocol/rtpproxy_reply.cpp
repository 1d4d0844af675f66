// Replies of the rtpproxy control protocol (rtpproxy_command.h): the port
// answer of U and L, E<code> errors, and the texts of Q, I and G, byte for
// byte as Sippy rtpproxy prints them (rpcpv1_query.c, rtpp_command.c,
// rpcpv1_stats.c). Pure functions.
#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <system_error>

#include "protocol/rtpproxy_command.h"

namespace mp::protocol {

namespace {

void append_real(std::string& out, double v) {
  char buf[400];  // DBL_MAX in fixed notation with 6 decimals: 316 characters
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, 6);
  if (r.ec == std::errc()) out.append(buf, r.ptr);
}

// One Q counter by name; false when the name is unknown.
bool append_query_value(std::string& out, std::string_view name, const RtpproxyQueryFigures& f) {
  const auto u = [&out](uint64_t v) { out += std::to_string(v); };
  if (name == "ttl") {
    out += std::to_string(f.ttl);
  } else if (name == "npkts_ina") {
    u(f.packets_from_caller);
  } else if (name == "npkts_ino") {
    u(f.packets_from_callee);
  } else if (name == "longest_ipi") {
    append_real(out, f.longest_ipi);
  } else if (name == "rtpa_jlast") {
    append_real(out, f.jitter_last);
  } else if (name == "rtpa_jmax") {
    append_real(out, f.jitter_max);
  } else if (name == "rtpa_javg") {
    append_real(out, f.jitter_avg);
  } else if (name == "nrelayed") {
    u(f.relayed);
  } else if (name == "ndropped") {
    u(f.dropped);
  } else if (name == "rtpa_nsent") {
    u(f.rtp_sent);
  } else if (name == "rtpa_nrcvd") {
    u(f.rtp_received);
  } else if (name == "rtpa_ndups") {
    u(f.rtp_duplicates);
  } else if (name == "rtpa_nlost") {
    u(f.rtp_lost);
  } else if (name == "rtpa_perrs") {
    u(f.rtp_parse_errors);
  } else {
    return false;
  }
  return true;
}

}  // namespace

std::string format_rtpproxy_port(uint16_t port, std::string_view address, char family) {
  std::string out = std::to_string(port);
  if (address.empty()) return out;
  out += ' ';
  out += address;
  if (family == '4' || family == '6') {
    out += ' ';
    out += family;
  }
  return out;
}

std::string format_rtpproxy_error(int code) {
  return "E" + std::to_string(code);
}

std::string format_rtpproxy_query(const RtpproxyCommand& command, const RtpproxyQueryFigures& f) {
  std::string out;
  if (command.stats_names.empty()) {
    const char* const names[] = {"ttl=", " npkts_ina=", " npkts_ino=", " nrelayed=", " ndropped="};
    const uint64_t values[] = {f.packets_from_caller, f.packets_from_callee, f.relayed, f.dropped};
    if (command.verbose) out += names[0];
    out += std::to_string(f.ttl);
    for (size_t i = 0; i < 4; ++i) {
      out += command.verbose ? names[i + 1] : " ";
      out += std::to_string(values[i]);
    }
    return out;
  }
  for (size_t i = 0; i < command.stats_names.size(); ++i) {
    const std::string& name = command.stats_names[i];
    if (i > 0) out += ' ';
    if (command.verbose) {
      out += name;
      out += '=';
    }
    if (!append_query_value(out, name, f)) return format_rtpproxy_error(rtpp_error::kQueryFailed);
  }
  return out;
}

std::string format_rtpproxy_info(bool brief, const RtpproxyInfo& info) {
  (void)brief;  // rtpproxy prints the same five lines either way
  std::string out = "sessions created: " + std::to_string(info.sessions_created) +
                    "\nactive sessions: " + std::to_string(info.active_sessions) +
                    "\nactive streams: " + std::to_string(info.active_streams) +
                    "\npackets received: " + std::to_string(info.packets_received) +
                    "\npackets transmitted: " + std::to_string(info.packets_transmitted);
  if (info.average_load) {
    out += "\naverage load: ";
    append_real(out, *info.average_load);
  }
  return out;
}

void RtpproxyStatsValues::set(std::string_view name, uint64_t value) {
  for (Entry& e : entries) {
    if (e.name == name) {
      e.count = value;
      e.real.reset();
      return;
    }
  }
  entries.push_back(Entry{std::string(name), value, std::nullopt});
}

void RtpproxyStatsValues::set_real(std::string_view name, double value) {
  for (Entry& e : entries) {
    if (e.name == name) {
      e.count = 0;
      e.real = value;
      return;
    }
  }
  entries.push_back(Entry{std::string(name), 0, value});
}

const RtpproxyStatsValues::Entry* RtpproxyStatsValues::find(std::string_view name) const {
  for (const Entry& e : entries)
    if (e.name == name) return &e;
  return nullptr;
}

std::string format_rtpproxy_stats(const RtpproxyCommand& command,
                                  const RtpproxyStatsValues& values) {
  std::string out;
  for (size_t i = 0; i < command.stats_names.size(); ++i) {
    const RtpproxyStatsValues::Entry* e = values.find(command.stats_names[i]);
    if (!e) return format_rtpproxy_error(rtpp_error::kStatsFailed);
    if (i > 0) out += ' ';
    if (command.verbose) {
      out += e->name;
      out += '=';
    }
    if (e->real)
      append_real(out, *e->real);
    else
      out += std::to_string(e->count);
  }
  return out;
}

}  // namespace mp::protocol
