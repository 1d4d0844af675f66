// The database accounting backend (accounting/database_backend.h) against
// real SQLite files in a temporary directory: the table made at start and
// again when it goes missing, rows byte-exact whatever the call-id holds,
// duplicates, configured names, a lock held by another connection, a
// directory that is missing or not a directory; and the pure helpers of
// accounting/sql_engine.h (the row of a record, the text rules, names).
// PostgreSQL is tested against a real server in
// tests/integration/test_accounting_db.py; here only its refusal to connect.
#include <catch2/catch.hpp>

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "accounting/database_backend.h"
#include "accounting/sql_engine.h"

using namespace mp::accounting;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/mp-database-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() {
    std::string cmd = "rm -rf '" + path + "'";
    if (system(cmd.c_str()) != 0) {
    }
  }
};

SessionRecord record(std::string call_id, std::string from_tag,
                     std::optional<std::string> to_tag = std::string("tt")) {
  SessionRecord r;
  r.call_id = std::move(call_id);
  r.from_tag = std::move(from_tag);
  r.to_tag = std::move(to_tag);
  r.start_time = 1700000000.5;
  r.json = R"({"call_id": "x", "from_tag": "y", "start_time": 1700000000.5, "streams": []})";
  return r;
}

mp::DatabaseConfig sqlite_config(const std::string& file) {
  mp::DatabaseConfig cfg;
  cfg.dburi = "sqlite://" + file;
  return cfg;
}

std::unique_ptr<Backend> backend(const mp::DatabaseConfig& cfg) {
  std::string error;
  auto b = make_database_backend(cfg, error);
  INFO(error);
  REQUIRE(b);
  return b;
}

// A second, independent connection to the file, as an operator's sqlite3.
struct Reader {
  sqlite3* db = nullptr;
  explicit Reader(const std::string& file) {
    REQUIRE(sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
  }
  ~Reader() { sqlite3_close_v2(db); }
  bool exec(const std::string& sql) {
    return sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK;
  }
  // Every row of `sql`, each column's exact bytes.
  std::vector<std::vector<std::string>> rows(const std::string& sql) {
    std::vector<std::vector<std::string>> out;
    sqlite3_stmt* stmt = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK);
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      std::vector<std::string> row;
      for (int i = 0; i < sqlite3_column_count(stmt); ++i) {
        const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt, i));
        row.emplace_back(p ? p : "", static_cast<size_t>(sqlite3_column_bytes(stmt, i)));
      }
      out.push_back(row);
    }
    sqlite3_finalize(stmt);
    return out;
  }
  size_t count(const std::string& table = "media_sessions") {
    auto r = rows("SELECT count(*) FROM " + table);
    return r.empty() ? 0 : std::stoul(r[0][0]);
  }
};

}  // namespace

TEST_CASE("row parameters of a record", "[database]") {
  SessionRecord r = record("c@h", "ft", std::string("tt"));
  RowParams p = row_params(r);
  CHECK(p.call_id == "c@h");
  CHECK(p.from_tag == "ft");
  CHECK(p.to_tag == "tt");
  CHECK(p.info == r.json);

  r.to_tag.reset();
  CHECK(row_params(r).to_tag == "");

  r.call_id = std::string("x\xff\xfey");
  CHECK(row_params(r).call_id == std::string("x\xff\xfey"));
  CHECK(row_params(r, TextRule::Utf8).call_id == "x\\xff\\xfey");
  CHECK(row_params(r, TextRule::Utf8).info == r.json);
}

TEST_CASE("text rules: valid UTF-8 kept, other bytes as \\xhh", "[database]") {
  const std::string valid = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\x9e 'quoted' \\x41";
  CHECK(apply_text_rule(valid, TextRule::Exact) == valid);
  CHECK(apply_text_rule(valid, TextRule::Utf8) == valid);
  CHECK(apply_text_rule(std::string("a\0b", 3), TextRule::Utf8) == "a\\x00b");
  CHECK(apply_text_rule(std::string("a\0b", 3), TextRule::Exact) == std::string("a\0b", 3));
  // Overlong, surrogate, above U+10FFFF, truncated, stray continuation.
  CHECK(apply_text_rule("\xc0\xaf", TextRule::Utf8) == "\\xc0\\xaf");
  CHECK(apply_text_rule("\xed\xa0\x80", TextRule::Utf8) == "\\xed\\xa0\\x80");
  CHECK(apply_text_rule("\xf4\x90\x80\x80", TextRule::Utf8) == "\\xf4\\x90\\x80\\x80");
  CHECK(apply_text_rule("\xe2\x82z", TextRule::Utf8) == "\\xe2\\x82z");
  CHECK(apply_text_rule("\x80\xc3\xa9", TextRule::Utf8) == "\\x80\xc3\xa9");
  CHECK(apply_text_rule("caf\xc3\xa9\xff", TextRule::Ascii) == "caf\\xc3\\xa9\\xff");
  // Deterministic: a replay maps to the same text.
  CHECK(apply_text_rule("\xff\xc3", TextRule::Utf8) == apply_text_rule("\xff\xc3", TextRule::Utf8));
}

