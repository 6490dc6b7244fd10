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
#include <poll.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
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

// Seconds a statement may wait for the server's answer ($MOESCALE_DB_TIMEOUT, default 30):
// a frozen server (SIGSTOP, a hung host) is noticed by the client, since the kernel on
// the far side still acknowledges every packet and TCP keepalives see nothing wrong.
double answer_timeout() {
  const char* env = std::getenv("MOESCALE_DB_TIMEOUT");
  const double t = env && *env ? std::strtod(env, nullptr) : 30.0;
  return t > 0 ? t : 30.0;
}

// SQLSTATE classes of a connection that is gone or a server going away: 08 (connection
// exception), 57P01-57P03 (terminated by an administrator, crash, cannot connect now).
bool connection_state(const PGresult* r) {
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  if (!state) return false;
  const std::string s = state;
  return s.starts_with("08") || s == "57P01" || s == "57P02" || s == "57P03";
}

// One libpq connection with a deadline on every answer. After the connection is lost it
// is reopened at the next transaction (or statement outside one), never in the middle
// of a transaction: the statements left of that one must not run on their own.
class Session {
 public:
  Session(const std::string& url, const std::string& name) : name_(name) {
    // Defaults first: what the URL says overrides them (expand_dbname).
    const std::string connect = std::to_string(std::max(2, static_cast<int>(timeout_ / 3)));
    const std::string user_timeout = std::to_string(static_cast<int>(timeout_ * 1000));
    const char* keys[] = {
        "connect_timeout",  "keepalives",       "keepalives_idle", "keepalives_interval",
        "keepalives_count", "tcp_user_timeout", "dbname",          nullptr};
    const char* values[] = {connect.c_str(),      "1",         "10",   "5", "3",
                            user_timeout.c_str(), url.c_str(), nullptr};
    conn_ = PQconnectdbParams(keys, values, 1);
  }
  ~Session() { PQfinish(conn_); }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  PGconn* conn() const { return conn_; }
  const std::string& name() const { return name_; }
  // Settings every (re)opened connection gets, run now and after each reopening.
  void add_setting(const std::string& sql) {
    settings_.push_back(sql);
    check(run(sql, {}, {}, false), "configuring the session");
  }
  void set_in_transaction(bool in) { in_transaction_ = in; }

  // Sends `text` (with parameters when `params`) and waits for the last result.
  Result run(const std::string& text, const std::vector<const char*>& values,
             const std::vector<Oid>& types, bool params) {
    if (lost_) reopen();
    const int sent = params
                         ? PQsendQueryParams(conn_, text.c_str(), static_cast<int>(values.size()),
                                             types.data(), values.data(), nullptr, nullptr, 0)
                         : PQsendQuery(conn_, text.c_str());
    if (!sent) lose(trimmed(PQerrorMessage(conn_)));
    Result last{nullptr, &PQclear};
    while (true) {
      wait_for_answer();
      Result r{PQgetResult(conn_), &PQclear};
      if (!r) break;
      if (!last || PQresultStatus(last.get()) == PGRES_COMMAND_OK ||
          PQresultStatus(last.get()) == PGRES_TUPLES_OK)
        last = std::move(r);  // keep the first error, else the last result
    }
    if (PQstatus(conn_) == CONNECTION_BAD || connection_state(last.get()))
      lose(trimmed(last ? PQresultErrorMessage(last.get()) : PQerrorMessage(conn_)));
    return last;
  }

  // Throws with the server's message unless `r` succeeded.
  void check(const Result& r, const std::string& what) const {
    const auto status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
      throw std::runtime_error(
          fmt::format("database error while {} in {}: {}", what, name_,
                      trimmed(r ? PQresultErrorMessage(r.get()) : PQerrorMessage(conn_))));
  }

