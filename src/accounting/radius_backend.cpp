// The RADIUS accounting backend on radcli: one Accounting-Request per record.
//
// make_radius_backend() reads client.conf with rc_read_config() (which also
// reads the dictionary named there), then the additional dictionary with
// rc_read_dictionary(), and checks that every attribute of spec F.2 is
// defined with the right type; client.conf is looked at first by this file
// so that the usual mistakes get a precise error here (radcli itself only
// tells syslog). deliver() builds the attributes (radius_attributes.h) and
// sends them to each `acctserver` in turn with rc_send_server(): not
// rc_acct(), which would add NAS-Port = 0 and add or overwrite the
// Acct-Delay-Time that carries the post-dial delay (F.2: omitted when there
// is none). Zero-length strings are left out (RFC 8044 3.5). radcli itself
// still adds NAS-IP-Address when the record has none (its own source
// address) and replaces it with client.conf's `nas-ip` when that is set,
// and adds NAS-Identifier when `nas-identifier` is. Outcomes: an
// Accounting-Response is Stored; no reply, a bad reply or a send error from
// every server is Retry (the queue keeps the record and offers it again);
// only a record that cannot be turned into attributes is Rejected. A request
// blocks the worker (and a stop of the process waits for it) for at most
// radius_timeout x (radius_retries + 1) seconds per acctserver.
#include "accounting/radius_backend.h"

#include <netdb.h>
#include <radcli/radcli.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>

#include "accounting/radius_attributes.h"

namespace mp::accounting {

namespace {

// The client.conf keywords this file checks before radcli reads it.
struct ClientConf {
  std::map<std::string, std::string> values;  // keyword -> value (first occurrence)
};

std::string trim(std::string s) {
  const char* ws = " \t\r\n";
  s.erase(0, s.find_first_not_of(ws) == std::string::npos ? s.size() : s.find_first_not_of(ws));
  s.erase(s.find_last_not_of(ws) + 1);
  return s;
}

std::string errno_text(int e) {
  return std::strerror(e);
}

bool readable(const std::string& path, std::string& why) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (!f) {
    why = errno_text(errno);
    return false;
  }
  std::fclose(f);
  return true;
}

// Reads client.conf as radcli does (a keyword, blanks, the value; '#'
// starts a comment line) and checks what radcli would refuse without a
// useful message: the file itself, the keywords radcli requires (authserver
// even for accounting only; dictionary; radius_timeout and radius_retries
// above 0), an acctserver (radcli accepts none; we need one) and the files
// named in it.
bool check_client_conf(const std::string& path, std::string& error) {
  std::ifstream in(path);
  if (!in) {
    error = "cannot read the RADIUS client configuration " + path + ": " + errno_text(errno);
    return false;
  }
  ClientConf conf;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty() || line[0] == '#' || line[0] == '\r') continue;
    const size_t end = line.find_first_of(" \t");
    if (end == 0) {
      error = path + " line " + std::to_string(number) +
              ": a line must start with a keyword (radcli refuses leading blanks)";
      return false;
    }
    const std::string key = line.substr(0, end);
    const std::string value = end == std::string::npos ? "" : trim(line.substr(end));
    if (conf.values.count(key)) {
      error = path + " line " + std::to_string(number) + ": " + key +
              " appears twice (radcli refuses duplicate keywords)";
      return false;
    }
    conf.values[key] = value;
  }
  const auto has = [&](const char* key) {
    auto it = conf.values.find(key);
    return it != conf.values.end() && !it->second.empty();
  };
  if (!has("acctserver")) {
    error = path + " has no acctserver (host[:port[:secret]]): nowhere to send accounting";
    return false;
  }
  if (!has("authserver")) {
    error = path +
            " has no authserver: radcli requires one even for accounting only; write e.g. the "
            "acctserver host again (`authserver HOST`; mediaproxy never sends to it)";
    return false;
  }
  if (!has("dictionary")) {
    error = path + " has no dictionary (e.g. `dictionary /etc/radcli/dictionary`)";
    return false;
  }
  for (const char* key : {"radius_timeout", "radius_retries"}) {
    const std::string v = has(key) ? conf.values[key] : "";
    char* rest = nullptr;
    const long n = v.empty() ? 0 : std::strtol(v.c_str(), &rest, 10);
    if (v.empty() || *rest != '\0' || n <= 0) {
      error = path + ": " + key + " must be a whole number above 0 (radcli requires it), not '" +
              v + "'";
      return false;
    }
  }
  for (const char* key : {"dictionary", "servers"}) {
    if (!has(key)) continue;
    const std::string& file = conf.values[key];
    std::string why;
    if (!readable(file, why)) {
      error = path + ": " + key + " " + file + " cannot be read: " + why +
              (file[0] == '/' ? ""
                              : " (radcli opens it relative to the working directory; "
                                "write an absolute path)");
      return false;
    }
  }
  return true;
}

