// The PostgreSQL engine of the database accounting backend (libpq).
//
// Connects with the `dburi` as given (PQconnectdbParams, expand_dbname),
// adding what the URI does not set itself: connect_timeout 5 s, TCP
// keepalives and a TCP user timeout (a server that vanishes from the network
// is noticed within seconds), application_name `mediaproxy`; the client
// encoding is always UTF8. After connecting, a statement_timeout of
// kStatementTimeoutMs is set unless the URI (`options=-c statement_timeout=`),
// the role or the database already sets one: an insert waiting for a lock
// held by someone else ends with an error (Retry) instead of waiting for
// ever. Queries run asynchronously and the client gives up kClientGraceMs
// after that timeout (at most a minute), dropping the connection, so a
// server that stops answering cannot hold the worker either. A connection
// found broken is dropped and made again on the next call; one that broke
// while idle (the server restarted since the last record) is made again at
// once and the insert tried a second time.
//
// Classification by SQLSTATE: 42P01 (table missing) → TableMissing; class 22
// (data exception) and 23 (integrity constraint) are about this row's values
// → Rejected, except the encoding errors 22021/22P05, after which the row is
// sent again with non-ASCII bytes escaped (sql_engine.h), and 23502 (a NOT
// NULL column of the operator's that we do not fill); everything else
// (class 08 connection, 53 resources such as a full disk, 57 timeout or
// shutdown, 55P03 lock, 25006 read-only standby, 42 schema or privileges)
// concerns every record alike → Retry.
#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "accounting/sql_engine.h"
#include "common/log.h"

namespace mp::accounting {

namespace {

constexpr long kStatementTimeoutMs = 10000;
constexpr long kMaxClientWaitMs = 60000;
constexpr long kClientGraceMs = 5000;

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

// A libpq message on one line: line breaks and tabs become one space.
std::string trimmed(const char* text) {
  std::string s;
  for (const char* p = text ? text : ""; *p; ++p) {
    const bool space = *p == '\n' || *p == '\t' || *p == ' ';
    if (!space)
      s += *p;
    else if (!s.empty() && s.back() != ' ')
      s += ' ';
  }
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

// The URI without its password, for messages made before connecting.
std::string redacted(const std::string& uri) {
  std::string out = uri;
  const size_t scheme = out.find("://");
  if (scheme != std::string::npos) {
    const size_t start = scheme + 3;
    const size_t at = out.find('@', start);
    const size_t end = out.find_first_of("/?", start);
    if (at != std::string::npos && (end == std::string::npos || at < end)) {
      const size_t colon = out.find(':', start);
      if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, "***");
    }
  }
  const size_t pw = out.find("password=");
  if (pw != std::string::npos) {
    const size_t end = out.find('&', pw);
    out.replace(pw + 9, end == std::string::npos ? std::string::npos : end - pw - 9, "***");
  }
  return out;
}

void ignore_notice(void*, const char*) {}

class PostgresEngine final : public SqlEngine {
 public:
  PostgresEngine(std::string conninfo, const TableNames& names)
      : conninfo_(std::move(conninfo)), where_(redacted(conninfo_)) {
    const std::string cols = quote_identifier(names.call_id) + ", " +
                             quote_identifier(names.from_tag) + ", " +
                             quote_identifier(names.to_tag);
    table_ = quote_identifier(names.table);
    create_sql_ = "CREATE TABLE IF NOT EXISTS " + table_ + " (id BIGSERIAL PRIMARY KEY, " +
                  quote_identifier(names.call_id) + " TEXT NOT NULL, " +
                  quote_identifier(names.from_tag) + " TEXT NOT NULL, " +
                  quote_identifier(names.to_tag) + " TEXT NOT NULL DEFAULT '', " +
                  quote_identifier(names.info) + " TEXT, UNIQUE (" + cols + "))";
    insert_sql_ = "INSERT INTO " + table_ + " (" + cols + ", " + quote_identifier(names.info) +
                  ") VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
  }
  ~PostgresEngine() override { drop(); }

  std::string describe() const override { return "PostgreSQL database " + where_; }

