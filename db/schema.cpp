// Opening, identity checks and forward migrations.
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>

#include "db/db.h"
#include "db/statement.h"

namespace moescale {
namespace {

constexpr int kApplicationId = 0x6d6f6573;  // "moes"

// Migration i brings a database from user_version i to i + 1. Never edit one
// that has shipped: add the next.
const char* const kMigrations[] = {
    R"(CREATE TABLE sweeps(
         id INTEGER PRIMARY KEY,
         name TEXT NOT NULL UNIQUE,
         kind TEXT NOT NULL CHECK(kind IN ('planned', 'imported')),
         config TEXT NOT NULL,
         created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')));
       CREATE TABLE runs(
         id INTEGER PRIMARY KEY,
         sweep_id INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
         key TEXT NOT NULL,
         spec TEXT NOT NULL,
         router TEXT NOT NULL,
         experts INTEGER NOT NULL,
         top_k INTEGER NOT NULL,
         d_model INTEGER NOT NULL,
         n_layers INTEGER NOT NULL,
         n_active INTEGER NOT NULL,
         n_total INTEGER NOT NULL,
         n_embedding INTEGER NOT NULL,
         tokens INTEGER NOT NULL,
         compute_6n REAL NOT NULL,
         compute_full REAL NOT NULL,
         est_seconds REAL NOT NULL,
         budget REAL NOT NULL,
         status TEXT NOT NULL DEFAULT 'planned'
           CHECK(status IN ('planned', 'running', 'done', 'failed', 'diverged')),
         worker TEXT NOT NULL DEFAULT '',
         heartbeat TEXT NOT NULL DEFAULT '',
         created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
         started_at TEXT NOT NULL DEFAULT '',
         finished_at TEXT NOT NULL DEFAULT '',
         steps_done INTEGER NOT NULL DEFAULT 0,
         wall_seconds REAL,
         final_loss REAL,
         error TEXT NOT NULL DEFAULT '',
         UNIQUE(sweep_id, key));
       CREATE INDEX runs_by_status ON runs(sweep_id, status);
       CREATE TABLE metrics(
         run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
         step INTEGER NOT NULL,
         split TEXT NOT NULL CHECK(split IN ('train', 'val')),
         tokens INTEGER NOT NULL,
         loss REAL NOT NULL,
         lr REAL,
         aux_loss REAL,
         tokens_per_s REAL,
         bits_per_byte REAL,
         elapsed_s REAL,
         expert_load TEXT NOT NULL DEFAULT '',
         PRIMARY KEY(run_id, step, split)) WITHOUT ROWID;)",
    R"(CREATE TABLE observations(
         id INTEGER PRIMARY KEY,
         sweep_id INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
         n_active REAL NOT NULL, n_total REAL NOT NULL, tokens REAL NOT NULL,
         experts REAL NOT NULL, top_k REAL NOT NULL, granularity REAL NOT NULL,
         loss REAL NOT NULL,
         label TEXT NOT NULL,
         source TEXT NOT NULL);
       CREATE TABLE fits(
         id INTEGER PRIMARY KEY,
         sweep_id INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
         law TEXT NOT NULL,
         grp TEXT NOT NULL,
         result TEXT NOT NULL,
         created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')));)",
    // The store's identity ties checkpoints to this file; the claim generation fences
    // every write of a run's owner; owners are named so a dead one can be recognised;
    // row hashes make a second import of the same file visible.
    R"(CREATE TABLE store(
         only_row INTEGER PRIMARY KEY CHECK(only_row = 1),
         identity TEXT NOT NULL);
       INSERT INTO store(only_row, identity) VALUES(1, lower(hex(randomblob(16))));
       ALTER TABLE runs ADD COLUMN claim INTEGER NOT NULL DEFAULT 0;
       ALTER TABLE runs ADD COLUMN owner_host TEXT NOT NULL DEFAULT '';
       ALTER TABLE runs ADD COLUMN owner_pid INTEGER NOT NULL DEFAULT 0;
       ALTER TABLE runs ADD COLUMN owner_job TEXT NOT NULL DEFAULT '';
       ALTER TABLE runs ADD COLUMN owner_threads INTEGER NOT NULL DEFAULT 0;
       ALTER TABLE runs ADD COLUMN source TEXT NOT NULL DEFAULT 'trained';
       CREATE INDEX runs_by_owner ON runs(status, owner_host);
       ALTER TABLE observations ADD COLUMN row_hash TEXT NOT NULL DEFAULT '';
       CREATE INDEX observations_by_hash ON observations(sweep_id, row_hash);)",
};
static_assert(std::size(kMigrations) == Database::kSchemaVersion);

