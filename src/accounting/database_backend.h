// The database accounting backend (spec F.1): one row per session end in
// the `media_sessions` table (names configurable), `info` holding the whole
// JSON record. Engines: SQLite (libsqlite3, the embedded default) and
// PostgreSQL (libpq), chosen by the `dburi` scheme (common/database_uri.h).
// Prepared statements only: no SQL text is ever built from call data.
#pragma once

#include <memory>
#include <string>

#include "accounting/backend.h"
#include "common/config.h"

namespace mp::accounting {

// nullptr with `error` set for a configuration mistake (unknown scheme, a
// table or column name that is not an identifier). A server that is down is
// not an error here: deliver() answers Retry until it is back.
std::unique_ptr<Backend> make_database_backend(const DatabaseConfig& cfg, std::string& error);

}  // namespace mp::accounting
