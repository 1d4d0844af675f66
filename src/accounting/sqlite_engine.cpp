// The SQLite engine of the database accounting backend (libsqlite3).
//
// The file is opened (and created) on first use, in WAL journal mode so an
// operator's `sqlite3 FILE 'select ...'` never holds up an insert, with a
// busy timeout of kBusyTimeoutMs: a lock held by another process makes an
// insert wait that long and then answer Retry, never hang. Its parent
// directory is not created: a missing or unusable directory is a Retry whose
// detail names it. Before each insert the path is checked to still be the
// file that is open (same device and inode); if the file was removed or
// replaced (rotated away by the operator), it is opened again and the table
// created in the new file. Identifiers are bound as text with their exact
// bytes (SQLite does not check UTF-8), so the unique key compares bytes.
// Classification: SQLITE_CONSTRAINT, TOOBIG, MISMATCH and RANGE are about
// this row's values (Rejected); everything else (busy, locked, disk full,
// read-only, I/O error, not a database, cannot open) is about the file and
// is a Retry, after which the file is opened afresh (unless it was only a
// lock, which the open connection outlives).
#include <sqlite3.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "accounting/sql_engine.h"

namespace mp::accounting {

namespace {

constexpr int kBusyTimeoutMs = 2000;

class SqliteEngine final : public SqlEngine {
 public:
  SqliteEngine(std::string path, const TableNames& names) : path_(std::move(path)) {
    const std::string cols = quote_identifier(names.call_id) + ", " +
                             quote_identifier(names.from_tag) + ", " +
                             quote_identifier(names.to_tag);
    const std::string table = quote_identifier(names.table);
    table_ = names.table;
    create_sql_ = "CREATE TABLE IF NOT EXISTS " + table +
                  " (id INTEGER PRIMARY KEY AUTOINCREMENT, " + quote_identifier(names.call_id) +
                  " TEXT NOT NULL, " + quote_identifier(names.from_tag) + " TEXT NOT NULL, " +
                  quote_identifier(names.to_tag) + " TEXT NOT NULL DEFAULT '', " +
                  quote_identifier(names.info) + " TEXT, UNIQUE (" + cols + "))";
    insert_sql_ = "INSERT INTO " + table + " (" + cols + ", " + quote_identifier(names.info) +
                  ") VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING";
  }
  ~SqliteEngine() override { close(); }

  std::string describe() const override { return "SQLite database " + path_; }

