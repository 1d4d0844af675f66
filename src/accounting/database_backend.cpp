// The database accounting backend: one row per session end (spec F.1).
//
// make_database_backend() picks the engine by the `dburi` scheme (SQLite or
// PostgreSQL, sql_engine.h), checks the table and column names again and
// resolves a relative SQLite path against the runtime directory. The
// backend creates the table at start() and, as AG MediaProxy does, again on
// the fly when an insert finds it missing (once per record: a table that is
// still missing afterwards is a Retry). A duplicate (the unique key already
// holds the row: a record replayed from the journal) is Duplicate, which the
// queue treats as done. Also here: the pure helpers of sql_engine.h (the row
// of a record, the text rules, identifier checks and quoting).
#include "accounting/database_backend.h"

#include "accounting/sql_engine.h"
#include "common/error.h"
#include "common/log.h"

namespace mp::accounting {

namespace {

// Length of the valid UTF-8 sequence (RFC 3629: no overlong forms, no
// surrogates, at most U+10FFFF) at the start of `s`, or 0 if there is none.
size_t utf8_sequence(std::string_view s) {
  auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  auto cont = [&](size_t i) { return i < s.size() && (byte(i) & 0xc0) == 0x80; };
  const unsigned char b = byte(0);
  if (b < 0x80) return 1;
  if (b >= 0xc2 && b <= 0xdf) return cont(1) ? 2 : 0;
  if (b >= 0xe0 && b <= 0xef) {
    if (!cont(1) || !cont(2)) return 0;
    if (b == 0xe0 && byte(1) < 0xa0) return 0;   // overlong
    if (b == 0xed && byte(1) >= 0xa0) return 0;  // UTF-16 surrogate
    return 3;
  }
  if (b >= 0xf0 && b <= 0xf4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (b == 0xf0 && byte(1) < 0x90) return 0;   // overlong
    if (b == 0xf4 && byte(1) >= 0x90) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}

void append_hex(std::string& out, unsigned char c) {
  static const char kHex[] = "0123456789abcdef";
  out += "\\x";
  out += kHex[c >> 4];
  out += kHex[c & 15];
}

class DatabaseBackend final : public Backend {
 public:
  DatabaseBackend(std::unique_ptr<SqlEngine> engine, std::string table)
      : engine_(std::move(engine)), table_(std::move(table)) {}

  std::string_view name() const override { return "database"; }

  DeliveryResult start() override {
    EngineResult r = engine_->open();
    if (r.status != EngineStatus::Ok) return retry(r.detail);
    bool created = false;
    r = engine_->ensure_table(created);
    if (r.status != EngineStatus::Ok)
      return retry("cannot create table " + table_ + ": " + r.detail);
    if (created)
      LOG_INFO("accounting database: created table %s in %s", table_.c_str(),
               log_safe(engine_->describe()).c_str());
    table_seen_ = true;
    return {Delivery::Stored, engine_->describe()};
  }

  DeliveryResult deliver(const SessionRecord& record) override {
    const RowParams row = row_params(record);
    EngineResult r = engine_->insert(row);
    if (r.status == EngineStatus::TableMissing) {
      bool created = false;
      EngineResult t = engine_->ensure_table(created);
      if (t.status != EngineStatus::Ok)
        return retry("table " + table_ + " is missing and cannot be created: " + t.detail);
      if (created && table_seen_)
        LOG_WARN("accounting database: table %s was missing in %s; created it again",
                 table_.c_str(), log_safe(engine_->describe()).c_str());
      else if (created)
        LOG_INFO("accounting database: created table %s in %s", table_.c_str(),
                 log_safe(engine_->describe()).c_str());
      r = engine_->insert(row);
      if (r.status == EngineStatus::TableMissing)
        return retry("table " + table_ + " is still missing after creating it: " + r.detail);
    }
    switch (r.status) {
      case EngineStatus::Ok:
        table_seen_ = true;
        return {Delivery::Stored, {}};
      case EngineStatus::Duplicate:
        table_seen_ = true;
        return {Delivery::Duplicate, "already stored"};
      case EngineStatus::Rejected:
        return {Delivery::Rejected, engine_->describe() + " refused the record: " + r.detail};
      case EngineStatus::TableMissing:
      case EngineStatus::Retry:
        break;
    }
    return retry(r.detail);
  }

  // The whole batch in one transaction: one commit (SQLite: one WAL write
  // and its locks; PostgreSQL: one round trip to commit) instead of one per
  // record. Anything unusual, and the batch goes again record by record
  // through deliver(), which classifies each failure and re-creates a
  // missing table; rows the failed transaction had inserted are rolled back,
  // so nothing is stored twice.
  void deliver_batch(const std::vector<SessionRecord>& records,
                     std::vector<DeliveryResult>& out) override {
    out.clear();
    if (records.size() <= 1) return Backend::deliver_batch(records, out);
    // A database that cannot even begin is down for every record: one
    // Retry with its reason (trying each record would wait once more).
    if (EngineResult b = engine_->begin(); b.status != EngineStatus::Ok) {
      out.push_back(retry(b.detail));
      return;
    }
    EngineResult failure;
    for (const SessionRecord& record : records) {
      const EngineResult r = engine_->insert(row_params(record));
      if (r.status == EngineStatus::Ok) {
        out.push_back({Delivery::Stored, {}});
      } else if (r.status == EngineStatus::Duplicate) {
        out.push_back({Delivery::Duplicate, "already stored"});
      } else {
        failure = r;
        break;
      }
    }
    if (failure.status == EngineStatus::Ok) {
      failure = engine_->commit();
      if (failure.status == EngineStatus::Ok) {
        table_seen_ = true;
        return;
      }
    }
    engine_->rollback();
    out.clear();
    // Retry is about the database, not a record: every record would fail
    // the same way now. A refused record or a missing table is sorted out
    // record by record.
    if (failure.status == EngineStatus::Retry) {
      out.push_back(retry(failure.detail));
      return;
    }
    Backend::deliver_batch(records, out);
  }

 private:
  DeliveryResult retry(const std::string& detail) const {
    return {Delivery::Retry, engine_->describe() + ": " + detail};
  }

  std::unique_ptr<SqlEngine> engine_;
  std::string table_;
  bool table_seen_ = false;  // the table existed at some point: its loss is worth a warning
};

}  // namespace

std::string apply_text_rule(std::string_view text, TextRule rule) {
  if (rule == TextRule::Exact) return std::string(text);
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == 0 || (rule == TextRule::Ascii && c >= 0x80)) {
      append_hex(out, c);
      ++i;
      continue;
    }
    const size_t n = utf8_sequence(text.substr(i));
    if (n == 0) {
      append_hex(out, c);
      ++i;
    } else {
      out.append(text.substr(i, n));
      i += n;
    }
  }
  return out;
}

