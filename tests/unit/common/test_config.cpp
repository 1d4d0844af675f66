// The INI configuration loader (common/config.h): defaults, every kind of
// value, and the "FILE:LINE: what is wrong" errors that stop start-up.
#include <catch2/catch.hpp>

#include <fstream>
#include <string>

#include "common/config.h"

using mp::Config;

namespace {

struct Loaded {
  bool ok;
  Config cfg;
  std::string error;
};

Loaded load(const std::string& text) {
  Loaded l;
  l.ok = mp::load_config_text(text, "test.ini", l.cfg, l.error);
  return l;
}

}  // namespace

TEST_CASE("defaults follow AG MediaProxy where it has the option", "[config]") {
  Config c;
  CHECK(c.role == mp::Role::Combined);
  CHECK(c.runtime_dir == "/run/mediaproxy");
  CHECK(c.module_socket_path() == "/run/mediaproxy/dispatcher.sock");
  CHECK(c.relay.port_start == 40000);
  CHECK(c.relay.port_end == 60000);
  CHECK(c.relay.stream_timeout == 90);
  CHECK(c.relay.on_hold_timeout == 7200);
  CHECK(c.dispatcher.relay_timeout == Approx(0.2));
  REQUIRE(c.dispatcher.listen_management);
  CHECK(c.dispatcher.listen_management->port == 25061);
  CHECK(c.dispatcher.management_use_tls);
  CHECK(c.relay.forwarding == mp::Forwarding::Auto);
  CHECK(c.relay.media_io == mp::MediaIo::Auto);
  CHECK(c.relay.media_send == mp::MediaSend::Auto);
  CHECK(c.relay.media_receive == mp::MediaReceive::Auto);
  CHECK(c.relay.state_write_interval == Approx(0.001));
  CHECK(c.relay.media_coalesce == Approx(0.0005));
  CHECK_FALSE(c.metrics.listen);
  CHECK_FALSE(c.metrics.turn_cpu);
}

TEST_CASE("a full file is read, comments and blank lines ignored", "[config]") {
  auto l = load(
      "# comment\n"
      "; another\n"
      "\n"
      "[General]\n"
      "role = combined\n"
      "runtime_dir = run\n"
      "log_level = DEBUG\n"
      "[Dispatcher]\n"
      "socket_path = /tmp/x.sock\n"
      "socket_mode = 0600\n"
      "relay_timeout = 0.15\n"
      "listen_management = 127.0.0.1\n"
      "management_use_tls = off\n"
      "[Relay]\n"
      "relay_ip = 192.0.2.5, 2001:DB8::5\n"
      "advertised_ip = 198.51.100.7\n"
      "port_range = 50000:50100\n"
      "routable_private_ranges = 10.0.0.0/8, 172.16.0.0/12 192.168.1.0/24\n"
      "forwarding = kernel\n"
      "media_io = syscalls\n"
      "media_send = sockets\n"
      "media_receive = tproxy\n"
      "state_write_interval = 0.05\n"
      "media_coalesce = 0\n"
      "nft_table = mp_1\n"
      "[Metrics]\n"
      "listen = any:9999\n"
      "turn_cpu = yes\n");
  REQUIRE(l.ok);
  CHECK(l.cfg.log_level == mp::log::Level::Debug);
  CHECK(l.cfg.module_socket_path() == "/tmp/x.sock");
  CHECK(l.cfg.dispatcher.socket_mode == 0600);
  CHECK(l.cfg.dispatcher.relay_timeout == Approx(0.15));
  CHECK(l.cfg.dispatcher.listen_management->port == 25061);
  CHECK(mp::format_ipv4(l.cfg.dispatcher.listen_management->ip) == "127.0.0.1");
  CHECK_FALSE(l.cfg.dispatcher.management_use_tls);
  CHECK(mp::format_ipv4(*l.cfg.relay.relay_ip) == "192.0.2.5");
  CHECK(mp::format_ipv4(*l.cfg.relay.advertised_ip) == "198.51.100.7");
  CHECK(mp::format_ip(*l.cfg.relay.relay_ip6) == "2001:db8::5");
  CHECK_FALSE(l.cfg.relay.advertised_ip6);
  CHECK(l.cfg.relay.port_start == 50000);
  CHECK(l.cfg.relay.port_end == 50100);
  CHECK(l.cfg.relay.routable_private_ranges.size() == 3);
  CHECK(l.cfg.relay.forwarding == mp::Forwarding::Kernel);
  CHECK(l.cfg.relay.media_io == mp::MediaIo::Syscalls);
  CHECK(l.cfg.relay.media_send == mp::MediaSend::Sockets);
  CHECK(l.cfg.relay.media_receive == mp::MediaReceive::Tproxy);
  CHECK(l.cfg.relay.state_write_interval == Approx(0.05));
  CHECK(l.cfg.relay.media_coalesce == 0);
  CHECK(l.cfg.relay.nft_table == "mp_1");
  REQUIRE(l.cfg.metrics.listen);
  CHECK(l.cfg.metrics.listen->ip.is_any());
  CHECK(l.cfg.metrics.listen->port == 9999);
  CHECK(l.cfg.metrics.turn_cpu);
  CHECK(l.cfg.warnings.empty());
}

