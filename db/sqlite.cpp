// The SQLite backend: one file, opened with identity checks and migrated forward.
#include <sqlite3.h>
#include <sys/stat.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <system_error>

#include "db/db.h"
#include "db/statement.h"

namespace moescale::sql {
namespace {

constexpr int kApplicationId = 0x6d6f6573;  // "moes"

// A full disk is thrown as std::errc::no_space_on_device: `train` hands its run back
// for it instead of marking the run failed.
bool out_of_space(sqlite3* db) {
  return sqlite3_errcode(db) == SQLITE_FULL || sqlite3_system_errno(db) == ENOSPC;
}

[[noreturn]] void fail(sqlite3* db, const std::string& what) {
  const std::string message = fmt::format("database error while {}: {}", what, sqlite3_errmsg(db));
  if (out_of_space(db))
    throw std::system_error(std::make_error_code(std::errc::no_space_on_device), message);
  throw std::runtime_error(message);
}

class SqliteCursor final : public Cursor {
 public:
  SqliteCursor(sqlite3* db, const std::string& text) : db_(db) {
    if (sqlite3_prepare_v2(db, text.c_str(), -1, &stmt_, nullptr) != SQLITE_OK)
      fail(db_, "preparing");
  }
  ~SqliteCursor() override { sqlite3_finalize(stmt_); }

  void bind_null(int i, Kind) override { check(sqlite3_bind_null(stmt_, i)); }
  void bind_integer(int i, int64_t v) override { check(sqlite3_bind_int64(stmt_, i, v)); }
  void bind_real(int i, double v) override { check(sqlite3_bind_double(stmt_, i, v)); }
  void bind_text(int i, const std::string& v) override {
    check(sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
  }
  bool step() override {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE) fail(db_, "executing a statement");
    changes_ = sqlite3_stmt_readonly(stmt_) ? 0 : sqlite3_changes64(db_);
    return false;
  }
  int64_t reset() override {
    sqlite3_reset(stmt_);
    const int64_t changed = changes_;
    changes_ = 0;
    return changed;
  }
  bool is_null(int col) const override { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  int64_t integer(int col) const override { return sqlite3_column_int64(stmt_, col); }
  double real(int col) const override { return sqlite3_column_double(stmt_, col); }
  std::string text(int col) const override {
    const auto* p = sqlite3_column_text(stmt_, col);
    return p ? std::string(reinterpret_cast<const char*>(p),
                           static_cast<size_t>(sqlite3_column_bytes(stmt_, col)))
             : std::string();
  }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) fail(db_, "binding a value");
  }
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int64_t changes_ = 0;
};

// Paths this process holds open through SQLite. Opening and closing such a file
// with anything but SQLite drops the POSIX locks of the open connection (see
// sqlite.org/howtocorrupt.html, 2.2): the header check is skipped for them, since
// they were checked when first opened.
std::mutex g_open_mutex;
std::multiset<std::string> g_open_paths;

std::string canonical(const std::string& path) {
  std::error_code ec;
  const auto p = std::filesystem::weakly_canonical(path, ec);
  return ec ? path : p.string();
}

bool open_in_this_process(const std::string& path) {
  std::lock_guard lock(g_open_mutex);
  return g_open_paths.count(canonical(path)) > 0;
}

bool file_exists(const std::string& path, off_t* size) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return false;
  *size = st.st_size;
  return true;
}

bool has_sqlite_header(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[16] = {};
  in.read(magic, sizeof magic);
  return in.gcount() == 16 && std::string(magic, 15) == "SQLite format 3";
}

