// The training loop: schedule, evaluation, checkpoints, divergence and stop handling.
#include <fmt/format.h>
#include <malloc.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <numbers>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <thread>

#ifdef MOESCALE_HAVE_CUDA
#include <ATen/autocast_mode.h>
#endif
#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include "trainer/checkpoint.h"
#include "trainer/model.h"
#include "trainer/trainer.h"

namespace moescale {
namespace fs = std::filesystem;

std::string to_string(TrainOutcome outcome) {
  switch (outcome) {
    case TrainOutcome::done: return "done";
    case TrainOutcome::diverged: return "diverged";
    case TrainOutcome::interrupted: return "interrupted";
  }
  return "?";
}

namespace {
using Clock = std::chrono::steady_clock;
constexpr uint64_t kValSeedSalt = 0x76616c5f73656564ull;  // "val_seed"
constexpr const char* kCheckpointFile = "checkpoint.pt";
constexpr const char* kPreviousCheckpointFile = "checkpoint.prev.pt";  // the one before it
constexpr double kCheckpointSeconds = 30;  // interim checkpoints, unless an interval is set

// glibc serves blocks above its mmap threshold with fresh mappings and returns them
// on free, so every step's large activations page-fault in again (10-15% of a CPU
// step). Keeping them in the heap lets later steps reuse the same pages.
void keep_large_blocks_in_heap() {
#ifdef __GLIBC__
  static const bool done = [] {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest allowed threshold on 64-bit
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    return true;
  }();
  (void)done;
#endif
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// How many CUDA devices this process sees (0 in a build without CUDA).
int64_t visible_cuda_devices() {
#ifdef MOESCALE_HAVE_CUDA
  return static_cast<int64_t>(torch::cuda::device_count());
#else
  return 0;
#endif
}

// "cuda" or "cuda:N", checked against this build and the GPUs visible now.
torch::Device cuda_device(const std::string& name) {
#ifndef MOESCALE_HAVE_CUDA
  throw std::runtime_error(
      fmt::format("device {}: this build has no CUDA; build where the CUDA toolkit is installed "
                  "(scripts/build.sh turns CUDA on when it finds nvcc) or use --device cpu",
                  name));
#endif
  // "cuda" is cuda:0; anything but "cuda:N" after it is a typo.
  const std::string index = name.substr(4);
  char* end = nullptr;
  const long n = index.empty()                         ? 0
                 : index.size() > 1 && index[0] == ':' ? std::strtol(index.c_str() + 1, &end, 10)
                                                       : -1;
  if (n < 0 || (end && *end != '\0'))
    throw std::invalid_argument(
        fmt::format("unknown device '{}'; use auto, cpu, cuda or cuda:N", name));
  const int64_t visible = visible_cuda_devices();
  if (visible == 0) {
    const char* mask = std::getenv("CUDA_VISIBLE_DEVICES");
    throw std::runtime_error(fmt::format(
        "no CUDA device visible (--device {}, CUDA_VISIBLE_DEVICES={}): use --device cpu, or "
        "run on a machine with an NVIDIA GPU and its driver",
        name, mask ? mask : "unset"));
  }
  if (n >= visible)
    throw std::runtime_error(fmt::format(
        "device {}: only {} CUDA device{} visible (cuda:0 to cuda:{}); pick one of those", name,
        visible, visible == 1 ? " is" : "s are", visible - 1));
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(n));
}

torch::Device select_device(const std::string& name) {
  if (name == "cpu") return torch::kCPU;
  if (name == "auto")
    return visible_cuda_devices() > 0 ? torch::Device(torch::kCUDA, 0) : torch::kCPU;
  if (name.starts_with("cuda")) return cuda_device(name);
  throw std::invalid_argument(
      fmt::format("unknown device '{}'; use auto, cpu, cuda or cuda:N", name));
}

// bf16 autocast for the forward pass on CUDA; fp32 everywhere on CPU.
class AutocastGuard {
 public:
  explicit AutocastGuard([[maybe_unused]] const torch::Device& device) {
#ifdef MOESCALE_HAVE_CUDA
    enabled_ = device.is_cuda();
    if (enabled_) {
      at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
      at::autocast::set_autocast_enabled(at::kCUDA, true);
    }
#endif
  }
  ~AutocastGuard() {
#ifdef MOESCALE_HAVE_CUDA
    if (enabled_) {
      at::autocast::set_autocast_enabled(at::kCUDA, false);
      at::autocast::clear_cache();
    }
#endif
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  [[maybe_unused]] bool enabled_ = false;
};

// Linear warmup, then cosine decay to min_lr_ratio * lr at the last step.
double learning_rate(const TrainSettings& t, int64_t step, int64_t steps) {
  const int64_t warmup = std::max<int64_t>(1, std::llround(t.warmup_fraction * steps));
  if (step < warmup) return t.lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double span = std::max<int64_t>(1, steps - warmup);
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / span);
  const double cosine = 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  return t.lr * (t.min_lr_ratio + (1.0 - t.min_lr_ratio) * cosine);
}

// Weight decay on matrices only: norms and biases are not shrunk towards zero.
std::unique_ptr<torch::optim::AdamW> make_optimizer(MoeTransformer& model, const TrainSettings& t) {
  std::vector<torch::Tensor> decay, keep;
  for (auto& p : model->parameters()) (p.dim() >= 2 ? decay : keep).push_back(p);
  auto options = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(t.lr).betas({0.9, 0.95}).eps(1e-8).weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, options(t.weight_decay));
  if (!keep.empty()) groups.emplace_back(keep, options(0.0));
  return std::make_unique<FusedAdamW>(groups, torch::optim::AdamWOptions(t.lr));
}

void set_learning_rate(torch::optim::AdamW& opt, double lr) {
  for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
}

struct Batch {
  torch::Tensor inputs, targets;  // CPU, reused every step
};

Batch make_batch(int64_t batch, int64_t seq_len) {
  return {torch::empty({batch, seq_len}, torch::kInt64),
          torch::empty({batch, seq_len}, torch::kInt64)};
}

// Draws the training batches onto the device. On CUDA the host fills one of two
// pinned buffers and copies it to the GPU asynchronously, so drawing the next
// batch overlaps the GPU's work on this one; a buffer is refilled only after its
// last copy has completed. On CPU the batch is used where it is drawn.
class BatchFeeder {
 public:
  BatchFeeder(WindowSampler& sampler, int64_t batch, int64_t seq_len, torch::Device device)
      : sampler_(sampler), device_(device) {
    for (auto& slot : slots_) {
      slot.host = torch::empty({2, batch, seq_len},
                               torch::TensorOptions(torch::kInt64).pinned_memory(device.is_cuda()));
      if (device.is_cuda()) slot.copied.emplace(device.type());
    }
  }

