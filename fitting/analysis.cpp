// Run-to-run noise from replicates and a bootstrap comparison of two groups' best loss.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <stdexcept>
#include <tuple>

#include "fitting/fitting.h"

namespace moescale::fitting {
namespace {

void require_losses(const std::vector<double>& losses, const char* which) {
  if (losses.empty())
    throw std::invalid_argument(fmt::format("no losses in set {} to compare", which));
  for (double l : losses)
    if (!(l > 0) || !std::isfinite(l))
      throw std::invalid_argument(
          fmt::format("set {} has loss {}: losses must be finite and positive", which, l));
}

double percentile(const std::vector<double>& sorted, double q) {
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const auto i = static_cast<std::size_t>(std::floor(pos));
  const std::size_t j = std::min(i + 1, sorted.size() - 1);
  return sorted[i] + (pos - static_cast<double>(i)) * (sorted[j] - sorted[i]);
}

}  // namespace

Interval percentile_interval(std::vector<double> v, double confidence) {
  if (v.size() < 2)
    throw std::invalid_argument(
        fmt::format("an interval needs at least 2 samples, not {}", v.size()));
  if (!(confidence > 0 && confidence < 1))
    throw std::invalid_argument(fmt::format("confidence {} must be in (0, 1)", confidence));
  std::sort(v.begin(), v.end());
  const double tail = (1 - confidence) / 2;
  double mean = 0, var = 0;
  for (double x : v) mean += x / static_cast<double>(v.size());
  for (double x : v) var += (x - mean) * (x - mean) / static_cast<double>(v.size() - 1);
  return {percentile(v, tail), percentile(v, 1 - tail), std::sqrt(var)};
}

ReplicateNoise replicate_noise(const std::vector<std::vector<double>>& loss_sets) {
  ReplicateNoise out;
  double squares = 0;
  for (const auto& set : loss_sets) {
    if (set.size() < 2) continue;
    require_losses(set, "of replicates");
    double mean = 0;
    for (double l : set) mean += std::log(l);
    mean /= static_cast<double>(set.size());
    for (double l : set) squares += (std::log(l) - mean) * (std::log(l) - mean);
    ++out.sets;
    out.runs += set.size();
    out.dof += set.size() - 1;
  }
  if (out.dof > 0) out.sd_log_loss = std::sqrt(squares / static_cast<double>(out.dof));
  return out;
}

bool explained_by_seeds(const ReplicateNoise& noise) {
  return !noise.measured() || noise.sd_log_loss <= kMaxSeedNoise;
}

std::vector<std::vector<double>> replicate_sets(const std::vector<Observation>& observations) {
  using Point = std::tuple<std::string, double, double, double, double, double, double>;
  std::map<Point, std::vector<double>> sets;
  for (const Observation& o : observations)
    sets[{o.router, o.n_active, o.n_total, o.tokens, o.experts, o.top_k, o.granularity}].push_back(
        o.loss);
  std::vector<std::vector<double>> out;
  for (auto& [point, losses] : sets) out.push_back(std::move(losses));
  return out;
}

BestLossDifference best_loss_difference(const std::vector<double>& a, const std::vector<double>& b,
                                        double sd_log_loss, int resamples, double confidence,
                                        uint64_t seed) {
  require_losses(a, "a");
  require_losses(b, "b");
  if (!(confidence > 0 && confidence < 1))
    throw std::invalid_argument(fmt::format("confidence {} must be in (0, 1)", confidence));
  BestLossDifference out;
  out.best_a = *std::min_element(a.begin(), a.end());
  out.best_b = *std::min_element(b.begin(), b.end());
  out.difference = out.best_b - out.best_a;
  out.confidence = confidence;
  out.parametric = sd_log_loss > 0 && std::isfinite(sd_log_loss);
  if (resamples < 10) return out;

  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0.0, out.parametric ? sd_log_loss : 1.0);
  auto best_of = [&](const std::vector<double>& losses) {
    double best = INFINITY;
    std::uniform_int_distribution<std::size_t> pick(0, losses.size() - 1);
    for (std::size_t i = 0; i < losses.size(); ++i) {
      const double l = out.parametric ? losses[i] * std::exp(noise(rng)) : losses[pick(rng)];
      best = std::min(best, l);
    }
    return best;
  };
  std::vector<double> diffs;
  diffs.reserve(static_cast<std::size_t>(resamples));
  for (int r = 0; r < resamples; ++r) {
    const double best_a = best_of(a);
    diffs.push_back(best_of(b) - best_a);
  }
  const Interval iv = percentile_interval(std::move(diffs), confidence);
  out.lo = iv.lo;
  out.hi = iv.hi;
  return out;
}

}  // namespace moescale::fitting
