// The PostgreSQL backend, over libpq. Statements travel as text with typed
// parameters (PQexecParams); numbers in their shortest exact text form, so a
// double read back is the double written.
#include "db/db.h"
#include "db/statement.h"

#ifndef MOESCALE_POSTGRESQL

namespace moescale::sql {
std::unique_ptr<Connection> open_postgresql(const std::string&, OpenMode) {
  throw std::runtime_error(
      "this moescale was built without PostgreSQL support; install libpq (Debian: apt-get "
      "install libpq-dev), build again, or use a SQLite path for --db");
}
}  // namespace moescale::sql

#else

#include <libpq-fe.h>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <vector>

namespace moescale::sql {
namespace {

// Built-in type oids (pg_type.h): what a bound value is, so that `?1 IS NULL OR
// name = ?1` has a type even when the value is NULL.
constexpr Oid kInt8 = 20, kFloat8 = 701, kText = 25;
constexpr int64_t kStoreLockKey = 0x6d6f6573;  // "moes": serialises schema changes

// The statement text with SQLite's ?N placeholders as $N, outside quoted text.
std::string numbered_placeholders(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  char quote = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quote) {
      if (c == quote) quote = 0;
    } else if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == '?' && i + 1 < text.size() &&
               std::isdigit(static_cast<unsigned char>(text[i + 1]))) {
      out += '$';
      continue;
    }
    out += c;
  }
  return out;
}

std::string trimmed(const char* message) {
  std::string m = message ? message : "";
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m.empty() ? "unknown error" : m;
}

using Result = std::unique_ptr<PGresult, decltype(&PQclear)>;

class PostgresCursor final : public Cursor {
 public:
  PostgresCursor(PGconn* conn, const std::string& name, const std::string& text)
      : conn_(conn), name_(name), text_(numbered_placeholders(text)) {}

  void bind_null(int i, Kind kind) override {
    set(i, std::nullopt, kind == Kind::integer ? kInt8 : kind == Kind::real ? kFloat8 : kText);
  }
  void bind_integer(int i, int64_t v) override { set(i, std::to_string(v), kInt8); }
  void bind_real(int i, double v) override {
    // As SQLite does: a NaN is stored as NULL.
    if (std::isnan(v)) return set(i, std::nullopt, kFloat8);
    if (std::isinf(v)) return set(i, v > 0 ? "Infinity" : "-Infinity", kFloat8);
    set(i, fmt::format("{}", v), kFloat8);
  }
  void bind_text(int i, const std::string& v) override { set(i, v, kText); }

  bool step() override {
    if (!result_) execute();
    return ++row_ < PQntuples(result_.get());
  }
  int64_t reset() override {
    const char* n = result_ ? PQcmdTuples(result_.get()) : "";
    const int64_t changed = *n ? std::strtoll(n, nullptr, 10) : 0;
    result_.reset();
    row_ = -1;
    return changed;
  }
  bool is_null(int col) const override { return PQgetisnull(result_.get(), row_, col) != 0; }
  int64_t integer(int col) const override {
    return std::strtoll(PQgetvalue(result_.get(), row_, col), nullptr, 10);
  }
  double real(int col) const override {
    return std::strtod(PQgetvalue(result_.get(), row_, col), nullptr);
  }
  std::string text(int col) const override {
    return std::string(PQgetvalue(result_.get(), row_, col),
                       static_cast<size_t>(PQgetlength(result_.get(), row_, col)));
  }

 private:
  void set(int i, std::optional<std::string> value, Oid type) {
    const auto at = static_cast<size_t>(i - 1);
    if (values_.size() <= at) values_.resize(at + 1), types_.resize(at + 1, kText);
    values_[at] = std::move(value);
    types_[at] = type;
  }
  void execute() {
    std::vector<const char*> values;
    for (const auto& v : values_) values.push_back(v ? v->c_str() : nullptr);
    result_.reset(PQexecParams(conn_, text_.c_str(), static_cast<int>(values.size()), types_.data(),
                               values.data(), nullptr, nullptr, 0));
    const auto status = result_ ? PQresultStatus(result_.get()) : PGRES_FATAL_ERROR;
    if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
      const std::string why =
          trimmed(result_ ? PQresultErrorMessage(result_.get()) : PQerrorMessage(conn_));
      result_.reset();
      throw std::runtime_error(
          fmt::format("database error while executing a statement in {}: {}", name_, why));
    }
    row_ = -1;
  }
  PGconn* conn_;
  const std::string& name_;
  std::string text_;
  std::vector<std::optional<std::string> > values_;
  std::vector<Oid> types_;
  Result result_{nullptr, &PQclear};
  int row_ = -1;
};

