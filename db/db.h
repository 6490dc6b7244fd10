// moescale store: sweeps, runs, training metrics, imported observations and fits.
// The only module with SQL. Every write is one transaction; a foreign or newer
// store is refused untouched.
//
// Two backends behind this one class, chosen by the location string:
//  - a path: one SQLite file (WAL, foreign keys on), the embedded default;
//  - postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE (or postgres://…, any libpq
//    URL, e.g. ?host=/socket/dir): a PostgreSQL database, for many machines sharing
//    a sweep, where SQLite's locks cannot be trusted (network file systems).
// The store logic is written once (store.cpp) against a small private interface
// (statement.h), which also holds the few SQL fragments that differ. Both carry the
// same tables, schema version and store identity; `db copy` moves a store from one
// to the other (copy_into). On PostgreSQL a fresh store is created directly at the
// current schema (its version in a one-row moescale_schema table, standing in for
// SQLite's user_version); concurrent claims use SELECT … FOR UPDATE SKIP LOCKED, and
// every fenced write is an UPDATE naming the claim generation, so the fencing below
// holds across machines as it does across processes on SQLite. The URL is libpq's:
// its environment (PGHOST, PGUSER, PGPASSWORD, ~/.pgpass) fills in what it leaves
// out, which keeps passwords off command lines that workers and job scripts repeat.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "planner/planner.h"