TEST_CASE("table and column names are checked and quoted", "[database]") {
  std::string why;
  CHECK(check_table_names(TableNames{}, why));
  CHECK(check_table_names({"acct", "cid", "ftag", "ttag", "payload"}, why));
  CHECK(why.empty());
  CHECK_FALSE(check_table_names({"bad name", "c", "f", "t", "i"}, why));
  CHECK_THAT(why, Catch::Contains("sessions_table"));
  CHECK_FALSE(check_table_names({"t", "c", "f", "t", "1x"}, why));
  CHECK_THAT(why, Catch::Contains("info_column"));
  CHECK_FALSE(check_table_names({"t", "c", "C", "t", "i"}, why));
  CHECK_THAT(why, Catch::Contains("same column"));
  CHECK_FALSE(check_table_names({"t", "c", "f", "ID", "i"}, why));
  CHECK_THAT(why, Catch::Contains("'id'"));
  CHECK(quote_identifier("media_sessions") == "\"media_sessions\"");
  CHECK(quote_identifier("a\"b") == "\"a\"\"b\"");

  std::string error;
  mp::DatabaseConfig cfg;
  cfg.info_column = "info; DROP TABLE x";
  CHECK_FALSE(make_database_backend(cfg, error));
  CHECK_THAT(error, Catch::Contains("info_column"));
  cfg = mp::DatabaseConfig{};
  cfg.dburi = "mysql://u@h/db";
  CHECK_FALSE(make_database_backend(cfg, error));
  CHECK_THAT(error, Catch::Contains("unsupported database"));
}

TEST_CASE("sqlite: table created at start, rows byte-exact", "[database]") {
  TempDir dir;
  const std::string file = dir.path + "/acct.db";
  auto b = backend(sqlite_config(file));
  CHECK(b->name() == "database");
  DeliveryResult s = b->start();
  INFO(s.detail);
  REQUIRE(s.outcome == Delivery::Stored);
  Reader rd(file);
  CHECK(rd.rows("SELECT name FROM sqlite_master WHERE type = 'table' AND name = "
                "'media_sessions'")
            .size() == 1);
  CHECK(rd.count() == 0);

  const std::vector<std::string> ids = {"it's \"quoted\"", "'; DROP TABLE media_sessions; --",
                                        std::string("\xff\xfe\x80 raw"), "caf\xc3\xa9",
                                        "\\x41 backslash"};
  for (const auto& id : ids) {
    SessionRecord r = record(id, "from'" + id, std::string("to") + id);
    CHECK(b->deliver(r).outcome == Delivery::Stored);
  }
  auto rows = rd.rows("SELECT call_id, from_tag, to_tag, info FROM media_sessions ORDER BY id");
  REQUIRE(rows.size() == ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    CHECK(rows[i][0] == ids[i]);
    CHECK(rows[i][1] == "from'" + ids[i]);
    CHECK(rows[i][2] == "to" + ids[i]);
    CHECK(rows[i][3] == record("", "").json);
  }
}

TEST_CASE("sqlite: a duplicate is Duplicate and stays one row", "[database]") {
  TempDir dir;
  const std::string file = dir.path + "/acct.db";
  auto b = backend(sqlite_config(file));
  REQUIRE(b->start().outcome == Delivery::Stored);
  SessionRecord r = record(std::string("dup\xff"), "f");
  CHECK(b->deliver(r).outcome == Delivery::Stored);
  CHECK(b->deliver(r).outcome == Delivery::Duplicate);
  // Another backend on the same file (a restart replaying its journal).
  auto again = backend(sqlite_config(file));
  CHECK(again->deliver(r).outcome == Delivery::Duplicate);
  Reader rd(file);
  CHECK(rd.count() == 1);
  // Same call, other tags: other rows.
  CHECK(b->deliver(record(r.call_id, "f", std::string("other"))).outcome == Delivery::Stored);
  CHECK(rd.count() == 2);
}

