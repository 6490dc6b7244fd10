// Which runs share an IsoFLOP budget: the one rule for diagnostics, holdout, plan --next and
// report (fitting.h says why it is this rule).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <tuple>

#include "fitting/fitting.h"

namespace moescale::fitting {
namespace {

constexpr double kMaxGap = 1.25;    // between neighbours in 6ND: more starts a new budget
constexpr double kMaxSpan = 2.0;    // of one budget's 6ND
constexpr double kSameSize = 1e-3;  // relative: two runs of one model size
constexpr double kSameTokens = 1e-2;

double compute(const Observation& o) {
  return training_compute(o.n_active, o.tokens);
}

// A run of 6ND-sorted observations being joined into budgets, with what it holds of each model:
// (family, N) -> tokens.
struct Cluster {
  std::size_t first = 0, last = 0;  // positions in the sorted order
  std::map<std::pair<std::string, double>, double> tokens_of;
};

bool holds_same_model(const Cluster& a, const Cluster& b) {
  const Cluster& small = a.tokens_of.size() < b.tokens_of.size() ? a : b;
  const Cluster& large = &small == &a ? b : a;
  for (const auto& [key, tokens] : small.tokens_of) {
    // Sizes count as one within kSameSize: look at the neighbours of N in the larger map.
    auto it = large.tokens_of.lower_bound({key.first, key.second * (1 - kSameSize)});
    for (; it != large.tokens_of.end() && it->first.first == key.first &&
           it->first.second <= key.second * (1 + kSameSize);
         ++it)
      if (std::abs(std::log(it->second / tokens)) > kSameTokens) return true;
  }
  return false;
}

std::vector<Budget> group_by_compute(const std::vector<Observation>& obs,
                                     std::vector<std::size_t> rows) {
  std::sort(rows.begin(), rows.end(),
            [&](std::size_t a, std::size_t b) { return compute(obs[a]) < compute(obs[b]); });
  const std::size_t n = rows.size();
  // Each position starts as its own cluster; `owner` maps a position to its cluster's index.
  std::vector<Cluster> clusters(n);
  std::vector<std::size_t> owner(n);
  for (std::size_t i = 0; i < n; ++i) {
    clusters[i].first = clusters[i].last = i;
    clusters[i].tokens_of[{family_of(obs[rows[i]]), obs[rows[i]].n_active}] = obs[rows[i]].tokens;
    owner[i] = i;
  }
  std::vector<std::size_t> gaps(n > 0 ? n - 1 : 0);  // gap i lies between positions i and i + 1
  std::iota(gaps.begin(), gaps.end(), 0);
  auto c_at = [&](std::size_t i) { return compute(obs[rows[i]]); };
  std::stable_sort(gaps.begin(), gaps.end(), [&](std::size_t a, std::size_t b) {
    return c_at(a + 1) / c_at(a) < c_at(b + 1) / c_at(b);
  });
  // Closest neighbours first. A join refused once stays refused (clusters only grow), so one
  // pass over the gaps in order is the greedy agglomeration.
  for (std::size_t g : gaps) {
    if (c_at(g + 1) > kMaxGap * c_at(g)) break;
    Cluster& a = clusters[owner[g]];
    Cluster& b = clusters[owner[g + 1]];
    if (c_at(b.last) > kMaxSpan * c_at(a.first) || holds_same_model(a, b)) continue;
    // The smaller one joins the larger: each position is relabelled O(log n) times.
    const bool keep_a = a.last - a.first >= b.last - b.first;
    Cluster& keep = keep_a ? a : b;
    Cluster& gone = keep_a ? b : a;
    if (keep.tokens_of.size() < gone.tokens_of.size()) std::swap(keep.tokens_of, gone.tokens_of);
    keep.tokens_of.merge(gone.tokens_of);
    const std::size_t k = owner[keep_a ? g : g + 1];
    for (std::size_t i = gone.first; i <= gone.last; ++i) owner[i] = k;
    keep.first = std::min(a.first, b.first);
    keep.last = std::max(a.last, b.last);
  }
  std::vector<Budget> out;
  for (std::size_t i = 0; i < n; ++i) {
    if (i > 0 && owner[i] == owner[i - 1]) {
      out.back().rows.push_back(rows[i]);
      continue;
    }
    out.push_back({0, false, {rows[i]}});
  }
  for (Budget& b : out) {
    double sum_log = 0;
    for (std::size_t r : b.rows) sum_log += std::log(compute(obs[r]));
    b.compute = std::exp(sum_log / static_cast<double>(b.rows.size()));
  }
  return out;
}

}  // namespace

std::string family_of(const Observation& o) {
  std::string key = o.router.empty() || o.router == "dense" || o.experts == 1
                        ? fmt::format("E={:g}", o.experts)
                        : fmt::format("{},E={:g}", o.router, o.experts);
  if (o.top_k != 1) key += fmt::format(",K={:g}", o.top_k);
  if (o.granularity != 1) key += fmt::format(",G={:g}", o.granularity);
  return key;
}

std::vector<Budget> group_budgets(const std::vector<Observation>& observations) {
  std::map<double, std::vector<std::size_t>> stated;
  std::vector<std::size_t> unstated;
  for (std::size_t i = 0; i < observations.size(); ++i)
    (observations[i].budget > 0 ? stated[observations[i].budget] : unstated).push_back(i);
  std::vector<Budget> out = group_by_compute(observations, std::move(unstated));
  for (auto& [compute, rows] : stated) out.push_back({compute, true, std::move(rows)});
  std::stable_sort(out.begin(), out.end(),
                   [](const Budget& a, const Budget& b) { return a.compute < b.compute; });
  return out;
}

}  // namespace moescale::fitting