class SqliteConnection final : public Connection {
 public:
  SqliteConnection(const std::string& path, int flags) : path_(path) {
    if (sqlite3_open_v2(path_.c_str(), &db_, flags | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
      const std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close(db_);
      throw std::runtime_error(fmt::format("cannot open database {}: {}", path_, why));
    }
    sqlite3_busy_timeout(db_, 10000);
    std::lock_guard lock(g_open_mutex);
    g_open_paths.insert(canonical(path_));
  }
  ~SqliteConnection() override {
    sqlite3_close(db_);
    std::lock_guard lock(g_open_mutex);
    if (auto it = g_open_paths.find(canonical(path_)); it != g_open_paths.end())
      g_open_paths.erase(it);
  }

  Engine engine() const override { return Engine::sqlite; }
  std::unique_ptr<Cursor> prepare(const std::string& text) override {
    return std::make_unique<SqliteCursor>(db_, text);
  }
  void exec(const std::string& text, const std::string& what) override {
    char* message = nullptr;
    if (sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
      sqlite3_free(message);
      fail(db_, what);
    }
  }
  // A deferred BEGIN reads one snapshot (WAL); IMMEDIATE takes the write lock at once,
  // so a transaction never fails half-way for want of it.
  void begin(TransactionKind kind) override {
    exec(kind == TransactionKind::snapshot_read ? "BEGIN" : "BEGIN IMMEDIATE", "starting");
  }
  void commit() override { exec("COMMIT", "committing"); }
  void rollback() noexcept override { sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr); }
  int schema_version() override { return pragma_int("PRAGMA user_version"); }
  void stamp_schema_version(int version) override {
    exec(fmt::format("PRAGMA application_id={}; PRAGMA user_version={};", kApplicationId, version),
         "stamping the schema version");
  }
  void ids_inserted(const std::string&) override {}  // rowids continue after the largest
  const std::string& name() const override { return path_; }

  int pragma_int(const char* pragma) {
    Statement s(*this, pragma);
    return s.step() ? static_cast<int>(s.integer(0)) : 0;
  }

  // Reads only: a file that is not ours must not be changed by looking at it.
  void check_identity(bool existed) {
    if (!existed) return;
    int app_id = 0, tables = 0;
    try {
      app_id = pragma_int("PRAGMA application_id");
      tables = pragma_int("SELECT count(*) FROM sqlite_master");
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format(
          "{} cannot be read as a database ({}); it was left untouched", path_, e.what()));
    }
    if (app_id != kApplicationId && (app_id != 0 || tables > 0))
      throw std::runtime_error(fmt::format(
          "{} is a SQLite file of another program, not a moescale database; it was left "
          "untouched, pass another --db path",
          path_));
    const int version = schema_version();
    if (version > Database::kSchemaVersion)
      throw std::runtime_error(fmt::format(
          "{} was written by a newer moescale (schema {}, this one knows up to {}); upgrade "
          "moescale to use it",
          path_, version, Database::kSchemaVersion));
  }

 private:
  std::string path_;
  sqlite3* db_ = nullptr;
};

}  // namespace

std::unique_ptr<Connection> open_sqlite(const std::string& path, OpenMode mode) {
  off_t size = 0;
  const bool existed = file_exists(path, &size) && size > 0;
  if (!existed && mode != OpenMode::create_if_missing)
    throw std::runtime_error(fmt::format(
        "no moescale database at {}; plan a sweep first (moescale plan --config FILE) or "
        "point --db / MOESCALE_DB at one",
        path));
  if (existed && !open_in_this_process(path) && !has_sqlite_header(path))
    throw std::runtime_error(fmt::format(
        "{} is not a moescale database (not SQLite at all); it was left untouched, pass another "
        "--db path",
        path));
  if (mode == OpenMode::read_only) {
    auto c = std::make_unique<SqliteConnection>(path, SQLITE_OPEN_READONLY);
    c->check_identity(existed);
    if (c->schema_version() == Database::kSchemaVersion) return c;
    // An older schema: upgrade it once (this needs write access), then read.
  }
  auto c = std::make_unique<SqliteConnection>(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  c->check_identity(existed);
  c->exec("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;", "configuring");
  migrate(*c);
  return c;
}

}  // namespace moescale::sql
