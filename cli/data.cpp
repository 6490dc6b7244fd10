// moescale data prepare: turn a text corpus, token shards or a synthetic source
// into train.bin / val.bin / meta.json for the trainer.
#include <fmt/format.h>

#include <cmath>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "trainer/trainer.h"

namespace moescale::cli {
namespace {

struct DataArgs {
  DataPrepareOptions options;
  bool json = false, quiet = false;
};

void print_summary(const DataSummary& s) {
  fmt::print("folder       {}\n", s.out_dir);
  fmt::print("source       {}\n", s.source);
  fmt::print("tokenizer    {} (vocab {})\n", s.tokenizer, s.vocab_size);
  fmt::print("train        {:>14L} tokens  {:>7}\n", s.train_tokens,
             human_count(static_cast<double>(s.train_tokens)));
  fmt::print("val          {:>14L} tokens  {:>7}\n", s.val_tokens,
             human_count(static_cast<double>(s.val_tokens)));
  if (std::isnan(s.entropy_rate))
    fmt::print("entropy rate unknown\n");
  else
    fmt::print("entropy rate {:.6f} nats/token ({:.6f} bits)\n", s.entropy_rate,
               s.entropy_rate / std::log(2.0));
}

nlohmann::json summary_json(const DataSummary& s) {
  return {{"out_dir", s.out_dir},
          {"source", s.source},
          {"tokenizer", s.tokenizer},
          {"vocab_size", s.vocab_size},
          {"train_tokens", s.train_tokens},
          {"val_tokens", s.val_tokens},
          {"entropy_rate",
           std::isnan(s.entropy_rate) ? nlohmann::json(nullptr) : nlohmann::json(s.entropy_rate)}};
}

void add_prepare(CLI::App& data) {
  auto args = std::make_shared<DataArgs>();
  DataPrepareOptions& o = args->options;
  CLI::App* cmd = data.add_subcommand(
      "prepare",
      "Write DIR/train.bin and DIR/val.bin (little-endian uint16 tokens, nanoGPT layout) and "
      "DIR/meta.json.\n"
      "Sources:\n"
      "  gcide              GNU Collaborative International Dictionary of English (Debian\n"
      "                     dict-gcide), markup stripped; byte tokens, vocab 256 (default)\n"
      "  file:PATH          a text file or a folder of them (name order); byte tokens\n"
      "  llmc:PATH          llm.c token shards (magic 20240520) or raw uint16 .bin files;\n"
      "                     files named *val* become val.bin\n"
      "  synthetic:markov   a random sparse Markov chain (--order --vocab --branching\n"
      "                     --tokens, or inline synthetic:markov:order=1,vocab=16,...);\n"
      "                     its exact entropy rate goes into meta.json");
  cmd->add_option("--source", o.source,
                  "gcide | file:PATH | llmc:PATH | synthetic:markov[:k=v,...]")
      ->capture_default_str();
  cmd->add_option("--out", o.out_dir, "folder to write")->required();
  cmd->add_option("--val-fraction", o.val_fraction,
                  "share of the stream's tail that becomes val.bin (llmc: unless *val* files)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.99));
  cmd->add_option("--seed", o.seed, "seed of the synthetic source")->capture_default_str();
  cmd->add_option("--max-tokens", o.max_tokens,
                  "cut text and shard sources after this many (0: all)")
      ->capture_default_str();
  cmd->add_option("--order", o.markov.order, "markov: tokens of context")->capture_default_str();
  cmd->add_option("--vocab", o.markov.vocab, "markov: vocabulary size")->capture_default_str();
  cmd->add_option("--branching", o.markov.branching, "markov: successors per context")
      ->capture_default_str();
  cmd->add_option("--tokens", o.markov.tokens, "markov: tokens to sample (train + val)")
      ->capture_default_str();
  cmd->add_flag("--json", args->json, "print the summary as JSON");
  cmd->add_flag("-q,--quiet", args->quiet, "no progress");
  cmd->callback([args] {
    std::function<void(std::string_view)> progress;
    if (!args->quiet)
      progress = [](std::string_view line) { fmt::print(stderr, "data: {}\n", line); };
    const DataSummary s = prepare_data(args->options, progress);
    if (args->json)
      fmt::print("{}\n", summary_json(s).dump(2));
    else
      print_summary(s);
  });
}

}  // namespace

void add_data_command(CLI::App& app) {
  CLI::App* data = app.add_subcommand("data", "Prepare token data sets for training.");
  data->require_subcommand(1);
  add_prepare(*data);
}

}  // namespace moescale::cli