  // Inputs and targets ([B, T] on the device) of the sampler's next step.
  std::pair<torch::Tensor, torch::Tensor> next() {
    Slot& slot = slots_[turn_++ % slots_.size()];
    if (slot.copied) slot.copied->synchronize();  // at once if nothing was recorded yet
    const auto host = slot.host;
    sampler_.next(host[0].data_ptr<int64_t>(), host[1].data_ptr<int64_t>());
    if (!device_.is_cuda()) return {host[0], host[1]};
    const auto batch = host.to(device_, /*non_blocking=*/true);
    slot.copied->record(c10::impl::VirtualGuardImpl(device_.type()).getStream(device_));
    return {batch[0], batch[1]};
  }

 private:
  struct Slot {
    torch::Tensor host;
    std::optional<c10::Event> copied;  // CUDA: the last copy out of `host`
  };

  WindowSampler& sampler_;
  torch::Device device_;
  std::array<Slot, 2> slots_;
  size_t turn_ = 0;
};

// Reading a loss on the host waits for the device to finish the step. On CPU that
// costs nothing, so every step is checked for divergence; on CUDA only the steps
// whose loss is reported or that are followed by an evaluation or a checkpoint.
bool reads_loss_every_step(const torch::Device& device) {
  return !device.is_cuda();
}

// torch::nn::utils::clip_grad_norm_ returns the norm as a double: a host sync
// every step. The same clipping with the norm kept on the device.
void clip_gradients(const std::vector<torch::Tensor>& params, double max_norm) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return;
  torch::NoGradGuard no_grad;
  const auto total = torch::stack(at::_foreach_norm(grads, 2)).norm();
  const auto scale = torch::clamp(max_norm / (total + 1e-6), std::nullopt, 1.0);
  at::_foreach_mul_(grads, scale);
}

