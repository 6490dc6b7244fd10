// Damaged checkpoints: each kind of damage a cluster produces (a bit flipped in a
// tensor's exponent or mantissa, a NaN written in, truncation, random bytes, a folder
// in its place, a flipped byte in the pickle) is recognised before loading, set aside
// under a new name, and the run resumes from the checkpoint before it (or step 0) to
// the uninterrupted run's final loss.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "tests/temp_dir.h"
#include "trainer/trainer.h"

namespace moescale {
namespace {
namespace fs = std::filesystem;
using moescale::testing::TempDir;

class StopAt : public MetricSink {
 public:
  void train_step(const TrainStepMetrics& m) override {
    if (stop && m.step == stop_after) stop->store(true);
  }
  void eval(const EvalMetrics&) override {}
  void checkpoint(int64_t step) override { checkpoints.push_back(step); }
  std::atomic<bool>* stop = nullptr;
  int64_t stop_after = 0;
  std::vector<int64_t> checkpoints;
};

RunSpec small_run(const std::string& data_dir) {
  RunSpec r;
  r.shape.vocab = 8;
  r.shape.seq_len = 32;
  r.shape.d_model = 32;
  r.shape.n_layers = 2;
  r.shape.n_heads = 2;
  r.shape.experts = 4;
  r.shape.top_k = 2;
  r.shape.router = Router::topk;
  r.train.batch_size = 8;
  r.train.lr = 3e-3;
  r.train.log_interval = 1;
  r.train.eval_batches = 2;
  r.train.eval_interval = 10;
  r.train.checkpoint_interval = 5;
  r.tokens = 30 * r.train.tokens_per_step(r.shape.seq_len);
  r.data_dir = data_dir;
  return r;
}

TrainOptions cpu(const std::string& dir) {
  TrainOptions o;
  o.device = "cpu";
  o.threads = 1;
  o.checkpoint_dir = dir;
  return o;
}

// One zip member of a checkpoint file: where its stored bytes start and how many.
struct Member {
  std::string name;
  size_t offset = 0, size = 0;
};

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
}

uint32_t le32(const std::string& b, size_t at) {
  uint32_t v;
  std::memcpy(&v, b.data() + at, 4);
  return v;
}
uint16_t le16(const std::string& b, size_t at) {
  uint16_t v;
  std::memcpy(&v, b.data() + at, 2);
  return v;
}

// The members of the zip archive (LibTorch stores them uncompressed), from its central
// directory: the local headers leave the sizes to a descriptor after the data.
std::vector<Member> members(const std::string& bytes) {
  std::vector<Member> out;
  for (size_t at = bytes.find("PK\x01\x02"); at != std::string::npos && at + 46 <= bytes.size();
       at = bytes.find("PK\x01\x02", at + 4)) {
    const uint32_t size = le32(bytes, at + 24), local = le32(bytes, at + 42);
    const uint16_t name_len = le16(bytes, at + 28);
    if (local + 30 > bytes.size()) continue;
    const size_t offset = local + 30 + le16(bytes, local + 26) + le16(bytes, local + 28);
    Member m{bytes.substr(at + 46, name_len), offset, size};
    if (m.offset + m.size <= bytes.size()) out.push_back(m);
  }
  return out;
}

// The largest tensor's bytes: a weight matrix of float32 values.
Member largest_tensor(const std::string& bytes) {
  Member best;
  for (const Member& m : members(bytes))
    if (m.name.find("/data/") != std::string::npos && m.size > best.size) best = m;
  return best;
}

enum class Damage {
  exponent_bit,
  mantissa_bit,
  nan,
  truncated_20000,
  truncated_0,
  random_bytes,
  directory,
  pickle_byte
};

std::string name(Damage d) {
  switch (d) {
    case Damage::exponent_bit: return "ExponentBitFlipped";
    case Damage::mantissa_bit: return "MantissaBitFlipped";
    case Damage::nan: return "NanWrittenIn";
    case Damage::truncated_20000: return "TruncatedTo20000Bytes";
    case Damage::truncated_0: return "TruncatedTo0Bytes";
    case Damage::random_bytes: return "RandomBytes";
    case Damage::directory: return "ADirectoryInItsPlace";
    case Damage::pickle_byte: return "ByteFlippedInDataPkl";
  }
  return "?";
}

void damage(const fs::path& path, Damage d) {
  std::string bytes = read_bytes(path);
  ASSERT_GT(bytes.size(), 20000u) << "the test needs a checkpoint over 20000 bytes";
  const Member tensor = largest_tensor(bytes);
  ASSERT_GT(tensor.size, 64u);
  const size_t value = tensor.offset + 4 * 7;  // the 8th float of the tensor
  uint32_t bits;
  std::memcpy(&bits, bytes.data() + value, 4);
  switch (d) {
    case Damage::exponent_bit: bits ^= 1u << 29; break;
    case Damage::mantissa_bit: bits ^= 1u; break;
    case Damage::nan: bits = 0x7fc00000u; break;
    case Damage::truncated_20000: bytes.resize(20000); break;
    case Damage::truncated_0: bytes.clear(); break;
    case Damage::random_bytes: {
      std::mt19937 gen(7);
      for (char& c : bytes) c = static_cast<char>(gen());
      break;
    }
    case Damage::directory:
      fs::remove(path);
      fs::create_directory(path);
      fs::create_directory(path / "inside");
      return;
    case Damage::pickle_byte: {
      bool found = false;
      for (const Member& m : members(bytes))
        if (m.name.ends_with("data.pkl") && m.size > 8) {
          bytes[m.offset + m.size / 2] ^= 0x5a;
          found = true;
          break;
        }
      ASSERT_TRUE(found) << "no data.pkl in the checkpoint";
      break;
    }
  }
  if (d == Damage::exponent_bit || d == Damage::mantissa_bit || d == Damage::nan)
    std::memcpy(bytes.data() + value, &bits, 4);
  write_bytes(path, bytes);
}

struct Reference {
  TempDir data;
  double final_val_loss = 0;
};

const Reference& reference() {
  static Reference* ref = [] {
    auto* r = new Reference;
    DataPrepareOptions o;
    o.source = "synthetic:markov";
    o.markov = {2, 8, 3, 50'000};
    o.out_dir = r->data.str();
    o.val_fraction = 0.1;
    o.seed = 21;
    prepare_data(o);
    StopAt sink;
    const TrainResult whole = train_run(small_run(r->data.str()), cpu(""), sink);
    EXPECT_EQ(whole.outcome, TrainOutcome::done) << whole.message;
    r->final_val_loss = whole.final_val_loss;
    return r;
  }();
  return *ref;
}

// Trains to step 12 (checkpoints at 5, 10 and 12: checkpoint.pt is step 12, the one
// kept before it step 10) and stops, as a SIGTERM would.
void train_until_stopped(const RunSpec& r, const std::string& dir) {
  std::atomic<bool> stop{false};
  StopAt sink;
  sink.stop = &stop;
  sink.stop_after = 12;
  TrainOptions o = cpu(dir);
  o.stop = &stop;
  const TrainResult cut = train_run(r, o, sink);
  ASSERT_EQ(cut.outcome, TrainOutcome::interrupted);
  ASSERT_EQ(sink.checkpoints, (std::vector<int64_t>{5, 10, 12}));
}

class DamagedCheckpoint : public ::testing::TestWithParam<Damage> {};

TEST_P(DamagedCheckpoint, IsSetAsideAndTheRunResumesFromThePreviousOne) {
  const Reference& ref = reference();
  TempDir ckpt;
  const RunSpec r = small_run(ref.data.str());
  train_until_stopped(r, ckpt.str());
  const fs::path path = ckpt.path() / "checkpoint.pt";
  damage(path, GetParam());

  StopAt sink;
  TrainResult rest;
  ASSERT_NO_THROW(rest = train_run(r, cpu(ckpt.str()), sink));
  ASSERT_EQ(rest.outcome, TrainOutcome::done) << rest.message;
  EXPECT_EQ(rest.resumed_from, 10) << "the damaged step-12 checkpoint must not be loaded";
  EXPECT_EQ(rest.final_val_loss, ref.final_val_loss) << "the uninterrupted run's final loss";
  EXPECT_TRUE(fs::exists(ckpt.path() / "checkpoint.pt.bad-1")) << "set aside, never deleted";
  ASSERT_EQ(rest.notes.size(), 1u);
  const std::string& note = rest.notes.front();
  EXPECT_EQ(note.find('\n'), std::string::npos) << note;
  EXPECT_NE(note.find("set aside"), std::string::npos) << note;
  EXPECT_NE(note.find("resumed from step 10"), std::string::npos) << note;
}

INSTANTIATE_TEST_SUITE_P(EveryKind, DamagedCheckpoint,
                         ::testing::Values(Damage::exponent_bit, Damage::mantissa_bit, Damage::nan,
                                           Damage::truncated_20000, Damage::truncated_0,
                                           Damage::random_bytes, Damage::directory,
                                           Damage::pickle_byte),
                         [](const auto& info) { return name(info.param); });

TEST(DamagedCheckpoints, BothDamagedTrainFromStepZeroToTheSameLoss) {
  const Reference& ref = reference();
  TempDir ckpt;
  const RunSpec r = small_run(ref.data.str());
  train_until_stopped(r, ckpt.str());
  damage(ckpt.path() / "checkpoint.pt", Damage::exponent_bit);
  damage(ckpt.path() / "checkpoint.prev.pt", Damage::truncated_20000);
  StopAt sink;
  const TrainResult rest = train_run(r, cpu(ckpt.str()), sink);
  ASSERT_EQ(rest.outcome, TrainOutcome::done) << rest.message;
  EXPECT_EQ(rest.resumed_from, 0);
  EXPECT_EQ(rest.final_val_loss, ref.final_val_loss)
      << "a half-loaded model must not be trained on";
  EXPECT_TRUE(fs::exists(ckpt.path() / "checkpoint.pt.bad-1"));
  EXPECT_TRUE(fs::exists(ckpt.path() / "checkpoint.prev.pt.bad-1"));
  ASSERT_EQ(rest.notes.size(), 1u);
  EXPECT_NE(rest.notes.front().find("trained from step 0"), std::string::npos) << rest.notes[0];
}

TEST(DamagedCheckpoints, TemporaryFilesOfDeadWritersAreRemoved) {
  const Reference& ref = reference();
  TempDir ckpt;
  const RunSpec r = small_run(ref.data.str());
  train_until_stopped(r, ckpt.str());
  // pid 2^22 + 1 is above Linux's pid_max limit: no such process.
  const fs::path left = ckpt.path() / "checkpoint.pt.tmp.4194305.0";
  write_bytes(left, "half a checkpoint");
  StopAt sink;
  ASSERT_EQ(train_run(r, cpu(ckpt.str()), sink).outcome, TrainOutcome::done);
  EXPECT_FALSE(fs::exists(left));
  for (const auto& e : fs::directory_iterator(ckpt.path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

}  // namespace
}  // namespace moescale
