// Trains one shape with moescale's trainer on CPU for a fixed number of steps and
// prints tokens/s, model FLOP/s and this machine's sgemm rate as one JSON line.
// bench/trainer_vs_pytorch.sh runs it next to bench/trainer_reference.py.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "planner/planner.h"
#include "trainer/trainer.h"

namespace {
using namespace moescale;

// Sums step times after the untimed warm-up steps (allocator and thread pools settle).
class TimingSink : public MetricSink {
 public:
  explicit TimingSink(int64_t warmup) : warmup_(warmup) {}
  void train_step(const TrainStepMetrics& m) override {
    last_loss = m.loss;
    if (m.step <= warmup_) return;
    const double tokens = static_cast<double>(m.tokens - last_tokens_);
    seconds += tokens / m.tokens_per_s;
    timed_tokens += tokens;
    last_tokens_ = m.tokens;
  }
  void eval(const EvalMetrics&) override {}
  double seconds = 0, timed_tokens = 0, last_loss = 0;

 private:
  int64_t warmup_, last_tokens_ = 0;
};

// FLOP/s of a 1024x1024 float matmul: the machine's attainable rate.
double sgemm_flops() {
  const auto a = torch::randn({1024, 1024}), b = torch::randn({1024, 1024});
  auto c = torch::mm(a, b);
  const int reps = 20;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) c = torch::mm(a, b);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return reps * 2.0 * 1024 * 1024 * 1024 / s;
}

std::map<std::string, std::string> parse_args(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    if (!key.starts_with("--")) throw std::invalid_argument("expected --key value, got " + key);
    args[key.substr(2)] = argv[i + 1];
  }
  return args;
}

int64_t get(const std::map<std::string, std::string>& a, const std::string& k, int64_t dflt) {
  const auto it = a.find(k);
  return it == a.end() ? dflt : std::stoll(it->second);
}
}  // namespace

int main(int argc, char** argv) try {
  const auto a = parse_args(argc, argv);
  if (!a.count("data")) {
    fmt::print(stderr,
               "usage: trainer_bench --data DIR [--d-model 64 --layers 2 --heads 4 --kv-heads 0 "
               "--experts 4 --top-k 2 --router topk --router-dim 128 --seq-len 128 --batch 16 "
               "--steps 20 --warmup-steps 3 --threads 0]\n");
    return 2;
  }
  RunSpec r;
  ModelShape& s = r.shape;
  s.vocab = get(a, "vocab", 256);
  s.seq_len = get(a, "seq-len", 128);
  s.d_model = get(a, "d-model", 64);
  s.n_layers = get(a, "layers", 2);
  s.n_heads = get(a, "heads", 4);
  s.n_kv_heads = get(a, "kv-heads", 0);
  s.experts = get(a, "experts", 4);
  s.top_k = get(a, "top-k", 2);
  s.moe_every = get(a, "moe-every", 1);
  s.router_dim = get(a, "router-dim", 128);
  s.router = parse_router(a.count("router") ? a.at("router") : "topk");
  s = s.resolved();
  r.train.batch_size = get(a, "batch", 16);
  const int64_t steps = get(a, "steps", 20), warmup = get(a, "warmup-steps", 3);
  r.train.log_interval = 1;
  r.train.eval_interval = steps;
  r.train.eval_batches = 1;
  r.tokens = steps * r.train.tokens_per_step(s.seq_len);
  r.data_dir = a.at("data");
  TrainOptions o;
  o.device = "cpu";
  o.threads = static_cast<int>(get(a, "threads", 0));

  TimingSink sink(warmup);
  const TrainResult res = train_run(r, o, sink);
  if (res.outcome != TrainOutcome::done) throw std::runtime_error("run " + to_string(res.outcome));
  const double tokens_per_s = sink.timed_tokens / sink.seconds;
  const double model_flops = tokens_per_s * flops_per_token(s);
  const double gemm = sgemm_flops();
  const nlohmann::json out = {{"tokens_per_s", tokens_per_s},
                              {"model_flops_per_s", model_flops},
                              {"sgemm_flops_per_s", gemm},
                              {"fraction_of_sgemm", model_flops / gemm},
                              {"flops_per_token", flops_per_token(s)},
                              {"params", count_params(s).all()},
                              {"final_loss", sink.last_loss},
                              {"threads", torch::get_num_threads()}};
  fmt::print("{}\n", out.dump());
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "error: {}\n", e.what());
  return 1;
}
