// The schema of both backends, its versions and migrations, and the table list
// that db copy and table_rows go by.
#include <array>

#include "db/db.h"
#include "db/statement.h"

namespace moescale::sql {
namespace {

// SQLite migration i brings a database from user_version i to i + 1. Never edit
// one that has shipped: add the next (and the same change to PostgreSQL below).
const char* const kSqliteMigrations[] = {
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
    // The budget a run was meant for (import --map budget=COLUMN; 0: not stated), so IsoFLOP
    // budgets are grouped as the user meant them, not guessed from 6ND.
    R"(ALTER TABLE observations ADD COLUMN budget REAL NOT NULL DEFAULT 0;)",
};
static_assert(std::size(kSqliteMigrations) == Database::kSchemaVersion);

// PostgreSQL stores start at schema 3, created at once: the same tables and
// columns as a SQLite store at that version (INTEGER as BIGINT, REAL as DOUBLE
// PRECISION, timestamps as the same ISO text), so db copy moves rows unchanged.
// The version lives in moescale_schema, PostgreSQL's stand-in for user_version.
constexpr int kPostgresFirstVersion = 3;
#define MOESCALE_PG_NOW "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
const char* const kPostgresSchema =
    R"(CREATE TABLE moescale_schema(
         only_row BIGINT PRIMARY KEY CHECK(only_row = 1),
         version BIGINT NOT NULL);
       INSERT INTO moescale_schema(only_row, version) VALUES(1, 0);
       CREATE TABLE store(
         only_row BIGINT PRIMARY KEY CHECK(only_row = 1),
         identity TEXT NOT NULL);
       INSERT INTO store(only_row, identity) VALUES(1, replace(gen_random_uuid()::text, '-', ''));
       CREATE TABLE sweeps(
         id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
         name TEXT NOT NULL UNIQUE,
         kind TEXT NOT NULL CHECK(kind IN ('planned', 'imported')),
         config TEXT NOT NULL,
         created_at TEXT NOT NULL DEFAULT )" MOESCALE_PG_NOW R"();
       CREATE TABLE runs(
         id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
         sweep_id BIGINT NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
         key TEXT NOT NULL,
         spec TEXT NOT NULL,
         router TEXT NOT NULL,
         experts BIGINT NOT NULL,
         top_k BIGINT NOT NULL,
         d_model BIGINT NOT NULL,
         n_layers BIGINT NOT NULL,
         n_active BIGINT NOT NULL,
         n_total BIGINT NOT NULL,
         n_embedding BIGINT NOT NULL,
         tokens BIGINT NOT NULL,
         compute_6n DOUBLE PRECISION NOT NULL,
         compute_full DOUBLE PRECISION NOT NULL,
         est_seconds DOUBLE PRECISION NOT NULL,
         budget DOUBLE PRECISION NOT NULL,
         status TEXT NOT NULL DEFAULT 'planned'
           CHECK(status IN ('planned', 'running', 'done', 'failed', 'diverged')),
         worker TEXT NOT NULL DEFAULT '',
         heartbeat TEXT NOT NULL DEFAULT '',
         created_at TEXT NOT NULL DEFAULT )" MOESCALE_PG_NOW R"(,
         started_at TEXT NOT NULL DEFAULT '',
         finished_at TEXT NOT NULL DEFAULT '',
         steps_done BIGINT NOT NULL DEFAULT 0,
         wall_seconds DOUBLE PRECISION,
         final_loss DOUBLE PRECISION,
         error TEXT NOT NULL DEFAULT '',
         claim BIGINT NOT NULL DEFAULT 0,
         owner_host TEXT NOT NULL DEFAULT '',
         owner_pid BIGINT NOT NULL DEFAULT 0,
         owner_job TEXT NOT NULL DEFAULT '',
         owner_threads BIGINT NOT NULL DEFAULT 0,
         source TEXT NOT NULL DEFAULT 'trained',
         UNIQUE(sweep_id, key));
       CREATE INDEX runs_by_status ON runs(sweep_id, status);
       CREATE INDEX runs_by_owner ON runs(status, owner_host);
       CREATE TABLE metrics(
         run_id BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
         step BIGINT NOT NULL,
         split TEXT NOT NULL CHECK(split IN ('train', 'val')),
         tokens BIGINT NOT NULL,
         loss DOUBLE PRECISION NOT NULL,
         lr DOUBLE PRECISION,
         aux_loss DOUBLE PRECISION,
         tokens_per_s DOUBLE PRECISION,
         bits_per_byte DOUBLE PRECISION,
         elapsed_s DOUBLE PRECISION,
         expert_load TEXT NOT NULL DEFAULT '',
         PRIMARY KEY(run_id, step, split));
       CREATE TABLE observations(
         id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
         sweep_id BIGINT NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
         n_active DOUBLE PRECISION NOT NULL, n_total DOUBLE PRECISION NOT NULL,
         tokens DOUBLE PRECISION NOT NULL, experts DOUBLE PRECISION NOT NULL,
         top_k DOUBLE PRECISION NOT NULL, granularity DOUBLE PRECISION NOT NULL,
         loss DOUBLE PRECISION NOT NULL,
         label TEXT NOT NULL,
         source TEXT NOT NULL,
         row_hash TEXT NOT NULL DEFAULT '');
       CREATE INDEX observations_by_hash ON observations(sweep_id, row_hash);
       CREATE TABLE fits(
         id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
         sweep_id BIGINT NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
         law TEXT NOT NULL,
         grp TEXT NOT NULL,
         result TEXT NOT NULL,
         created_at TEXT NOT NULL DEFAULT )" MOESCALE_PG_NOW R"();)";