 private:
  void wait_for_answer() {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_);
    while (true) {
      if (!PQconsumeInput(conn_)) lose(trimmed(PQerrorMessage(conn_)));
      if (!PQisBusy(conn_)) return;
      const auto left = std::chrono::duration<double>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0)
        lose(fmt::format("no answer within {:g} s (MOESCALE_DB_TIMEOUT)", timeout_));
      pollfd p{PQsocket(conn_), POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count() * 1000) + 1) < 0 && errno != EINTR)
        lose(std::strerror(errno));
    }
  }

  [[noreturn]] void lose(const std::string& why) {
    lost_ = true;
    throw ConnectionLost(fmt::format(
        "lost the connection to the PostgreSQL store {}: {}; check that the server runs and "
        "answers, then run the command again",
        name_, why));
  }

  void reopen() {
    if (in_transaction_)
      throw ConnectionLost(fmt::format("the connection to {} was lost in a transaction", name_));
    PQreset(conn_);
    if (PQstatus(conn_) != CONNECTION_OK) lose(trimmed(PQerrorMessage(conn_)));
    lost_ = false;
    for (const std::string& sql : settings_)
      check(run(sql, {}, {}, false), "configuring the session");
  }

  std::string name_;
  double timeout_ = answer_timeout();
  PGconn* conn_ = nullptr;
  std::vector<std::string> settings_;
  bool lost_ = false, in_transaction_ = false;
};

class PostgresCursor final : public Cursor {
 public:
  PostgresCursor(Session& session, const std::string& text)
      : session_(session), text_(numbered_placeholders(text)) {}

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
    result_ = session_.run(text_, values, types_, true);
    try {
      session_.check(result_, "executing a statement");
    } catch (...) {
      result_.reset();
      throw;
    }
    row_ = -1;
  }
  Session& session_;
  std::string text_;
  std::vector<std::optional<std::string> > values_;
  std::vector<Oid> types_;
  Result result_{nullptr, &PQclear};
  int row_ = -1;
};

class PostgresConnection final : public Connection {
 public:
  explicit PostgresConnection(const std::string& url) : session_(url, location_for_messages(url)) {
    PGconn* conn = session_.conn();
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
      // libpq repeats a malformed URL, password and all.
      const std::string why =
          redact_location(trimmed(conn ? PQerrorMessage(conn) : "out of memory"), url);
      const bool no_database = why.find("database") != std::string::npos &&
                               why.find("does not exist") != std::string::npos;
      throw std::runtime_error(fmt::format(
          "cannot connect to the PostgreSQL store {}: {}; {}", session_.name(), why,
          no_database ? "create the database first (createdb NAME, or CREATE DATABASE NAME)"
                      : "check the URL (postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE) and "
                        "that the server runs"));
    }
    // Notices (e.g. of DDL) are not for the user's terminal.
    PQsetNoticeProcessor(
        conn, [](void*, const char*) {}, nullptr);
    // The server gives up on a statement a little before the client would.
    session_.add_setting(
        fmt::format("SET client_encoding = 'UTF8'; SET TIME ZONE 'UTC'; SET statement_timeout = {}",
                    static_cast<int64_t>(answer_timeout() * 900)));
  }
  Engine engine() const override { return Engine::postgresql; }
  std::unique_ptr<Cursor> prepare(const std::string& text) override {
    return std::make_unique<PostgresCursor>(session_, text);
  }
  void exec(const std::string& text, const std::string& what) override {
    session_.check(session_.run(text, {}, {}, false), what);
  }
  // READ COMMITTED with row locks for writes (see statement.h); one snapshot for a
  // consistent read; schema changes one at a time, under an advisory lock.
  void begin(TransactionKind kind) override {
    session_.set_in_transaction(false);  // a lost connection may be reopened for a new one
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
    session_.set_in_transaction(true);
  }
  void commit() override {
    exec("COMMIT", "committing");
    session_.set_in_transaction(false);
  }
  void rollback() noexcept override {
    PQclear(PQexec(session_.conn(), "ROLLBACK"));
    session_.set_in_transaction(false);
  }
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
  const std::string& name() const override { return session_.name(); }
  void add_setting(const std::string& sql) { session_.add_setting(sql); }

  // Reads only. A schema with other tables and none of ours belongs to someone else.
  void check_identity() {
    const int version = schema_version();
    if (version > Database::kSchemaVersion)
      throw std::runtime_error(fmt::format(
          "{} was written by a newer moescale (schema {}, this one knows up to {}); upgrade "
          "moescale to use it",
          name(), version, Database::kSchemaVersion));
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
          name()));
  }

 private:
  Session session_;
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
  if (mode == OpenMode::read_only) c->add_setting("SET default_transaction_read_only = on");
  return c;
}

}  // namespace moescale::sql

#endif  // MOESCALE_POSTGRESQL