TEST_CASE("mistakes stop start-up with the file and line", "[config]") {
  struct Case {
    const char* text;
    const char* expect;  // prefix of the error
  } cases[] = {
      {"[Nope]\n", "test.ini:1: unknown section [Nope]"},
      {"[Relay]\nnope = 1\n", "test.ini:2: unknown option 'nope' in section [Relay]"},
      {"x = 1\n", "test.ini:1: option outside any section"},
      {"[Relay]\nport_range = 40001:60000\n", "test.ini:2: port_range:"},
      {"[Relay]\nport_range = 50000:40000\n", "test.ini:2: port_range:"},
      {"[Relay]\nport_range = 40000\n", "test.ini:2: port_range:"},
      {"[Relay]\nstream_timeout = 0\n", "test.ini:2: stream_timeout:"},
      {"[Relay]\nstream_timeout = ten\n", "test.ini:2: stream_timeout:"},
      {"[Relay]\nrelay_ip = 1.2.3\n", "test.ini:2: relay_ip:"},
      {"[Relay]\nrelay_ip = 0.0.0.0\n", "test.ini:2: relay_ip:"},
      {"[Relay]\nrelay_ip = ::\n", "test.ini:2: relay_ip:"},
      {"[Relay]\nrelay_ip = 192.0.2.5, 192.0.2.6\n", "test.ini:2: relay_ip: more than one IPv4"},
      {"[Relay]\nrelay_ip = 2001:db8::1, ::1\n", "test.ini:2: relay_ip: more than one IPv6"},
      {"[Relay]\nrelay_ip = ::ffff:192.0.2.5\n", "test.ini:2: relay_ip:"},
      {"[Relay]\nadvertised_ip = [2001:db8::1]\n", "test.ini:2: advertised_ip:"},
      {"[Relay]\nforwarding = fast\n", "test.ini:2: forwarding:"},
      {"[Relay]\nstate_write_interval = 2\n", "test.ini:2: state_write_interval:"},
      {"[Relay]\nstate_write_interval = -0.001\n", "test.ini:2: state_write_interval:"},
      {"[Relay]\nmedia_coalesce = 0.006\n", "test.ini:2: media_coalesce:"},
      {"[Relay]\nmedia_coalesce = -0.0001\n", "test.ini:2: media_coalesce:"},
      {"[Relay]\nmedia_io = uring\n", "test.ini:2: media_io: expected auto, io_uring or syscalls"},
      {"[Relay]\nnft_table = bad name\n", "test.ini:2: nft_table:"},
      {"[Relay]\nnft_table = 1abc\n", "test.ini:2: nft_table: expected a table name"},
      {"[Relay]\nroutable_private_ranges = 10.0.0.0/33\n", "test.ini:2: routable_private_ranges:"},
      {"[General]\nrole = proxy\n", "test.ini:2: role:"},
      {"[General]\nlog_level = loud\n", "test.ini:2: log_level:"},
      {"[Dispatcher]\nsocket_mode = 0999\n", "test.ini:2: socket_mode:"},
      {"[Dispatcher]\nrelay_timeout = -1\n", "test.ini:2: relay_timeout:"},
      {"[Dispatcher]\nmanagement_use_tls = maybe\n", "test.ini:2: management_use_tls:"},
      {"[Dispatcher]\nlisten_management = 1.2.3.4:0\n", "test.ini:2: listen_management:"},
      {"[Metrics]\nlisten = localhost\n", "test.ini:2: listen:"},
      {"[Relay]\n[Relay\n", "test.ini:2: section header"},
      {"[Relay]\njust words\n", "test.ini:2: expected 'option = value'"},
      {"[Relay]\nstream_timeout = 5\nstream_timeout = 6\n",
       "test.ini:3: option 'stream_timeout' given twice"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    auto l = load(c.text);
    CHECK_FALSE(l.ok);
    CHECK(l.error.rfind(c.expect, 0) == 0);
  }
}

TEST_CASE("AG options this version does not use are accepted with a warning", "[config]") {
  auto l = load("[Relay]\ndns_check_interval = 60\n[OpenSIPS]\nlocation_table = location\n");
  REQUIRE(l.ok);
  REQUIRE(l.cfg.warnings.size() == 2);
  CHECK(l.cfg.warnings[0].rfind("test.ini:2: option 'dns_check_interval'", 0) == 0);
  CHECK(l.cfg.warnings[1].find("not used by this version") != std::string::npos);
}

TEST_CASE("relay link options", "[config]") {
  auto l = load(
      "[Relay]\ndispatchers = 192.0.2.1, 192.0.2.2:5000\nkeepalive_interval = 5\n"
      "[Dispatcher]\nlisten = 10.0.0.1\npassport = O:Example, CN:*relay\n");
  REQUIRE(l.ok);
  REQUIRE(l.cfg.relay.dispatchers.size() == 2);
  CHECK(l.cfg.relay.dispatchers[0].port == 25060);
  CHECK(l.cfg.relay.dispatchers[1].port == 5000);
  CHECK(l.cfg.relay.keepalive_interval == 5);
  CHECK(l.cfg.dispatcher.listen->port == 25060);
  CHECK(l.cfg.dispatcher.passport == "O:Example, CN:*relay");
  auto bad = load("[Relay]\ndispatchers = sip.example.com\n");
  CHECK_FALSE(bad.ok);
  CHECK(bad.error.find("host names are not resolved") != std::string::npos);
}

TEST_CASE("management_passport: unset or empty means management certificates only", "[config]") {
  CHECK(Config{}.dispatcher.management_passport == std::string(mp::kDefaultManagementPassport));
  auto empty = load("[Dispatcher]\nmanagement_passport =\n");
  REQUIRE(empty.ok);
  CHECK(empty.cfg.dispatcher.management_passport == "CN:mediaproxy management*");
  auto none = load("[Dispatcher]\nmanagement_passport = None\n");
  REQUIRE(none.ok);
  CHECK(none.cfg.dispatcher.management_passport == "None");
  auto own = load("[Dispatcher]\nmanagement_passport = O:Example, CN:noc*\n");
  REQUIRE(own.ok);
  CHECK(own.cfg.dispatcher.management_passport == "O:Example, CN:noc*");
}

TEST_CASE("empty listen values switch listeners off", "[config]") {
  auto l = load("[Dispatcher]\nlisten_management = none\n[Metrics]\nlisten =\n");
  REQUIRE(l.ok);
  CHECK_FALSE(l.cfg.dispatcher.listen_management);
  CHECK_FALSE(l.cfg.metrics.listen);
}

TEST_CASE("certs_path is relative to the configuration file's directory", "[config]") {
  Config c;
  c.config_dir = "/etc/mediaproxy";
  CHECK(c.certs_dir() == "/etc/mediaproxy/tls");
  c.tls.certs_path = "/srv/certs";
  CHECK(c.certs_dir() == "/srv/certs");
}

TEST_CASE("accounting backends, [Database], [Radius] and the hang-up sockets", "[config]") {
  auto l = load(
      "[Dispatcher]\naccounting = database, radius\n"
      "[Database]\ndburi = postgresql://mp:secret@127.0.0.1:5432/acct\n"
      "sessions_table = calls\ncallid_column = cid\n"
      "[Radius]\nconfig_file = /etc/radcli/radiusclient.conf\n"
      "[OpenSIPS]\nsocket_path = none\n[Kamailio]\nsocket_path = /run/k/rpc.sock\n");
  REQUIRE(l.ok);
  CHECK(l.cfg.warnings.empty());
  CHECK(l.cfg.accounting.database);
  CHECK(l.cfg.accounting.radius);
  CHECK(l.cfg.accounting.db.dburi == "postgresql://mp:secret@127.0.0.1:5432/acct");
  CHECK(l.cfg.accounting.db.sessions_table == "calls");
  CHECK(l.cfg.accounting.db.callid_column == "cid");
  CHECK(l.cfg.accounting.db.info_column == "info");
  CHECK(l.cfg.hangup.opensips_socket.empty());
  CHECK(l.cfg.hangup.kamailio_socket == "/run/k/rpc.sock");

  auto none = load("[Dispatcher]\naccounting = none\n");
  REQUIRE(none.ok);
  CHECK_FALSE(none.cfg.accounting.database);
  CHECK_FALSE(none.cfg.accounting.radius);

  struct Bad {
    const char* text;
    const char* expect;
  };
  for (const Bad& c : {
           Bad{"[Dispatcher]\naccounting = database, mysql\n",
               "test.ini:2: accounting: unknown accounting backend 'mysql'"},
           Bad{"[Database]\ndburi = mysql://u:p@h/db\n",
               "test.ini:2: dburi: unsupported database 'mysql'"},
           Bad{"[Database]\ndburi = sqlite://relative.db\n", "test.ini:2: dburi: sqlite URI"},
           Bad{"[Database]\nsessions_table = media; DROP TABLE x\n",
               "test.ini:2: sessions_table: 'media; DROP TABLE x' is not a table or column name"},
           Bad{"[Database]\ninfo_column = 1info\n", "test.ini:2: info_column: '1info'"},
           Bad{"[OpenSIPS]\nsocket_path = relative.sock\n",
               "test.ini:2: socket_path: expected an absolute socket path"},
       }) {
    INFO(c.text);
    auto b = load(c.text);
    CHECK_FALSE(b.ok);
    CHECK(b.error.rfind(c.expect, 0) == 0);
  }
}

TEST_CASE("database URI forms", "[config]") {
  std::string error;
  auto abs = mp::parse_database_uri("sqlite:///var/lib/mediaproxy/accounting.db", error);
  REQUIRE(abs);
  CHECK(abs->engine == mp::DatabaseUri::Engine::Sqlite);
  CHECK(abs->path == "/var/lib/mediaproxy/accounting.db");
  auto rel = mp::parse_database_uri("sqlite:accounting.db", error);
  REQUIRE(rel);
  CHECK(rel->path == "accounting.db");
  auto pg = mp::parse_database_uri("postgres://u@db.example.net/acct?sslmode=require", error);
  REQUIRE(pg);
  CHECK(pg->engine == mp::DatabaseUri::Engine::Postgresql);
  CHECK(pg->conninfo == "postgres://u@db.example.net/acct?sslmode=require");
  for (const char* bad :
       {"sqlite:", "sqlite:///", "sqlite:///dir/", "mysql://x", "", "db.sqlite"}) {
    INFO(bad);
    CHECK_FALSE(mp::parse_database_uri(bad, error));
  }
}

// etc/mediaproxy.ini documents every option as a commented-out default
// (";name = value"): with all of them switched on, the file must load, so a
// renamed, removed or mistyped option in the sample fails here.
TEST_CASE("the sample configuration's commented options are all valid", "[config]") {
  std::ifstream in(std::string(MP_SOURCE_ROOT) + "/etc/mediaproxy.ini");
  REQUIRE(in);
  std::string text, line;
  int enabled = 0;
  while (std::getline(in, line)) {
    const size_t eq = line.find(" = ");
    const bool option = line.size() > 1 && line[0] == ';' && line[1] != ' ' &&
                        eq != std::string::npos &&
                        line.find_first_not_of("abcdefghijklmnopqrstuvwxyz_", 1) == eq;
    if (option) {
      line.erase(0, 1);
      ++enabled;
    }
    text += line + "\n";
  }
  CHECK(enabled > 40);
  auto l = load(text);
  INFO(l.error);
  CHECK(l.ok);
}