torch::Tensor lm_loss(const torch::Tensor& logits, const torch::Tensor& targets) {
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                              targets.reshape(-1));
}

class Trainer {
 public:
  Trainer(const RunSpec& spec, const TrainOptions& options, MetricSink& sink);
  TrainResult run();

 private:
  double evaluate(int64_t batches);
  void save_checkpoint(int64_t step, double elapsed);
  int64_t load_checkpoint();  // returns the step to resume from
  int64_t resume_from(const fs::path& path);
  void reset_model();
  void report_eval(int64_t step, double loss);
  TrainResult finish(TrainOutcome outcome, int64_t step, std::string message);

  RunSpec spec_;
  TrainOptions options_;
  MetricSink& sink_;
  torch::Device device_;
  DataMeta meta_;
  TokenFile train_file_, val_file_;
  WindowSampler train_data_, val_data_;
  MoeTransformer model_{nullptr};
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  Batch batch_;  // evaluation batches
  BatchFeeder feeder_;
  std::vector<torch::Tensor> params_;  // for clipping: listed once, not every step
  int64_t steps_ = 0, tokens_per_step_ = 0;
  double prior_elapsed_ = 0, last_val_loss_ = std::numeric_limits<double>::quiet_NaN();
  double last_train_loss_ = std::numeric_limits<double>::quiet_NaN();
  Clock::time_point start_ = Clock::now();
  int64_t resumed_from_ = 0;
  std::vector<std::string> notes_;
};

std::string data_file(const RunSpec& spec, const char* name) {
  if (spec.data_dir.empty())
    throw std::invalid_argument(
        "the run has no data_dir: run `moescale data prepare --source gcide --out DIR` and set it");
  return (fs::path(spec.data_dir) / name).string();
}

Trainer::Trainer(const RunSpec& spec, const TrainOptions& options, MetricSink& sink)
    : spec_(spec),
      options_(options),
      sink_(sink),
      device_(select_device(options.device)),
      meta_(read_data_meta(spec.data_dir)),
      train_file_(data_file(spec, "train.bin")),
      val_file_(data_file(spec, "val.bin")),
      train_data_(train_file_, spec.shape.seq_len, spec.train.batch_size, spec.train.seed),
      val_data_(val_file_, spec.shape.seq_len, spec.train.batch_size, validation_seed(spec.train)),
      batch_(make_batch(spec.train.batch_size, spec.shape.seq_len)),
      feeder_(train_data_, spec.train.batch_size, spec.shape.seq_len, device_) {
  spec_.shape = spec.shape.resolved();
  if (meta_.vocab_size > spec_.shape.vocab)
    throw std::invalid_argument(
        fmt::format("the data in {} has vocab_size {} but the model's vocab is {}: set vocab = {}",
                    spec.data_dir, meta_.vocab_size, spec_.shape.vocab, meta_.vocab_size));
  torch::set_num_threads(options.threads > 0
                             ? options.threads
                             : static_cast<int>(std::thread::hardware_concurrency()));
  reset_model();
  steps_ = spec_.steps();
  tokens_per_step_ = spec_.train.tokens_per_step(spec_.shape.seq_len);
}