#undef MOESCALE_PG_NOW
// PostgreSQL migration i brings a store from version kPostgresFirstVersion + i to
// the next; the same changes as the SQLite migration of that number.
constexpr std::array<const char*, 1> kPostgresMigrations{
    "ALTER TABLE observations ADD COLUMN budget DOUBLE PRECISION NOT NULL DEFAULT 0;"};
static_assert(kPostgresFirstVersion + kPostgresMigrations.size() == Database::kSchemaVersion);

}  // namespace

void migrate(Connection& c) {
  if (c.schema_version() == Database::kSchemaVersion) return;
  Transaction tx(c, TransactionKind::schema_change);
  // Read again under the lock: another process may have migrated meanwhile.
  const int version = c.schema_version();
  if (version == Database::kSchemaVersion) return;
  for (int v = version; v < Database::kSchemaVersion; ++v) {
    const std::string what = fmt::format("migrating {} to schema {}", c.name(), v + 1);
    if (c.engine() == Engine::sqlite) {
      c.exec(kSqliteMigrations[v], what);
    } else if (v == 0) {
      c.exec(kPostgresSchema, fmt::format("creating the store in {}", c.name()));
      v = kPostgresFirstVersion - 1;
    } else if (v >= kPostgresFirstVersion) {
      c.exec(kPostgresMigrations[v - kPostgresFirstVersion], what);
    } else {
      throw std::runtime_error(fmt::format(
          "{} holds a moescale store at schema {}, which PostgreSQL stores never had; it was "
          "left untouched",
          c.name(), v));
    }
  }
  c.stamp_schema_version(Database::kSchemaVersion);
  tx.commit();
}

const std::vector<Table>& tables() {
  using K = Kind;
  static const std::vector<Table> all{
      {"store", "only_row", false, {{"only_row", K::integer}, {"identity", K::text}}},
      {"sweeps",
       "id",
       true,
       {{"id", K::integer},
        {"name", K::text},
        {"kind", K::text},
        {"config", K::text},
        {"created_at", K::text}}},
      {"runs",
       "id",
       true,
       {{"id", K::integer},        {"sweep_id", K::integer},      {"key", K::text},
        {"spec", K::text},         {"router", K::text},           {"experts", K::integer},
        {"top_k", K::integer},     {"d_model", K::integer},       {"n_layers", K::integer},
        {"n_active", K::integer},  {"n_total", K::integer},       {"n_embedding", K::integer},
        {"tokens", K::integer},    {"compute_6n", K::real},       {"compute_full", K::real},
        {"est_seconds", K::real},  {"budget", K::real},           {"status", K::text},
        {"worker", K::text},       {"heartbeat", K::text},        {"created_at", K::text},
        {"started_at", K::text},   {"finished_at", K::text},      {"steps_done", K::integer},
        {"wall_seconds", K::real}, {"final_loss", K::real},       {"error", K::text},
        {"claim", K::integer},     {"owner_host", K::text},       {"owner_pid", K::integer},
        {"owner_job", K::text},    {"owner_threads", K::integer}, {"source", K::text}}},
      {"metrics",
       "run_id, step, split",
       false,
       {{"run_id", K::integer},
        {"step", K::integer},
        {"split", K::text},
        {"tokens", K::integer},
        {"loss", K::real},
        {"lr", K::real},
        {"aux_loss", K::real},
        {"tokens_per_s", K::real},
        {"bits_per_byte", K::real},
        {"elapsed_s", K::real},
        {"expert_load", K::text}}},
      {"observations",
       "id",
       true,
       {{"id", K::integer},
        {"sweep_id", K::integer},
        {"n_active", K::real},
        {"n_total", K::real},
        {"tokens", K::real},
        {"experts", K::real},
        {"top_k", K::real},
        {"granularity", K::real},
        {"loss", K::real},
        {"label", K::text},
        {"source", K::text},
        {"row_hash", K::text},
        {"budget", K::real}}},
      {"fits",
       "id",
       true,
       {{"id", K::integer},
        {"sweep_id", K::integer},
        {"law", K::text},
        {"grp", K::text},
        {"result", K::text},
        {"created_at", K::text}}},
  };
  return all;
}

}  // namespace moescale::sql
