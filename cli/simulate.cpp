// moescale simulate: give the planned runs of a sweep losses drawn from a known law, to
// rehearse a sweep design (and plan --next) before spending compute.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/fit_data.h"
#include "db/db.h"
#include "fitting/fitting.h"

namespace moescale::cli {
namespace {

struct SimulateArgs {
  std::string db, sweep, law;
  std::vector<std::string> params;
  double noise = 0.01;
  uint64_t seed = 1;
  bool json = false;
};

// A sweep's fits must not mix real and simulated losses: simulating a sweep that already
// holds trained results is refused (the store refuses to fit such a mix too).
void refuse_mixing(const Database& db, const std::string& sweep) {
  for (const RunRecord& r : db.runs(sweep, RunStatus::done))
    if (r.source != "simulated")
      throw std::runtime_error(fmt::format(
          "sweep '{}' holds trained results (run {}); simulated ones would mix with them. Plan "
          "the same config under another name (set name = ... in the TOML) and simulate that",
          sweep, r.id));
}

void run_simulate(const SimulateArgs& a) {
  const fitting::Law law = law_named(a.law);
  const std::map<std::string, double> values = fitting::law_parameters(law, a.params);
  const fitting::Expression expr = law.compiled();
  std::vector<double> x;
  for (const std::string& p : expr.params()) x.push_back(values.at(p));
  Database db(default_database_path(a.db), Database::Mode::must_exist);
  if (db.sweep(a.sweep).kind != "planned")
    throw std::runtime_error(fmt::format(
        "sweep '{}' holds imported observations, not planned runs; simulate a planned sweep",
        a.sweep));
  refuse_mixing(db, a.sweep);
  const std::vector<RunRecord> planned = db.runs(a.sweep, RunStatus::planned);
  std::vector<std::pair<int64_t, double>> losses;
  for (const RunRecord& r : planned)
    losses.emplace_back(
        r.id, fitting::simulated_loss(expr, x, observation_of(r), a.noise, a.seed, r.key));
  db.record_simulated(a.sweep, losses);
  if (a.json) {
    nlohmann::json j{{"sweep", a.sweep},
                     {"law", law.name},
                     {"noise", a.noise},
                     {"seed", a.seed},
                     {"runs", nlohmann::json::array()}};
    for (size_t i = 0; i < planned.size(); ++i)
      j["runs"].push_back({{"id", planned[i].id},
                           {"key", planned[i].key},
                           {"loss", losses[i].second},
                           {"source", "simulated"}});
    fmt::print("{}\n", j.dump(2));
    return;
  }
  Table t({"id", "E", "N_active", "tokens", "C=6ND", "loss"});
  for (size_t i = 0; i < planned.size(); ++i) {
    const RunRecord& r = planned[i];
    t.add({std::to_string(r.id), std::to_string(r.plan.spec.shape.experts),
           human_count(static_cast<double>(r.plan.params.active)),
           human_count(static_cast<double>(r.plan.spec.tokens)), sci(r.plan.compute_6n),
           fmt::format("{:.4f}", losses[i].second)});
  }
  if (!t.empty()) fmt::print("{}", t.render());
  fmt::print(
      "sweep '{}': {} planned runs simulated from law {} with {:g} log-normal noise "
      "(seed {}), marked done with source 'simulated'\n",
      a.sweep, planned.size(), law.name, a.noise, a.seed);
}

}  // namespace

void add_simulate_command(CLI::App& app) {
  auto a = std::make_shared<SimulateArgs>();
  CLI::App* cmd = app.add_subcommand(
      "simulate",
      "Give every planned run of a sweep a loss drawn from a known law with multiplicative "
      "log-normal noise, and mark it done (source 'simulated'): rehearse a sweep design, or "
      "plan --next, before spending compute. A sweep holds trained or simulated results, never "
      "both.");
  cmd->add_option("--sweep", a->sweep, "planned sweep to simulate")->required();
  cmd->add_option("--law", a->law,
                  "a catalogue law (see `moescale laws`) or an expression over N, NT, D, E, ...")
      ->required();
  cmd->add_option("--param", a->params,
                  "a law parameter, name=value (repeatable; chinchilla: E=1.69 A=406.4 "
                  "B=410.7 alpha=0.34 beta=0.28, or its fitted names e, a, b, ...)")
      ->required();
  cmd->add_option("--noise", a->noise, "sd of log loss: loss = law * exp(noise * z)")
      ->default_val(0.01);
  cmd->add_option("--seed", a->seed, "random seed (a run's loss depends on it and the run)")
      ->default_val(1);
  add_db_option(cmd, a->db);
  cmd->add_flag("--json", a->json, "print JSON");
  cmd->callback([a] { run_simulate(*a); });
}

}  // namespace moescale::cli