int radcli_type(RadiusAttribute::Type t) {
  switch (t) {
    case RadiusAttribute::Type::String:
      return PW_TYPE_STRING;
    case RadiusAttribute::Type::Integer:
      return PW_TYPE_INTEGER;
    case RadiusAttribute::Type::Ipv4:
      return PW_TYPE_IPADDR;
  }
  return -1;
}

const char* type_name(RadiusAttribute::Type t) {
  switch (t) {
    case RadiusAttribute::Type::String:
      return "string";
    case RadiusAttribute::Type::Integer:
      return "integer";
    case RadiusAttribute::Type::Ipv4:
      return "ipaddr";
  }
  return "?";
}

struct PairList {
  VALUE_PAIR* head = nullptr;
  ~PairList() {
    if (head) rc_avpair_free(head);
  }
};

class RadiusBackend final : public Backend {
 public:
  RadiusBackend(rc_handle* rh, std::map<std::string, int, std::less<>> ids)
      : rh_(rh), ids_(std::move(ids)) {
    timeout_ = rc_conf_int(rh_, "radius_timeout");
    retries_ = rc_conf_int(rh_, "radius_retries");
  }
  ~RadiusBackend() override { rc_destroy(rh_); }

  std::string_view name() const override { return "radius"; }

  // Nothing to connect: RADIUS is one datagram exchange per record. Says
  // where records go, and whether each server has a secret and an address.
  DeliveryResult start() override {
    SERVER* srv = rc_conf_srv(rh_, "acctserver");
    DeliveryResult r;
    std::string where;
    for (int i = 0; srv && i < srv->max; ++i) {
      if (!where.empty()) where += ", ";
      where += server_name(srv, i);
      struct addrinfo* info = nullptr;
      char secret[MAX_SECRET_LENGTH + 1] = {};
      // On failure radcli has already freed `info` (and leaves it dangling).
      if (rc_find_server_addr(rh_, srv->name[i], &info, secret, ACCT) == 0) {
        freeaddrinfo(info);
      } else {
        r.outcome = Delivery::Retry;
        r.detail = "accounting server " + server_name(srv, i) +
                   ": unknown host, or no secret for it in the `servers` file of client.conf";
      }
      std::memset(secret, 0, sizeof secret);
    }
    if (r.outcome != Delivery::Retry) r.detail = "accounting servers: " + where;
    return r;
  }