TEST_CASE("sqlite: a null to_tag is stored as '' and dedupes", "[database]") {
  TempDir dir;
  const std::string file = dir.path + "/acct.db";
  auto b = backend(sqlite_config(file));
  SessionRecord r = record("c", "f", std::nullopt);
  CHECK(b->deliver(r).outcome == Delivery::Stored);
  CHECK(b->deliver(r).outcome == Delivery::Duplicate);
  Reader rd(file);
  auto rows = rd.rows("SELECT to_tag, typeof(to_tag) FROM media_sessions");
  REQUIRE(rows.size() == 1);
  CHECK(rows[0][0] == "");
  CHECK(rows[0][1] == "text");
}

TEST_CASE("sqlite: configured table and column names", "[database]") {
  TempDir dir;
  const std::string file = dir.path + "/acct.db";
  mp::DatabaseConfig cfg = sqlite_config(file);
  cfg.sessions_table = "Acct_2026";
  cfg.callid_column = "cid";
  cfg.fromtag_column = "ftag";
  cfg.totag_column = "ttag";
  cfg.info_column = "payload";
  auto b = backend(cfg);
  REQUIRE(b->start().outcome == Delivery::Stored);
  CHECK(b->deliver(record("c", "f")).outcome == Delivery::Stored);
  Reader rd(file);
  auto rows = rd.rows("SELECT cid, ftag, ttag, payload FROM Acct_2026");
  REQUIRE(rows.size() == 1);
  CHECK(rows[0][0] == "c");
  CHECK(rows[0][2] == "tt");
  CHECK(rd.rows("SELECT 1 FROM sqlite_master WHERE name = 'media_sessions'").empty());
}

TEST_CASE("sqlite: a relative path is under the runtime directory", "[database]") {
  TempDir dir;
  mp::DatabaseConfig cfg;
  cfg.dburi = "sqlite:accounting.db";
  cfg.runtime_dir = dir.path;
  auto b = backend(cfg);
  REQUIRE(b->start().outcome == Delivery::Stored);
  CHECK(access((dir.path + "/accounting.db").c_str(), F_OK) == 0);
}

TEST_CASE("sqlite: a lock held by another connection is Retry, then Stored", "[database]") {
  TempDir dir;
  const std::string file = dir.path + "/acct.db";
  auto b = backend(sqlite_config(file));
  REQUIRE(b->start().outcome == Delivery::Stored);
  Reader other(file);
  REQUIRE(other.exec("BEGIN EXCLUSIVE"));
  const auto t0 = std::chrono::steady_clock::now();
  DeliveryResult r = b->deliver(record("locked", "f"));
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(r.outcome == Delivery::Retry);
  CHECK_THAT(r.detail, Catch::Contains("lock"));
  CHECK_THAT(r.detail, Catch::Contains(file));
  CHECK(waited < 10);  // the busy timeout, never a hang
  REQUIRE(other.exec("ROLLBACK"));
  CHECK(b->deliver(record("locked", "f")).outcome == Delivery::Stored);
  CHECK(other.count() == 1);
}

TEST_CASE("sqlite: a missing directory is Retry with detail until it exists", "[database]") {
  TempDir dir;
  const std::string sub = dir.path + "/not-yet";
  const std::string file = sub + "/acct.db";
  auto b = backend(sqlite_config(file));
  DeliveryResult s = b->start();
  CHECK(s.outcome == Delivery::Retry);
  CHECK_THAT(s.detail, Catch::Contains(sub) && Catch::Contains("No such file or directory"));
  DeliveryResult r = b->deliver(record("c", "f"));
  CHECK(r.outcome == Delivery::Retry);
  CHECK_THAT(r.detail, Catch::Contains(sub));
  REQUIRE(mkdir(sub.c_str(), 0700) == 0);
  CHECK(b->deliver(record("c", "f")).outcome == Delivery::Stored);
  Reader rd(file);
  CHECK(rd.count() == 1);
}

TEST_CASE("sqlite: a parent that is not a directory, a file that is not a database", "[database]") {
  TempDir dir;
  { std::ofstream(dir.path + "/plain") << "not a directory\n"; }
  auto b = backend(sqlite_config(dir.path + "/plain/acct.db"));
  DeliveryResult r = b->deliver(record("c", "f"));
  CHECK(r.outcome == Delivery::Retry);
  CHECK_THAT(r.detail, Catch::Contains("plain"));

  { std::ofstream(dir.path + "/garbage.db") << std::string(4096, 'x'); }
  auto g = backend(sqlite_config(dir.path + "/garbage.db"));
  r = g->deliver(record("c", "f"));
  CHECK(r.outcome == Delivery::Retry);
  CHECK_THAT(r.detail, Catch::Contains("not a database"));
}

