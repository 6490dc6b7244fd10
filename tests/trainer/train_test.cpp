// Training runs end to end on small synthetic data: convergence to the source's
// entropy rate, exact resume after an interruption, divergence, errors.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>

#include "tests/temp_dir.h"
#include "trainer/trainer.h"

namespace moescale {
namespace {
namespace fs = std::filesystem;

using moescale::testing::TempDir;

class RecordingSink : public MetricSink {
 public:
  void train_step(const TrainStepMetrics& m) override {
    steps.push_back(m);
    if (stop_after > 0 && m.step == stop_after && stop) stop->store(true);
  }
  void eval(const EvalMetrics& m) override { evals.push_back(m); }
  void checkpoint(int64_t step) override { checkpoints.push_back(step); }

  std::vector<TrainStepMetrics> steps;
  std::vector<EvalMetrics> evals;
  std::vector<int64_t> checkpoints;
  int64_t stop_after = 0;
  std::atomic<bool>* stop = nullptr;
};

DataSummary prepare_markov(const std::string& dir, const MarkovOptions& m) {
  DataPrepareOptions o;
  o.source = "synthetic:markov";
  o.markov = m;
  o.out_dir = dir;
  o.val_fraction = 0.1;
  o.seed = 21;
  return prepare_data(o);
}

RunSpec tiny_run(const std::string& data_dir, int64_t vocab, int64_t steps) {
  RunSpec r;
  r.shape.vocab = vocab;
  r.shape.seq_len = 32;
  r.shape.d_model = 32;
  r.shape.n_layers = 2;
  r.shape.n_heads = 2;
  r.shape.experts = 4;
  r.shape.top_k = 2;
  r.shape.router = Router::rmoe;
  r.shape.router_dim = 16;
  r.train.batch_size = 8;
  r.train.lr = 3e-3;
  r.train.log_interval = 1;
  r.train.eval_batches = 2;
  r.train.z_loss_weight = 1e-3;
  r.tokens = steps * r.train.tokens_per_step(r.shape.seq_len);
  r.data_dir = data_dir;
  return r;
}

TrainOptions cpu_options(const std::string& checkpoint_dir = "") {
  TrainOptions o;
  o.device = "cpu";
  o.threads = 1;  // other jobs share the machine: OpenMP teams stall when oversubscribed
  o.checkpoint_dir = checkpoint_dir;
  return o;
}

TEST(TrainerRun, TinyModelReachesTheMarkovEntropyRate) {
  TempDir data;
  const DataSummary d = prepare_markov(data.str(), {1, 16, 3, 300'000});
  RunSpec r = tiny_run(data.str(), 16, 300);
  r.shape.seq_len = 128;  // the first position of a window has no context: keep it rare
  r.shape.n_layers = 1;
  r.shape.router = Router::topk;
  r.train.batch_size = 16;
  r.train.lr = 1e-2;
  r.train.eval_batches = 8;
  r.train.log_interval = 50;
  r.tokens = 300 * r.train.tokens_per_step(r.shape.seq_len);
  RecordingSink sink;
  const TrainResult res = train_run(r, cpu_options(), sink);
  ASSERT_EQ(res.outcome, TrainOutcome::done) << res.message;
  EXPECT_EQ(res.steps, 300);
  ASSERT_FALSE(sink.evals.empty());
  EXPECT_EQ(sink.evals.size(), 10u) << "eval_interval 0 means about 10 evals";
  EXPECT_EQ(sink.evals.back().step, 300);
  EXPECT_TRUE(std::isnan(sink.evals.back().bits_per_byte)) << "markov tokens are not bytes";
  EXPECT_GT(sink.evals.front().loss, res.final_val_loss + 0.02) << "the run must have learned";
  EXPECT_LT(res.final_val_loss, 1.05 * d.entropy_rate)
      << "entropy rate " << d.entropy_rate << ", val loss " << res.final_val_loss;
  EXPECT_GE(res.final_val_loss, 0.97 * d.entropy_rate) << "below the entropy rate: a leak?";
  ASSERT_FALSE(sink.steps.empty());
  EXPECT_EQ(sink.steps.back().expert_load.size(), 1u);
  EXPECT_GT(sink.steps.back().tokens_per_s, 0);
}

TEST(TrainerRun, TheFinalLossIsScoredOnItsOwnLargerSample) {
  TempDir data;
  prepare_markov(data.str(), {2, 8, 3, 50'000});
  RunSpec r = tiny_run(data.str(), 8, 6);
  r.train.eval_interval = 3;
  r.train.final_eval_batches = r.train.eval_batches;
  RecordingSink same, larger;
  ASSERT_EQ(train_run(r, cpu_options(), same).outcome, TrainOutcome::done);
  r.train.final_eval_batches = 32;
  const TrainResult res = train_run(r, cpu_options(), larger);
  ASSERT_EQ(res.outcome, TrainOutcome::done) << res.message;
  ASSERT_EQ(same.evals.size(), 2u);
  ASSERT_EQ(larger.evals.size(), 2u);
  EXPECT_EQ(same.evals[0].loss, larger.evals[0].loss) << "evaluations during training unchanged";
  EXPECT_NE(same.evals[1].loss, larger.evals[1].loss) << "the final one reads more windows";
  EXPECT_EQ(res.final_val_loss, larger.evals[1].loss);
}

TEST(TrainerRun, EverySeedIsScoredOnTheSameValidationWindows) {
  TrainSettings one, two;
  two.seed = 2;
  EXPECT_EQ(validation_seed(one), validation_seed(two));
  EXPECT_NE(validation_seed(one), one.seed) << "not the training windows";
  one.val_windows_per_seed = two.val_windows_per_seed = true;  // a spec stored before
  EXPECT_NE(validation_seed(one), validation_seed(two));
}

TEST(TrainerRun, DefaultCheckpointsOfAShortRunAreOnlyTheLast) {
  TempDir data, ckpt;
  prepare_markov(data.str(), {2, 8, 3, 50'000});
  RunSpec r = tiny_run(data.str(), 8, 12);
  r.shape.top_k = 1;          // top-1 with Switch gating trains like top-2
  r.train.eval_interval = 3;  // checkpoint_interval 0: at evals, at most every 30 s
  RecordingSink sink;
  const TrainResult res = train_run(r, cpu_options(ckpt.str()), sink);
  ASSERT_EQ(res.outcome, TrainOutcome::done) << res.message;
  EXPECT_EQ(sink.evals.size(), 4u);
  EXPECT_EQ(sink.checkpoints, (std::vector<int64_t>{12})) << "a run under 30 s writes one";
  EXPECT_TRUE(fs::exists(ckpt.str("checkpoint.pt")));
}

TEST(TrainerRun, InterruptedAndResumedRunReproducesTheLossCurve) {
  TempDir data, ckpt;
  prepare_markov(data.str(), {2, 8, 3, 50'000});
  RunSpec r = tiny_run(data.str(), 8, 30);
  r.train.eval_interval = 10;
  r.train.checkpoint_interval = 5;

  RecordingSink full;
  const TrainResult whole = train_run(r, cpu_options(), full);
  ASSERT_EQ(whole.outcome, TrainOutcome::done);
  ASSERT_EQ(full.steps.size(), 30u);

  std::atomic<bool> stop{false};
  RecordingSink first;
  first.stop = &stop;
  first.stop_after = 12;
  TrainOptions o = cpu_options(ckpt.str());
  o.stop = &stop;
  const TrainResult cut = train_run(r, o, first);
  EXPECT_EQ(cut.outcome, TrainOutcome::interrupted);
  EXPECT_EQ(cut.steps, 12);
  EXPECT_EQ(first.checkpoints, (std::vector<int64_t>{5, 10, 12}));
  EXPECT_TRUE(fs::exists(ckpt.str("checkpoint.pt")));

  stop = false;
  RecordingSink second;
  const TrainResult rest = train_run(r, cpu_options(ckpt.str()), second);
  ASSERT_EQ(rest.outcome, TrainOutcome::done);
  EXPECT_EQ(rest.steps, 30);
  ASSERT_EQ(second.steps.size(), 18u);
  EXPECT_EQ(second.steps.front().step, 13);
  for (size_t i = 0; i < 12; ++i) EXPECT_EQ(first.steps[i].loss, full.steps[i].loss) << i;
  for (size_t i = 0; i < 18; ++i) {
    EXPECT_NEAR(second.steps[i].loss, full.steps[12 + i].loss, 1e-5) << "step " << 13 + i;
    EXPECT_EQ(second.steps[i].lr, full.steps[12 + i].lr);
  }
  EXPECT_NEAR(rest.final_val_loss, whole.final_val_loss, 1e-5);
  ASSERT_EQ(second.evals.size(), 2u);
  EXPECT_NEAR(second.evals[0].loss, full.evals[1].loss, 1e-5);

  // A finished run resumed again does no more steps.
  RecordingSink third;
  const TrainResult again = train_run(r, cpu_options(ckpt.str()), third);
  EXPECT_EQ(again.outcome, TrainOutcome::done);
  EXPECT_TRUE(third.steps.empty());
  EXPECT_NEAR(again.final_val_loss, whole.final_val_loss, 1e-5);
}

TEST(TrainerRun, CheckpointOfAnotherRunIsRefused) {
  TempDir data, ckpt;
  prepare_markov(data.str(), {1, 8, 2, 20'000});
  RunSpec r = tiny_run(data.str(), 8, 3);
  RecordingSink sink;
  ASSERT_EQ(train_run(r, cpu_options(ckpt.str()), sink).outcome, TrainOutcome::done);
  r.train.seed = 2;
  EXPECT_THROW(train_run(r, cpu_options(ckpt.str()), sink), std::runtime_error);
}

TEST(TrainerRun, AbsurdLearningRateIsMarkedDiverged) {
  TempDir data;
  prepare_markov(data.str(), {1, 8, 2, 20'000});
  RunSpec r = tiny_run(data.str(), 8, 20);
  r.train.lr = 1e30;
  r.train.warmup_fraction = 0;
  r.train.grad_clip = 0;
  RecordingSink sink;
  const TrainResult res = train_run(r, cpu_options(), sink);
  EXPECT_EQ(res.outcome, TrainOutcome::diverged);
  EXPECT_LT(res.steps, 20);
  EXPECT_NE(res.message.find("loss became"), std::string::npos) << res.message;
  EXPECT_EQ(to_string(res.outcome), "diverged");
}

TEST(TrainerRun, ByteLevelDataReportsBitsPerByte) {
  TempDir src, data;
  {
    std::ofstream out(src.str("text.txt"));
    for (int i = 0; i < 400; ++i)
      out << "the quick brown fox jumps over the lazy dog " << i << "\n";
  }
  DataPrepareOptions o;
  o.source = "file:" + src.str("text.txt");
  o.out_dir = data.str();
  prepare_data(o);
  RunSpec r = tiny_run(data.str(), 256, 4);
  r.shape.router = Router::hash;
  r.train.eval_interval = 2;
  RecordingSink sink;
  ASSERT_EQ(train_run(r, cpu_options(), sink).outcome, TrainOutcome::done);
  ASSERT_EQ(sink.evals.size(), 2u);
  for (const auto& e : sink.evals) EXPECT_DOUBLE_EQ(e.bits_per_byte, e.loss / std::numbers::ln2);
}

TEST(TrainerRun, ErrorsSayHowToFixThem) {
  TempDir data;
  RunSpec r = tiny_run(data.str(), 8, 3);
  RecordingSink sink;
  try {
    train_run(r, cpu_options(), sink);
    FAIL() << "expected an error for a folder without data";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("moescale data prepare"), std::string::npos) << e.what();
  }
  prepare_markov(data.str(), {1, 16, 2, 20'000});
  try {
    train_run(r, cpu_options(), sink);  // model vocab 8 < data vocab 16
    FAIL() << "expected a vocabulary error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("vocab = 16"), std::string::npos) << e.what();
  }
  r.shape.vocab = 16;
  TrainOptions o = cpu_options();
  o.device = "tpu";
  EXPECT_THROW(train_run(r, o, sink), std::invalid_argument);
}

}  // namespace
}  // namespace moescale