double Trainer::evaluate(int64_t batches) {
  torch::NoGradGuard no_grad;
  AutocastGuard autocast(device_);
  model_->eval();
  double total = 0;
  batches = std::max<int64_t>(1, batches);
  for (int64_t i = 0; i < batches; ++i) {
    val_data_.fill(i, batch_.inputs.data_ptr<int64_t>(), batch_.targets.data_ptr<int64_t>());
    const auto out = model_->forward(batch_.inputs.to(device_));
    total += lm_loss(out.logits.to(torch::kFloat32), batch_.targets.to(device_)).item<double>();
  }
  model_->train();
  return total / static_cast<double>(batches);
}

void Trainer::report_eval(int64_t step, double loss) {
  last_val_loss_ = loss;
  EvalMetrics m{
      step, step * tokens_per_step_, loss,
      meta_.byte_level() ? loss / std::numbers::ln2 : std::numeric_limits<double>::quiet_NaN()};
  sink_.eval(m);
}

void Trainer::save_checkpoint(int64_t step, double elapsed) {
  if (options_.checkpoint_dir.empty()) return;
  const fs::path dir = options_.checkpoint_dir;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    throw std::system_error(ec, fmt::format("cannot create checkpoint folder {}", dir.string()));
  torch::serialize::OutputArchive archive, model_archive, optim_archive;
  model_->save(model_archive);
  optimizer_->save(optim_archive);
  archive.write("model", model_archive);
  archive.write("optimizer", optim_archive);
  archive.write("step", c10::IValue(step));  // also the data position: batches depend on it
  archive.write("elapsed", c10::IValue(elapsed));
  archive.write("run_key", c10::IValue(spec_.key()));
  archive.write("identity", c10::IValue(options_.identity));
  checkpoint::write(archive, dir / kCheckpointFile, dir / kPreviousCheckpointFile);
  sink_.checkpoint(step);
}

// A fresh model and optimiser, as at step 0: what is left after a checkpoint failed
// half-way through loading must not be trained on.
void Trainer::reset_model() {
  model_ = MoeTransformer(spec_.shape, spec_.train.seed);
  model_->to(device_);
  optimizer_ = make_optimizer(model_, spec_.train);
  params_ = model_->parameters();
}

// The newest intact checkpoint, then the one before it. One that fails its check or
// cannot be loaded is set aside (renamed, never deleted) with a note, and the next is
// tried: a damaged checkpoint costs the steps since the previous one, not the run.
int64_t Trainer::load_checkpoint() {
  if (options_.checkpoint_dir.empty()) return 0;
  const fs::path dir = options_.checkpoint_dir;
  checkpoint::remove_abandoned_temp_files(dir / kCheckpointFile);
  std::vector<std::string> set_aside;
  for (const char* name : {kCheckpointFile, kPreviousCheckpointFile}) {
    const fs::path path = dir / name;
    std::error_code ec;
    if (!fs::exists(fs::symlink_status(path, ec))) continue;
    try {
      const int64_t step = resume_from(path);
      if (!set_aside.empty())
        notes_.push_back(fmt::format("{}; resumed from step {} of {}", fmt::join(set_aside, "; "),
                                     step, path.string()));
      return step;
    } catch (const checkpoint::Damaged& e) {
      reset_model();
      set_aside.push_back(fmt::format("set aside {} as {}: it {}", path.string(),
                                      checkpoint::set_aside(path).filename().string(), e.what()));
    }
  }
  if (!set_aside.empty())
    notes_.push_back(fmt::format("{}; trained from step 0", fmt::join(set_aside, "; ")));
  return 0;
}

