// moescale report: pictures and tables of a sweep, as PNG/SVG and report.md.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/fit_data.h"
#include "cli/plot.h"
#include "cli/report_lr.h"
#include "db/db.h"
#include "fitting/fitting.h"

namespace moescale::cli {
namespace {
namespace fs = std::filesystem;

struct ReportArgs {
  std::string db, sweep, out;
  double budget = 0;
  bool quiet = false;
};

// One (router, expert count) group of a sweep, with its points and latest fits.
struct Group {
  std::string name;   // "router=topk,E=4", as `fit --per-group` names it
  std::string label;  // "topk, E=4"
  std::string router;
  int64_t experts = 1;
  std::vector<fitting::Observation> obs;  // finished runs and imported rows
  std::vector<size_t> budget_of;          // per point: index into SweepData::budgets
  std::vector<RunRecord> runs;            // trained runs, for curves and expert load
  std::optional<FitRecord> fit_record, approach2_record;
  std::optional<fitting::FitResult> fit;           // the latest chinchilla fit
  std::optional<fitting::Approach2Fit> approach2;  // the latest approach 2 fit
};

struct SweepData {
  std::vector<RunRecord> all;
  std::vector<Group> groups;
  std::vector<double> budgets;  // fitting::group_budgets, ascending
  std::vector<FitRecord> fits;
  bool imported = false;
};

// A group's fit: fit --per-group's, or the sweep-wide one where the sweep is one group.
void attach_fits(Group& g, const std::vector<FitRecord>& fits, size_t n_groups) {
  for (const FitRecord& f : fits) {
    if (f.group != g.name && !(n_groups == 1 && f.group == "all")) continue;
    if (f.law == "chinchilla") g.fit_record = f, g.fit = fitting::fit_result_from_json(f.result);
    if (f.law == "approach2")
      g.approach2_record = f, g.approach2 = fitting::approach2_from_json(f.result);
  }
}

SweepData load(const Database& db, const std::string& sweep) {
  SweepData d;
  d.all = db.runs(sweep, std::nullopt);
  d.fits = db.fits(sweep);
  d.imported = db.sweep(sweep).kind == "imported";
  const std::vector<ObservationRecord> records = db.observations(sweep);
  std::vector<fitting::Observation> all;
  for (const ObservationRecord& o : records) all.push_back(observation_of(o));
  const std::vector<fitting::Budget> budgets = fitting::group_budgets(all);
  std::vector<size_t> budget_of(all.size());
  for (size_t b = 0; b < budgets.size(); ++b) {
    d.budgets.push_back(budgets[b].compute);
    for (size_t r : budgets[b].rows) budget_of[r] = b;
  }
  std::map<std::pair<int64_t, std::string>, Group> groups;
  for (size_t i = 0; i < records.size(); ++i) {
    const std::string router = records[i].router.empty() ? "imported" : records[i].router;
    const auto experts = static_cast<int64_t>(records[i].experts);
    Group& g = groups[{experts, router}];
    g.router = router;
    g.experts = experts;
    g.name = fit_group_name(router, records[i].experts);
    g.label = router == "imported" ? fmt::format("imported, E={}", experts)
              : experts == 1       ? "dense"
                                   : fmt::format("{}, E={}", router, experts);
    g.obs.push_back(all[i]);
    g.budget_of.push_back(budget_of[i]);
  }
  for (const RunRecord& r : d.all) {
    // Recipe-check neighbours are off the sweep's recipe: the learning-rate section shows them.
    if (r.status != RunStatus::done || !r.final_loss || r.plan.spec.train.recipe_probe != 1)
      continue;
    const ModelShape& s = r.plan.spec.shape;
    if (auto it = groups.find({s.experts, to_string(s.router)}); it != groups.end())
      it->second.runs.push_back(r);
  }
  for (auto& [key, g] : groups) {
    attach_fits(g, d.fits, groups.size());
    d.groups.push_back(std::move(g));
  }
  return d;
}

// The points of a group at one budget (index into SweepData::budgets).
std::vector<size_t> points_at(const Group& g, size_t budget) {
  std::vector<size_t> out;
  for (size_t i = 0; i < g.obs.size(); ++i)
    if (g.budget_of[i] == budget) out.push_back(i);
  return out;
}

fitting::Observation point(const Group& g, double n, double tokens) {
  return {n, n, tokens, static_cast<double>(g.experts), g.experts > 1 ? 2.0 : 1.0, 1.0, 0, ""};
}

fitting::Choice optimum(const fitting::FitResult& fit, int64_t experts, double budget) {
  fitting::RecommendOptions o;
  o.budget = budget;
  return fitting::loss_optimal_choice(fit, budget, experts, o);
}

fitting::Choice optimum(const Group& g, double budget) {
  return optimum(*g.fit, g.experts, budget);
}

std::vector<double> log_space(double lo, double hi, int n) {
  std::vector<double> v;
  for (int i = 0; i < n; ++i) v.push_back(lo * std::pow(hi / lo, i / (n - 1.0)));
  return v;
}

Figure isoflop_figure(const SweepData& d) {
  Figure f{
      "isoflop", "IsoFLOP curves: final validation loss against model size, per budget", {}, 3};
  bool minimum_titled = false;
  for (const Group& g : d.groups) {
    Panel p{g.label,
            "N_{active} (non-embedding parameters)",
            "final val loss (nats/token)",
            true,
            false,
            {}};
    double lo = INFINITY, hi = 0;
    for (size_t b = 0; b < d.budgets.size(); ++b) {
      Series s(fmt::format("C = {:.1e} FLOPs", d.budgets[b]), "points", static_cast<int>(b));
      for (size_t i : points_at(g, b)) {
        s.x.push_back(g.obs[i].n_active);
        s.y.push_back(g.obs[i].loss);
        lo = std::min(lo, s.x.back()), hi = std::max(hi, s.x.back());
      }
      if (!s.x.empty()) p.series.push_back(std::move(s));
    }
    if (g.fit && hi > 0) {
      for (size_t bi = 0; bi < d.budgets.size(); ++bi) {
        const double b = d.budgets[bi];
        Series curve("", "lines", static_cast<int>(bi));
        for (double n : log_space(lo / 2, hi * 2, 60)) {
          curve.x.push_back(n);
          curve.y.push_back(g.fit->predict(point(g, n, tokens_for_compute(b, n))));
        }
        p.series.push_back(std::move(curve));
        const fitting::Choice c = optimum(g, b);
        Series minimum(minimum_titled ? "" : "fitted minimum", "points", 7, 9);
        minimum.x = {c.n_active};
        minimum.y = {c.loss};
        p.series.push_back(std::move(minimum));
        minimum_titled = true;
      }
    }
    f.panels.push_back(std::move(p));
  }
  return f;
}

// Approach 2's minima with their intervals and its line N* = k C^a (D* = C / (6 N*)).
void add_approach2(const fitting::Approach2Fit& f, const std::string& label, int color, Panel& n,
                   Panel& t) {
  color += 3;  // apart from the group's approach 3 line and best runs
  Series mn(label + ", approach 2 minima", "errorbars", color, 6);
  Series mt("", "errorbars", color, 6);
  Series ln(label + ", approach 2", "lines", color), lt("", "lines", color);
  ln.width = lt.width = 1.0;
  for (const fitting::BudgetMinimum& m : f.minima) {
    if (!m.used) continue;
    const fitting::Interval iv = m.n_ci.value_or(fitting::Interval{m.n_opt, m.n_opt, 0});
    mn.x.push_back(m.compute), mn.y.push_back(m.n_opt);
    mn.y_low.push_back(iv.lo), mn.y_high.push_back(iv.hi);
    mt.x.push_back(m.compute), mt.y.push_back(m.tokens_opt);
    mt.y_low.push_back(tokens_for_compute(m.compute, iv.hi));
    mt.y_high.push_back(tokens_for_compute(m.compute, iv.lo));
    ln.x.push_back(m.compute), ln.y.push_back(f.n_opt(m.compute));
    lt.x.push_back(m.compute), lt.y.push_back(tokens_for_compute(m.compute, f.n_opt(m.compute)));
  }
  for (Series* s : {&mn, &ln}) n.series.push_back(std::move(*s));
  for (Series* s : {&mt, &lt}) t.series.push_back(std::move(*s));
}

Figure frontier_figure(const SweepData& d, double report_budget) {
  Figure f{"frontier",
           "Compute-optimal frontier: fitted (lines) and best run per budget (points)",
           {},
           2};
  Panel n{"N_{opt}", "training compute C = 6ND (FLOPs)", "N_{active} (parameters)", true, true, {}};
  Panel t{"D_{opt}", "training compute C = 6ND (FLOPs)", "training tokens D", true, true, {}};
  int color = 0;
  for (const Group& g : d.groups) {
    if (g.fit && !d.budgets.empty()) {
      const std::string law = g.label + (g.approach2 ? ", approach 3 (law)" : "");
      Series ln(law, "lines", color), lt(law, "lines", color);
      for (double c :
           log_space(d.budgets.front() / 3, std::max(report_budget, d.budgets.back()), 30)) {
        const fitting::Choice o = optimum(g, c);
        ln.x.push_back(c), ln.y.push_back(o.n_active);
        lt.x.push_back(c), lt.y.push_back(o.tokens);
      }
      n.series.push_back(std::move(ln));
      t.series.push_back(std::move(lt));
    }
    Series pn("", "points", color), pt("", "points", color);
    for (size_t b = 0; b < d.budgets.size(); ++b) {
      const auto rows = points_at(g, b);
      if (rows.empty()) continue;
      const size_t best = *std::min_element(rows.begin(), rows.end(), [&](size_t x, size_t y) {
        return g.obs[x].loss < g.obs[y].loss;
      });
      pn.x.push_back(d.budgets[b]), pn.y.push_back(g.obs[best].n_active);
      pt.x.push_back(d.budgets[b]), pt.y.push_back(g.obs[best].tokens);
    }
    n.series.push_back(std::move(pn));
    t.series.push_back(std::move(pt));
    if (g.approach2) add_approach2(*g.approach2, g.label, color, n, t);
    ++color;
  }
  f.panels = {std::move(n), std::move(t)};
  return f;
}

Figure curves_figure(const SweepData& d, const Database& db) {
  Figure f{"curves", "Training curves: validation loss against tokens, colour = budget", {}, 3};
  for (const Group& g : d.groups) {
    Panel p{g.label, "tokens seen", "val loss (nats/token)", true, false, {}};
    std::set<size_t> titled;
    if (g.runs.empty()) continue;
    for (const RunRecord& r : g.runs) {
      const auto at = std::find_if(g.obs.begin(), g.obs.end(),
                                   [&](const fitting::Observation& o) { return o.where == r.key; });
      const size_t b = at == g.obs.end() ? 0 : g.budget_of[at - g.obs.begin()];
      Series s(titled.insert(b).second ? fmt::format("C = {:.1e}", d.budgets[b]) : "", "lines",
               static_cast<int>(b));
      s.width = 1.2;
      for (const MetricRecord& m : db.metrics(r.id, "val"))
        if (m.tokens > 0) s.x.push_back(static_cast<double>(m.tokens)), s.y.push_back(m.loss);
      p.series.push_back(std::move(s));
    }
    f.panels.push_back(std::move(p));
  }
  return f;
}

// max_i load_i · E, averaged over MoE layers: 1 when tokens spread evenly.
std::optional<double> imbalance(const std::string& load_json) {
  if (load_json.empty()) return std::nullopt;
  const auto layers = nlohmann::json::parse(load_json);
  double sum = 0;
  int n = 0;
  for (const auto& layer : layers) {
    double mx = 0;
    for (const auto& v : layer) mx = std::max(mx, v.get<double>());
    sum += mx * static_cast<double>(layer.size()), ++n;
  }
  return n ? std::optional(sum / n) : std::nullopt;
}

Figure load_figure(const SweepData& d, const Database& db) {
  Figure f{
      "expert_load", "Expert load over training: busiest expert's share × E (1 = even)", {}, 2};
  std::map<int64_t, Panel> panels;
  std::map<int64_t, std::set<std::string>> titled;
  for (const Group& g : d.groups) {
    if (g.experts == 1 || g.runs.empty()) continue;
    Panel& p = panels[g.experts];
    p.title = fmt::format("E = {}", g.experts);
    p.xlabel = "tokens seen";
    p.ylabel = "max expert load / mean load";
    p.logx = true;
    const int color = g.router == "topk" ? 0 : g.router == "rmoe" ? 1 : 2;
    for (const RunRecord& r : g.runs) {
      Series s(titled[g.experts].insert(g.router).second ? g.router : "", "lines", color);
      s.width = 1.0;
      for (const MetricRecord& m : db.metrics(r.id, "train"))
        if (auto v = imbalance(m.expert_load); v && m.tokens > 0)
          s.x.push_back(static_cast<double>(m.tokens)), s.y.push_back(*v);
      p.series.push_back(std::move(s));
    }
  }
  for (auto& [e, p] : panels) f.panels.push_back(std::move(p));
  return f;
}

// Fitted compute-optimal loss with a bootstrap interval (percentiles over the
// resampled fits).
struct LossAt {
  double loss = 0, lo = NAN, hi = NAN;
};

LossAt loss_at(const Group& g, double budget) {
  LossAt out{optimum(g, budget).loss};
  std::vector<double> samples;
  for (const auto& params : g.fit->bootstrap_samples) {
    fitting::FitResult sample = *g.fit;
    sample.fitted = params;
    samples.push_back(optimum(sample, g.experts, budget).loss);
  }
  if (samples.size() >= 10) {
    const fitting::Interval iv = fitting::percentile_interval(samples, g.fit->confidence);
    out.lo = iv.lo, out.hi = iv.hi;
  }
  return out;
}

std::vector<std::pair<const Group*, const Group*>> router_pairs(const SweepData& d) {
  std::vector<std::pair<const Group*, const Group*>> pairs;
  for (const Group& a : d.groups)
    for (const Group& b : d.groups)
      if (a.router == "topk" && b.router == "rmoe" && a.experts == b.experts && a.fit && b.fit)
        pairs.push_back({&a, &b});
  return pairs;
}

Figure routers_figure(const SweepData& d, double report_budget) {
  Figure f{"routers",
           "Routers at equal compute: fitted compute-optimal loss (bootstrap intervals)",
           {},
           2};
  for (auto [topk, rmoe] : router_pairs(d)) {
    Panel p{fmt::format("E = {}", topk->experts),
            "training compute C = 6ND (FLOPs)",
            "fitted loss at the optimum (nats/token)",
            true,
            false,
            {}};
    int color = 0;
    for (const Group* g : {topk, rmoe}) {
      Series line(g->router, "lines", color), bars("", "errorbars", color);
      for (double c : log_space(d.budgets.front(), std::max(report_budget, d.budgets.back()), 25))
        line.x.push_back(c), line.y.push_back(optimum(*g, c).loss);
      for (double c : d.budgets) {
        const LossAt l = loss_at(*g, c);
        if (std::isnan(l.lo)) continue;
        bars.x.push_back(c * (color ? 1.06 : 1 / 1.06));  // side by side
        bars.y.push_back(l.loss), bars.y_low.push_back(l.lo), bars.y_high.push_back(l.hi);
      }
      p.series.push_back(std::move(line));
      p.series.push_back(std::move(bars));
      ++color;
    }
    f.panels.push_back(std::move(p));
  }
  return f;
}

// ---- fit diagnostics and residuals (issue 8)

// log L_hat - log L against compute, one colour per group: a fit that suits its data scatters
// evenly about 0; a trend or a group off to one side is a law that does not fit there.
Figure residual_figure(const SweepData& d) {
  Figure f{"residuals", "Fit residuals: log predicted - log observed loss against compute", {}, 1};
  Panel p{"", "training compute C = 6ND (FLOPs)", "log residual", true, false, {}};
  int color = 0;
  for (const Group& g : d.groups) {
    if (!g.fit) continue;
    Series s(g.label, "points", color++);
    const std::vector<fitting::Observation>& obs = g.obs;
    const std::vector<double> residuals = fitting::log_residuals(*g.fit, obs);
    for (size_t i = 0; i < obs.size(); ++i) {
      s.x.push_back(training_compute(obs[i].n_active, obs[i].tokens));
      s.y.push_back(residuals[i]);
    }
    p.series.push_back(std::move(s));
  }
  if (!p.series.empty()) f.panels.push_back(std::move(p));
  return f;
}

// Each stored fit's diagnostics (as `fit` printed them when it ran).
std::string diagnostics_markdown(const SweepData& d) {
  std::string out;
  for (const FitRecord& f : d.fits) {
    const std::vector<fitting::Diagnostic> diagnostics =
        fitting::is_approach2_json(f.result) ? fitting::approach2_from_json(f.result).diagnostics
                                             : fitting::fit_result_from_json(f.result).diagnostics;
    out += fmt::format("- fit {} ({}, group {}): ", f.id, f.law, f.group);
    if (diagnostics.empty()) {
      out += "no warnings\n";
      continue;
    }
    out += "\n";
    for (const auto& diag : diagnostics)
      out += fmt::format("  - `{}`: {}\n", diag.code, diag.message);
  }
  return out.empty() ? "No fits yet: run `moescale fit`.\n" : out;
}

std::string runs_table(const SweepData& d) {
  std::string out =
      "| id | router | E | N_active | N_total | tokens | C = 6ND | status | val loss | time |\n"
      "|---|---|---|---|---|---|---|---|---|---|\n";
  for (const RunRecord& r : d.all) {
    const ModelShape& s = r.plan.spec.shape;
    out += fmt::format("| {} | {} | {} | {} | {} | {} | {:.2e} | {} | {} | {} |\n", r.id,
                       to_string(s.router), s.experts, human_count(r.plan.params.active),
                       human_count(r.plan.params.total), human_count(r.plan.spec.tokens),
                       r.plan.compute_6n, to_string(r.status),
                       r.final_loss ? fmt::format("{:.4f}", *r.final_loss) : "-",
                       r.wall_seconds ? human_duration(*r.wall_seconds) : "-");
  }
  return out;
}

std::string fits_table(const SweepData& d) {
  std::string out =
      "| fit | group | law | parameters | RMSLE | points |\n|---|---|---|---|---|---|\n";
  auto range = [](const std::optional<fitting::Interval>& iv) {
    return iv ? fmt::format(" [{:.3g}, {:.3g}]", iv->lo, iv->hi) : std::string();
  };
  for (const FitRecord& f : d.fits) {
    if (fitting::is_approach2_json(f.result)) {
      const fitting::Approach2Fit a = fitting::approach2_from_json(f.result);
      out += fmt::format("| {} | {} | approach 2 | a = {:.4g}{}, b = {:.4g}{} | - | {} |\n", f.id,
                         f.group, a.a, range(a.a_ci), a.b, range(a.b_ci), a.n_points);
      continue;
    }
    const fitting::FitResult r = fitting::fit_result_from_json(f.result);
    std::string params;
    for (const auto& [name, v] : r.params) {
      params += fmt::format("{}{} = {:.4g}", params.empty() ? "" : ", ", name, v);
      if (auto it = r.intervals.find(name); it != r.intervals.end())
        params += fmt::format(" [{:.3g}, {:.3g}]", it->second.lo, it->second.hi);
    }
    out += fmt::format("| {} | {} | {} | {} | {:.4f} | {} |\n", f.id, f.group, f.law, params,
                       r.rmsle, r.n_points);
  }
  return out;
}

// What `moescale recommend` prints for each group's fits at the budget, cell for cell: the same
// options (the sweep's serving shape and top-k, the group's E) and the same table.
std::string recommendation_table(const Database& db, const SweepData& d, double budget) {
  std::string out;
  std::pair<double, std::string> best{INFINITY, ""};  // the lowest law-predicted loss
  for (const Group& g : d.groups)
    for (const auto* record : {&g.fit_record, &g.approach2_record}) {
      if (!*record) continue;
      const FitRecord& f = **record;
      const auto shape = sweep_shape(db, f);
      fitting::RecommendOptions o;
      o.budget = budget;
      o.experts = {g.experts};
      o.top_k = shape ? shape->top_k : 2;
      if (shape) o.shape = serving_shape_like(shape->router, shape->moe_every);
      const bool approach2 = fitting::is_approach2_json(f.result);
      const fitting::Recommendation r =
          approach2 ? fitting::recommend_approach2(*g.approach2, budget, o.confidence)
                    : fitting::recommend(*g.fit, o);
      const bool refits = !approach2 && g.fit->bootstrap_samples.empty();
      out += fmt::format(
          "{} ({}), as `moescale recommend --fit {} --budget {:g} --experts {}{}` prints it:\n\n{}",
          g.label, approach2 ? "approach 2" : f.law, f.id, budget, g.experts,
          refits ? " --bootstrap 0" : "", loss_optimal_table(r).render_markdown());
      out += r.note.empty() ? "\n" : fmt::format("\n{}\n\n", r.note);
      if (!approach2 && r.loss_optimal[r.best].loss < best.first)
        best = {r.loss_optimal[r.best].loss, g.label};
    }
  if (out.empty()) return "No fits yet: run `moescale fit --per-group`.\n";
  if (d.groups.size() > 1 && std::isfinite(best.first))
    out += fmt::format("**Best**: {}, predicted loss {:.4f} at C = {:.2e} FLOPs.\n", best.second,
                       best.first, budget);
  return out;
}

std::string router_table(const SweepData& d, double budget) {
  std::string out =
      "| E | C (FLOPs) | topk loss | rmoe loss | rmoe − topk |\n|---|---|---|---|---|\n";
  auto cell = [](const LossAt& l) {
    return std::isnan(l.lo) ? fmt::format("{:.4f}", l.loss)
                            : fmt::format("{:.4f} [{:.4f}, {:.4f}]", l.loss, l.lo, l.hi);
  };
  for (auto [topk, rmoe] : router_pairs(d)) {
    std::vector<double> budgets = d.budgets;
    budgets.push_back(budget);
    for (double c : budgets) {
      const LossAt a = loss_at(*topk, c), b = loss_at(*rmoe, c);
      out += fmt::format("| {} | {:.2e} | {} | {} | {:+.4f} |\n", topk->experts, c, cell(a),
                         cell(b), b.loss - a.loss);
    }
  }
  return out;
}

// ---- run-to-run noise and MoE against dense ------------------------------------

// The final losses of each point trained with several seeds (observations carry their router,
// so top-k and RMoE points of one size stay apart).
std::vector<std::vector<double>> replicate_sets(const SweepData& d) {
  std::vector<fitting::Observation> all;
  for (const Group& g : d.groups) all.insert(all.end(), g.obs.begin(), g.obs.end());
  return fitting::replicate_sets(all);
}

std::vector<double> losses_at(const Group& g, size_t budget) {
  std::vector<double> out;
  for (size_t i : points_at(g, budget)) out.push_back(g.obs[i].loss);
  return out;
}

std::string noise_section(const fitting::ReplicateNoise& n) {
  std::string md = "## Run-to-run noise\n\n";
  if (n.sets == 0)
    return md +
           "No point was trained with more than one seed, so the noise is unmeasured; set "
           "`replicates = 2` in the config's [sweep] to measure it.\n\n";
  return md + fmt::format(
                  "{} runs of {} points trained with different seeds: the pooled standard "
                  "deviation of log loss is {:.4f} (about {:.2f}% of the loss, {} degrees of "
                  "freedom). Loss differences smaller than about twice this are noise.\n\n",
                  n.runs, n.sets, n.sd_log_loss, 100 * n.sd_log_loss, n.dof);
}

std::string moe_vs_dense_section(const SweepData& d, const fitting::ReplicateNoise& n) {
  std::string md = "## MoE against dense at the largest budget\n\n";
  const auto dense =
      std::find_if(d.groups.begin(), d.groups.end(), [](const Group& g) { return g.experts == 1; });
  if (d.budgets.empty() || dense == d.groups.end())
    return md + "The sweep has no dense group or no IsoFLOP budgets to compare at.\n\n";
  const double budget = d.budgets.back();
  const std::vector<double> base = losses_at(*dense, d.budgets.size() - 1);
  if (base.empty()) return md + "No dense run finished at the largest budget.\n\n";
  md += fmt::format(
      "Best final loss of each group at C = {:.2e} FLOPs against dense (best {:.4f}); the "
      "difference's 95% interval is a bootstrap that {}.\n\n"
      "| group | best loss | − dense | 95% interval | verdict |\n|---|---|---|---|---|\n",
      budget, *std::min_element(base.begin(), base.end()),
      n.sets > 0 ? "adds the measured run-to-run noise to every run"
                 : "resamples runs (no replicates: the noise is unmeasured)");
  for (const Group& g : d.groups) {
    const std::vector<double> losses = losses_at(g, d.budgets.size() - 1);
    if (g.experts == 1 || losses.empty()) continue;
    const auto c = fitting::best_loss_difference(base, losses, n.sd_log_loss);
    const char* verdict = c.hi < 0   ? "beats dense"
                          : c.lo > 0 ? "worse than dense"
                                     : "not distinguishable from dense";
    md += fmt::format("| {} | {:.4f} | {:+.4f} | [{:+.4f}, {:+.4f}] | {} |\n", g.label, c.best_b,
                      c.difference, c.lo, c.hi, verdict);
  }
  return md + "\n";
}

// ---- approach 2 beside approach 3

// a = beta / (alpha + beta) of a Chinchilla fit, with its bootstrap interval where it has one.
std::pair<double, std::optional<fitting::Interval>> implied_a(const fitting::FitResult& fit) {
  auto a_of = [](const std::map<std::string, double>& p) {
    return p.at("beta") / (p.at("alpha") + p.at("beta"));
  };
  std::vector<double> samples;
  for (const auto& s : fit.bootstrap_samples) samples.push_back(a_of(s));
  std::optional<fitting::Interval> iv;
  if (samples.size() >= 2) iv = fitting::percentile_interval(samples, fit.confidence);
  return {a_of(fit.fitted), iv};
}

std::string approaches_section(const SweepData& d) {
  std::string md = "## Approach 2 beside approach 3\n\n";
  bool any = false;
  for (const Group& g : d.groups) {
    if (!g.approach2) continue;
    any = true;
    const fitting::Approach2Fit& f = *g.approach2;
    auto range = [&](const std::optional<fitting::Interval>& iv) {
      return iv ? fmt::format(" [{:.3f}, {:.3f}]", iv->lo, iv->hi) : std::string();
    };
    md += fmt::format(
        "### {}\n\nApproach 2 (fit {}): a parabola of loss in log N per budget,"
        " its minimum with a {:.0f}% bootstrap interval ({} resamples of each "
        "budget's runs):\n\n{}\nN* ∝ C^a with a = {:.3f}{}; D* ∝ C^b with b = "
        "{:.3f}{}, through {} budgets.\n\n",
        g.label, g.approach2_record->id, 100 * f.confidence, f.bootstrap,
        approach2_table(f).render_markdown(), f.a, range(f.a_ci), f.b, range(f.b_ci),
        f.budgets_used);
    if (g.fit) {
      const auto [a3, a3_ci] = implied_a(*g.fit);
      md += fmt::format(
          "Approach 3 (fit {}, the Chinchilla law fitted to every run) implies a = β/(α+β) = "
          "{:.3f}{}: approach 2's a is {:+.3f} from it.\n\n",
          g.fit_record->id, a3, range(a3_ci), f.a - a3);
    }
  }
  if (!any) return md + "No approach 2 fit yet: run `moescale fit --approach 2`.\n\n";
  return md +
         "What each rests on. Approach 3 assumes the law's form, E + A/N^α + B/D^β, holds over "
         "every run with one set of parameters; it uses all runs, and a form that misses the "
         "curves (at small N, or with a data set's own curvature) moves α and β, hence a. "
         "Approach 2 assumes only that each budget's curve is a parabola in log N near its "
         "minimum; it uses the minima alone, and off-centre sampling and the width of the size "
         "grid bias them, and so a (Open-Athena's scaling-law-analysis measures both). Where "
         "the two disagree by more than their intervals, neither is safe to extrapolate far.\n\n";
}

std::string rollout_section(const SweepData& d) {
  std::string md = "## Rollout: does the law predict the next budget?\n\n";
  bool any = false;
  for (const Group& g : d.groups) {
    if (!g.fit || g.fit->rollout.empty()) continue;
    any = true;
    md += fmt::format("{} (fit {}): fitted on the k smallest budgets, predicting the next.\n\n{}\n",
                      g.label, g.fit_record->id, rollout_table(*g.fit).render_markdown());
  }
  return any ? md
             : md + "No fit with a rollout yet: run `moescale fit --holdout rollout` "
                    "(with --per-group where the sweep has several groups).\n\n";
}

void write_markdown(const fs::path& path, const Database& db, const std::string& sweep,
                    const SweepData& d, double budget, const std::vector<std::string>& figures,
                    std::string lr_section) {
  std::map<std::string, int> counts;
  double compute = 0, seconds = 0;
  for (const RunRecord& r : d.all) {
    ++counts[to_string(r.status)];
    if (r.status == RunStatus::done)
      compute += r.plan.compute_6n, seconds += r.wall_seconds.value_or(0);
  }
  std::string status;
  for (const auto& [s, n] : counts)
    status += fmt::format("{}{} {}", status.empty() ? "" : ", ", n, s);
  size_t points = 0;
  for (const Group& g : d.groups) points += g.obs.size();
  std::string md =
      d.imported
          ? fmt::format("# Sweep `{}`\n\n{} imported runs in {} IsoFLOP budgets.\n\n", sweep,
                        points, d.budgets.size())
          : fmt::format("# Sweep `{}`\n\n{} runs ({}); {:.2e} FLOPs (6ND) trained in {}.\n\n",
                        sweep, d.all.size(), status, compute, human_duration(seconds));
  auto figure_written = [&](const std::string& name) {
    return std::find(figures.begin(), figures.end(), name) != figures.end();
  };
  auto figure = [&](const std::string& name, const std::string& caption) {
    if (!figure_written(name)) return;
    md += fmt::format("![{}]({}.png)\n\n{} ([SVG]({}.svg))\n\n", caption, name, caption, name);
  };
  md += "## IsoFLOP curves\n\n";
  figure("isoflop", "Final loss against N_active per budget, the fitted law's curves and minima.");
  md += "## Compute-optimal frontier\n\n";
  figure("frontier",
         "Fitted N_opt and D_opt against compute (approach 3's law), the best run of each "
         "budget, and approach 2's minima with their intervals where there is an approach 2 fit.");
  md += "## Recommendation\n\n" + recommendation_table(db, d, budget) + "\n";
  md += approaches_section(d) + rollout_section(d);
  if (!router_pairs(d).empty()) {
    md += "## Routers at equal compute\n\n";
    figure("routers", "Fitted compute-optimal loss of topk and rmoe, bootstrap intervals.");
    md += router_table(d, budget) + "\n";
  }
  const fitting::ReplicateNoise noise = fitting::replicate_noise(replicate_sets(d));
  md += noise_section(noise);
  if (std::any_of(d.groups.begin(), d.groups.end(), [](const Group& g) { return g.experts > 1; }))
    md += moe_vs_dense_section(d, noise);
  if (!lr_section.empty()) md += "## Learning rates\n\n";
  const auto at = lr_section.find("@tuning@\n");
  if (at != std::string::npos) {
    const std::string before = lr_section.substr(0, at), after = lr_section.substr(at + 9);
    md += before;
    figure("tuning", "Final loss against the learning rate per anchor of the tuning sweep, the "
                     "parabola each lr* is read from, and lr* (larger marks).");
    md += after;
  } else {
    md += lr_section;
  }
  // Imported runs have no training curves or expert load: those sections appear where they exist.
  if (figure_written("curves")) md += "## Training curves\n\n";
  figure("curves", "Validation loss against tokens for every run.");
  if (figure_written("expert_load")) md += "## Expert load\n\n";
  figure("expert_load", "How evenly tokens spread across experts, topk against rmoe.");
  md += "## Fits\n\n" + fits_table(d) + "\n";
  md += "## Fit diagnostics\n\n" + diagnostics_markdown(d) + "\n";
  figure("residuals", "Log residual of each run under its group's fit, against compute.");
  if (!d.imported) md += "## Runs\n\n" + runs_table(d);
  const fs::path tmp = path.string() + ".tmp";
  std::ofstream(tmp) << md;
  fs::rename(tmp, path);
}

void run_report(const ReportArgs& a) {
  Database db(default_database_path(a.db), Database::Mode::must_exist);
  db.sweep(a.sweep);
  const SweepData d = load(db, a.sweep);
  if (d.groups.empty())
    throw std::runtime_error(fmt::format(
        "sweep '{}' has no finished runs or imported rows to report; train it first (moescale "
        "train --sweep {}) or import runs",
        a.sweep, a.sweep));
  const double budget = a.budget > 0 ? a.budget : 10 * (d.budgets.empty() ? 0 : d.budgets.back());
  fs::create_directories(a.out);
  std::vector<std::string> written;
  const LrReport lr = lr_report(db, a.sweep);
  std::vector<Figure> figures{isoflop_figure(d),     frontier_figure(d, budget),
                              curves_figure(d, db),  load_figure(d, db),
                              routers_figure(d, budget), residual_figure(d)};
  figures.insert(figures.end(), lr.figures.begin(), lr.figures.end());
  for (const Figure& f : figures) {
    if (f.panels.empty()) continue;
    render(f, a.out);
    written.push_back(f.name);
    if (!a.quiet) fmt::print(stderr, "wrote {}/{}.png\n", a.out, f.name);
  }
  write_markdown(fs::path(a.out) / "report.md", db, a.sweep, d, budget, written, lr.markdown);
  fmt::print("{}\n", (fs::path(a.out) / "report.md").string());
}

}  // namespace

void add_report_command(CLI::App& app) {
  auto a = std::make_shared<ReportArgs>();
  CLI::App* cmd = app.add_subcommand(
      "report",
      "Write report.md with plots (PNG and SVG, drawn by gnuplot) of a sweep: IsoFLOP curves, "
      "the compute-optimal frontier, training curves, expert load, routers at equal compute.\n"
      "Uses the latest `fit --law chinchilla --per-group` fits of the sweep.");
  cmd->add_option("--sweep", a->sweep, "sweep to report")->required();
  cmd->add_option("--out", a->out, "folder for report.md and the figures")->required();
  cmd->add_option("--budget", a->budget, "budget for the recommendation table (FLOPs)")
      ->default_str("10x the largest planned budget");
  add_db_option(cmd, a->db);
  cmd->add_flag("-q,--quiet", a->quiet, "no progress");
  cmd->callback([a] { run_report(*a); });
}

}  // namespace moescale::cli
