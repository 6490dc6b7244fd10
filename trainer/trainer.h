// moescale trainer: token data sets, the MoE transformer and its training loop.
// This header is torch-free so the CLI and the database glue compile fast; the
// model lives in trainer/model.h (internal, used by tests and benchmarks).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "planner/planner.h"

namespace moescale {

// ---- data ------------------------------------------------------------------

struct MarkovOptions {
  int64_t order = 1;      // tokens of context that determine the next one
  int64_t vocab = 16;     // distinct tokens
  int64_t branching = 3;  // successors per context (sparsity)
  int64_t tokens = 2'000'000;
};

// Source syntax: `gcide`, `file:PATH`, `llmc:PATH`, `synthetic:markov` or
// `synthetic:markov:order=1,vocab=16,branching=3,tokens=2000000` (the inline
// form overrides `markov`).
struct DataPrepareOptions {
  std::string source = "gcide";
  std::string out_dir;
  double val_fraction = 0.05;  // the tail of the stream becomes val.bin
  uint64_t seed = 1;
  int64_t max_tokens = 0;  // 0: no limit (text sources are cut after this many)
  MarkovOptions markov;
};

struct DataSummary {
  std::string out_dir, source, tokenizer;
  int64_t vocab_size = 0, train_tokens = 0, val_tokens = 0;
  double entropy_rate = 0;  // nats/token; NaN where unknown
};

// Writes train.bin, val.bin (uint16 little-endian) and meta.json atomically.
// `progress` receives human-readable lines (the CLI prints them to stderr).
DataSummary prepare_data(const DataPrepareOptions& options,
                         const std::function<void(std::string_view)>& progress = {});

// A random sparse Markov chain over `vocab` tokens with `order` tokens of
// context; next[c * branching + j] is a successor of context c with probability
// prob[...]. Every context reaches every other (a de Bruijn cycle is embedded).
struct MarkovChain {
  int64_t order = 1, vocab = 0, branching = 0;
  std::vector<int32_t> next;
  std::vector<double> prob;
};
MarkovChain make_markov_chain(const MarkovOptions& options, uint64_t seed);
double entropy_rate(const MarkovChain& chain);  // nats/token, exact (stationary x entropy)
std::vector<uint16_t> sample_markov(const MarkovChain& chain, int64_t tokens, uint64_t seed);

// A memory-mapped token file: raw nanoGPT uint16 or llm.c (header magic 20240520).
class TokenFile {
 public:
  explicit TokenFile(const std::string& path);
  ~TokenFile();
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;
  const uint16_t* data() const { return tokens_; }
  int64_t size() const { return count_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const uint16_t* tokens_ = nullptr;
  int64_t count_ = 0;
};

struct DataMeta {
  std::string tokenizer, source;
  int64_t vocab_size = 0;
  double entropy_rate = 0;  // NaN where unknown
  bool byte_level() const { return tokenizer == "byte"; }
};
DataMeta read_data_meta(const std::string& data_dir);  // throws with a fix if missing

// Training windows drawn reproducibly: batch `step` depends only on (seed, step),
// so a resumed run sees exactly the batches the uninterrupted run would have.
class WindowSampler {
 public:
  WindowSampler(const TokenFile& file, int64_t seq_len, int64_t batch, uint64_t seed);
  // Fills inputs and targets (batch x seq_len each, row-major) for `step`.
  void fill(int64_t step, int64_t* inputs, int64_t* targets) const;
  int64_t position() const { return position_; }  // the next step to draw
  void set_position(int64_t step) { position_ = step; }
  void next(int64_t* inputs, int64_t* targets) { fill(position_++, inputs, targets); }

 private:
  const TokenFile& file_;
  int64_t seq_len_, batch_;
  uint64_t seed_;
  int64_t position_ = 0;
};

// The seed of a run's validation windows: the same for every run, so replicates differ by
// training alone and a budget's runs are scored on the same text (per seed for specs
// stored before, which keep what they were trained with).
uint64_t validation_seed(const TrainSettings& train);

// ---- training --------------------------------------------------------------

struct TrainStepMetrics {
  int64_t step = 0, tokens = 0;
  double loss = 0, lr = 0, aux_loss = 0, tokens_per_s = 0, elapsed_s = 0;
  // Per MoE layer, the fraction of routed slots each expert received; empty for dense.
  std::vector<std::vector<double>> expert_load;
};

struct EvalMetrics {
  int64_t step = 0, tokens = 0;
  double loss = 0;           // nats/token
  double bits_per_byte = 0;  // NaN unless the data is byte-level
};

class MetricSink {
 public:
  virtual ~MetricSink() = default;
  virtual void train_step(const TrainStepMetrics& m) = 0;
  virtual void eval(const EvalMetrics& m) = 0;
  virtual void checkpoint(int64_t /*step*/) {}
};

enum class TrainOutcome { done, diverged, interrupted };
std::string to_string(TrainOutcome outcome);

struct TrainOptions {
  std::string device = "auto";              // auto | cpu | cuda | cuda:N
  std::string checkpoint_dir;               // empty: no checkpoints, no resume
  const std::atomic<bool>* stop = nullptr;  // set by a signal handler: checkpoint and return
  int threads = 0;                          // 0: all cores
  // Written into every checkpoint; a checkpoint with another identity (another
  // store, run, spec or data) is ignored, never resumed. Empty: only the run key
  // is checked.
  std::string identity;
};

struct TrainResult {
  TrainOutcome outcome = TrainOutcome::done;
  int64_t steps = 0, tokens = 0;  // completed so far, including before a resume
  double final_val_loss = 0, final_train_loss = 0, wall_seconds = 0;
  int64_t resumed_from = 0;  // the checkpoint's step, 0 for a fresh start
  std::string message;
  std::vector<std::string> notes;  // e.g. a foreign checkpoint that was ignored
};

// Trains spec.shape on spec.data_dir for spec.steps() steps, resuming from
// options.checkpoint_dir/checkpoint.pt when it holds a checkpoint of this run.
TrainResult train_run(const RunSpec& spec, const TrainOptions& options, MetricSink& sink);

// Achieved single-precision matrix-multiply FLOP/s on `device` ("cpu" uses
// `threads` threads, 0: all cores), measured for about `seconds`: the peak that
// training throughput is compared with.
double measure_sgemm_flops(const std::string& device, int threads, double seconds = 0.3);

// The torch name of a TrainOptions::device ("cpu", "cuda:0"); throws, saying what to
// use instead, when this build or machine cannot train on it.
std::string resolve_device(const std::string& name);

}  // namespace moescale