// Loads the checkpoint at `path` and returns its step (0 when it belongs to something
// else: it is ignored, with a note). Throws checkpoint::Damaged if it cannot be used.
int64_t Trainer::resume_from(const fs::path& path) {
  torch::serialize::InputArchive archive, model_archive, optim_archive;
  checkpoint::read(path, archive, device_);
  c10::IValue key, step, elapsed, identity;
  try {
    if (!options_.identity.empty()) {
      const bool has = archive.try_read("identity", identity) && identity.isString();
      if (!has || identity.toStringRef() != options_.identity) {
        notes_.push_back(fmt::format(
            "ignored {}: it was written for another store, run, spec or data set ({}); trained "
            "from step 0",
            path.string(), has ? identity.toStringRef() : "no identity"));
        return 0;
      }
    }
    archive.read("run_key", key);
    if (key.toStringRef() != spec_.key())
      throw std::runtime_error(
          fmt::format("{} belongs to run {}, not {}: use another checkpoint folder or delete it",
                      path.string(), key.toStringRef(), spec_.key()));
    archive.read("model", model_archive);
    archive.read("optimizer", optim_archive);
    model_->load(model_archive);
    optimizer_->load(optim_archive);
    archive.read("step", step);
    archive.read("elapsed", elapsed);
  } catch (const c10::Error& e) {
    throw checkpoint::Damaged(fmt::format("passed its checksum but does not fit this model: {}",
                                          checkpoint::first_line(e.what_without_backtrace())));
  }
  prior_elapsed_ = elapsed.toDouble();
  train_data_.set_position(step.toInt());
  resumed_from_ = step.toInt();
  return step.toInt();
}

TrainResult Trainer::finish(TrainOutcome outcome, int64_t step, std::string message) {
  TrainResult r;
  r.outcome = outcome;
  r.steps = step;
  r.tokens = step * tokens_per_step_;
  r.final_val_loss = last_val_loss_;
  r.final_train_loss = last_train_loss_;
  r.wall_seconds = prior_elapsed_ + seconds_since(start_);
  r.message = std::move(message);
  r.resumed_from = resumed_from_;
  r.notes = notes_;
  return r;
}