  EngineResult open() override {
    if (conn_ && PQstatus(conn_) == CONNECTION_OK && PQtransactionStatus(conn_) == PQTRANS_IDLE)
      return {};
    drop();
    // Entries before dbname are defaults the URI may override; entries
    // after it are forced (libpq: the last value of a keyword wins).
    const char* keywords[] = {"connect_timeout",     "application_name",
                              "keepalives",          "keepalives_idle",
                              "keepalives_interval", "keepalives_count",
                              "tcp_user_timeout",    "dbname",
                              "client_encoding",     nullptr};
    const char* values[] = {"5",     "mediaproxy",      "1",    "5",    "2", "3",
                            "15000", conninfo_.c_str(), "UTF8", nullptr};
    conn_ = PQconnectdbParams(keywords, values, 1);
    if (!conn_) return {EngineStatus::Retry, "cannot connect: out of memory"};
    PQsetNoticeProcessor(conn_, ignore_notice, nullptr);
    if (PQstatus(conn_) != CONNECTION_OK) {
      EngineResult r{EngineStatus::Retry, "cannot connect: " + trimmed(PQerrorMessage(conn_))};
      drop();
      return r;
    }
    where_ = std::string(PQdb(conn_)) + " on " + PQhost(conn_) + ":" + PQport(conn_);
    fresh_ = true;
    // The effective statement_timeout (ms; 0: none) before setting ours.
    wait_ms_ = kStatementTimeoutMs + kClientGraceMs;
    std::string error;
    Result r = exec("SELECT setting FROM pg_settings WHERE name = 'statement_timeout'", {}, error);
    if (!r || PQresultStatus(r.get()) != PGRES_TUPLES_OK || PQntuples(r.get()) != 1)
      return lost_or_retry(r, error, "cannot read statement_timeout");
    long current = std::strtol(PQgetvalue(r.get(), 0, 0), nullptr, 10);
    if (current <= 0) {
      r = exec("SET statement_timeout = " + std::to_string(kStatementTimeoutMs), {}, error);
      if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK)
        return lost_or_retry(r, error, "cannot set statement_timeout");
      current = kStatementTimeoutMs;
    }
    wait_ms_ = std::min(current, kMaxClientWaitMs) + kClientGraceMs;
    return {};
  }

  EngineResult ensure_table(bool& created) override {
    created = false;
    if (EngineResult r = open(); r.status != EngineStatus::Ok) return r;
    std::string error;
    Result r = exec("SELECT to_regclass($1) IS NOT NULL", {table_}, error);
    if (!r || PQresultStatus(r.get()) != PGRES_TUPLES_OK || PQntuples(r.get()) != 1)
      return lost_or_retry(r, error, "cannot look for the table");
    // An existing table is left alone: CREATE TABLE IF NOT EXISTS would
    // still need the CREATE privilege, which a role that only inserts lacks.
    if (std::strcmp(PQgetvalue(r.get(), 0, 0), "t") == 0) return {};
    r = exec(create_sql_, {}, error);
    if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK)
      return lost_or_retry(r, error, "cannot create the table");
    created = true;
    return {};
  }