class PostgresConnection final : public Connection {
 public:
  explicit PostgresConnection(const std::string& url)
      : name_(location_for_messages(url)), conn_(PQconnectdb(url.c_str())) {
    if (!conn_ || PQstatus(conn_) != CONNECTION_OK) {
      const std::string why = trimmed(conn_ ? PQerrorMessage(conn_) : "out of memory");
      PQfinish(conn_);
      const bool no_database = why.find("database") != std::string::npos &&
                               why.find("does not exist") != std::string::npos;
      throw std::runtime_error(fmt::format(
          "cannot connect to the PostgreSQL store {}: {}; {}", name_, why,
          no_database ? "create the database first (createdb NAME, or CREATE DATABASE NAME)"
                      : "check the URL (postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE) and "
                        "that the server runs"));
    }
    // Notices (e.g. of DDL) are not for the user's terminal.
    PQsetNoticeProcessor(
        conn_, [](void*, const char*) {}, nullptr);
    exec("SET client_encoding = 'UTF8'; SET TIME ZONE 'UTC'", "configuring the session");
  }
  ~PostgresConnection() override { PQfinish(conn_); }

  Engine engine() const override { return Engine::postgresql; }
  std::unique_ptr<Cursor> prepare(const std::string& text) override {
    return std::make_unique<PostgresCursor>(conn_, name_, text);
  }
  void exec(const std::string& text, const std::string& what) override {
    Result r(PQexec(conn_, text.c_str()), &PQclear);
    const auto status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
      throw std::runtime_error(
          fmt::format("database error while {}: {}", what,
                      trimmed(r ? PQresultErrorMessage(r.get()) : PQerrorMessage(conn_))));
  }
  // READ COMMITTED with row locks for writes (see statement.h); one snapshot for a
  // consistent read; schema changes one at a time, under an advisory lock.
  void begin(TransactionKind kind) override {
    switch (kind) {
      case TransactionKind::write: exec("BEGIN", "starting"); break;
      case TransactionKind::snapshot_read:
        exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "starting");
        break;
      case TransactionKind::schema_change:
        exec(fmt::format("BEGIN; SELECT pg_advisory_xact_lock({})", kStoreLockKey),
             "starting a schema change");
        break;
    }
  }
  void commit() override { exec("COMMIT", "committing"); }
  void rollback() noexcept override { PQclear(PQexec(conn_, "ROLLBACK")); }
  int schema_version() override {
    // From the catalog tables, not to_regclass: its cached "no such table" would
    // outlive another process creating the store while we waited for the lock.
    Statement has(*this,
                  "SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON "
                  "n.oid = c.relnamespace WHERE n.nspname = current_schema() AND "
                  "c.relname = 'moescale_schema'");
    if (!has.step() || has.integer(0) == 0) return 0;
    Statement s(*this, "SELECT version FROM moescale_schema WHERE only_row = 1");
    return s.step() ? static_cast<int>(s.integer(0)) : 0;
  }
  void stamp_schema_version(int version) override {
    Statement(*this, "UPDATE moescale_schema SET version = ?1 WHERE only_row = 1")
        .bind(1, version)
        .run();
  }
  void ids_inserted(const std::string& table) override {
    exec(fmt::format("SELECT setval(pg_get_serial_sequence('{0}', 'id'), "
                     "coalesce(max(id), 0) + 1, false) FROM {0}",
                     table),
         fmt::format("moving the id sequence of {} past the copied rows", table));
  }
  const std::string& name() const override { return name_; }

  // Reads only. A schema with other tables and none of ours belongs to someone else.
  void check_identity() {
    const int version = schema_version();
    if (version > Database::kSchemaVersion)
      throw std::runtime_error(fmt::format(
          "{} was written by a newer moescale (schema {}, this one knows up to {}); upgrade "
          "moescale to use it",
          name_, version, Database::kSchemaVersion));
    if (version > 0) return;
    Statement s(*this,
                "SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON "
                "n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind IN "
                "('r', 'p', 'v', 'm')");
    if (s.step() && s.integer(0) > 0)
      throw std::runtime_error(fmt::format(
          "{} holds tables of another program, not a moescale store; it was left untouched. Use "
          "an empty database, or a schema of its own (…?options=-csearch_path%3DNAME after "
          "CREATE SCHEMA NAME)",
          name_));
  }

 private:
  std::string name_;
  PGconn* conn_;
};

}  // namespace

std::unique_ptr<Connection> open_postgresql(const std::string& url, OpenMode mode) {
  auto c = std::make_unique<PostgresConnection>(url);
  c->check_identity();
  if (c->schema_version() == 0 && mode != OpenMode::create_if_missing)
    throw std::runtime_error(fmt::format(
        "no moescale store in {}; plan a sweep first (moescale plan --config FILE --db URL) or "
        "point --db / MOESCALE_DB at one",
        c->name()));
  migrate(*c);
  if (mode == OpenMode::read_only)
    c->exec("SET default_transaction_read_only = on", "opening read-only");
  return c;
}

}  // namespace moescale::sql

#endif  // MOESCALE_POSTGRESQL
