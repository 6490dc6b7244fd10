// fit --law lr: lr* per anchor of a tuning sweep, then the lr law per router, stored as fits.
#include "cli/fit_lr.h"

#include <fmt/format.h>

#include <cmath>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "cli/fit_data.h"
#include "cli/tuning_data.h"
#include "db/db.h"
#include "fitting/tuning.h"

namespace moescale::cli {
namespace {

std::string curve_text(const fitting::LrOptimum& o) {
  std::string out;
  for (auto [lr, loss] : o.curve)
    out += fmt::format("{}{:.3g}: {}", out.empty() ? "" : ", ", lr,
                       std::isfinite(loss) ? fmt::format("{:.4f}", loss) : "diverged");
  return out;
}

void print_anchors(const std::vector<fitting::LrOptimum>& optima, double noise, bool measured,
                   double confidence) {
  Table t({"group", "N_active", "tokens", "E", "rates", "best tried", "loss", "lr*",
           fmt::format("{:.0f}% interval", 100 * confidence)});
  for (const fitting::LrOptimum& o : optima)
    t.add({o.anchor.group, human_count(o.anchor.n_active), human_count(o.anchor.tokens),
           fmt::format("{:g}", o.anchor.experts), std::to_string(o.curve.size()),
           fmt::format("{:.3g}", o.best_tried), fmt::format("{:.4f}", o.best_loss),
           fmt::format("{:.3g}", o.lr),
           o.interval ? fmt::format("[{:.3g}, {:.3g}]", o.interval->lo, o.interval->hi)
                      : "at an edge"});
  fmt::print("{}", t.render());
  for (const fitting::LrOptimum& o : optima)
    fmt::print("  {}: {}\n", o.anchor.label, curve_text(o));
  fmt::print(
      "lr*: the vertex of a parabola in log lr fitted to each anchor's lowest rate and up to "
      "two rates either side; intervals from {} run-to-run noise {:.4f} (sd of log loss)\n\n",
      measured ? "the tuning sweep's measured" : "an assumed (--noise)", noise);
}

void print_law(int64_t id, const fitting::LrLaw& law) {
  const fitting::FitResult& r = law.fit;
  fmt::print("fit {}  law lr  group {}  anchors {}: {}\n", id, lr_fit_group(law.group),
             r.n_points, r.expression);
  fmt::print("{}", parameter_lines(r));
  fmt::print("  RMSLE {:.4g} (log lr* about the law), N_active {} to {}\n", r.rmsle,
             human_count(law.n_min), human_count(law.n_max));
  for (const std::string& d : law.dropped) fmt::print("  left out: {}\n", d);
}

nlohmann::json optimum_json(const fitting::LrOptimum& o) {
  nlohmann::json curve = nlohmann::json::array();
  for (auto [lr, loss] : o.curve)
    curve.push_back({{"lr", lr}, {"loss", std::isfinite(loss) ? nlohmann::json(loss) : nullptr}});
  nlohmann::json j{{"group", o.anchor.group}, {"label", o.anchor.label},
                   {"n_active", o.anchor.n_active}, {"tokens", o.anchor.tokens},
                   {"experts", o.anchor.experts}, {"curve", curve},
                   {"lr_star", o.lr}, {"best_tried", o.best_tried},
                   {"best_loss", o.best_loss}, {"at_edge", o.at_edge}};
  if (o.interval) j["interval"] = {o.interval->lo, o.interval->hi};
  return j;
}

}  // namespace

void run_lr_fit(const LrFitArgs& a) {
  Database db(default_database_path(a.db), Database::Mode::must_exist);
  db.sweep(a.sweep);
  const std::vector<fitting::LrAnchor> anchors = lr_anchors(db, a.sweep);
  if (anchors.empty())
    throw std::runtime_error(fmt::format(
        "sweep '{}' has no finished runs to tune on; plan it with `moescale plan --config C "
        "--tune` and train it",
        a.sweep));
  const fitting::ReplicateNoise noise = sweep_noise(db, a.sweep);
  fitting::LrTuningOptions o;
  o.bootstrap = a.bootstrap;
  o.noise = noise.measured() ? noise.sd_log_loss : a.noise;
  std::map<std::string, std::vector<fitting::LrOptimum>> by_group;
  std::vector<fitting::LrOptimum> all;
  for (const fitting::LrAnchor& anchor : anchors) {
    all.push_back(fitting::lr_optimum(anchor, o));
    by_group[anchor.group].push_back(all.back());
  }
  if (!a.json) print_anchors(all, o.noise, noise.measured(), o.confidence);
  nlohmann::json laws = nlohmann::json::array();
  size_t warnings = 0;
  for (const auto& [group, optima] : by_group) {
    std::optional<fitting::LrLaw> fitted;
    try {
      fitted = fitting::fit_lr_law(optima, o);
    } catch (const std::invalid_argument& e) {  // this group only: the others still fit
      fmt::print(stderr, "warning: {} (no lr fit stored for it) [lr_edge]\n", e.what());
      ++warnings;
      continue;
    }
    const fitting::LrLaw& law = *fitted;
    const int64_t id =
        db.save_fit(a.sweep, "lr", lr_fit_group(group), fitting::to_json(law.fit));
    if (a.json) {
      nlohmann::json j = nlohmann::json::parse(fitting::to_json(law.fit));
      j["fit_id"] = id;
      j["group"] = lr_fit_group(group);
      j["dropped"] = law.dropped;
      j["n_active_range"] = {law.n_min, law.n_max};
      laws.push_back(j);
    } else {
      print_law(id, law);
    }
    for (const fitting::Diagnostic& d : law.fit.diagnostics)
      fmt::print(stderr, "warning: group {}: {} [{}]\n", group, d.message, d.code);
    warnings += law.fit.diagnostics.size();
  }
  if (a.json) {
    nlohmann::json j{{"sweep", a.sweep},
                     {"noise", o.noise},
                     {"noise_measured", noise.measured()},
                     {"anchors", nlohmann::json::array()},
                     {"laws", laws}};
    for (const fitting::LrOptimum& opt : all) j["anchors"].push_back(optimum_json(opt));
    fmt::print("{}\n", j.dump(2));
  }
  if (a.strict && warnings > 0)
    throw std::runtime_error(fmt::format(
        "--strict: {} diagnostic{} fired (see the warnings above); the lr fits are stored",
        warnings, warnings == 1 ? "" : "s"));
}

}  // namespace moescale::cli
