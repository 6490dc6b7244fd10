#include "cli/fit_data.h"

#include <fmt/format.h>

#include <chrono>
#include <memory>
#include <string>

#include "cli/common.h"

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

fitting::Law law_named(const std::string& text) {
  const bool expression = text.find_first_of("+-*/^() ") != std::string::npos;
  return expression ? fitting::custom_law(text) : fitting::builtin_law(text);
}

fitting::Observation observation_of(const ObservationRecord& o) {
  return {o.n_active,    o.n_total, o.tokens, o.experts, o.top_k,
          o.granularity, o.loss,    o.label,  o.steps};
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
          r.steps_done};
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

}  // namespace moescale::cli
