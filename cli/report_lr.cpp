#include "cli/report_lr.h"

#include <fmt/format.h>

#include <cmath>
#include <map>
#include <set>

#include "cli/common.h"
#include "cli/tuning_data.h"
#include "fitting/tuning.h"

namespace moescale::cli {
namespace {

// The tuning sweep the sweep's rule came from: its config's lr_fit, or itself when it is one.
std::string tuning_sweep_of(const Database& db, const SweepRecord& sweep) {
  for (const RunRecord& r : db.runs(sweep.name, std::nullopt))
    if (r.plan.spec.train.lr_rule == "tuning") return sweep.name;
  if (sweep.kind != "planned" || sweep.config.empty()) return "";
  try {
    const SweepConfig c = parse_sweep_config(sweep.config, sweep.name);
    return c.lr_rule.name == "fit" && db.find_sweep(c.lr_fit) ? c.lr_fit : "";
  } catch (const std::exception&) {
    return "";
  }
}

Figure tuning_figure(const std::vector<fitting::LrOptimum>& optima) {
  Figure f{"tuning", "Tuning: final loss against the peak learning rate, per anchor", {}, 3};
  std::map<std::string, Panel> panels;
  std::map<std::string, int> colors;
  for (const fitting::LrOptimum& o : optima) {
    Panel& p = panels[o.anchor.group];
    p.title = o.anchor.group;
    p.xlabel = "peak learning rate";
    p.ylabel = "final val loss (nats/token)";
    p.logx = true;
    const int color = colors[o.anchor.group]++;
    Series s(fmt::format("N {}, D {}", human_count(o.anchor.n_active),
                         human_count(o.anchor.tokens)),
             "points", color);
    for (auto [lr, loss] : o.curve)
      if (std::isfinite(loss)) s.x.push_back(lr), s.y.push_back(loss);
    p.series.push_back(std::move(s));
    Series curve("", "lines", color);
    for (auto [lr, loss] : o.fitted) curve.x.push_back(lr), curve.y.push_back(loss);
    if (!curve.x.empty()) p.series.push_back(std::move(curve));
    Series star("", "points", color, 9);
    star.x = {o.lr};
    double lowest = o.best_loss;  // lr* sits at the bottom of its parabola
    for (auto [lr, loss] : o.fitted) lowest = std::min(lowest, loss);
    star.y = {lowest};
    p.series.push_back(std::move(star));
  }
  for (auto& [group, p] : panels) f.panels.push_back(std::move(p));
  return f;
}

std::string law_markdown(const Database& db, const std::string& tuning) {
  std::map<std::string, FitRecord> latest;
  for (const FitRecord& f : db.fits(tuning))
    if (f.law == "lr") latest[f.group] = f;
  if (latest.empty()) return "The tuning sweep has no lr fit yet (`moescale fit --law lr`).\n\n";
  std::string md =
      "| group | fit | anchors | lr* law | b (N) | c (D) | e (E) | RMSLE |\n"
      "|---|---|---|---|---|---|---|---|\n";
  for (const auto& [group, f] : latest) {
    const fitting::FitResult r = fitting::fit_result_from_json(f.result);
    auto cell = [&](const char* name) -> std::string {
      const auto v = r.params.find(name);
      if (v == r.params.end()) return "left out";
      const auto i = r.intervals.find(name);
      return i == r.intervals.end() ? fmt::format("{:+.3f}", v->second)
                                    : fmt::format("{:+.3f} [{:+.3f}, {:+.3f}]", v->second,
                                                  i->second.lo, i->second.hi);
    };
    md += fmt::format("| {} | {} | {} | `{}` | {} | {} | {} | {:.3f} |\n", group, f.id,
                      r.n_points, r.expression, cell("b"), cell("c"), cell("e"), r.rmsle);
  }
  return md + "\n";
}

std::string anchors_markdown(const std::vector<fitting::LrOptimum>& optima) {
  std::string md =
      "| anchor | rates tried (loss) | lr* | interval |\n|---|---|---|---|\n";
  for (const fitting::LrOptimum& o : optima) {
    std::string rates;
    for (auto [lr, loss] : o.curve)
      rates += fmt::format("{}{:.3g} ({})", rates.empty() ? "" : ", ", lr,
                           std::isfinite(loss) ? fmt::format("{:.4f}", loss) : "diverged");
    md += fmt::format("| {} | {} | {:.3g} | {} |\n", o.anchor.label, rates, o.lr,
                      o.interval ? fmt::format("[{:.3g}, {:.3g}]", o.interval->lo, o.interval->hi)
                                 : "at an edge (lr_edge)");
  }
  return md + "\n";
}

std::string recipe_markdown(const Database& db, const std::string& sweep) {
  const std::vector<fitting::RecipePoint> points = recipe_points(db, sweep);
  if (points.empty())
    return "No recipe check yet: `moescale plan --recipe-check 4 --sweep " + sweep +
           "` adds x3 and x1/3 neighbours of the points that matter most.\n\n";
  const fitting::ReplicateNoise noise = sweep_noise(db, sweep);
  if (!noise.measured()) return "The recipe check needs replicate seeds to judge against.\n\n";
  std::string md = fmt::format(
      "Neighbours at x3 and x1/3 of a point's own rate; a neighbour better by more than twice "
      "the noise ({:.4f} sd of log loss) draws `recipe_untuned`.\n\n"
      "| point | own lr | own loss | factor | neighbour loss | difference (nats) | verdict |\n"
      "|---|---|---|---|---|---|---|\n",
      noise.sd_log_loss);
  for (const fitting::RecipeVerdict& v : fitting::recipe_check(points, noise.sd_log_loss))
    md += fmt::format("| {} | {:.3g} | {:.4f} | x{:.3g} | {:.4f} | {:+.4f} | {} |\n", v.label,
                      v.own_lr, v.own_mean, v.factor, v.neighbour_mean, v.difference,
                      v.untuned ? "**untuned**" : "ok");
  return md + "\n";
}

}  // namespace

LrReport lr_report(const Database& db, const std::string& sweep_name) {
  const SweepRecord sweep = db.sweep(sweep_name);
  LrReport out;
  std::set<std::string> rules;
  std::set<double> rates;
  for (const RunRecord& r : db.runs(sweep_name, std::nullopt))
    if (r.plan.spec.train.recipe_probe == 1)
      rules.insert(r.plan.spec.train.lr_rule), rates.insert(r.plan.spec.train.lr);
  if (rules.empty()) return out;  // imported rows: no rates to show
  std::string& md = out.markdown;
  md = fmt::format("The runs were trained with lr_rule {} ({} distinct peak rates, {:.3g} to "
                   "{:.3g}).\n\n",
                   fmt::format("\"{}\"", fmt::join(rules, "\", \"")), rates.size(),
                   rates.empty() ? 0.0 : *rates.begin(), rates.empty() ? 0.0 : *rates.rbegin());
  const std::string tuning = tuning_sweep_of(db, sweep);
  if (!tuning.empty()) {
    const fitting::ReplicateNoise noise = sweep_noise(db, tuning);
    fitting::LrTuningOptions o;
    if (noise.measured()) o.noise = noise.sd_log_loss;
    std::vector<fitting::LrOptimum> optima;
    for (const fitting::LrAnchor& a : lr_anchors(db, tuning)) {
      try {
        optima.push_back(fitting::lr_optimum(a, o));
      } catch (const std::invalid_argument&) {  // fewer than three rates finished
      }
    }
    md += fmt::format("### Tuning sweep `{}`\n\n", tuning);
    if (!optima.empty()) out.figures.push_back(tuning_figure(optima));
    md += "@tuning@\n" + law_markdown(db, tuning) + anchors_markdown(optima);
  }
  md += "### Recipe check\n\n" + recipe_markdown(db, sweep_name);
  return out;
}

}  // namespace moescale::cli