RowParams row_params(const SessionRecord& record, TextRule rule) {
  RowParams row{record.call_id, record.from_tag, record.to_tag.value_or(std::string()),
                record.json};
  return rule == TextRule::Exact ? row : apply_text_rule(row, rule);
}

RowParams apply_text_rule(const RowParams& row, TextRule rule) {
  return {apply_text_rule(row.call_id, rule), apply_text_rule(row.from_tag, rule),
          apply_text_rule(row.to_tag, rule), apply_text_rule(row.info, rule)};
}

bool check_table_names(const TableNames& names, std::string& error) {
  const std::pair<const char*, const std::string*> all[] = {{"sessions_table", &names.table},
                                                            {"callid_column", &names.call_id},
                                                            {"fromtag_column", &names.from_tag},
                                                            {"totag_column", &names.to_tag},
                                                            {"info_column", &names.info}};
  for (const auto& [option, value] : all)
    if (std::string why; !check_sql_identifier(*value, why))
      return fail(error, option + (": " + why));
  // Column names compare without case: SQLite folds them, and PostgreSQL
  // would take "Info" and "info" as two columns only because we quote.
  auto lower = [](std::string s) {
    for (char& ch : s)
      if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
    return s;
  };
  for (size_t i = 1; i < std::size(all); ++i) {
    if (lower(*all[i].second) == "id")
      return fail(error, std::string(all[i].first) + ": 'id' is the table's own key column");
    for (size_t j = 1; j < i; ++j)
      if (lower(*all[i].second) == lower(*all[j].second))
        return fail(error, std::string(all[i].first) + " and " + all[j].first +
                               " name the same column '" + *all[i].second + "'");
  }
  return true;
}

std::string quote_identifier(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::unique_ptr<Backend> make_database_backend(const DatabaseConfig& cfg, std::string& error) {
  auto uri = parse_database_uri(cfg.dburi, error);
  if (!uri) return nullptr;
  TableNames names{cfg.sessions_table, cfg.callid_column, cfg.fromtag_column, cfg.totag_column,
                   cfg.info_column};
  if (!check_table_names(names, error)) return nullptr;
  std::unique_ptr<SqlEngine> engine;
  if (uri->engine == DatabaseUri::Engine::Sqlite) {
    std::string path = uri->path;
    if (path.front() != '/') {
      if (cfg.runtime_dir.empty()) {
        error = "sqlite:" + path + " is relative and there is no runtime directory to resolve it";
        return nullptr;
      }
      path = cfg.runtime_dir + "/" + path;
    }
    engine = make_sqlite_engine(path, names);
  } else {
    engine = make_postgres_engine(uri->conninfo, names);
  }
  return std::make_unique<DatabaseBackend>(std::move(engine), names.table);
}

}  // namespace mp::accounting