bool file_exists(const std::string& path, off_t* size) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return false;
  *size = st.st_size;
  return true;
}

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

bool has_sqlite_header(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[16] = {};
  in.read(magic, sizeof magic);
  return in.gcount() == 16 && std::string(magic, 15) == "SQLite format 3";
}

int pragma_int(sqlite3* db, const char* pragma) {
  sql::Statement s(db, pragma);
  return s.step() ? static_cast<int>(s.integer(0)) : 0;
}

}  // namespace

std::string default_database_path(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("MOESCALE_DB"); env && *env) return env;
  return "moescale.db";
}

Database::Database(const std::string& path, Mode mode) : path_(path) {
  off_t size = 0;
  const bool existed = file_exists(path, &size) && size > 0;
  if (!existed && mode != Mode::create_if_missing)
    throw std::runtime_error(fmt::format(
        "no moescale database at {}; plan a sweep first (moescale plan --config FILE) or "
        "point --db / MOESCALE_DB at one",
        path));
  if (existed && !open_in_this_process(path) && !has_sqlite_header(path))
    throw std::runtime_error(fmt::format(
        "{} is not a moescale database (not SQLite at all); it was left untouched, pass another "
        "--db path",
        path));
  if (mode == Mode::read_only) {
    open(SQLITE_OPEN_READONLY);
    try {
      check_identity(existed);
      if (schema_version() == kSchemaVersion) return;
    } catch (...) {
      close();
      throw;
    }
    // An older schema: upgrade it once (this needs write access), then read.
    close();
  }
  open(SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  try {
    check_identity(existed);
    sql::exec(handle_, "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;", "configuring");
    migrate();
  } catch (...) {
    close();
    throw;
  }
}

void Database::open(int flags) {
  if (sqlite3_open_v2(path_.c_str(), &handle_, flags | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
    const std::string why = handle_ ? sqlite3_errmsg(handle_) : "out of memory";
    sqlite3_close(handle_);
    handle_ = nullptr;
    throw std::runtime_error(fmt::format("cannot open database {}: {}", path_, why));
  }
  sqlite3_busy_timeout(handle_, 10000);
  std::lock_guard lock(g_open_mutex);
  g_open_paths.insert(canonical(path_));
}

void Database::close() {
  if (!handle_) return;
  sqlite3_close(handle_);
  handle_ = nullptr;
  std::lock_guard lock(g_open_mutex);
  if (auto it = g_open_paths.find(canonical(path_)); it != g_open_paths.end())
    g_open_paths.erase(it);
}

Database::~Database() {
  close();
}

int Database::schema_version() const {
  return pragma_int(handle_, "PRAGMA user_version");
}

std::string Database::store_identity() const {
  sql::Statement s(handle_, "SELECT identity FROM store WHERE only_row = 1");
  if (!s.step()) throw std::runtime_error(fmt::format("{} has no store identity", path_));
  return s.text(0);
}

// Reads only: a file that is not ours must not be changed by looking at it.
void Database::check_identity(bool existed) {
  if (!existed) return;
  int app_id = 0, tables = 0;
  try {
    app_id = pragma_int(handle_, "PRAGMA application_id");
    tables = pragma_int(handle_, "SELECT count(*) FROM sqlite_master");
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format(
        "{} cannot be read as a database ({}); it was left untouched", path_, e.what()));
  }
  if (app_id != kApplicationId && (app_id != 0 || tables > 0))
    throw std::runtime_error(
        fmt::format("{} is a SQLite file of another program, not a moescale database; it was left "
                    "untouched, pass another --db path",
                    path_));
  const int version = schema_version();
  if (version > kSchemaVersion)
    throw std::runtime_error(fmt::format(
        "{} was written by a newer moescale (schema {}, this one knows up to {}); upgrade "
        "moescale to use it",
        path_, version, kSchemaVersion));
}

void Database::migrate() {
  const int version = schema_version();
  if (version == kSchemaVersion) return;
  sql::exec(handle_, "BEGIN IMMEDIATE", "starting a migration");
  try {
    for (int v = version; v < kSchemaVersion; ++v)
      sql::exec(handle_, kMigrations[v], fmt::format("migrating to schema {}", v + 1));
    sql::exec(handle_,
              fmt::format("PRAGMA application_id={}; PRAGMA user_version={};", kApplicationId,
                          kSchemaVersion)
                  .c_str(),
              "stamping the schema version");
    sql::exec(handle_, "COMMIT", "committing a migration");
  } catch (...) {
    sqlite3_exec(handle_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

}  // namespace moescale
