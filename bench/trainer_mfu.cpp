// Trains one shape with moescale's trainer (train_run, the code `moescale train`
// runs) on a device for a fixed number of steps and prints, as one JSON line,
// tokens/s over the steps after the warm-up, the model FLOPs per token (DESIGN's
// 6·N_active + 12·L·d·T, plus the output head) and the parameter counts.
// bench/gpu_mfu.sh runs it on a GPU and turns this into MFU.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "planner/planner.h"
#include "trainer/trainer.h"

namespace {
using namespace moescale;
using Clock = std::chrono::steady_clock;

// Wall time between the first report after the warm-up and the last one. The
// trainer reads the loss at each report, which waits for the device, so the
// interval holds whole steps.
class WallClockSink : public MetricSink {
 public:
  explicit WallClockSink(int64_t warmup) : warmup_(warmup) {}
  void train_step(const TrainStepMetrics& m) override {
    last_loss = m.loss;
    if (m.step < warmup_) return;
    const auto now = Clock::now();
    if (first_tokens < 0) {
      first_tokens = m.tokens;
      start_ = now;
      return;
    }
    tokens = static_cast<double>(m.tokens - first_tokens);
    seconds = std::chrono::duration<double>(now - start_).count();
  }
  void eval(const EvalMetrics&) override {}
  double seconds = 0, tokens = 0, last_loss = 0;
  int64_t first_tokens = -1;

 private:
  int64_t warmup_;
  Clock::time_point start_;
};

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
               "usage: trainer_mfu --data DIR [--device cuda --vocab 50304 --seq-len 1024 "
               "--d-model 768 --layers 12 --heads 12 --ffn-hidden 1792 --experts 8 --top-k 2 "
               "--router topk --batch 16 --steps 200 --warmup-steps 20 --log-every 10]\n");
    return 2;
  }
  RunSpec r;
  ModelShape& s = r.shape;
  s.vocab = get(a, "vocab", 50304);
  s.seq_len = get(a, "seq-len", 1024);
  s.d_model = get(a, "d-model", 768);
  s.n_layers = get(a, "layers", 12);
  s.n_heads = get(a, "heads", 12);
  s.ffn_hidden = get(a, "ffn-hidden", 1792);
  s.experts = get(a, "experts", 8);
  s.top_k = get(a, "top-k", 2);
  s.router_dim = get(a, "router-dim", 128);
  s.router = parse_router(a.count("router") ? a.at("router") : "topk");
  s = s.resolved();
  r.train.batch_size = get(a, "batch", 16);
  const int64_t steps = get(a, "steps", 200);
  r.train.log_interval = get(a, "log-every", 10);
  r.train.eval_interval = steps;
  r.train.eval_batches = 1;
  r.tokens = steps * r.train.tokens_per_step(s.seq_len);
  r.data_dir = a.at("data");
  TrainOptions o;
  o.device = a.count("device") ? a.at("device") : "cuda";

  WallClockSink sink(get(a, "warmup-steps", 20));
  const TrainResult res = train_run(r, o, sink);
  if (res.outcome != TrainOutcome::done)
    throw std::runtime_error("run " + to_string(res.outcome) + ": " + res.message);
  if (sink.seconds <= 0) throw std::runtime_error("too few steps after the warm-up to time");
  const ParamCount p = count_params(s);
  const nlohmann::json out = {{"tokens_per_s", sink.tokens / sink.seconds},
                              {"flops_per_token", flops_per_token(s)},
                              {"n_active", p.active},
                              {"n_total", p.total},
                              {"n_embedding", p.embedding},
                              {"timed_tokens", sink.tokens},
                              {"timed_seconds", sink.seconds},
                              {"final_loss", sink.last_loss}};
  fmt::print("{}\n", out.dump());
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "error: {}\n", e.what());
  return 1;
}
