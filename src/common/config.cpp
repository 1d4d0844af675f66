// INI loader and option table for config.h.
#include "common/config.h"

#include "common/config_values.h"
#include "common/error.h"

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <set>

#include <unistd.h>
#include <sstream>

namespace mp {

std::string_view role_name(Role r) {
  switch (r) {
    case Role::Combined:
      return "combined";
    case Role::Dispatcher:
      return "dispatcher";
    case Role::Relay:
      return "relay";
  }
  return "?";
}

std::optional<Role> parse_role(std::string_view t) {
  if (t == "combined") return Role::Combined;
  if (t == "dispatcher") return Role::Dispatcher;
  if (t == "relay") return Role::Relay;
  return std::nullopt;
}

std::string_view forwarding_name(Forwarding f) {
  switch (f) {
    case Forwarding::Auto:
      return "auto";
    case Forwarding::Kernel:
      return "kernel";
    case Forwarding::Userspace:
      return "userspace";
  }
  return "?";
}

bool check_nft_table_name(std::string_view name, std::string& error) {
  auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  bool ok = !name.empty() && name.size() <= 64 && (letter(name[0]) || name[0] == '_');
  for (char c : name)
    ok = ok && (letter(c) || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.');
  if (ok) return true;
  return fail(error,
              "expected a table name of 1 to 64 letters, digits, '_', '-' and '.', starting with a "
              "letter or '_', got '" +
                  std::string(name) + "'");
}

std::string Config::certs_dir() const {
  if (!tls.certs_path.empty() && tls.certs_path[0] == '/') return tls.certs_path;
  return config_dir + "/" + tls.certs_path;
}

std::string Config::module_socket_path() const {
  const std::string& p = dispatcher.socket_path;
  if (!p.empty() && p[0] == '/') return p;
  return runtime_dir + "/" + p;
}

namespace {

using namespace config_values;

// Each setter stores the value, or returns false with the reason it is bad.
using Setter = std::function<bool(std::string_view value, Config&, std::string& error)>;

struct Option {
  Setter set;
  bool unused = false;  // accepted for AG compatibility, not used by this version
};

using Section = std::vector<std::pair<std::string, Option>>;

Option unused_option() {
  return Option{[](std::string_view, Config&, std::string&) { return true; }, true};
}

std::vector<std::pair<std::string, Section>> option_table() {
  std::vector<std::pair<std::string, Section>> t;
  t.push_back({"General",
               {
                   {"role", {[](std::string_view v, Config& c, std::string& error) {
                      auto r = parse_role(v);
                      if (!r)
                        return fail(error, "unknown role '" + std::string(v) +
                                               "' (use combined, dispatcher, relay)");
                      c.role = *r;
                      return true;
                    }}},
                   {"runtime_dir", {[](std::string_view v, Config& c, std::string& error) {
                      if (v.empty()) return fail(error, "runtime_dir must not be empty");
                      c.runtime_dir = std::string(v);
                      return true;
                    }}},
                   {"pid_file", {[](std::string_view v, Config& c, std::string&) {
                      c.pid_file = std::string(v);
                      return true;
                    }}},
                   {"log_level", {[](std::string_view v, Config& c, std::string& error) {
                      std::optional<log::Level> l;
                      if (!set_level(v, l, error)) return false;
                      if (l) c.log_level = *l;
                      return true;
                    }}},
               }});
  t.push_back(
      {"Dispatcher",
       {
           {"socket_path", {[](std::string_view v, Config& c, std::string& error) {
              if (v.empty()) return fail(error, "socket_path must not be empty");
              if (v.size() > 100)
                return fail(error, "socket_path is longer than a UNIX socket path may be (100)");
              c.dispatcher.socket_path = std::string(v);
              return true;
            }}},
           {"socket_mode", {[](std::string_view v, Config& c, std::string& error) {
              unsigned m = 0;
              auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), m, 8);
              if (v.empty() || ec != std::errc() || p != v.data() + v.size() || m > 0777)
                return fail(error, "expected an octal file mode such as 0660, got '" +
                                       std::string(v) + "'");
              c.dispatcher.socket_mode = static_cast<mode_t>(m);
              return true;
            }}},
           {"socket_group", {[](std::string_view v, Config& c, std::string&) {
              c.dispatcher.socket_group = std::string(v);
              return true;
            }}},
           {"relay_timeout", {[](std::string_view v, Config& c, std::string& error) {
              double d = 0;
              auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
              if (v.empty() || ec != std::errc() || p != v.data() + v.size() || !(d > 0) || d > 60)
                return fail(error, "expected seconds between 0 and 60 (e.g. 0.2), got '" +
                                       std::string(v) + "'");
              c.dispatcher.relay_timeout = d;
              return true;
            }}},
           {"max_connections", {[](std::string_view v, Config& c, std::string& error) {
              return set_int(v, c.dispatcher.max_connections, 1, 100000, "a connection count",
                             error);
            }}},
           {"cleanup_expired_sessions_after",
            {[](std::string_view v, Config& c, std::string& error) {
              return set_int(v, c.dispatcher.cleanup_expired_sessions_after, 1, 10000000, "seconds",
                             error);
            }}},
           {"log_level", {[](std::string_view v, Config& c, std::string& error) {
              return set_level(v, c.dispatcher.log_level, error);
            }}},
           {"listen", {[](std::string_view v, Config& c, std::string& error) {
              return set_listen(v, c.dispatcher.listen, 25060, error);
            }}},
           {"listen_management", {[](std::string_view v, Config& c, std::string& error) {
              return set_listen(v, c.dispatcher.listen_management, 25061, error);
            }}},
           {"management_use_tls", {[](std::string_view v, Config& c, std::string& error) {
              return set_bool(v, c.dispatcher.management_use_tls, error);
            }}},
           {"management_allow_remote_plain",
            {[](std::string_view v, Config& c, std::string& error) {
              return set_bool(v, c.dispatcher.management_allow_remote_plain, error);
            }}},
           {"passport", {[](std::string_view v, Config& c, std::string&) {
              c.dispatcher.passport = std::string(v);
              return true;
            }}},
           {"management_passport", {[](std::string_view v, Config& c, std::string&) {
              // Empty keeps the default: admitting every certificate of the
              // CA (relays included) takes an explicit "None".
              c.dispatcher.management_passport =
                  v.empty() ? std::string(kDefaultManagementPassport) : std::string(v);
              return true;
            }}},
           {"accounting", {[](std::string_view v, Config& c, std::string& error) {
              return parse_accounting_list(v, c.accounting, error);
            }}},
           {"relay_recover_interval", {[](std::string_view v, Config& c, std::string& error) {
              return set_int(v, c.dispatcher.relay_recover_interval, 1, 86400, "seconds", error);
            }}},
           {"relay_dead_after", {[](std::string_view v, Config& c, std::string& error) {
              return set_int(v, c.dispatcher.relay_dead_after, 2, 86400, "seconds", error);
            }}},
           {"cleanup_dead_relays_after", {[](std::string_view v, Config& c, std::string& error) {
              return set_int(v, c.dispatcher.cleanup_dead_relays_after, 1, 10000000, "seconds",
                             error);
            }}},
       }});
  t.push_back(
      {"Relay",
       {
           {"relay_ip", {[](std::string_view v, Config& c, std::string& error) {
              return set_ips(v, c.relay.relay_ip, c.relay.relay_ip6, error);
            }}},
           {"advertised_ip", {[](std::string_view v, Config& c, std::string& error) {
              return set_ips(v, c.relay.advertised_ip, c.relay.advertised_ip6, error);
            }}},
           {"port_range", {[](std::string_view v, Config& c, std::string& error) {
              size_t colon = v.find(':');
              int a = 0, b = 0;
              std::string bad =
                  "expected START:END with even numbers, 1024 <= START < END <= 65536, got '" +
                  std::string(v) + "'";
              if (colon == std::string_view::npos) return fail(error, bad);
              std::string ignored;
              if (!set_int(v.substr(0, colon), a, 1024, 65536, "", ignored) ||
                  !set_int(v.substr(colon + 1), b, 1024, 65536, "", ignored) || a >= b || a % 2 ||
                  b % 2)
                return fail(error, bad);
              c.relay.port_start = a;
              c.relay.port_end = b;
              return true;
            }}},
           {"stream_timeout", {[](std::string_view v, Config& c, std::string& error) {
              return set_int(v, c.relay.stream_timeout, 1, 86400, "seconds", error);
            }}},
           {"on_hold_timeout", {[](std::string_view v, Config& c, std::string& error) {
              return set_int(v, c.relay.on_hold_timeout, 1, 86400 * 7, "seconds", error);
            }}},
           {"answer_timeout", {[](std::string_view v, Config& c, std::string& error) {
              return set_int(v, c.relay.answer_timeout, 1, 86400, "seconds", error);
            }}},
           {"routable_private_ranges", {[](std::string_view v, Config& c, std::string& error) {
              std::vector<Cidr> out;
              std::string s(v);
              for (char& ch : s)
                if (ch == ',') ch = ' ';
              std::istringstream in(s);
              std::string tok;
              while (in >> tok) {
                auto cidr = parse_cidr(tok);
                if (!cidr)
                  return fail(error, "expected CIDR ranges such as 10.0.0.0/8, got '" + tok + "'");
                out.push_back(*cidr);
              }
              c.relay.routable_private_ranges = std::move(out);
              return true;
            }}},
           {"userspace_transmit_every", {[](std::string_view v, Config& c, std::string& error) {
              return set_int(v, c.relay.userspace_transmit_every, 1, 1000000, "a packet count",
                             error);
            }}},
           {"traffic_sampling_period", {[](std::string_view v, Config& c, std::string& error) {
              return set_int(v, c.relay.traffic_sampling_period, 0, 86400, "seconds", error);
            }}},
           {"log_level", {[](std::string_view v, Config& c, std::string& error) {
              return set_level(v, c.relay.log_level, error);
            }}},
           {"forwarding", {[](std::string_view v, Config& c, std::string& error) {
              return set_choice(v, c.relay.forwarding,
                                {{"auto", Forwarding::Auto},
                                 {"kernel", Forwarding::Kernel},
                                 {"userspace", Forwarding::Userspace}},
                                error);
            }}},
           {"media_io", {[](std::string_view v, Config& c, std::string& error) {
              return set_choice(v, c.relay.media_io,
                                {{"auto", MediaIo::Auto},
                                 {"io_uring", MediaIo::IoUring},
                                 {"syscalls", MediaIo::Syscalls}},
                                error);
            }}},
           {"media_send", {[](std::string_view v, Config& c, std::string& error) {
              return set_choice(v, c.relay.media_send,
                                {{"auto", MediaSend::Auto},
                                 {"raw", MediaSend::Raw},
                                 {"sockets", MediaSend::Sockets}},
                                error);
            }}},
           {"media_receive", {[](std::string_view v, Config& c, std::string& error) {
              return set_choice(v, c.relay.media_receive,
                                {{"auto", MediaReceive::Auto},
                                 {"tproxy", MediaReceive::Tproxy},
                                 {"sockets", MediaReceive::Sockets}},
                                error);
            }}},
           {"media_coalesce", {[](std::string_view v, Config& c, std::string& error) {
              return set_seconds(v, c.relay.media_coalesce, 0, 0.005, error);
            }}},
           {"nft_table", {[](std::string_view v, Config& c, std::string& error) {
              if (!check_nft_table_name(v, error)) return false;
              c.relay.nft_table = std::string(v);
              return true;
            }}},
           {"state_file", {[](std::string_view v, Config& c, std::string& error) {
              // "" or "none": off; relative: to runtime_dir (resolved at start)
              if (v.find('\0') != std::string_view::npos || v.size() > 1024)
                return fail(error, "expected a file path (or none)");
              c.relay.state_file = v == "none" ? std::string() : std::string(v);
              return true;
            }}},
           {"state_write_interval", {[](std::string_view v, Config& c, std::string& error) {
              return set_seconds(v, c.relay.state_write_interval, 0, 1, error);
            }}},
           {"latching", {[](std::string_view v, Config& c, std::string& error) {
              return set_choice(v, c.relay.strict_latching, {{"normal", false}, {"strict", true}},
                                error);
            }}},
           {"latch_window", {[](std::string_view v, Config& c, std::string& error) {
              return set_seconds(v, c.relay.latch_window, 0, 60, error);
            }}},
           {"rebind_silence", {[](std::string_view v, Config& c, std::string& error) {
              return set_seconds(v, c.relay.rebind_silence, 0.05, 60, error);
            }}},
           {"kernel_handover_packets", {[](std::string_view v, Config& c, std::string& error) {
              return set_int(v, c.relay.kernel_handover_packets, 1, 1000, "a packet count", error);
            }}},
           {"dispatchers", {[](std::string_view v, Config& c, std::string& error) {
              std::vector<Endpoint> out;
              std::string text(v);
              for (char& ch : text)
                if (ch == ',') ch = ' ';
              std::istringstream in(text);
              std::string tok;
              while (in >> tok) {
                std::optional<Endpoint> ep;
                std::string ignored;
                if (!set_listen(tok, ep, 25060, ignored) || !ep || ep->ip.is_any())
                  return fail(
                      error,
                      "expected IPv4 address[:port] entries (host names are not resolved in "
                      "this version), got '" +
                          tok + "'");
                out.push_back(*ep);
              }
              c.relay.dispatchers = std::move(out);
              return true;
            }}},
           {"passport", {[](std::string_view v, Config& c, std::string&) {
              c.relay.passport = std::string(v);
              return true;
            }}},
           {"auto_detect_interfaces",
            {[](std::string_view v, Config&, std::string& error) { return check_bool(v, error); },
             true}},
           {"dns_check_interval", unused_option()},
           {"reconnect_delay", {[](std::string_view v, Config& c, std::string& error) {
              return set_int(v, c.relay.reconnect_delay, 1, 3600, "seconds", error);
            }}},
           {"keepalive_interval", {[](std::string_view v, Config& c, std::string& error) {
              return set_int(v, c.relay.keepalive_interval, 1, 3600, "seconds", error);
            }}},
       }});
  t.push_back({"Rtpproxy",
               {
                   {"listen", {[](std::string_view v, Config& c, std::string& error) {
                      std::vector<RtpproxyListen> out;
                      std::string text(v);
                      for (char& ch : text)
                        if (ch == ',') ch = ' ';
                      std::istringstream in(text);
                      std::string tok;
                      while (in >> tok) {
                        auto l = parse_rtpproxy_listen(tok, error);
                        if (!l) return false;
                        out.push_back(std::move(*l));
                      }
                      c.rtpproxy.listen = std::move(out);
                      return true;
                    }}},
                   {"notify_targets", {[](std::string_view v, Config& c, std::string& error) {
                      using P = RtpproxyConfig::NotifyPolicy;
                      c.rtpproxy.notify_targets.clear();
                      if (v == "local") {
                        c.rtpproxy.notify_policy = P::Local;
                        return true;
                      }
                      if (v == "none" || v.empty()) {
                        c.rtpproxy.notify_policy = P::None;
                        return true;
                      }
                      std::string text(v);
                      for (char& ch : text)
                        if (ch == ',') ch = ' ';
                      std::istringstream in(text);
                      std::string tok;
                      while (in >> tok) {
                        if (!parse_rtpproxy_notify_target(tok, error))
                          return fail(error, error + " (or use local or none)");
                        c.rtpproxy.notify_targets.push_back(tok);
                      }
                      c.rtpproxy.notify_policy = P::List;
                      return true;
                    }}},
                   {"retransmit_cache", {[](std::string_view v, Config& c, std::string& error) {
                      return set_int(v, c.rtpproxy.retransmit_cache, 1, 600, "seconds", error);
                    }}},
               }});
  t.push_back({"Metrics",
               {
                   {"listen", {[](std::string_view v, Config& c, std::string& error) {
                      return set_listen(v, c.metrics.listen, 9465, error);
                    }}},
                   {"turn_cpu", {[](std::string_view v, Config& c, std::string& error) {
                      return set_bool(v, c.metrics.turn_cpu, error);
                    }}},
               }});
  t.push_back({"TLS",
               {{"certs_path", {[](std::string_view v, Config& c, std::string& error) {
                   if (v.empty()) return fail(error, "certs_path must not be empty");
                   c.tls.certs_path = std::string(v);
                   return true;
                 }}},
                {"verify_interval", unused_option()}}});
  t.push_back({"Database",
               {{"dburi", {[](std::string_view v, Config& c, std::string& error) {
                   if (!parse_database_uri(v, error)) return false;
                   c.accounting.db.dburi = std::string(v);
                   return true;
                 }}},
                {"sessions_table", {[](std::string_view v, Config& c, std::string& error) {
                   if (!check_sql_identifier(v, error)) return false;
                   c.accounting.db.sessions_table = std::string(v);
                   return true;
                 }}},
                {"callid_column", {[](std::string_view v, Config& c, std::string& error) {
                   if (!check_sql_identifier(v, error)) return false;
                   c.accounting.db.callid_column = std::string(v);
                   return true;
                 }}},
                {"fromtag_column", {[](std::string_view v, Config& c, std::string& error) {
                   if (!check_sql_identifier(v, error)) return false;
                   c.accounting.db.fromtag_column = std::string(v);
                   return true;
                 }}},
                {"totag_column", {[](std::string_view v, Config& c, std::string& error) {
                   if (!check_sql_identifier(v, error)) return false;
                   c.accounting.db.totag_column = std::string(v);
                   return true;
                 }}},
                {"info_column", {[](std::string_view v, Config& c, std::string& error) {
                   if (!check_sql_identifier(v, error)) return false;
                   c.accounting.db.info_column = std::string(v);
                   return true;
                 }}}}});
  t.push_back({"Radius",
               {{"config_file", {[](std::string_view v, Config& c, std::string& error) {
                   if (v.empty()) return fail(error, "config_file must not be empty");
                   c.accounting.radius_cfg.config_file = std::string(v);
                   return true;
                 }}},
                {"additional_dictionary", {[](std::string_view v, Config& c, std::string&) {
                   c.accounting.radius_cfg.additional_dictionary = std::string(v);
                   return true;
                 }}}}});
  t.push_back({"OpenSIPS",
               {{"socket_path", {[](std::string_view v, Config& c, std::string& error) {
                   return set_hangup_socket(v, c.hangup.opensips_socket, error);
                 }}},
                {"location_table", unused_option()}}});
  t.push_back({"Kamailio", {{"socket_path", {[](std::string_view v, Config& c, std::string& error) {
                               return set_hangup_socket(v, c.hangup.kamailio_socket, error);
                             }}}}});
  t.push_back({"ThorNetwork", {{"domain", unused_option()}, {"node_ip", unused_option()}}});
  return t;
}

}  // namespace