TrainResult Trainer::run() {
  const TrainSettings& t = spec_.train;
  const int64_t eval_every =
      t.eval_interval > 0 ? t.eval_interval : std::max<int64_t>(1, steps_ / 10);
  const int64_t ckpt_every = t.checkpoint_interval > 0 ? t.checkpoint_interval : eval_every;
  const int64_t log_every = std::max<int64_t>(1, t.log_interval);
  const int64_t first = load_checkpoint();
  if (first >= steps_) {
    report_eval(steps_, evaluate(t.final_eval_batches));
    return finish(TrainOutcome::done, steps_, "already complete");
  }
  model_->train();
  auto last_checkpoint = Clock::now();
  double window_seconds = 0;  // step time only: evals and checkpoints do not dilute tokens/s
  int64_t window_steps = 0;
  for (int64_t step = first; step < steps_; ++step) {
    if (options_.stop && options_.stop->load()) {
      save_checkpoint(step, prior_elapsed_ + seconds_since(start_));
      return finish(TrainOutcome::interrupted, step, fmt::format("stopped at step {}", step));
    }
    const auto step_start = Clock::now();
    const double lr = learning_rate(t, step, steps_);
    set_learning_rate(*optimizer_, lr);
    const auto [inputs, targets] = feeder_.next();
    optimizer_->zero_grad();
    ForwardOutput out;
    torch::Tensor ce;
    {
      AutocastGuard autocast(device_);
      out = model_->forward(inputs);
      ce = lm_loss(out.logits.to(torch::kFloat32), targets);
    }
    // Terms of weight 0 stay out of the graph: their backward would be wasted passes.
    auto loss = ce;
    if (t.aux_loss_weight > 0) loss = loss + t.aux_loss_weight * out.aux_loss;
    if (t.z_loss_weight > 0) loss = loss + t.z_loss_weight * out.z_loss;
    const int64_t done = step + 1;
    const bool reported = done % log_every == 0 || done == steps_;
    if (reads_loss_every_step(device_) || reported || done % eval_every == 0 ||
        done % ckpt_every == 0) {
      // One read back (a device sync on CUDA) for both values.
      const auto values =
          torch::stack({ce.detach(), loss.detach()}).to(torch::kCPU, torch::kDouble);
      const double loss_value = values[0].item<double>(), total_value = values[1].item<double>();
      if (!std::isfinite(loss_value) || !std::isfinite(total_value))
        return finish(
            TrainOutcome::diverged, step,
            fmt::format("loss became {} at step {} (lr {:.3g})", loss_value, step + 1, lr));
      last_train_loss_ = loss_value;
    }
    loss.backward();
    if (t.grad_clip > 0) clip_gradients(params_, t.grad_clip);
    optimizer_->step();
    ++window_steps;
    window_seconds += seconds_since(step_start);

    if (reported) {
      const double tokens = static_cast<double>(window_steps * tokens_per_step_);
      TrainStepMetrics m{done,
                         done * tokens_per_step_,
                         last_train_loss_,
                         lr,
                         out.aux_loss.item<double>(),
                         tokens / std::max(window_seconds, 1e-9),
                         prior_elapsed_ + seconds_since(start_),
                         model_->expert_load()};
      sink_.train_step(m);
      window_seconds = 0;
      window_steps = 0;
    }
    if (done == steps_)
      report_eval(done, evaluate(t.final_eval_batches));
    else if (done % eval_every == 0)
      report_eval(done, evaluate(t.eval_batches));
    // By default at most one interim checkpoint per kCheckpointSeconds: a short run
    // loses little when stopped, and would otherwise spend time writing them.
    const bool due =
        t.checkpoint_interval > 0 || seconds_since(last_checkpoint) >= kCheckpointSeconds;
    if ((done % ckpt_every == 0 && due) || done == steps_) {
      save_checkpoint(done, prior_elapsed_ + seconds_since(start_));
      last_checkpoint = Clock::now();
    }
  }
  return finish(TrainOutcome::done, steps_, "");
}

}  // namespace

uint64_t validation_seed(const TrainSettings& train) {
  return train.val_windows_per_seed ? train.seed ^ kValSeedSalt : kValSeedSalt;
}

std::string resolve_device(const std::string& name) {
  return select_device(name).str();
}

double measure_sgemm_flops(const std::string& device_name, int threads, double seconds) {
  const torch::Device device = select_device(device_name);
  if (device.is_cpu())
    torch::set_num_threads(threads > 0 ? threads
                                       : static_cast<int>(std::thread::hardware_concurrency()));
  const int64_t n = device.is_cpu() ? 1024 : 4096;
  torch::NoGradGuard no_grad;
  const auto a = torch::randn({n, n}, torch::TensorOptions().device(device));
  const auto b = torch::randn({n, n}, torch::TensorOptions().device(device));
  auto c = torch::mm(a, b);  // warm-up: thread pool, allocator, kernel selection
  auto sync = [&] {
    c.sum().item<float>();  // waits for the device
  };
  sync();
  const auto t0 = Clock::now();
  int64_t calls = 0;
  while (calls < 3 || seconds_since(t0) < seconds) {
    c = torch::mm(a, b);
    ++calls;
    if (!device.is_cpu() && calls % 16 == 0) sync();
  }
  sync();
  return 2.0 * static_cast<double>(n * n * n) * static_cast<double>(calls) / seconds_since(t0);
}

TrainResult train_run(const RunSpec& spec, const TrainOptions& options, MetricSink& sink) {
  keep_large_blocks_in_heap();
  try {
    Trainer trainer(spec, options, sink);
    return trainer.run();
  } catch (const c10::Error& e) {
    // LibTorch's messages carry a C++ stack trace: the store keeps one line.
    throw std::runtime_error(
        fmt::format("LibTorch: {}", checkpoint::first_line(e.what_without_backtrace())));
  }
}

}  // namespace moescale
