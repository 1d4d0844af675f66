// Parsing of the accounting and hang-up options (config.h): the
// [Dispatcher] accounting list, the [Database] dburi forms and identifier
// names, and the [OpenSIPS]/[Kamailio] socket paths. Pure functions; the
// loader in config.cpp calls them.
#include <sys/un.h>

#include <sstream>

#include "common/config.h"
#include "common/error.h"

namespace mp {

std::optional<DatabaseUri> parse_database_uri(std::string_view uri, std::string& error) {
  auto starts = [&](std::string_view p) { return uri.substr(0, p.size()) == p; };
  DatabaseUri out;
  if (starts("sqlite:")) {
    std::string_view rest = uri.substr(7);
    // sqlite:///abs/path (SQLObject's form, as AG MediaProxy writes it) or
    // sqlite:relative/path.
    if (rest.substr(0, 2) == "//") {
      rest.remove_prefix(2);
      if (rest.empty() || rest.front() != '/') {
        error = "sqlite URI must be sqlite:///ABSOLUTE/PATH or sqlite:RELATIVE/PATH, got '" +
                std::string(uri) + "'";
        return std::nullopt;
      }
    }
    if (rest.empty() || rest.back() == '/') {
      error = "sqlite URI names no file: '" + std::string(uri) + "'";
      return std::nullopt;
    }
    if (rest.find('\0') != std::string_view::npos) {
      error = "sqlite path contains a NUL byte";
      return std::nullopt;
    }
    out.engine = DatabaseUri::Engine::Sqlite;
    out.path = std::string(rest);
    return out;
  }
  if (starts("postgresql://") || starts("postgres://")) {
    out.engine = DatabaseUri::Engine::Postgresql;
    out.conninfo = std::string(uri);
    return out;
  }
  size_t colon = uri.find(':');
  error = "unsupported database '" +
          std::string(colon == std::string_view::npos ? uri : uri.substr(0, colon)) +
          "': use sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DBNAME";
  return std::nullopt;
}

bool parse_accounting_list(std::string_view value, AccountingConfig& out, std::string& error) {
  out.database = out.radius = false;
  std::string text(value);
  for (char& ch : text)
    if (ch == ',') ch = ' ';
  std::istringstream in(text);
  std::string tok;
  while (in >> tok) {
    if (tok == "database")
      out.database = true;
    else if (tok == "radius")
      out.radius = true;
    else if (tok == "none")
      continue;
    else
      return fail(error,
                  "unknown accounting backend '" + tok + "' (known: database, radius, none)");
  }
  return true;
}

bool check_sql_identifier(std::string_view name, std::string& error) {
  auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
  bool ok = !name.empty() && name.size() <= 63 && alpha(name.front());
  for (char c : name) ok = ok && (alpha(c) || (c >= '0' && c <= '9'));
  if (ok) return true;
  return fail(error, "'" + std::string(name) +
                         "' is not a table or column name (letters, digits and '_', not starting "
                         "with a digit, at most 63)");
}

bool set_hangup_socket(std::string_view value, std::string& out, std::string& error) {
  if (value.empty() || value == "none") {
    out.clear();
    return true;
  }
  if (value.front() != '/') return fail(error, "expected an absolute socket path or none");
  if (value.size() >= sizeof(sockaddr_un::sun_path))
    return fail(error, "socket path longer than " +
                           std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes");
  out = std::string(value);
  return true;
}

}  // namespace mp
