// moescale plan: turn a sweep config into planned runs in the database.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/fit_data.h"
#include "cli/tuning_data.h"
#include "db/db.h"
#include "fitting/fitting.h"
#include "planner/planner.h"

namespace moescale::cli {
namespace {

struct PlanArgs {
  std::string config, db;
  bool dry_run = false, json = false;
  bool tune = false;  // plan the config's tuning stage (<name>-tune) instead
};

// plan --recipe-check: learning-rate neighbours of a sweep's points.
struct RecipeArgs {
  int count = 0;
  std::string sweep;
  double factor = 3;
  int seeds = 2;
};

// plan --next: runs that would most shrink the N* interval of a fit's recommendation.
struct NextArgs {
  bool next = false;
  int64_t fit_id = 0;
  double budget = 0, allowance = 0;
  int max_runs = 5, bootstrap = 100;
};

std::string plan_table(const std::vector<PlannedRun>& runs) {
  Table t({"budget", "router", "E", "k", "d", "L", "N_active", "N_total", "tokens", "steps", "lr",
           "C=6ND", "est. time"});
  for (const PlannedRun& r : runs) {
    const ModelShape& s = r.spec.shape;
    const double probe = r.spec.train.recipe_probe;
    t.add({r.budget > 0 ? sci(r.budget) : "-", to_string(s.router), std::to_string(s.experts),
           std::to_string(s.top_k), std::to_string(s.d_model), std::to_string(s.n_layers),
           human_count(static_cast<double>(r.params.active)),
           human_count(static_cast<double>(r.params.total)),
           human_count(static_cast<double>(r.spec.tokens)), std::to_string(r.spec.steps()),
           fmt::format("{:.3g}{}", r.spec.train.lr, probe != 1 ? fmt::format(" (x{:.3g})", probe)
                                                                : ""),
           sci(r.compute_6n), human_duration(r.est_seconds)});
  }
  return t.render();
}

// The rule's source, and the runs whose N lies outside the range its law was fitted on.
void print_lr_rule(const SweepConfig& config, const std::vector<PlannedRun>& runs) {
  const LrRule& rule = config.lr_rule;
  if (rule.name == "fixed") return;
  fmt::print("learning rates: lr_rule \"{}\" ({})\n", rule.name, rule.source);
  int outside = 0;
  double worst = 1;
  for (const PlannedRun& r : runs) {
    const auto range = rule.fitted_range.find(lr_group(r.spec.shape));
    if (range == rule.fitted_range.end()) continue;
    const double n = static_cast<double>(r.params.active);
    const double beyond = std::max(range->second.first / n, n / range->second.second);
    if (beyond > 1.01) ++outside, worst = std::max(worst, beyond);
  }
  if (outside > 0)
    fmt::print(stderr,
               "note: {} run{} lie outside the N_active range their router's lr law was fitted "
               "on, by up to x{:.3g}: their rates are extrapolated (tune anchors nearer them, or "
               "check them with plan --recipe-check)\n",
               outside, outside == 1 ? "" : "s", worst);
}

void run_plan(const PlanArgs& a) {
  // Plan completely before touching the database: a bad config writes nothing.
  SweepConfig config = load_sweep_config(a.config);
  const std::string db_location = default_database_path(a.db);
  if (a.tune) config = lr_tuning_config(config);
  resolve_lr_rule(db_location, config);
  const std::vector<PlannedRun> runs = plan_sweep(config);
  double compute = 0, seconds = 0;
  for (const PlannedRun& r : runs) compute += r.compute_6n, seconds += r.est_seconds;

  Database::PlanSaved saved;
  std::string db_path;
  if (!a.dry_run) {
    db_path = db_location;
    Database db(db_path, Database::Mode::create_if_missing);
    saved = db.save_plan(config, runs);
  }
  if (a.json) {
    nlohmann::json j{{"sweep", config.name},
                     {"runs", nlohmann::json::array()},
                     {"total_compute_6n", compute},
                     {"est_seconds", seconds},
                     {"dry_run", a.dry_run},
                     {"added", saved.added},
                     {"already_planned", saved.existing}};
    for (const PlannedRun& r : runs) j["runs"].push_back(planned_run_json(r));
    fmt::print("{}\n", j.dump(2));
    return;
  }
  fmt::print("{}", plan_table(runs));
  print_lr_rule(config, runs);
  fmt::print("\nsweep '{}': {} runs, total compute {} FLOPs (6·N·D), estimated {} at {} FLOP/s\n",
             config.name, runs.size(), sci(compute), human_duration(seconds),
             sci(config.device_flops));
  if (a.dry_run)
    fmt::print("dry run: nothing written\n");
  else
    fmt::print("{} new runs, {} already planned, in {}\n", saved.added, saved.existing,
               location_for_messages(db_path));
}

Router router_of(const FitRecord& record, const SweepConfig& config) {
  const auto at = record.group.find("router=");
  if (at != std::string::npos) {
    const auto end = record.group.find(',', at);
    const std::string name = record.group.substr(at + 7, end - at - 7);
    if (name != "dense" && name != "imported") return parse_router(name);
  }
  for (Router r : config.routers)
    if (r != Router::dense) return r;
  return Router::topk;
}

void print_next(const fitting::NextRunsPlan& plan, const NextArgs& n, const std::string& sweep) {
  Table t({"#", "budget", "E", "d", "L", "N_active", "tokens", "C=6ND", "pred. loss",
           "sd log N* after"});
  for (size_t i = 0; i < plan.runs.size(); ++i) {
    const fitting::ProposedRun& p = plan.runs[i];
    const ModelShape& s = p.run.spec.shape;
    t.add({std::to_string(i + 1), sci(p.run.budget), std::to_string(p.experts),
           std::to_string(s.d_model), std::to_string(s.n_layers),
           human_count(static_cast<double>(p.run.params.active)),
           human_count(static_cast<double>(p.run.spec.tokens)), sci(p.run.compute_6n),
           fmt::format("{:.4f}", p.predicted_loss), fmt::format("{:.4f}", p.sd_after)});
  }
  fmt::print("{}", t.render());
  for (size_t i = 0; i < plan.runs.size(); ++i) fmt::print("  {}: {}\n", i + 1, plan.runs[i].why);
  const double z = 1.96;  // a 95% interval on log N* spans 2 z sd
  fmt::print(
      "sweep '{}': {} runs of {} candidates, {} FLOPs of the {} allowed; expected sd of "
      "log N* at {} FLOPs {:.4f} -> {:.4f} (95% interval x{:.3g} -> x{:.3g})\n",
      sweep, plan.runs.size(), plan.candidates, sci(plan.compute), sci(n.allowance), sci(n.budget),
      plan.sd_start, plan.sd_end, std::exp(2 * z * plan.sd_start), std::exp(2 * z * plan.sd_end));
}

nlohmann::json next_json(const fitting::NextRunsPlan& plan, const NextArgs& n,
                         const std::string& sweep, const Database::PlanSaved& saved, bool dry) {
  nlohmann::json j{{"sweep", sweep},
                   {"target_budget", n.budget},
                   {"allowance", n.allowance},
                   {"compute_6n", plan.compute},
                   {"sd_log_n_opt_before", plan.sd_start},
                   {"sd_log_n_opt_after", plan.sd_end},
                   {"candidates", plan.candidates},
                   {"dry_run", dry},
                   {"added", saved.added},
                   {"runs", nlohmann::json::array()}};
  for (const fitting::ProposedRun& p : plan.runs) {
    nlohmann::json r = planned_run_json(p.run);
    r.update({{"predicted_loss", p.predicted_loss},
              {"prediction_sd", p.prediction_sd},
              {"sd_before", p.sd_before},
              {"sd_after", p.sd_after},
              {"shrink_per_flop", p.shrink_per_flop},
              {"why", p.why}});
    j["runs"].push_back(r);
  }
  return j;
}

// The config's max_total_compute guards plan_sweep; --allowance is the user's own limit for
// the new runs, so going over the config's only earns a warning.
void warn_over_limit(const Database& db, const SweepConfig& config, double added) {
  if (!(config.max_total_compute > 0)) return;
  double total = added;
  for (const RunRecord& r : db.runs(config.name, std::nullopt)) total += r.plan.compute_6n;
  if (total > config.max_total_compute)
    fmt::print(stderr,
               "warning: sweep '{}' will need {} FLOPs in all, over its config's "
               "max_total_compute = {}\n",
               config.name, sci(total), sci(config.max_total_compute));
}

// The config a planned sweep was made from, its lr rule resolved as it is now.
SweepConfig stored_config(const Database& db, const SweepRecord& sweep) {
  SweepConfig config = parse_sweep_config(sweep.config, "sweep '" + sweep.name + "'");
  config.name = sweep.name;
  resolve_lr_rule(db, config);
  return config;
}

void run_recipe_check(const PlanArgs& a, const RecipeArgs& r) {
  if (!a.config.empty())
    throw CLI::ValidationError("--config", "plan --recipe-check takes the sweep from --sweep");
  if (r.sweep.empty()) throw CLI::RequiredError("--sweep");
  if (r.count < 1) throw CLI::ValidationError("--recipe-check", "must be at least 1 point");
  if (!(r.factor > 1)) throw CLI::ValidationError("--factor", "must be above 1 (e.g. 3)");
  const std::string location = default_database_path(a.db);
  Database db(location, a.dry_run ? Database::Mode::read_only : Database::Mode::must_exist);
  const SweepRecord sweep = db.sweep(r.sweep);
  if (sweep.kind != "planned" || sweep.config.empty())
    throw std::runtime_error(fmt::format(
        "sweep '{}' holds imported observations: a recipe check trains neighbours of planned "
        "runs",
        sweep.name));
  const SweepConfig config = stored_config(db, sweep);
  const std::vector<PlannedRun> runs =
      recipe_check_runs(db, sweep.name, config, r.count, r.factor, r.seeds);
  Database::PlanSaved saved;
  if (!a.dry_run) saved = db.save_plan(config, runs);
  if (a.json) {
    nlohmann::json j{{"sweep", sweep.name}, {"runs", nlohmann::json::array()},
                     {"dry_run", a.dry_run}, {"added", saved.added},
                     {"already_planned", saved.existing}};
    for (const PlannedRun& p : runs) j["runs"].push_back(planned_run_json(p));
    fmt::print("{}\n", j.dump(2));
    return;
  }
  fmt::print("{}", plan_table(runs));
  fmt::print("\nrecipe check of sweep '{}': {} runs (x{:g} and x1/{:g} the rate of {} point{}, {} "
             "seed{} each)\n",
             sweep.name, runs.size(), r.factor, r.factor, r.count, r.count == 1 ? "" : "s",
             r.seeds, r.seeds == 1 ? "" : "s");
  if (a.dry_run)
    fmt::print("dry run: nothing written\n");
  else
    fmt::print("{} new runs, {} already planned: train them (moescale train --sweep {}), then "
               "fit or report: recipe_untuned says whether a neighbour beat the sweep's rate\n",
               saved.added, saved.existing, sweep.name);
}

void run_plan_next(const PlanArgs& a, const NextArgs& n) {
  if (!a.config.empty())
    throw CLI::ValidationError("--config", "plan --next takes the sweep from --fit, not --config");
  if (n.fit_id <= 0 || !(n.budget > 0) || !(n.allowance > 0))
    throw CLI::ValidationError(
        "--next", "needs --fit ID, --budget C_target and --allowance C_extra (positive FLOPs)");
  // Past plan's limit the law is evaluated where no sweep can reach, in floating point
  // that has lost the digits an interval needs (1e308 answered with an interval of x1).
  if (n.budget > limits::kMaxBudget || n.allowance > limits::kMaxBudget)
    throw CLI::ValidationError(
        "--next", fmt::format("--budget and --allowance must be at most {:g} FLOPs (plan's limit)",
                              limits::kMaxBudget));
  Database db(default_database_path(a.db), Database::Mode::must_exist);
  const FitRecord record = db.fit(n.fit_id);
  const SweepRecord sweep = db.sweep(record.sweep);
  if (sweep.kind != "planned" || sweep.config.empty())
    throw std::runtime_error(fmt::format(
        "fit {} is of sweep '{}', which holds imported observations and no planned config; "
        "plan --next adds runs to planned sweeps",
        n.fit_id, sweep.name));
  SweepConfig config = stored_config(db, sweep);
  const fitting::FitResult fit = fit_with_bootstrap(db, record, n.bootstrap, 0.95, a.json);
  std::vector<std::string> keys;
  for (const RunRecord& r : db.runs(sweep.name, std::nullopt)) keys.push_back(r.key);
  fitting::NextRunsOptions o;
  o.target_budget = n.budget;
  o.allowance = n.allowance;
  o.max_runs = n.max_runs;
  o.router = router_of(record, config);
  const fitting::NextRunsPlan plan =
      fitting::propose_next_runs(fit, fit_observations(db, record), config, keys, o);
  warn_over_limit(db, config, plan.compute);
  Database::PlanSaved saved;
  if (!a.dry_run && !plan.runs.empty()) {
    std::vector<PlannedRun> runs;
    for (const fitting::ProposedRun& p : plan.runs) runs.push_back(p.run);
    saved = db.save_plan(config, runs);
  }
  if (a.json) {
    fmt::print("{}\n", next_json(plan, n, sweep.name, saved, a.dry_run).dump(2));
    return;
  }
  print_next(plan, n, sweep.name);
  if (plan.runs.empty())
    fmt::print("no candidate fits the allowance or shrinks the interval; raise --allowance\n");
  else if (a.dry_run)
    fmt::print("dry run: nothing written\n");
  else
    fmt::print(
        "{} runs added as planned runs of sweep '{}': run them with moescale train (or "
        "simulate) --sweep {}, then fit again\n",
        saved.added, sweep.name, sweep.name);
}

}  // namespace

void add_plan_command(CLI::App& app) {
  auto args = std::make_shared<PlanArgs>();
  auto next = std::make_shared<NextArgs>();
  CLI::App* cmd = app.add_subcommand(
      "plan",
      "Plan a sweep from a TOML config and record its runs in the database.\n"
      "With --next: propose up to --max-runs new runs of a fit's sweep whose results would "
      "most shrink the interval on N* at --budget, per FLOP, within --allowance FLOPs.");
  cmd->add_option("--config", args->config, "sweep config (see configs/)");
  add_db_option(cmd, args->db);
  cmd->add_flag("--dry-run", args->dry_run, "print the plan, write nothing");
  cmd->add_flag("--json", args->json, "print JSON");
  cmd->add_flag("--next", next->next, "propose the next runs of a fit's sweep (needs --fit)");
  cmd->add_option("--fit", next->fit_id, "--next: the fit whose recommendation to sharpen");
  cmd->add_option("--budget", next->budget, "--next: the target compute budget C (FLOPs)");
  cmd->add_option("--allowance", next->allowance, "--next: most FLOPs (6·N·D) to add");
  cmd->add_option("--max-runs", next->max_runs, "--next: most runs to add")->default_val(5);
  cmd->add_option("--bootstrap", next->bootstrap,
                  "--next: resamples to refit when the fit has no bootstrap sets")
      ->default_val(100);
  cmd->add_flag("--tune", args->tune,
                "plan the config's tuning stage instead: sweep <name>-tune, a grid of learning "
                "rates ([tune] rates or rate_factors) at anchor points of every group ([tune] "
                "budgets, anchors); fit it with `fit --law lr`");
  auto recipe = std::make_shared<RecipeArgs>();
  cmd->add_option("--recipe-check", recipe->count,
                  "add learning-rate neighbours (x --factor and x 1/--factor) of K finished points "
                  "of --sweep: each group's lowest-loss point at its largest budget first, then "
                  "its smallest model there");
  cmd->add_option("--sweep", recipe->sweep, "--recipe-check: the sweep to check");
  cmd->add_option("--factor", recipe->factor, "--recipe-check: rate factor")->default_val(3);
  cmd->add_option("--seeds", recipe->seeds,
                  "--recipe-check: seeds of every point and neighbour (missing seeds of the "
                  "point are added too)")
      ->default_val(2)
      ->check(CLI::Range(1, 100));
  cmd->callback([args, next, recipe] {
    if (next->next) return run_plan_next(*args, *next);
    if (recipe->count != 0 || !recipe->sweep.empty()) return run_recipe_check(*args, *recipe);
    if (args->config.empty()) throw CLI::RequiredError("--config");
    run_plan(*args);
  });
}

}  // namespace moescale::cli
