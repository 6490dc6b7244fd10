// Private to db/: the small backend interface the store is written against, and
// the SQL that differs between SQLite and PostgreSQL (kept here, in one place).
//
// Statements are written once, in the dialect both engines accept: numbered
// placeholders ?1..?N (the PostgreSQL backend rewrites them to $1..$N),
// `INSERT … ON CONFLICT`, `RETURNING id` for new ids, integers for booleans.
// What cannot be shared (time functions, row locks, the schema) comes from Dialect.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace moescale::sql {

enum class Kind { integer, real, text };

// One prepared statement of a backend: bind, step through rows, read columns.
class Cursor {
 public:
  virtual ~Cursor() = default;
  virtual void bind_null(int i, Kind kind) = 0;  // the kind tells a typed server what NULL is
  virtual void bind_integer(int i, int64_t v) = 0;
  virtual void bind_real(int i, double v) = 0;
  virtual void bind_text(int i, const std::string& v) = 0;
  virtual bool step() = 0;      // true while there is a row
  virtual int64_t reset() = 0;  // rows the last execution changed; bindings are kept
  virtual bool is_null(int col) const = 0;
  virtual int64_t integer(int col) const = 0;
  virtual double real(int col) const = 0;
  virtual std::string text(int col) const = 0;
};

enum class Engine { sqlite, postgresql };

// How a write transaction keeps concurrent writers apart.
//  SQLite: BEGIN IMMEDIATE takes the file's write lock, so writers run one at a time.
//  PostgreSQL: READ COMMITTED with row locks: every fenced write is an UPDATE whose
//  WHERE names the claim generation (re-checked by the server after a concurrent
//  update), and claims pick runs with SELECT … FOR UPDATE SKIP LOCKED.
enum class TransactionKind { write, snapshot_read, schema_change };

class Connection {
 public:
  virtual ~Connection() = default;
  virtual Engine engine() const = 0;
  virtual std::unique_ptr<Cursor> prepare(const std::string& text) = 0;
  virtual void exec(const std::string& text, const std::string& what) = 0;  // no parameters
  virtual void begin(TransactionKind kind) = 0;
  virtual void commit() = 0;
  virtual void rollback() noexcept = 0;
  // 0 for a store without the schema yet.
  virtual int schema_version() = 0;
  virtual void stamp_schema_version(int version) = 0;  // inside the migration transaction
  // After rows were inserted with explicit ids (db copy): new ids continue after them.
  virtual void ids_inserted(const std::string& table) = 0;
  // What error messages call the store: the path, or the URL without its password.
  virtual const std::string& name() const = 0;
};

// The SQL fragments that differ.
struct Dialect {
  Engine engine;
  // Now as the ISO text every timestamp column holds ("2026-01-02T03:04:05Z").
  const char* now() const {
    return engine == Engine::sqlite ? "strftime('%Y-%m-%dT%H:%M:%SZ', 'now')"
                                    : "to_char(now() AT TIME ZONE 'UTC', "
                                      "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";
  }
  // Seconds since the timestamp in `column`, NULL when it is ''.
  std::string age_seconds(const std::string& column) const {
    if (engine == Engine::sqlite)
      return fmt::format(
          "CASE WHEN {0} = '' THEN NULL ELSE (julianday('now') - julianday({0})) * 86400.0 END",
          column);
    return fmt::format("extract(epoch FROM (now() - nullif({}, '')::timestamptz))::float8", column);
  }
  // Appended to the SELECT that picks a run to claim: concurrent claimers never
  // wait for one another and never pick the same row. SQLite's write lock already
  // serialises them.
  const char* lock_skip_locked() const {
    return engine == Engine::sqlite ? "" : " FOR UPDATE SKIP LOCKED";
  }
};

// RAII and typed binding over a Cursor.
class Statement {
 public:
  Statement(Connection& c, const std::string& text) : cursor_(c.prepare(text)) {}

  Statement& bind(int i, int64_t v) { return cursor_->bind_integer(i, v), *this; }
  Statement& bind(int i, int v) { return bind(i, static_cast<int64_t>(v)); }
  Statement& bind(int i, double v) { return cursor_->bind_real(i, v), *this; }
  Statement& bind(int i, const std::string& v) { return cursor_->bind_text(i, v), *this; }
  Statement& bind(int i, const char* v) { return bind(i, std::string(v)); }
  template <class T>
  Statement& bind(int i, const std::optional<T>& v) {
    if (v) return bind(i, *v);
    cursor_->bind_null(i, kind_of<T>());
    return *this;
  }

  // True while there is a row to read.
  bool step() { return cursor_->step(); }
  // Runs to completion and resets, so the statement can be bound again; returns the
  // number of rows it inserted, updated or deleted.
  int64_t run() {
    while (step()) {
    }
    return cursor_->reset();
  }

  // Runs a statement that yields one integer (… RETURNING id) to completion.
  int64_t returned_integer() {
    if (!step()) throw std::logic_error("a statement returned no row");
    const int64_t v = integer(0);
    run();
    return v;
  }

  bool is_null(int col) const { return cursor_->is_null(col); }
  int64_t integer(int col) const { return cursor_->integer(col); }
  double real(int col) const { return cursor_->real(col); }
  std::string text(int col) const { return cursor_->text(col); }
  std::optional<double> optional_real(int col) const {
    if (is_null(col)) return std::nullopt;
    return real(col);
  }

 private:
  template <class T>
  static constexpr Kind kind_of() {
    if constexpr (std::is_floating_point_v<T>)
      return Kind::real;
    else if constexpr (std::is_integral_v<T>)
      return Kind::integer;
    else
      return Kind::text;
  }
  std::unique_ptr<Cursor> cursor_;
};

// Commits when committed, rolls back otherwise: nothing is half-written.
class Transaction {
 public:
  explicit Transaction(Connection& c, TransactionKind kind = TransactionKind::write) : c_(c) {
    c_.begin(kind);
  }
  ~Transaction() {
    if (!done_) c_.rollback();
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit() {
    c_.commit();
    done_ = true;
  }

 private:
  Connection& c_;
  bool done_ = false;
};

// The backends. Each checks that the store is a moescale store it can use (refusing
// foreign or newer ones untouched), creates or migrates it as the mode allows, and
// returns it ready. Mode values are Database::Mode's.
enum class OpenMode { create_if_missing, must_exist, read_only };
std::unique_ptr<Connection> open_sqlite(const std::string& path, OpenMode mode);
std::unique_ptr<Connection> open_postgresql(const std::string& url, OpenMode mode);

// Brings an open store to the current schema (schema.cpp): SQLite through its
// migrations, PostgreSQL created at the current version.
void migrate(Connection& c);

// The store's tables and their columns, in an order that satisfies foreign keys
// (schema.cpp): what db copy moves and what table_rows reads.
struct Column {
  const char* name;
  Kind kind;
};
struct Table {
  const char* name;
  const char* order_by;
  bool has_id;  // an id column new rows take from a sequence
  std::vector<Column> columns;
};
const std::vector<Table>& tables();

}  // namespace moescale::sql
