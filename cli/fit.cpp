// moescale fit: fit a scaling law to a sweep's finished runs or imported rows.
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/fit_data.h"
#include "cli/fit_lr.h"
#include "cli/tuning_data.h"
#include "db/db.h"
#include "fitting/fitting.h"

namespace moescale::cli {
namespace {

struct FitArgs {
  std::string db, sweep, law = "chinchilla", holdout = "none", router;
  std::vector<std::string> grids, bounds;
  std::vector<int64_t> experts;
  int bootstrap = 0, threads = 2, exclude_top_loss = 0, holdout_budgets = 1, approach = 3;
  double delta = 1e-3, noise = 0.015;
  bool per_group = false, json = false, quiet = false, strict = false;
  bool bootstrap_given = false;
};

fitting::Law choose_law(const FitArgs& a) {
  fitting::Law law = law_named(a.law);
  for (const std::string& g : a.grids) fitting::set_grid(law, g);
  for (const std::string& b : a.bounds) fitting::set_bounds(law, b);
  return law;
}

using Groups = std::map<std::string, std::vector<fitting::Observation>>;

std::string group_of(const ObservationRecord& o, bool per_group) {
  if (!per_group) return "all";
  return fit_group_name(o.router.empty() ? "imported" : o.router, o.experts);
}

Groups load_groups(const Database& db, const FitArgs& a) {
  Groups groups;
  for (const ObservationRecord& o : db.observations(a.sweep)) {
    // The dense baseline is every router's E = 1 point, so a router filter keeps it.
    if (!a.router.empty() && o.router != a.router && o.router != "dense") continue;
    if (!a.experts.empty() && std::find(a.experts.begin(), a.experts.end(),
                                        static_cast<int64_t>(o.experts)) == a.experts.end())
      continue;
    groups[group_of(o, a.per_group)].push_back(observation_of(o));
  }
  if (groups.empty())
    throw std::runtime_error(fmt::format(
        "sweep '{}' has no finished runs{} to fit; train it (moescale train --sweep {}) or import "
        "rows",
        a.sweep, a.router.empty() && a.experts.empty() ? "" : " matching the filters", a.sweep));
  if (a.exclude_top_loss > 0)
    for (auto& [name, obs] : groups)
      obs = fitting::exclude_top_loss(std::move(obs), a.exclude_top_loss);
  return groups;
}

fitting::FitOptions fit_options(const FitArgs& a) {
  fitting::FitOptions o;
  o.delta = a.delta;
  o.threads = a.threads;
  o.bootstrap = a.bootstrap;
  o.holdout_budgets = a.holdout_budgets;
  if (a.holdout == "largest-compute") o.holdout = fitting::Holdout::largest_compute;
  if (a.holdout == "rollout") o.holdout = fitting::Holdout::rollout;
  if (!a.quiet) o.progress = progress_printer();
  return o;
}

nlohmann::json fit_json(int64_t id, const std::string& group, const fitting::FitResult& r) {
  nlohmann::json j = nlohmann::json::parse(fitting::to_json(r));
  j["fit_id"] = id;
  j["group"] = group;
  return j;
}

void print_fit(int64_t id, const std::string& group, const fitting::FitResult& r) {
  fmt::print("fit {}  law {}  group {}  points {}\n", id, r.law, group, r.n_points);
  fmt::print("{}", parameter_lines(r));
  fmt::print("  objective {:.8g} (Huber δ={:g} on log loss), RMSLE {:.4g}, {} starts in {:.2f}s\n",
             r.objective, r.delta, r.rmsle, r.starts, r.seconds);
  if (r.noise.measured())
    fmt::print(
        "  run-to-run noise {:.4g} (sd of log loss, {} points trained with several seeds, "
        "{} dof): the RMSLE is {:.2f} times it\n",
        r.noise.sd_log_loss, r.noise.sets, r.noise.dof, r.rmsle / r.noise.sd_log_loss);
  if (r.holdout)
    fmt::print("  held out {} runs with C ≥ {:.3g}: RMSLE {:.4g}, mean log error {:+.4g}\n",
               r.holdout->n_test, r.holdout->min_compute, r.holdout->rmsle, r.holdout->mean_error);
  if (!r.rollout.empty())
    fmt::print("  rollout: fit on the smallest budgets, predict the next\n{}",
               rollout_table(r).render());
}

// Returns how many diagnostics fired.
size_t print_warnings(const std::string& group, size_t n_groups, const fitting::FitResult& r) {
  for (const auto& d : r.diagnostics)
    fmt::print(stderr, "warning: {}{} [{}]\n", n_groups > 1 ? fmt::format("group {}: ", group) : "",
               d.message, d.code);
  return r.diagnostics.size();
}

// recipe_untuned: neighbours of a point that beat its own rate (plan --recipe-check).
std::vector<fitting::Diagnostic> recipe_warnings(const Database& db, const std::string& sweep) {
  const std::vector<fitting::RecipePoint> points = recipe_points(db, sweep);
  if (points.empty()) return {};
  const fitting::ReplicateNoise noise = sweep_noise(db, sweep);
  if (!noise.measured()) {
    fmt::print(stderr, "note: the sweep's recipe check needs its run-to-run noise, and no point "
                       "has replicate seeds: plan --recipe-check with --seeds 2 adds them\n");
    return {};
  }
  return fitting::recipe_diagnostics(fitting::recipe_check(points, noise.sd_log_loss));
}

std::string interval_text(const std::optional<fitting::Interval>& iv, double confidence) {
  return iv ? fmt::format("[{:.4g}, {:.4g}] ({:.0f}%)", iv->lo, iv->hi, 100 * confidence) : "";
}

void print_approach2(int64_t id, const std::string& group, const fitting::Approach2Fit& f) {
  fmt::print("fit {}  approach 2 (a parabola in log N per budget)  group {}  points {}\n", id,
             group, f.n_points);
  fmt::print("{}", approach2_table(f).render());
  fmt::print("  a {:>8.4f}  {}  N* = {:.4g} C^a, through {} budgets\n", f.a,
             interval_text(f.a_ci, f.confidence), std::exp(f.log_k), f.budgets_used);
  fmt::print("  b {:>8.4f}  {}  D* = C / (6 N*)\n", f.b, interval_text(f.b_ci, f.confidence));
}

void run_approach2(const FitArgs& a) {
  Database db(default_database_path(a.db), Database::Mode::must_exist);
  const Groups groups = load_groups(db, a);
  fitting::Approach2Options o;
  if (a.bootstrap > 0) o.bootstrap = a.bootstrap;
  nlohmann::json out = nlohmann::json::array();
  size_t warnings = 0;
  for (const auto& [group, observations] : groups) {
    const fitting::Approach2Fit f = fitting::fit_approach2(observations, o);
    const std::string json = fitting::to_json(f);
    const int64_t id = db.save_fit(a.sweep, "approach2", group, json);
    if (a.json) {
      nlohmann::json j = nlohmann::json::parse(json);
      j["fit_id"] = id;
      j["group"] = group;
      out.push_back(j);
    } else {
      print_approach2(id, group, f);
    }
    for (const auto& d : f.diagnostics)
      fmt::print(stderr, "warning: {}{} [{}]\n",
                 groups.size() > 1 ? fmt::format("group {}: ", group) : "", d.message, d.code);
    warnings += f.diagnostics.size();
  }
  if (a.json) fmt::print("{}\n", (out.size() == 1 ? out[0] : out).dump(2));
  if (a.strict && warnings > 0)
    throw std::runtime_error(
        fmt::format("--strict: {} diagnostic{} fired (see the warnings above); the fits are stored",
                    warnings, warnings == 1 ? "" : "s"));
}

void run_fit(const FitArgs& a) {
  if (a.law == "lr")
    return run_lr_fit({.db = a.db,
                       .sweep = a.sweep,
                       .bootstrap = a.bootstrap_given ? a.bootstrap : 200,
                       .noise = a.noise,
                       .json = a.json,
                       .strict = a.strict});
  if (a.approach == 2) return run_approach2(a);
  const fitting::Law law = choose_law(a);
  const fitting::FitOptions options = fit_options(a);
  Database db(default_database_path(a.db), Database::Mode::must_exist);
  const Groups groups = load_groups(db, a);
  nlohmann::json out = nlohmann::json::array();
  size_t warnings = 0;
  const std::vector<fitting::Diagnostic> recipe = recipe_warnings(db, a.sweep);
  for (const auto& [group, observations] : groups) {
    fitting::FitResult r = fitting::fit_law(law, observations, options);
    r.diagnostics.insert(r.diagnostics.end(), recipe.begin(), recipe.end());
    const int64_t id = db.save_fit(a.sweep, r.law, group, fitting::to_json(r));
    if (a.json)
      out.push_back(fit_json(id, group, r));
    else
      print_fit(id, group, r);
    warnings += print_warnings(group, groups.size(), r);
  }
  if (a.json) fmt::print("{}\n", (out.size() == 1 ? out[0] : out).dump(2));
  if (a.strict && warnings > 0)
    throw std::runtime_error(
        fmt::format("--strict: {} diagnostic{} fired (see the warnings above); the fits are "
                    "stored, but do not trust them as they are",
                    warnings, warnings == 1 ? "" : "s"));
}

}  // namespace

void add_fit_command(CLI::App& app) {
  auto a = std::make_shared<FitArgs>();
  CLI::App* cmd = app.add_subcommand(
      "fit",
      "Fit a scaling law to a sweep's finished runs (or imported rows) and store the fit.\n"
      "Minimises the sum of Huber(log predicted - log observed) from every point of the law's "
      "starting grid.");
  cmd->add_option("--sweep", a->sweep, "sweep whose finished runs or imported rows to fit")
      ->required();
  cmd->add_option("--approach", a->approach,
                  "3: fit the law to every run (Hoffmann et al.'s approach 3); 2: a parabola in "
                  "log N per IsoFLOP budget and N* = k C^a through the minima (approach 2; "
                  "--bootstrap sets its resamples, 200 by default)")
      ->check(CLI::IsMember({2, 3}))
      ->default_val(3);
  cmd->add_option("--law", a->law,
                  "a catalogue law (see `moescale laws`) or an expression, "
                  "e.g. \"E0 + exp(a)/N^alpha + exp(b)/D^beta\"; \"lr\": the learning-rate "
                  "law of a tuning sweep (plan --tune): lr* per anchor, then per router "
                  "log lr* = a + b log N + c log D + e log E")
      ->default_val("chinchilla");
  cmd->add_option("--grid", a->grids,
                  "starting values of a parameter: alpha=0:2:0.5 or "
                  "alpha=0.1,0.3 (repeatable)");
  cmd->add_option("--bound", a->bounds,
                  "keep a parameter in a range: alpha=0:3, beta=0: "
                  "(repeatable)");
  cmd->add_option("--router", a->router, "only runs with this router (and the dense baseline)");
  cmd->add_option("--experts", a->experts, "only runs with these expert counts")->delimiter(',');
  cmd->add_flag("--per-group", a->per_group, "one fit per (router, expert count)");
  cmd->add_option("--exclude-top-loss", a->exclude_top_loss, "drop the K highest losses")
      ->default_val(0);
  cmd->add_option("--bootstrap", a->bootstrap,
                  "bootstrap resamples for intervals (--law lr: 200 unless given)")
      ->default_val(0)
      ->check(CLI::Range(0, fitting::kMaxBootstrap));
  cmd->add_option("--noise", a->noise,
                  "--law lr: the run-to-run sd of log loss to assume when the tuning sweep has no "
                  "replicate seeds")
      ->default_val(0.015)
      ->check(CLI::PositiveNumber);
  cmd->add_option("--holdout", a->holdout,
                  "largest-compute: fit without the largest budget and report the error on it; "
                  "rollout: fit on the k smallest budgets and predict the next, for every k")
      ->check(CLI::IsMember({"none", "largest-compute", "rollout"}))
      ->default_val("none");
  cmd->add_option("--holdout-budgets", a->holdout_budgets, "how many largest budgets to hold out")
      ->default_val(1);
  cmd->add_option("--delta", a->delta, "Huber threshold on log residuals")->default_val(1e-3);
  cmd->add_option("--threads", a->threads, "threads for the multi-start search")->default_val(2);
  add_db_option(cmd, a->db);
  cmd->add_flag("--json", a->json, "print JSON (an array with --per-group)");
  cmd->add_flag("-q,--quiet", a->quiet, "no progress");
  cmd->add_flag("--strict", a->strict,
                "exit 1 when any diagnostic fires (warnings on stderr; \"diagnostics\" in --json)");
  cmd->callback([a, cmd] {
    a->bootstrap_given = cmd->count("--bootstrap") > 0;
    run_fit(*a);
  });
}

}  // namespace moescale::cli