TEST_CASE("sqlite: a dropped table or a removed file is made again", "[database]") {
  TempDir dir;
  const std::string file = dir.path + "/acct.db";
  auto b = backend(sqlite_config(file));
  REQUIRE(b->start().outcome == Delivery::Stored);
  CHECK(b->deliver(record("one", "f")).outcome == Delivery::Stored);
  {
    Reader rd(file);
    REQUIRE(rd.exec("DROP TABLE media_sessions"));
  }
  CHECK(b->deliver(record("two", "f")).outcome == Delivery::Stored);
  {
    Reader rd(file);
    CHECK(rd.count() == 1);
  }
  // Rotated away by the operator: a new file, with the table.
  REQUIRE(rename(file.c_str(), (file + ".old").c_str()) == 0);
  CHECK(b->deliver(record("three", "f")).outcome == Delivery::Stored);
  Reader rd(file);
  auto rows = rd.rows("SELECT call_id FROM media_sessions");
  REQUIRE(rows.size() == 1);
  CHECK(rows[0][0] == "three");
}

TEST_CASE("sqlite: an operator's table without the unique key still takes rows", "[database]") {
  TempDir dir;
  const std::string file = dir.path + "/acct.db";
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(file.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db,
                         "CREATE TABLE media_sessions (id INTEGER PRIMARY KEY, call_id TEXT, "
                         "from_tag TEXT, to_tag TEXT, info TEXT)",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  auto b = backend(sqlite_config(file));
  REQUIRE(b->start().outcome == Delivery::Stored);
  CHECK(b->deliver(record("c", "f")).outcome == Delivery::Stored);
  Reader rd(file);
  CHECK(rd.count() == 1);
}

TEST_CASE("postgresql: a server that refuses is Retry, password not shown", "[database]") {
  mp::DatabaseConfig cfg;
  // Port 1 on loopback: nothing listens, the connection is refused at once.
  cfg.dburi = "postgresql://mp:s3cret@127.0.0.1:1/acct";
  auto b = backend(cfg);
  DeliveryResult s = b->start();
  CHECK(s.outcome == Delivery::Retry);
  CHECK_THAT(s.detail, Catch::Contains("PostgreSQL") && Catch::Contains("cannot connect"));
  CHECK_THAT(s.detail, !Catch::Contains("s3cret"));
  DeliveryResult r = b->deliver(record("c", "f"));
  CHECK(r.outcome == Delivery::Retry);
  CHECK_THAT(r.detail, !Catch::Contains("s3cret"));
}

TEST_CASE("sqlite: a batch goes in one transaction and finds its duplicates", "[database]") {
  TempDir dir;
  const std::string file = dir.path + "/acct.db";
  auto b = backend(sqlite_config(file));
  REQUIRE(b->start().outcome == Delivery::Stored);
  REQUIRE(b->deliver(record("b2", "f")).outcome == Delivery::Stored);
  std::vector<SessionRecord> batch;
  for (const char* id : {"b0", "b1", "b2", "b3", "b4"}) batch.push_back(record(id, "f"));
  std::vector<DeliveryResult> out;
  b->deliver_batch(batch, out);
  REQUIRE(out.size() == 5);
  for (size_t i = 0; i < 5; ++i)
    CHECK(out[i].outcome == (i == 2 ? Delivery::Duplicate : Delivery::Stored));
  Reader rd(file);
  CHECK(rd.count() == 5);
}

TEST_CASE("sqlite: a record refused inside a batch is Rejected, the others stored once",
          "[database]") {
  TempDir dir;
  const std::string file = dir.path + "/acct.db";
  {
    // An operator's table that takes call-ids of at most 8 bytes.
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(file.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db,
                         "CREATE TABLE media_sessions (id INTEGER PRIMARY KEY, call_id TEXT "
                         "CHECK (length(call_id) <= 8), from_tag TEXT, to_tag TEXT, info TEXT, "
                         "UNIQUE (call_id, from_tag, to_tag))",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  auto b = backend(sqlite_config(file));
  REQUIRE(b->start().outcome == Delivery::Stored);
  std::vector<SessionRecord> batch{record("first", "f"), record("much-too-long-call-id", "f"),
                                   record("last", "f")};
  std::vector<DeliveryResult> out;
  b->deliver_batch(batch, out);
  REQUIRE(out.size() == 3);
  CHECK(out[0].outcome == Delivery::Stored);
  CHECK(out[1].outcome == Delivery::Rejected);
  CHECK(out[2].outcome == Delivery::Stored);
  Reader rd(file);
  CHECK(rd.rows("SELECT call_id FROM media_sessions ORDER BY id") ==
        std::vector<std::vector<std::string>>{{"first"}, {"last"}});
}