namespace moescale {

namespace sql {
class Connection;
}

enum class RunStatus { planned, running, done, failed, diverged };
std::string to_string(RunStatus s);
RunStatus parse_run_status(std::string_view name);  // throws on an unknown name

struct SweepRecord {
  int64_t id = 0;
  std::string name;
  std::string kind;    // "planned" (from a config) or "imported"
  std::string config;  // the TOML text, empty for imports
  std::string created_at;
};

// Who trains a run: a process on a host, inside a Slurm job when there is one.
struct RunOwner {
  std::string host;
  int64_t pid = 0;
  std::string job;            // "JOB" or "JOB_TASK" from SLURM_JOB_ID / SLURM_ARRAY_TASK_ID, or ""
  int threads = 0;            // CPU threads it trains with (0: unknown)
  std::string label() const;  // "host:pid" plus " slurm JOB_TASK"
  static RunOwner this_process(int threads = 0);
};
// True only when the owner is on this host and its process is gone (or a zombie):
// its runs can be taken back at once instead of waiting for the heartbeat limit.
bool owner_provably_dead(const std::string& host, int64_t pid);

// Proof of a claim: the run and the generation claim_run gave it. A later claim of
// the same run bumps the generation, and every write with the old one is refused.
struct Claim {
  int64_t run_id = 0;
  int64_t generation = 0;
};
// Thrown by writes whose claim is no longer the run's current one.
class LostClaim : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Thrown when a server store stops answering (no answer within $MOESCALE_DB_TIMEOUT
// seconds, default 30) or the connection to it is lost. The connection is opened again
// at the next transaction: a caller may try again (train does, for a while).
class ConnectionLost : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct RunRecord {
  int64_t id = 0;
  int64_t sweep_id = 0;
  std::string sweep;
  std::string key;
  PlannedRun plan;
  RunStatus status = RunStatus::planned;
  std::string worker, heartbeat, created_at, started_at, finished_at;
  std::optional<double> final_loss;
  std::optional<double> wall_seconds;
  int64_t steps_done = 0;
  std::string error;
  int64_t claim_generation = 0;
  std::string owner_host, owner_job;
  int64_t owner_pid = 0;
  int owner_threads = 0;
  std::string source = "trained";       // "trained" or "simulated"
  std::optional<double> heartbeat_age;  // seconds since the last heartbeat
  Claim claim() const { return {id, claim_generation}; }
  // Running, and its owner is provably dead or silent for longer than stale_after.
  bool stale(double stale_after) const;
};

struct MetricRecord {
  int64_t run_id = 0;
  int64_t step = 0;
  int64_t tokens = 0;
  std::string split;  // "train" or "val"
  double loss = 0;
  std::optional<double> lr, aux_loss, tokens_per_s, bits_per_byte, elapsed_s;
  std::string expert_load;  // JSON: [[fraction per expert] per MoE layer]
};

// A (size, tokens, experts, loss) point that a law can be fitted to: finished
// runs of a planned sweep, or rows imported from elsewhere.
struct ObservationRecord {
  double n_active = 0, n_total = 0, tokens = 0, experts = 1, top_k = 1, granularity = 1;
  double loss = 0;
  std::string router;              // "" for imports
  std::string label;               // run key, or "row N" of the imported file
  std::string source = "trained";  // "trained", "simulated" or "imported"
  int64_t steps = 0;               // optimiser steps the run did (runs.steps_done); 0 for imports
  double budget = 0;  // the IsoFLOP budget it was meant for (a run's planned one); 0: not stated
};

struct FitRecord {
  int64_t id = 0;
  int64_t sweep_id = 0;
  std::string sweep;
  std::string law;
  std::string group;   // which runs it was fitted on, e.g. "router=topk,E=4"
  std::string result;  // JSON from the fitting module
  std::string created_at;
};

class Database {
 public:
  // read_only opens the file without write access (a folder the user cannot write
  // to can still be listed); it migrates an older schema only if it can write.
  enum class Mode { create_if_missing, must_exist, read_only };
  static constexpr int kSchemaVersion = 4;

  // `location` is a SQLite path or a postgresql:// URL (is_server_location).
  // Throws std::runtime_error with an actionable message for a missing,
  // foreign, corrupt or newer-schema store, without touching it. On PostgreSQL,
  // "missing" is a database without moescale's tables, and "foreign" one whose
  // schema holds other tables (use another database, or another schema through
  // the URL's options=-csearch_path%3DNAME).
  Database(const std::string& location, Mode mode);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // The location as given (it opens the same store again).
  const std::string& path() const { return path_; }
  // The location for messages: a URL's password is left out.
  const std::string& display_name() const;
  int schema_version() const;
  // A random id made when the file was created: checkpoints name the store they
  // belong to, so a new database never resumes an old one's checkpoints.
  std::string store_identity() const;

  struct PlanSaved {
    int64_t sweep_id = 0;
    int added = 0;
    int existing = 0;
  };
  // Creates or updates the sweep and adds the runs not planned yet.
  PlanSaved save_plan(const SweepConfig& config, const std::vector<PlannedRun>& runs);

  std::vector<SweepRecord> sweeps() const;
  std::optional<SweepRecord> find_sweep(const std::string& name) const;
  SweepRecord sweep(const std::string& name) const;  // throws if missing
  std::vector<RunRecord> runs(const std::optional<std::string>& sweep,
                              const std::optional<RunStatus>& status) const;
  RunRecord run(int64_t id) const;

  // Atomically moves one run (the given one, or the first planned one of the
  // sweep) to running for this owner, with a new claim generation. Running runs
  // count as planned when their owner is provably dead (same host, process gone)
  // or silent for longer than stale_seconds, and failed runs with retry_failed.
  // Empty when nothing is left.
  std::optional<RunRecord> claim_run(const std::string& sweep, const RunOwner& owner,
                                     std::optional<int64_t> run_id = std::nullopt,
                                     double stale_seconds = 600, bool retry_failed = false);
  // Every write of a claimed run is fenced: it throws LostClaim, writing nothing,
  // when the run was claimed again since (or is no longer running).
  void record_metric(const Claim& claim, const MetricRecord& m);  // also a heartbeat
  void heartbeat(const Claim& claim);
  void finish_run(const Claim& claim, RunStatus status, std::optional<double> final_loss,
                  double wall_seconds, int64_t steps_done, const std::string& error);
  // Back to planned, progress kept.
  void release_run(const Claim& claim, int64_t steps_done, const std::string& error = "");
  // Marks planned runs done with simulated final losses (source 'simulated'), all or none:
  // throws if a run is not a planned run of the sweep.
  void record_simulated(const std::string& sweep,
                        const std::vector<std::pair<int64_t, double>>& losses);
  std::vector<MetricRecord> metrics(int64_t run_id, const std::string& split = "") const;
  // Distinct live processes on `host`, other than `except_pid`, that hold a running
  // run of any sweep in this store, and the threads they said they use.
  struct HostWorkers {
    int processes = 0;
    int threads = 0;
  };
  HostWorkers active_workers(const std::string& host, int64_t except_pid) const;

  struct ImportSaved {
    int64_t sweep_id = 0;
    int added = 0;
    int already_there = 0;  // rows equal to ones the sweep holds (only with append)
  };
  // All rows or none. Throws if the sweep exists and is not an import, and, unless
  // `append`, if any row equals one the sweep already holds (importing a file twice).
  ImportSaved import_observations(const std::string& sweep, const std::string& source,
                                  const std::vector<ObservationRecord>& rows, bool append = false);

  // Removal, each in one transaction: a sweep with its runs, metrics,
  // observations and fits; a fit.
  struct SweepRemoved {
    int runs = 0, observations = 0, fits = 0;
  };
  SweepRemoved remove_sweep(const std::string& name);
  void remove_fit(int64_t id);
  // Imported rows plus the done runs of a planned sweep. Throws if the done runs mix trained
  // and simulated results: a fit must be of one or the other.
  std::vector<ObservationRecord> observations(const std::string& sweep) const;

  int64_t save_fit(const std::string& sweep, const std::string& law, const std::string& group,
                   const std::string& result_json);
  FitRecord fit(int64_t id) const;
  std::vector<FitRecord> fits(const std::optional<std::string>& sweep) const;

  // db copy: every row of every table (ids, store identity and all) into
  // `destination`, which must hold no sweeps; one transaction there, read from one
  // snapshot here. Returns the rows copied per table.
  std::vector<std::pair<std::string, int64_t>> copy_into(Database& destination) const;
  // The store's tables, and one table's rows as text ("col=value, …", NULL for
  // null, reals in their shortest exact form) in key order: backends compare equal
  // row for row when their stores hold the same data.
  static std::vector<std::string> table_names();
  std::vector<std::string> table_rows(const std::string& table) const;

 private:
  void check_claim(const Claim& claim, std::optional<int64_t> steps_done);
  int64_t count_sweeps() const;
  std::string path_;
  std::unique_ptr<sql::Connection> conn_;
};

// The store location: the flag if given, else $MOESCALE_DB, else moescale.db.
std::string default_database_path(const std::string& flag);
// True for postgresql:// and postgres:// URLs; anything else is a SQLite path.
bool is_server_location(const std::string& location);
// The location fit for messages and logs: a URL's password is left out.
std::string location_for_messages(const std::string& location);
// `text` (e.g. libpq's message, which repeats a malformed URL) with the location and its
// password, as written or percent-decoded, masked.
std::string redact_location(const std::string& text, const std::string& location);

}  // namespace moescale
