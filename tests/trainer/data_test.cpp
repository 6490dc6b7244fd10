// Token data: preparing sources, the Markov chain's entropy, and reading back.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tests/temp_dir.h"
#include "trainer/trainer.h"

namespace moescale {
namespace {
namespace fs = std::filesystem;

using moescale::testing::TempDir;

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<uint16_t> read_tokens(const fs::path& p) {
  const std::string b = read_bytes(p);
  std::vector<uint16_t> t(b.size() / 2);
  std::memcpy(t.data(), b.data(), t.size() * 2);
  return t;
}

std::string llmc_file(const std::vector<uint16_t>& tokens, int32_t version = 1) {
  std::vector<int32_t> header(256, 0);
  header[0] = 20240520;
  header[1] = version;
  header[2] = static_cast<int32_t>(tokens.size());
  std::string bytes(reinterpret_cast<const char*>(header.data()), header.size() * 4);
  bytes.append(reinterpret_cast<const char*>(tokens.data()), tokens.size() * 2);
  return bytes;
}

nlohmann::json read_meta(const TempDir& d) {
  return nlohmann::json::parse(read_bytes(d.path() / "meta.json"));
}

TEST(TrainerMarkovChain, EntropyRateMatchesHandComputedTwoStateChain) {
  // P = [[0.9, 0.1], [0.5, 0.5]]: stationary pi = (5/6, 1/6).
  MarkovChain c{1, 2, 2, {0, 1, 0, 1}, {0.9, 0.1, 0.5, 0.5}};
  const double h0 = -(0.9 * std::log(0.9) + 0.1 * std::log(0.1));
  const double expected = 5.0 / 6.0 * h0 + 1.0 / 6.0 * std::log(2.0);
  EXPECT_NEAR(entropy_rate(c), expected, 1e-10);
}

TEST(TrainerMarkovChain, EntropyRateOfSecondOrderChainUsesPairContexts) {
  // Order 2 over {0,1}, contexts (0,0),(0,1),(1,0),(1,1) = 0..3: (1,1) always emits 0,
  // the others are fair coins. On pairs: pi0 = .5pi0 + .5pi2, pi1 = .5pi0 + .5pi2,
  // pi2 = .5pi1 + pi3, pi3 = .5pi1, so pi = (2,2,2,1)/7 and H = 6/7 ln 2.
  MarkovChain c{2, 2, 2, {0, 1, 0, 1, 0, 1, 0, 1}, {0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 1.0, 0.0}};
  EXPECT_NEAR(entropy_rate(c), 6.0 / 7.0 * std::log(2.0), 1e-10);
}

TEST(TrainerMarkovChain, SampleEmpiricalEntropyMatchesExactRate) {
  const MarkovOptions o{2, 6, 3, 400000};
  const MarkovChain c = make_markov_chain(o, 7);
  const auto tokens = sample_markov(c, o.tokens, 11);
  std::map<std::pair<int, int>, std::map<int, double>> counts;
  for (size_t i = 2; i < tokens.size(); ++i) counts[{tokens[i - 2], tokens[i - 1]}][tokens[i]] += 1;
  double h = 0, n = static_cast<double>(tokens.size() - 2);
  for (const auto& [ctx, next] : counts) {
    double total = 0;
    for (const auto& [t, k] : next) total += k;
    for (const auto& [t, k] : next) h -= k / n * std::log(k / total);
  }
  EXPECT_NEAR(h, entropy_rate(c), 0.01);
  EXPECT_EQ(counts.size(), 36u) << "the embedded de Bruijn cycle makes every context reachable";
}

TEST(TrainerMarkovChain, RejectsBadOptions) {
  EXPECT_THROW(make_markov_chain({1, 4, 5, 100}, 1), std::invalid_argument);
  EXPECT_THROW(make_markov_chain({0, 4, 2, 100}, 1), std::invalid_argument);
  EXPECT_THROW(make_markov_chain({8, 256, 2, 100}, 1), std::invalid_argument);
}

TEST(TrainerPrepareData, MarkovWritesTokensAndExactEntropy) {
  TempDir d;
  DataPrepareOptions o;
  o.source = "synthetic:markov:order=1,vocab=8,branching=2,tokens=10000";
  o.out_dir = d.path().string();
  o.val_fraction = 0.1;
  o.seed = 3;
  const DataSummary s = prepare_data(o);
  EXPECT_EQ(s.train_tokens, 9000);
  EXPECT_EQ(s.val_tokens, 1000);
  EXPECT_EQ(s.vocab_size, 8);
  const double h = entropy_rate(make_markov_chain({1, 8, 2, 10000}, 3));
  EXPECT_DOUBLE_EQ(s.entropy_rate, h);
  const auto meta = read_meta(d);
  EXPECT_DOUBLE_EQ(meta["entropy_rate"].get<double>(), h);
  EXPECT_EQ(meta["vocab_size"], 8);
  EXPECT_EQ(meta["tokenizer"], "markov");
  const auto train = read_tokens(d.path() / "train.bin");
  ASSERT_EQ(train.size(), 9000u);
  for (auto t : train) ASSERT_LT(t, 8);
  EXPECT_FALSE(fs::exists(d.path() / "train.bin.tmp"));
}

TEST(TrainerPrepareData, MarkovFlagsAndInlineFormAgree) {
  TempDir a, b;
  DataPrepareOptions o;
  o.source = "synthetic:markov";
  o.markov = {2, 5, 3, 5000};
  o.out_dir = a.path().string();
  prepare_data(o);
  o.source = "synthetic:markov:order=2,vocab=5,branching=3,tokens=5000";
  o.markov = {};
  o.out_dir = b.path().string();
  prepare_data(o);
  EXPECT_EQ(read_bytes(a.path() / "train.bin"), read_bytes(b.path() / "train.bin"));
  o.source = "synthetic:markov:order=2,colour=5";
  EXPECT_THROW(prepare_data(o), std::invalid_argument);
}

TEST(TrainerPrepareData, FileSourceRoundTripsBytes) {
  TempDir src, out;
  std::string text;
  std::mt19937 rng(5);
  for (int i = 0; i < 5000; ++i) text.push_back(static_cast<char>(rng() % 256));
  write_bytes(src.path() / "a.txt", text);
  DataPrepareOptions o;
  o.source = "file:" + src.str("a.txt");
  o.out_dir = out.path().string();
  o.val_fraction = 0.2;
  const DataSummary s = prepare_data(o);
  EXPECT_EQ(s.vocab_size, 256);
  EXPECT_TRUE(std::isnan(s.entropy_rate));
  EXPECT_EQ(s.val_tokens, 1000);
  std::string back;
  for (const char* name : {"train.bin", "val.bin"})
    for (auto t : read_tokens(out.path() / name)) back.push_back(static_cast<char>(t));
  EXPECT_EQ(back, text);
  EXPECT_TRUE(read_meta(out)["entropy_rate"].is_null());
  EXPECT_EQ(read_meta(out)["tokenizer"], "byte");
}

TEST(TrainerPrepareData, FileSourceReadsAFolderInNameOrder) {
  TempDir src, out;
  fs::create_directories(src.path() / "sub");
  write_bytes(src.path() / "b.txt", "second ");
  write_bytes(src.path() / "a.txt", "first ");
  write_bytes(src.path() / "sub" / "c.txt", "third");
  DataPrepareOptions o;
  o.source = "file:" + src.path().string();
  o.out_dir = out.path().string();
  o.val_fraction = 0;
  prepare_data(o);
  std::string back;
  for (auto t : read_tokens(out.path() / "train.bin")) back.push_back(static_cast<char>(t));
  EXPECT_EQ(back, "first second third");
}

TEST(TrainerPrepareData, LlmcShardsKeepTheirTrainValSplit) {
  TempDir src, out;
  const std::vector<uint16_t> train{1, 2, 3, 50000, 7}, val{9, 8};
  write_bytes(src.path() / "data_train_000.bin", llmc_file(train));
  write_bytes(src.path() / "data_val_000.bin", llmc_file(val));
  DataPrepareOptions o;
  o.source = "llmc:" + src.path().string();
  o.out_dir = out.path().string();
  const DataSummary s = prepare_data(o);
  EXPECT_EQ(read_tokens(out.path() / "train.bin"), train);
  EXPECT_EQ(read_tokens(out.path() / "val.bin"), val);
  EXPECT_EQ(s.vocab_size, 50001);
}

TEST(TrainerPrepareData, LlmcRejectsOtherVersionsAndTruncatedShards) {
  TempDir src, out;
  DataPrepareOptions o;
  o.out_dir = out.path().string();
  write_bytes(src.path() / "v2.bin", llmc_file({1, 2}, 2));
  o.source = "llmc:" + src.str("v2.bin");
  EXPECT_THROW(prepare_data(o), std::runtime_error);
  std::string cut = llmc_file({1, 2, 3});
  cut.resize(cut.size() - 2);
  write_bytes(src.path() / "cut.bin", cut);
  o.source = "llmc:" + src.str("cut.bin");
  EXPECT_THROW(prepare_data(o), std::runtime_error);
}

TEST(TrainerTokenFile, ReadsRawAndLlmcHeadedFiles) {
  TempDir d;
  const std::vector<uint16_t> tokens{5, 6, 7, 65535};
  write_bytes(d.path() / "raw.bin", std::string(reinterpret_cast<const char*>(tokens.data()), 8));
  write_bytes(d.path() / "llmc.bin", llmc_file(tokens));
  for (const char* name : {"raw.bin", "llmc.bin"}) {
    TokenFile f(d.str(name));
    ASSERT_EQ(f.size(), 4) << name;
    EXPECT_EQ(std::vector<uint16_t>(f.data(), f.data() + 4), tokens) << name;
  }
  EXPECT_THROW(TokenFile(d.str("missing.bin")), std::runtime_error);
}

TEST(TrainerWindowSampler, IsReproducibleFromSeedAndStep) {
  TempDir d;
  std::vector<uint16_t> tokens(1000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint16_t>(i);
  write_bytes(d.path() / "t.bin", std::string(reinterpret_cast<const char*>(tokens.data()), 2000));
  TokenFile f(d.str("t.bin"));
  WindowSampler a(f, 16, 4, 9), b(f, 16, 4, 9);
  std::vector<int64_t> xa(64), ya(64), xb(64), yb(64);
  for (int s = 0; s < 5; ++s) a.next(xa.data(), ya.data());
  EXPECT_EQ(a.position(), 5);
  b.set_position(4);
  b.next(xb.data(), yb.data());
  EXPECT_EQ(xa, xb);
  EXPECT_EQ(ya, yb);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(ya[i], xa[i] + 1) << "targets are inputs shifted by one";
  a.fill(5, xb.data(), yb.data());
  EXPECT_NE(xa, xb);
  EXPECT_THROW(WindowSampler(f, 1000, 1, 1), std::runtime_error);
}

TEST(TrainerReadDataMeta, MissingFolderTellsHowToPrepare) {
  try {
    read_data_meta("/nonexistent/moescale-data");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("moescale data prepare"), std::string::npos) << e.what();
  }
}

TEST(TrainerPrepareData, GcideGivesEnglishWithoutMarkup) {
  if (!fs::exists("/usr/share/dictd/gcide.dict.dz"))
    GTEST_SKIP() << "dict-gcide is not installed (scripts/setup.sh installs it)";
  TempDir out;
  DataPrepareOptions o;
  o.out_dir = out.path().string();
  o.max_tokens = 2'000'000;
  const DataSummary s = prepare_data(o);
  EXPECT_EQ(s.train_tokens + s.val_tokens, 2'000'000);
  EXPECT_EQ(read_meta(out)["tokenizer"], "byte");
  std::string text;
  for (auto t : read_tokens(out.path() / "train.bin")) text.push_back(static_cast<char>(t));
  for (const char* markup :
       {"\\", "{", "}", "[1913 Webster]", "[WordNet", "<", "00-database", "  ", "\t"})
    EXPECT_EQ(text.find(markup), std::string::npos) << "markup left: " << markup;
  size_t the = 0;
  for (size_t p = text.find(" the "); p != std::string::npos; p = text.find(" the ", p + 1)) ++the;
  EXPECT_GT(the, 5000u);
  EXPECT_NE(text.find("Abdomen"), std::string::npos);
  size_t letters = 0;
  for (char c : text) letters += std::isalpha(static_cast<unsigned char>(c)) ? 1 : 0;
  EXPECT_GT(static_cast<double>(letters) / text.size(), 0.7);
}

}  // namespace
}  // namespace moescale
