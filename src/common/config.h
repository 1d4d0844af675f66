// The configuration model and its INI loader.
//
// Owns every option the program understands, its default, its validation and
// the mapping from the INI file (sections and names follow AG MediaProxy's
// config.ini, spec section E, so operators can port their files). Any unknown
// section or option, duplicate option or bad value stops start-up with
// "FILE:LINE: what is wrong". Options that AG MediaProxy has but this version
// does not use yet are accepted and reported in `warnings`.
// Documented in man/mediaproxy.ini.5 and etc/mediaproxy.ini: keep all three in step.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/address.h"
#include "common/ip_address.h"
#include "common/log.h"

namespace mp {

enum class Role { Combined, Dispatcher, Relay };
std::string_view role_name(Role r);
std::optional<Role> parse_role(std::string_view text);

// The default [Dispatcher] management_passport: the CN certs/make-certs.sh
// gives management client certificates ("mediaproxy management", or a name
// that starts with it), which relay and dispatcher certificates never carry.
inline constexpr const char* kDefaultManagementPassport = "CN:mediaproxy management*";

struct DispatcherConfig {
  std::string socket_path = "dispatcher.sock";
  mode_t socket_mode = 0660;
  std::string socket_group;
  double relay_timeout = 0.2;  // seconds
  int max_connections = 1024;
  int cleanup_expired_sessions_after = 86400;
  std::optional<Endpoint> listen_management = Endpoint{Ipv4{0}, 25061};  // nullopt: off
  bool management_use_tls = true;
  bool management_allow_remote_plain = false;
  // Spec B.1.1 syntax, checked on TLS management clients. Empty in the file
  // means this default (only a management certificate made by
  // certs/make-certs.sh); "None" admits any certificate of the CA.
  std::string management_passport = kDefaultManagementPassport;
  std::optional<Endpoint> listen = Endpoint{Ipv4{0}, 25060};  // relay link; nullopt: off
  std::string passport;                                       // checked on relay certificates
  int relay_recover_interval = 60;
  int relay_dead_after = 35;
  int cleanup_dead_relays_after = 43200;  // forget calls of a relay gone this long  // seconds
                                          // without a ping from a relay before it is dropped
  std::optional<log::Level> log_level;
};

enum class Forwarding { Auto, Kernel, Userspace };
std::string_view forwarding_name(Forwarding f);

// How the userspace media path reads and writes its sockets
// (relay/media_pump.h): io_uring where it can (auto), io_uring or refuse to
// start, or one recvmmsg/sendmmsg per socket.
enum class MediaIo { Auto, IoUring, Syscalls };
enum class MediaSend { Auto, Raw, Sockets };
// How media reaches the userspace path: through one socket per IP family an
// nftables tproxy rule steers every media port to (relay/tproxy_socket.h)
// where it can (auto), the same or refuse to start (tproxy), or through
// each port's own socket.
enum class MediaReceive { Auto, Tproxy, Sockets };

struct RelayConfig {
  std::optional<Ipv4> relay_ip;             // IPv4 media address; nullopt: detected
  std::optional<IpAddress> relay_ip6;       // IPv6 media address; nullopt: no IPv6 media
  std::optional<Ipv4> advertised_ip;        // what replies give for IPv4, behind 1:1 NAT
  std::optional<IpAddress> advertised_ip6;  // likewise for IPv6
  int port_start = 40000;
  int port_end = 60000;
  int stream_timeout = 90;
  int on_hold_timeout = 7200;
  int answer_timeout = 300;
  std::vector<Cidr> routable_private_ranges;
  int userspace_transmit_every = 1;
  int traffic_sampling_period = 15;
  std::optional<log::Level> log_level;
  Forwarding forwarding = Forwarding::Auto;
  MediaIo media_io = MediaIo::Auto;
  MediaSend media_send = MediaSend::Auto;
  MediaReceive media_receive = MediaReceive::Auto;
  // Seconds a busy relay lets datagrams gather between two passes of its
  // data path (media_pump.h, coalescing); 0: a pass per readiness event.
  double media_coalesce = 0.0005;
  std::vector<Endpoint> dispatchers;  // relay role: where to connect
  std::string passport;               // checked on dispatcher certificates
  int keepalive_interval = 10;
  int reconnect_delay = 10;
  std::string nft_table = "mediaproxy";
  // Sessions kept across a restart of the process (state_journal.h); empty:
  // off. Relative: to Config::runtime_dir.
  std::string state_file = "relay.state";
  // Seconds between two writes of state_file under load (0: every loop
  // iteration writes what changed in it).
  double state_write_interval = 0.001;
  int kernel_handover_packets = 1;
  bool strict_latching = false;  // latching = strict
  double latch_window = 0.5;     // seconds before an unknown source may latch
  double rebind_silence = 0.5;   // seconds of silence before a NAT rebinding is followed
};

// [Rtpproxy]: the rtpproxy control-protocol front end of the dispatcher.
struct RtpproxyListen {
  enum class Transport { Udp, Udp6, Unix, Cunix, Tcp, Tcp6 };
  Transport transport = Transport::Udp;
  std::string address;  // IP literal (udp, tcp) or socket path (unix, cunix)
  uint16_t port = 0;
  std::string text;  // as configured, for logs
  bool datagram() const { return transport == Transport::Udp || transport == Transport::Udp6; }
  bool has_cookie() const { return transport != Transport::Unix; }
};
// A timeout-notification target the front end may connect to.
struct RtpproxyNotifyTarget {
  bool unix_socket = false;
  std::string address;  // IP literal or path
  uint16_t port = 0;
};
std::optional<RtpproxyListen> parse_rtpproxy_listen(std::string_view text, std::string& error);
std::optional<RtpproxyNotifyTarget> parse_rtpproxy_notify_target(std::string_view text,
                                                                 std::string& error);

struct RtpproxyConfig {
  std::vector<RtpproxyListen> listen;  // empty: the front end is off
  enum class NotifyPolicy { Local, List, None };
  NotifyPolicy notify_policy = NotifyPolicy::Local;
  std::vector<std::string> notify_targets;  // NotifyPolicy::List: exact target strings
  int retransmit_cache = 30;                // seconds a UDP reply is kept for retransmissions
};

// [Database] (spec F.1): where the `database` accounting backend writes.
struct DatabaseConfig {
  // sqlite:///absolute/path.db, sqlite:relative.db (relative to the runtime
  // directory) or postgresql://user:password@host:port/dbname.
  std::string dburi = "sqlite:///var/lib/mediaproxy/accounting.db";
  std::string sessions_table = "media_sessions";
  std::string callid_column = "call_id";
  std::string fromtag_column = "from_tag";
  std::string totag_column = "to_tag";
  std::string info_column = "info";
  std::string runtime_dir;  // filled at start: base of relative sqlite paths
};

// [Radius] (spec F.2): the radiusclient-style client.conf and the extra
// dictionary with mediaproxy's attributes (relative: to the configuration
// file's directory).
struct RadiusConfig {
  std::string config_file = "/etc/radcli/radiusclient.conf";
  std::string additional_dictionary = "radius/dictionary";
};

// [Dispatcher] accounting and the accounting queues.
struct AccountingConfig {
  bool database = false;          // accounting = database
  bool radius = false;            // accounting = radius
  size_t memory_records = 10000;  // per backend; beyond it records wait in the journal only
  DatabaseConfig db;
  RadiusConfig radius_cfg;
};

// [OpenSIPS] and [Kamailio] socket_path: where hang-up requests go. Empty:
// that proxy kind is never asked.
struct HangupConfig {
  std::string opensips_socket = "/run/opensips/socket";             // mi_datagram
  std::string kamailio_socket = "/run/kamailio/kamailio_rpc.sock";  // jsonrpcs dgram_socket
};

// The parsed form of [Database] dburi: the engine and where it is.
struct DatabaseUri {
  enum class Engine { Sqlite, Postgresql };
  Engine engine = Engine::Sqlite;
  std::string path;      // Sqlite: the file (relative: to the runtime directory)
  std::string conninfo;  // Postgresql: the URI as given, for libpq
};
std::optional<DatabaseUri> parse_database_uri(std::string_view uri, std::string& error);
// [Dispatcher] accounting: "database", "radius", both (comma-separated) or
// "none"/empty. False with `error` if the value is bad.
bool parse_accounting_list(std::string_view value, AccountingConfig& out, std::string& error);
// A table or column name: [A-Za-z_][A-Za-z0-9_]{0,62}. False with `error` if not.
bool check_sql_identifier(std::string_view name, std::string& error);
// [Relay] nft_table: a name nft accepts unquoted and that a shell needs no
// quotes for: 1 to 64 letters, digits, '_', '-' and '.', starting with a
// letter or '_'. False with `error` if not. The config loader and the kernel
// forwarder both use this one rule.
bool check_nft_table_name(std::string_view name, std::string& error);
// [OpenSIPS]/[Kamailio] socket_path: an absolute path of at most 107 bytes,
// or "none"/empty (off). False with `error` if not.
bool set_hangup_socket(std::string_view value, std::string& out, std::string& error);

struct MetricsConfig {
  std::optional<Endpoint> listen;  // nullopt: no Prometheus endpoint
  bool turn_cpu = false;           // also the CPU time of each loop turn
};

struct TlsConfig {
  std::string certs_path = "tls";  // relative: to the configuration file's directory
};

struct Config {
  Role role = Role::Combined;
  std::string runtime_dir = "/run/mediaproxy";
  std::string pid_file;
  log::Level log_level = log::Level::Info;
  DispatcherConfig dispatcher;
  RelayConfig relay;
  MetricsConfig metrics;
  RtpproxyConfig rtpproxy;
  AccountingConfig accounting;
  HangupConfig hangup;
  TlsConfig tls;
  std::string config_dir = "/etc/mediaproxy";  // directory of the file read, if any

  // certs_path resolved against config_dir.
  std::string certs_dir() const;
  std::vector<std::string> warnings;  // accepted-but-unused options, "FILE:LINE: ..."

  // Absolute or runtime-dir-relative module socket path resolved.
  std::string module_socket_path() const;
};

// Parses INI text into `cfg` (starting from whatever it holds). On failure
// returns false and sets `error` to "NAME:LINE: message".
bool load_config_text(std::string_view text, const std::string& name, Config& cfg,
                      std::string& error);
bool load_config_file(const std::string& path, Config& cfg, std::string& error);

}  // namespace mp
