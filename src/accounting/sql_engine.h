// The engines under the database accounting backend (internal header).
//
// database_backend.cpp drives one SqlEngine per backend: SQLite
// (sqlite_engine.cpp, libsqlite3) or PostgreSQL (postgres_engine.cpp, libpq).
// An engine opens or connects, creates the sessions table if it is missing
// and inserts one row with bound parameters; it never builds SQL text from
// call data: the only names in its SQL text are the table and column names
// of the configuration, checked as identifiers and quoted. Every failure is
// classified into an EngineStatus so the backend can answer Retry (the
// server, the file or the schema is not usable now: every record would fail
// the same way) or Rejected (the server refuses this record's values).
//
// The row of a record (row_params) is a pure function. Text rule, per engine:
// - SQLite keeps the exact bytes of the identifiers (TextRule::Exact);
// - PostgreSQL text cannot hold invalid UTF-8 nor NUL, so a value that is
//   valid UTF-8 without NUL is stored exactly, and otherwise each byte that
//   is not part of a valid UTF-8 sequence (and each NUL) is written as the
//   four characters `\xhh` (lowercase hex), the valid sequences around it
//   kept (TextRule::Utf8). If the server's database encoding cannot
//   represent a character (a LATIN1 database), the insert is repeated once
//   with every byte >= 0x80 and every NUL written as `\xhh`
//   (TextRule::Ascii). The rules are deterministic, so a record replayed
//   from the journal maps to the same row and the unique key still finds it.
//   (A call-id that literally contains the text `\xff` and one that
//   contains the byte 0xff become the same text; SIP call-ids are ASCII
//   tokens, so a real pair of such calls with the same tags does not occur.)
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "accounting/session_record.h"
#include "common/config.h"

namespace mp::accounting {

enum class TextRule { Exact, Utf8, Ascii };

// `text` under `rule` (see above).
std::string apply_text_rule(std::string_view text, TextRule rule);

// The values of one row, in column order call_id, from_tag, to_tag, info. A
// JSON null to_tag (a call never answered by a callee) is stored as '' so
// that the unique key (call_id, from_tag, to_tag) also dedupes it.
struct RowParams {
  std::string call_id;
  std::string from_tag;
  std::string to_tag;
  std::string info;  // the whole JSON record
};
RowParams row_params(const SessionRecord& record, TextRule rule = TextRule::Exact);
// `row` (exact bytes) with every value under `rule`.
RowParams apply_text_rule(const RowParams& row, TextRule rule);

// The configured table and column names.
struct TableNames {
  std::string table = "media_sessions";
  std::string call_id = "call_id";
  std::string from_tag = "from_tag";
  std::string to_tag = "to_tag";
  std::string info = "info";
};
// False with `error` if `names` cannot be used (not identifiers, two columns
// with the same name, or a column named like the `id` key).
bool check_table_names(const TableNames& names, std::string& error);
// `name` as a quoted SQL identifier ("name"; names are checked identifiers,
// so there is no quote inside to double, but it is doubled all the same).
std::string quote_identifier(std::string_view name);

enum class EngineStatus {
  Ok,
  Duplicate,     // insert: the unique key already holds this row
  TableMissing,  // insert: the table does not exist
  Retry,         // transient, or the server/schema is not usable now
  Rejected,      // the server can never accept this row's values
};

struct EngineResult {
  EngineStatus status = EngineStatus::Ok;
  std::string detail;  // what failed, for the operator (escaped by the logger)
};

class SqlEngine {
 public:
  virtual ~SqlEngine() = default;
  // "SQLite database /var/lib/mediaproxy/accounting.db",
  // "PostgreSQL database mediaproxy on db.example.com:5432" (no password).
  virtual std::string describe() const = 0;
  // Opens the file or connects, unless already open and usable.
  virtual EngineResult open() = 0;
  // CREATE TABLE IF NOT EXISTS; Ok when it exists afterwards. `created` is
  // set when it did not exist before.
  virtual EngineResult ensure_table(bool& created) = 0;
  // Inserts one row (INSERT ... ON CONFLICT DO NOTHING) of exact bytes,
  // under the engine's text rule: Ok, Duplicate, TableMissing, Retry or
  // Rejected. Opens first if needed.
  virtual EngineResult insert(const RowParams& row) = 0;
  // One transaction around several inserts: begin(), insert()s, commit().
  // When any of them is not Ok (or Duplicate), the caller calls rollback()
  // and inserts the rows again one by one, each classified on its own.
  // Inside a transaction an engine never reconnects on its own: a broken
  // connection fails the transaction instead.
  virtual EngineResult begin() = 0;
  virtual EngineResult commit() = 0;
  virtual void rollback() = 0;
};

// `path` absolute. Never fails here: open() reports a file it cannot use.
std::unique_ptr<SqlEngine> make_sqlite_engine(const std::string& path, const TableNames& names);
// `conninfo` a postgresql:// URI for libpq. Never fails here: open()
// reports a server it cannot reach.
std::unique_ptr<SqlEngine> make_postgres_engine(const std::string& conninfo,
                                                const TableNames& names);

}  // namespace mp::accounting