  EngineResult open() override {
    if (db_ && same_file()) return {};
    close();
    const size_t slash = path_.rfind('/');
    const std::string dir = slash == 0 ? "/" : path_.substr(0, slash);
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0)
      return {EngineStatus::Retry, "cannot use directory " + dir + ": " + std::strerror(errno)};
    if (!S_ISDIR(st.st_mode)) return {EngineStatus::Retry, dir + " is not a directory"};
    int rc =
        sqlite3_open_v2(path_.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
    if (rc != SQLITE_OK) return fail(rc, "cannot open");
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, kBusyTimeoutMs);
    // Reads the header, so a file that is not a database, cannot be read or
    // is locked shows here. Where WAL is not possible (some network file
    // systems) SQLite keeps its rollback journal, which works as well.
    rc = sqlite3_exec(db_, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return fail(rc, "cannot open");
    // In WAL mode NORMAL syncs at checkpoints, not at every commit: a row
    // survives a crash of any process, and a power loss may take the last
    // commits, as it may take the last lines of our own journal (not synced
    // either). FULL costs an fsync per record, which at thousands of calls
    // per second the worker cannot afford.
    rc = sqlite3_exec(db_, "PRAGMA synchronous=NORMAL", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return fail(rc, "cannot open");
    if (::stat(path_.c_str(), &st) != 0) {
      EngineResult r{EngineStatus::Retry, std::string("cannot open: ") + std::strerror(errno)};
      close();
      return r;
    }
    dev_ = st.st_dev;
    ino_ = st.st_ino;
    return {};
  }

  EngineResult ensure_table(bool& created) override {
    created = false;
    if (EngineResult r = open(); r.status != EngineStatus::Ok) return r;
    const bool existed =
        sqlite3_table_column_metadata(db_, "main", table_.c_str(), nullptr, nullptr, nullptr,
                                      nullptr, nullptr, nullptr) == SQLITE_OK;
    if (existed) return {};
    const int rc = sqlite3_exec(db_, create_sql_.c_str(), nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) {
      EngineResult r = fail(rc, "cannot create the table");
      if (r.status == EngineStatus::Rejected) r.status = EngineStatus::Retry;
      return r;
    }
    created = true;
    return {};
  }

  EngineResult insert(const RowParams& row) override {
    // In a transaction the file must not be reopened (the rows so far
    // would be lost with the old handle): a closed handle fails it.
    if (in_txn_ && !db_) return {EngineStatus::Retry, "the transaction's database was closed"};
    if (EngineResult r = in_txn_ ? EngineResult{} : open(); r.status != EngineStatus::Ok) return r;
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v2(db_, insert_sql_.c_str(), -1, &stmt, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(stmt);
      if (table_missing()) return {EngineStatus::TableMissing, sqlite3_errmsg(db_)};
      EngineResult r = fail(rc, "cannot prepare the insert");
      // A statement that does not compile is about the table (a column
      // the operator's table lacks), never about this row.
      if (r.status == EngineStatus::Rejected) r.status = EngineStatus::Retry;
      return r;
    }
    const std::string* values[] = {&row.call_id, &row.from_tag, &row.to_tag, &row.info};
    for (int i = 0; i < 4 && rc == SQLITE_OK; ++i)
      rc = sqlite3_bind_text64(stmt, i + 1, values[i]->data(), values[i]->size(), SQLITE_STATIC,
                               SQLITE_UTF8);
    if (rc == SQLITE_OK) rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    if (rc == SQLITE_DONE)
      return {sqlite3_changes(db_) == 0 ? EngineStatus::Duplicate : EngineStatus::Ok, {}};
    if (table_missing()) return {EngineStatus::TableMissing, sqlite3_errmsg(db_)};
    return fail(rc, "cannot insert");
  }

  EngineResult begin() override {
    if (EngineResult r = open(); r.status != EngineStatus::Ok) return r;
    const int rc = sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return fail(rc, "cannot begin a transaction");
    in_txn_ = true;
    return {};
  }

  EngineResult commit() override {
    if (!db_ || !in_txn_) return {EngineStatus::Retry, "no transaction to commit"};
    const int rc = sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return fail(rc, "cannot commit");
    in_txn_ = false;
    return {};
  }

  void rollback() override {
    if (db_ && in_txn_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    in_txn_ = false;
  }

 private:
  bool same_file() const {
    struct stat st {};
    return ::stat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_;
  }

  bool table_missing() const {
    return db_ && std::strncmp(sqlite3_errmsg(db_), "no such table", 13) == 0;
  }

  // The result of a failed call `rc`, classified; closes the file unless
  // the failure was a lock (or is about the row).
  EngineResult fail(int rc, const std::string& what) {
    std::string detail = what + ": ";
    detail += db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    // The system's reason, where the failure was a system call's.
    const int primary = rc & 0xff;
    const int sys = db_ ? sqlite3_system_errno(db_) : 0;
    if (sys != 0 &&
        (primary == SQLITE_CANTOPEN || primary == SQLITE_IOERR || primary == SQLITE_FULL ||
         primary == SQLITE_READONLY || primary == SQLITE_PERM))
      detail += std::string(" (") + std::strerror(sys) + ")";
    switch (primary) {
      case SQLITE_CONSTRAINT:
      case SQLITE_TOOBIG:
      case SQLITE_MISMATCH:
      case SQLITE_RANGE:
        return {EngineStatus::Rejected, detail};
      case SQLITE_BUSY:
      case SQLITE_LOCKED:
        detail += "; another process holds a lock on the file (waited " +
                  std::to_string(kBusyTimeoutMs / 1000) + " s)";
        return {EngineStatus::Retry, detail};
      case SQLITE_FULL:
        detail += "; the disk is full";
        break;
      case SQLITE_READONLY:
        detail += "; the file or its directory is not writable";
        break;
      default:
        break;
    }
    close();
    return {EngineStatus::Retry, detail};
  }

  void close() {
    in_txn_ = false;
    if (db_) sqlite3_close_v2(db_);
    db_ = nullptr;
    dev_ = 0;
    ino_ = 0;
  }

  std::string path_;
  std::string table_;
  std::string create_sql_;
  std::string insert_sql_;
  sqlite3* db_ = nullptr;
  bool in_txn_ = false;  // between begin() and commit()/rollback()
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

}  // namespace

std::unique_ptr<SqlEngine> make_sqlite_engine(const std::string& path, const TableNames& names) {
  return std::make_unique<SqliteEngine>(path, names);
}

}  // namespace mp::accounting