  DeliveryResult deliver(const SessionRecord& record) override {
    DeliveryResult r;
    std::string error;
    auto attrs = radius_attributes(record.json, error);
    if (!attrs) return {Delivery::Rejected, "no RADIUS attributes: " + error};
    PairList pairs;
    for (const RadiusAttribute& a : *attrs) {
      // RFC 8044 3.5: a string of length zero is not sent, the attribute is
      // left out (FreeRADIUS drops such attributes anyway).
      if (a.type == RadiusAttribute::Type::String && a.text.empty()) continue;
      auto id = ids_.find(a.name);
      if (id == ids_.end()) return {Delivery::Rejected, "attribute " + a.name + " unknown"};
      VALUE_PAIR* added = nullptr;
      if (a.type == RadiusAttribute::Type::String)
        added = rc_avpair_add(rh_, &pairs.head, id->second, a.text.data(),
                              static_cast<int>(a.text.size()), 0);
      else
        added = rc_avpair_add(rh_, &pairs.head, id->second, &a.number, 0, 0);
      if (!added) return {Delivery::Rejected, "radcli refused the value of attribute " + a.name};
    }
    SERVER* srv = rc_conf_srv(rh_, "acctserver");
    std::string details;
    for (int i = 0; srv && i < srv->max; ++i) {
      SEND_DATA data{};
      data.send_pairs = pairs.head;
      rc_buildreq(rh_, &data, PW_ACCOUNTING_REQUEST, srv->name[i], srv->port[i], srv->secret[i],
                  timeout_, retries_);
      const int result = rc_send_server(rh_, &data, nullptr, ACCT);
      pairs.head = data.send_pairs;  // radcli may have appended NAS-IP-Address
      if (data.receive_pairs) rc_avpair_free(data.receive_pairs);
      if (result == OK_RC) return {Delivery::Stored, ""};
      if (!details.empty()) details += "; ";
      details += server_name(srv, i) + ": " + failure(result);
    }
    if (details.empty()) details = "client.conf names no acctserver";
    return {Delivery::Retry, details};
  }

 private:
  static std::string server_name(const SERVER* srv, int i) {
    return std::string(srv->name[i] ? srv->name[i] : "?") + ":" + std::to_string(srv->port[i]);
  }

  std::string failure(int result) const {
    switch (result) {
      case TIMEOUT_RC:
        return "no reply (" + std::to_string(retries_ + 1) + " tries, radius_timeout " +
               std::to_string(timeout_) +
               " s): server down or unreachable, or a wrong shared secret (servers drop "
               "requests whose authenticator does not match)";
      case BADRESP_RC:
      case BADRESPID_RC:
        return "bad reply (wrong shared secret?)";
      case REJECT_RC:
      case CHALLENGE_RC:
        return "reply is not an Accounting-Response";
      default:
        return "could not send (unknown host, no secret for it, or a socket error; radcli "
               "logs the cause to syslog)";
    }
  }

  rc_handle* rh_;
  std::map<std::string, int, std::less<>> ids_;  // attribute name -> dictionary id
  int timeout_ = 0;
  int retries_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_radius_backend(const RadiusConfig& cfg, std::string& error) {
  if (!check_client_conf(cfg.config_file, error)) return nullptr;
  rc_handle* rh = rc_read_config(cfg.config_file.c_str());
  if (!rh) {
    error = "radcli refused " + cfg.config_file +
            " (an unknown keyword, a bad server or a dictionary it cannot parse; radcli logs the "
            "line to syslog)";
    return nullptr;
  }
  std::string why;
  if (!readable(cfg.additional_dictionary, why)) {
    error = "cannot read the mediaproxy dictionary " + cfg.additional_dictionary + ": " + why;
    rc_destroy(rh);
    return nullptr;
  }
  if (rc_read_dictionary(rh, cfg.additional_dictionary.c_str()) != 0) {
    error = "radcli cannot parse the dictionary " + cfg.additional_dictionary +
            " (radcli logs the line to syslog)";
    rc_destroy(rh);
    return nullptr;
  }
  std::map<std::string, int, std::less<>> ids;
  for (const auto& [name, type] : radius_attribute_names()) {
    const std::string n(name);
    DICT_ATTR* attr = rc_dict_findattr(rh, n.c_str());
    // rc_avpair_add() looks the attribute up again by number: that entry is
    // the one whose type counts.
    DICT_ATTR* by_number = attr ? rc_dict_getattr(rh, attr->value) : nullptr;
    if (!attr || !by_number) {
      error = "attribute " + n + " is in no dictionary (client.conf dictionary and " +
              cfg.additional_dictionary + ")";
      rc_destroy(rh);
      return nullptr;
    }
    if (static_cast<int>(by_number->type) != radcli_type(type)) {
      error = "attribute " + n + " (" + std::to_string(attr->value) + ") must be of type " +
              type_name(type) + " in the dictionaries";
      rc_destroy(rh);
      return nullptr;
    }
    ids[n] = attr->value;
  }
  return std::make_unique<RadiusBackend>(rh, std::move(ids));
}

}  // namespace mp::accounting