bool load_config_text(std::string_view text, const std::string& name, Config& cfg,
                      std::string& error) {
  static const auto table = option_table();
  const Section* section = nullptr;
  std::string section_name;
  std::set<std::string> seen;
  int lineno = 0;
  auto fail = [&](const std::string& msg) {
    error = name + ":" + std::to_string(lineno) + ": " + msg;
    return false;
  };
  while (!text.empty()) {
    ++lineno;
    size_t nl = text.find('\n');
    std::string_view line = trim(text.substr(0, nl));
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line[0] == '[') {
      if (line.back() != ']') return fail("section header must look like [Name]");
      section_name = std::string(trim(line.substr(1, line.size() - 2)));
      section = nullptr;
      for (const auto& [sname, opts] : table)
        if (sname == section_name) section = &opts;
      if (!section) {
        std::string known;
        for (const auto& entry : table) known += (known.empty() ? "" : ", ") + entry.first;
        return fail("unknown section [" + section_name + "] (known: " + known + ")");
      }
      continue;
    }
    size_t eq = line.find('=');
    if (eq == std::string_view::npos)
      return fail("expected 'option = value', got '" + std::string(line) + "'");
    if (!section)
      return fail(
          "option outside any section; put it under [General], [Dispatcher], [Relay], [Rtpproxy] "
          "or [Metrics]");
    std::string key = std::string(trim(line.substr(0, eq)));
    std::string_view value = trim(line.substr(eq + 1));
    const Option* opt = nullptr;
    for (const auto& [oname, o] : *section)
      if (oname == key) opt = &o;
    if (!opt) return fail("unknown option '" + key + "' in section [" + section_name + "]");
    if (!seen.insert(section_name + "." + key).second)
      return fail("option '" + key + "' given twice in section [" + section_name + "]");
    std::string why;
    if (!opt->set(value, cfg, why)) return fail(key + ": " + why);
    if (opt->unused)
      cfg.warnings.push_back(
          name + ":" + std::to_string(lineno) + ": option '" + key + "' in [" + section_name +
          "] is accepted for AG MediaProxy compatibility but not used by this version");
  }
  return true;
}

bool load_config_file(const std::string& path, Config& cfg, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = path + ": cannot open configuration file: " + std::strerror(errno);
    return false;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) {
    char cwd[4096];
    cfg.config_dir = getcwd(cwd, sizeof cwd) ? cwd : ".";
  } else {
    cfg.config_dir = slash == 0 ? "/" : path.substr(0, slash);
    char cwd[4096];
    if (cfg.config_dir[0] != '/' && getcwd(cwd, sizeof cwd))
      cfg.config_dir = std::string(cwd) + "/" + cfg.config_dir;
  }
  return load_config_text(ss.str(), path, cfg, error);
}

}  // namespace mp