  EngineResult begin() override {
    fresh_ = false;
    if (EngineResult r = open(); r.status != EngineStatus::Ok) return r;
    std::string error;
    Result r = exec("BEGIN", {}, error);
    if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK)
      return lost_or_retry(r, error, "cannot begin a transaction");
    in_txn_ = true;
    return {};
  }

  EngineResult commit() override {
    if (!conn_ || !in_txn_) {
      in_txn_ = false;
      return {EngineStatus::Retry, "the transaction's connection was lost"};
    }
    std::string error;
    Result r = exec("COMMIT", {}, error);
    in_txn_ = false;
    // A transaction with a failed statement answers COMMIT with ROLLBACK.
    if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK ||
        std::strcmp(PQcmdStatus(r.get()), "COMMIT") != 0)
      return lost_or_retry(r, error, "cannot commit");
    return {};
  }

  void rollback() override {
    if (conn_ && in_txn_) {
      std::string error;
      exec("ROLLBACK", {}, error);
    }
    in_txn_ = false;
  }

  EngineResult insert(const RowParams& exact) override {
    if (in_txn_) {
      // Never reconnect inside a transaction: the rows before would be
      // gone with the old connection while this one went in outside it.
      if (!conn_) return {EngineStatus::Retry, "the transaction's connection was lost"};
      return insert_as(exact, TextRule::Utf8);
    }
    fresh_ = false;
    if (EngineResult r = open(); r.status != EngineStatus::Ok) return r;
    const bool was_idle = !fresh_;
    lost_ = false;
    EngineResult r = insert_as(exact, TextRule::Utf8);
    if (r.status == EngineStatus::Retry && lost_ && was_idle) {
      // The connection broke while idle (the server restarted since the
      // last record): connect again at once. A row the server committed
      // before the break comes back as Duplicate.
      if (EngineResult o = open(); o.status != EngineStatus::Ok) return o;
      fresh_ = false;
      r = insert_as(exact, TextRule::Utf8);
    }
    return r;
  }

 private:
  EngineResult insert_as(const RowParams& exact, TextRule rule) {
    const RowParams row = apply_text_rule(exact, rule);
    std::string error;
    Result r = exec(insert_sql_, {row.call_id, row.from_tag, row.to_tag, row.info}, error);
    if (r && PQresultStatus(r.get()) == PGRES_COMMAND_OK)
      return {
          std::strcmp(PQcmdTuples(r.get()), "0") == 0 ? EngineStatus::Duplicate : EngineStatus::Ok,
          {}};
    const char* state = r ? PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) : nullptr;
    const std::string sqlstate = state ? state : "";
    if (rule == TextRule::Utf8 && (sqlstate == "22021" || sqlstate == "22P05")) {
      // The failed statement aborted the transaction: let the batch go
      // record by record, where the ASCII form is tried at once.
      if (in_txn_) return {EngineStatus::Rejected, "not representable in the database encoding"};
      return insert_as(exact, TextRule::Ascii);
    }
    EngineResult out = lost_or_retry(r, error, "cannot insert");
    if (!conn_) return out;
    if (sqlstate == "42P01") out.status = EngineStatus::TableMissing;
    // 23502 (not null violation): our four values are never null, so it is
    // another column of the operator's table, and every row would fail.
    if ((sqlstate.rfind("22", 0) == 0 || sqlstate.rfind("23", 0) == 0) && sqlstate != "23502")
      out.status = EngineStatus::Rejected;
    return out;
  }

  // The failure of a query (`r` null: no answer, `error` says why), as a
  // Retry; drops the connection if it is broken.
  EngineResult lost_or_retry(const Result& r, const std::string& error, const std::string& what) {
    std::string detail = what + ": ";
    if (!r) {
      detail += error;
    } else {
      detail += trimmed(PQresultErrorMessage(r.get()));
      if (const char* s = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE))
        detail += std::string(" (SQLSTATE ") + s + ")";
    }
    if (!r || !conn_ || PQstatus(conn_) != CONNECTION_OK) {
      if (r && conn_) {
        detail += "; connection lost";
        lost_ = true;
      }
      drop();
    }
    return {EngineStatus::Retry, detail};
  }

  // Runs `sql` with text parameters (types inferred by the server from the
  // columns) and waits at most wait_ms_ for its result. nullptr with `error`
  // set when there is no result: the connection is then dropped.
  Result exec(const std::string& sql, const std::vector<std::string>& params, std::string& error) {
    std::vector<const char*> values;
    std::vector<int> lengths;
    for (const auto& p : params) {
      values.push_back(p.c_str());
      lengths.push_back(static_cast<int>(p.size()));
    }
    if (!PQsendQueryParams(conn_, sql.c_str(), static_cast<int>(params.size()), nullptr,
                           values.data(), lengths.data(), nullptr, 0)) {
      error = "connection lost: " + trimmed(PQerrorMessage(conn_));
      lost_ = true;
      drop();
      return nullptr;
    }
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + std::chrono::milliseconds(wait_ms_);
    Result first;
    for (;;) {
      while (PQisBusy(conn_)) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        pollfd pfd{PQsocket(conn_), POLLIN, 0};
        const int n = left > 0 ? ::poll(&pfd, 1, static_cast<int>(left)) : 0;
        if (n == 0) {
          error = "no answer from the server within " + std::to_string(wait_ms_ / 1000) +
                  " s; connection dropped";
          drop();
          return nullptr;
        }
        if ((n < 0 && errno != EINTR) || (n > 0 && !PQconsumeInput(conn_))) {
          error = "connection lost: " + trimmed(PQerrorMessage(conn_));
          lost_ = true;
          drop();
          return nullptr;
        }
      }
      PGresult* r = PQgetResult(conn_);
      if (!r) break;
      if (!first)
        first.reset(r);
      else
        PQclear(r);
    }
    if (!first) {
      error = "connection lost: " + trimmed(PQerrorMessage(conn_));
      lost_ = true;
      drop();
    }
    return first;
  }

  void drop() {
    if (conn_) PQfinish(conn_);
    conn_ = nullptr;
  }

  std::string conninfo_;
  std::string where_;
  std::string table_;  // quoted
  std::string create_sql_;
  std::string insert_sql_;
  PGconn* conn_ = nullptr;
  bool fresh_ = false;   // connected during the current insert
  bool lost_ = false;    // the last query found the connection broken
  bool in_txn_ = false;  // between begin() and commit()/rollback()
  long wait_ms_ = kStatementTimeoutMs + kClientGraceMs;
};

}  // namespace

std::unique_ptr<SqlEngine> make_postgres_engine(const std::string& conninfo,
                                                const TableNames& names) {
  return std::make_unique<PostgresEngine>(conninfo, names);
}

}  // namespace mp::accounting
