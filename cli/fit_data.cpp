#include "cli/fit_data.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>

#include "cli/common.h"
#include "planner/planner.h"

namespace moescale::cli {

// Progress on stderr for any stage that takes more than a second: done/total and an estimate
// of the time left, redrawn at most every half second.
std::function<void(std::string_view, size_t, size_t)> progress_printer() {
  using Clock = std::chrono::steady_clock;
  struct State {
    std::string stage;
    Clock::time_point start, last;
    bool shown = false;
  };
  auto state = std::make_shared<State>();
  return [state](std::string_view stage, size_t done, size_t total) {
    const auto now = Clock::now();
    if (stage != state->stage) {
      if (state->shown) fmt::print(stderr, "\n");
      *state = {std::string(stage), now, now, false};
    }
    const double elapsed = std::chrono::duration<double>(now - state->start).count();
    const bool last = done == total;
    if (elapsed < 1 || (!last && now - state->last < std::chrono::milliseconds(500))) return;
    const double left = done > 0 ? elapsed * static_cast<double>(total - done) / done : 0;
    fmt::print(stderr, "\r{} {}/{}, {:.0f} s, about {:.0f} s left   {}", stage, done, total,
               elapsed, left, last ? "\n" : "");
    state->last = now;
    state->shown = !last;
  };
}

std::optional<SweepShape> sweep_shape(const Database& db, const FitRecord& record) {
  const SweepRecord sweep = db.sweep(record.sweep);
  if (sweep.kind != "planned" || sweep.config.empty()) return std::nullopt;
  SweepConfig config;
  try {
    config = parse_sweep_config(sweep.config, "sweep '" + sweep.name + "'");
  } catch (const std::exception& e) {
    // The shape only refines serving costs: a config this version cannot read is no reason
    // to refuse the recommendation.
    fmt::print(stderr, "warning: serving shape defaults to top-k MoE in every layer: {}\n",
               e.what());
    return std::nullopt;
  }
  SweepShape s;
  s.moe_every = config.base.moe_every;
  s.top_k = config.base.top_k;
  for (Router r : config.routers)
    if (r != Router::dense) {
      s.router = r;
      break;
    }
  const auto at = record.group.find("router=");
  if (at != std::string::npos) {
    const auto end = record.group.find(',', at);
    const std::string name = record.group.substr(at + 7, end - at - 7);
    if (name != "dense" && name != "imported") s.router = parse_router(name);
  }
  return s;
}

namespace {

std::string with_interval(const std::string& value, const std::optional<fitting::Interval>& ci,
                          std::string (*format)(double)) {
  if (!ci) return value;
  return fmt::format("{} [{}, {}]", value, format(ci->lo), format(ci->hi));
}

std::string loss_text(double x) {
  return std::isfinite(x) ? fmt::format("{:.4f}", x) : "-";
}

// "20.3" as long as that is short, "1.2e+16" beyond.
std::string tokens_per_param_text(double ratio) {
  return ratio < 1e5 ? fmt::format("{:.1f}", ratio) : fmt::format("{:.3g}", ratio);
}

std::string size_text(const fitting::Choice& c) {
  if (c.edge == fitting::Edge::lower) return fmt::format("edge: <= {}", human_count(c.n_active));
  if (c.edge == fitting::Edge::upper) return fmt::format("edge: >= {}", human_count(c.n_active));
  return with_interval(human_count(c.n_active), c.n_active_ci, human_count);
}

}  // namespace

Table loss_optimal_table(const fitting::Recommendation& r) {
  const bool ci = std::any_of(r.loss_optimal.begin(), r.loss_optimal.end(),
                              [](const fitting::Choice& c) { return c.p_best.has_value(); });
  std::vector<std::string> header{"", "E", "N_active", "N_total", "tokens", "tokens/param", "loss"};
  if (ci) header.push_back("p_best");
  Table t(header);
  for (size_t i = 0; i < r.loss_optimal.size(); ++i) {
    const fitting::Choice& c = r.loss_optimal[i];
    std::vector<std::string> row{i == r.best ? "*" : "",
                                 std::to_string(c.experts),
                                 size_text(c),
                                 human_count(c.n_total),
                                 with_interval(human_count(c.tokens), c.tokens_ci, human_count),
                                 tokens_per_param_text(c.tokens / c.n_active),
                                 with_interval(loss_text(c.loss), c.loss_ci, loss_text)};
    if (ci) row.push_back(c.p_best ? fmt::format("{:.2f}", *c.p_best) : "-");
    t.add(row);
  }
  return t;
}

fitting::Law law_named(const std::string& text) {
  const bool expression = text.find_first_of("+-*/^() ") != std::string::npos;
  return expression ? fitting::custom_law(text) : fitting::builtin_law(text);
}

fitting::Observation observation_of(const ObservationRecord& o) {
  return {o.n_active, o.n_total, o.tokens, o.experts, o.top_k, o.granularity,
          o.loss,     o.label,   o.steps,  o.budget,  o.router};
}

fitting::Observation observation_of(const RunRecord& r) {
  const ModelShape& s = r.plan.spec.shape;
  return {static_cast<double>(r.plan.params.active),
          static_cast<double>(r.plan.params.total),
          static_cast<double>(r.plan.spec.tokens),
          static_cast<double>(s.experts),
          static_cast<double>(s.top_k),
          1.0,
          r.final_loss.value_or(0),
          r.key,
          r.steps_done,
          r.plan.budget,
          to_string(s.router)};
}

std::vector<fitting::Observation> fit_observations(const Database& db, const FitRecord& record) {
  std::vector<fitting::Observation> out;
  for (const ObservationRecord& o : db.observations(record.sweep)) {
    if (record.group != "all" &&
        fit_group_name(o.router.empty() ? "imported" : o.router, o.experts) != record.group)
      continue;
    out.push_back(observation_of(o));
  }
  return out;
}

fitting::FitResult fit_with_bootstrap(const Database& db, const FitRecord& record, int bootstrap,
                                      double confidence, bool quiet) {
  if (record.law == "lr")
    throw std::runtime_error(fmt::format(
        "fit {} is a learning-rate law (fit --law lr), not a law of the loss; give a loss fit "
        "(`moescale fit --sweep SWEEP --law chinchilla`, or `moescale runs`/`report` to find one)",
        record.id));
  if (fitting::is_approach2_json(record.result))
    throw std::invalid_argument(fmt::format(
        "fit {} is an approach 2 fit (N* = k C^a), which has no loss law to plan runs with; use a "
        "law fit of sweep '{}' (moescale fit --law chinchilla)",
        record.id, record.sweep));
  fitting::FitResult fit = fitting::fit_result_from_json(record.result);
  if (!fit.bootstrap_samples.empty() || bootstrap <= 0) return fit;
  const auto observations = fit_observations(db, record);
  if (observations.size() != fit.n_points)
    fmt::print(stderr,
               "warning: fit {} used {} points, its group '{}' of sweep '{}' holds {} now "
               "(fit filters, or runs finished since); the bootstrap resamples those {}\n",
               record.id, fit.n_points, record.group, record.sweep, observations.size(),
               observations.size());
  fitting::FitOptions fo;
  fo.bootstrap = bootstrap;
  fo.confidence = confidence;
  if (!quiet) {
    fmt::print(stderr, "fit {} has no bootstrap sets: refitting {} resamples\n", record.id,
               bootstrap);
    fo.progress = progress_printer();  // done/total and the time left
  }
  return fitting::with_bootstrap(fit, observations, fo);
}

Table rollout_table(const fitting::FitResult& fit) {
  Table t({"fitted on", "predicts C", "runs", "RMSLE", "mean log error", "best loss: law",
           "runs' best", "N*: law", "best run's N"});
  auto loss = [](double x) { return std::isfinite(x) ? fmt::format("{:.4f}", x) : "-"; };
  auto count = [](double x) { return std::isfinite(x) ? human_count(x) : "-"; };
  for (const fitting::RolloutStep& st : fit.rollout)
    t.add({fmt::format("{} budgets", st.budgets_fitted), sci(st.compute),
           fmt::format("{} / {}", st.n_train, st.n_test), fmt::format("{:.4f}", st.rmsle),
           fmt::format("{:+.4f}", st.mean_error), loss(st.predicted_best_loss),
           loss(st.observed_best_loss), count(st.predicted_n_opt), count(st.observed_n_opt)});
  return t;
}

Table approach2_table(const fitting::Approach2Fit& f) {
  Table t({"budget C", "runs", "N*", "interval", "D*", "loss at N*", "sizes", "note"});
  for (const fitting::BudgetMinimum& m : f.minima) {
    const bool has = std::isfinite(m.n_opt);
    t.add({sci(m.compute), std::to_string(m.runs), has ? human_count(m.n_opt) : "-",
           m.n_ci ? fmt::format("[{}, {}]", human_count(m.n_ci->lo), human_count(m.n_ci->hi)) : "-",
           has ? human_count(m.tokens_opt) : "-", has ? fmt::format("{:.4f}", m.loss) : "-",
           fmt::format("{} to {}", human_count(m.n_min), human_count(m.n_max)),
           m.opens_downward  ? "opens downward: left out"
           : m.outside_range ? "minimum outside the sizes: left out"
           : m.used          ? "used"
                             : "too few sizes"});
  }
  return t;
}

std::string parameter_lines(const fitting::FitResult& fit) {
  std::string out;
  for (const auto& [name, value] : fit.params) {
    std::string interval;
    if (auto it = fit.intervals.find(name); it != fit.intervals.end())
      interval = fmt::format("  [{:.4g}, {:.4g}] ({:.0f}%)", it->second.lo, it->second.hi,
                             100 * fit.confidence);
    out += fmt::format("  {:<10} {:>12.6g}{}\n", name, value, interval);
  }
  return out;
}

}  // namespace moescale::cli
