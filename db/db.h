// moescale store: one SQLite file (WAL, foreign keys on) holding sweeps, runs,
// training metrics, imported observations and fits. The only module with SQL.
// Every write is one transaction; a foreign or newer file is refused untouched.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "planner/planner.h"

struct sqlite3;

namespace moescale {

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
  std::string source = "trained";  // or "simulated" (moescale simulate)
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
  enum class Mode { create_if_missing, must_exist };
  static constexpr int kSchemaVersion = 3;

  // Throws std::runtime_error with an actionable message for a missing,
  // foreign, corrupt or newer-schema file, without touching it.
  Database(const std::string& path, Mode mode);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  const std::string& path() const { return path_; }
  int schema_version() const;

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
  // sweep; running runs whose heartbeat is older than stale_seconds count as
  // planned, and so do failed runs with retry_failed) to running for this
  // worker. Empty when nothing is left.
  std::optional<RunRecord> claim_run(const std::string& sweep, const std::string& worker,
                                     std::optional<int64_t> run_id = std::nullopt,
                                     double stale_seconds = 600, bool retry_failed = false);
  void record_metric(const MetricRecord& m);  // also refreshes the heartbeat
  void finish_run(int64_t run_id, RunStatus status, std::optional<double> final_loss,
                  double wall_seconds, int64_t steps_done, const std::string& error);
  void release_run(int64_t run_id, int64_t steps_done);  // back to planned, progress kept
  // Marks planned runs done with simulated final losses (source 'simulated'), all or none:
  // throws if a run is not a planned run of the sweep.
  void record_simulated(const std::string& sweep,
                        const std::vector<std::pair<int64_t, double>>& losses);
  std::vector<MetricRecord> metrics(int64_t run_id, const std::string& split = "") const;

  // All rows or none. Throws if the sweep exists and is not an import.
  int64_t import_observations(const std::string& sweep, const std::string& source,
                              const std::vector<ObservationRecord>& rows);
  // Imported rows plus the done runs of a planned sweep. Throws if the done runs mix trained
  // and simulated results: a fit must be of one or the other.
  std::vector<ObservationRecord> observations(const std::string& sweep) const;

  int64_t save_fit(const std::string& sweep, const std::string& law, const std::string& group,
                   const std::string& result_json);
  FitRecord fit(int64_t id) const;
  std::vector<FitRecord> fits(const std::optional<std::string>& sweep) const;

 private:
  class Transaction;
  void check_identity(bool existed);
  void migrate();
  std::string path_;
  sqlite3* handle_ = nullptr;
};

// The database path: the flag if given, else $MOESCALE_DB, else moescale.db.
std::string default_database_path(const std::string& flag);

}  // namespace moescale
