// CSV import: quoting, column mapping, per-row validation (all or nothing).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "fitting/fitting.h"

namespace moescale::fitting {
namespace {

using ::testing::HasSubstr;

const ColumnMapping kChinchilla = {{"N", "Model Size"}, {"C", "Training FLOP"}, {"loss", "loss"}};

std::string error_of(std::string_view csv, const ColumnMapping& m = kChinchilla) {
  try {
    parse_observations_csv(csv, m, "chinchilla.csv");
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "no error";
}

TEST(Csv, QuotedFieldsAndComputeMapping) {
  const std::string csv =
      "name,\"Model Size\",Training FLOP,loss\r\n"
      "\"small, \"\"tiny\"\"\",1e6,6e12,3.5\r\n"
      "\n"
      "\"multi\nline\",2e6,1.2e13,\" 3.25 \"\n";
  const auto obs = parse_observations_csv(csv, kChinchilla, "runs.csv");
  ASSERT_EQ(obs.size(), 2u);
  EXPECT_DOUBLE_EQ(obs[0].n_active, 1e6);
  EXPECT_DOUBLE_EQ(obs[0].tokens, tokens_for_compute(6e12, 1e6));
  EXPECT_DOUBLE_EQ(obs[0].n_total, 1e6);
  EXPECT_DOUBLE_EQ(obs[0].experts, 1);
  EXPECT_DOUBLE_EQ(obs[1].loss, 3.25);
  EXPECT_EQ(obs[0].where, "runs.csv row 2");
  EXPECT_EQ(obs[1].where, "runs.csv row 4");
}

TEST(Csv, AllColumnsMapped) {
  const std::string csv = "n,nt,d,e,k,g,l\n1,8,3,8,2,4,2.5\n";
  const auto obs = parse_observations_csv(
      csv,
      {{"N", "n"}, {"NT", "nt"}, {"D", "d"}, {"E", "e"}, {"K", "k"}, {"G", "g"}, {"loss", "l"}},
      "x.csv");
  ASSERT_EQ(obs.size(), 1u);
  EXPECT_DOUBLE_EQ(obs[0].n_total, 8);
  EXPECT_DOUBLE_EQ(obs[0].tokens, 3);
  EXPECT_DOUBLE_EQ(obs[0].experts, 8);
  EXPECT_DOUBLE_EQ(obs[0].top_k, 2);
  EXPECT_DOUBLE_EQ(obs[0].granularity, 4);
}

TEST(Csv, BadNumberNamesRowAndColumn) {
  EXPECT_EQ(error_of("Model Size,Training FLOP,loss\n1e6,6e12,3\n1e6,6e12,abc\n"),
            "chinchilla.csv row 3: loss \"abc\" is not a number");
  EXPECT_EQ(error_of("Model Size,Training FLOP,loss\n1e6,,3\n"),
            "chinchilla.csv row 2: C \"\" is not a number");
  EXPECT_THAT(error_of("Model Size,Training FLOP,loss\n1e6,6e12,nan\n"),
              HasSubstr("row 2: loss \"nan\" is not finite"));
}

TEST(Csv, NonPositiveValue) {
  EXPECT_THAT(error_of("Model Size,Training FLOP,loss\n1e6,6e12,3\n-5,6e12,3\n"),
              HasSubstr("chinchilla.csv row 3: N is -5, but must be positive"));
  EXPECT_THAT(error_of("Model Size,Training FLOP,loss\n1e6,6e12,0\n"),
              HasSubstr("row 2: loss is 0, but must be positive"));
}

TEST(Csv, MissingColumnAndBadMapping) {
  EXPECT_THAT(error_of("Size,Training FLOP,loss\n1,2,3\n"),
              HasSubstr("column \"Model Size\" (mapped to N) is not in the header; columns are: "
                        "\"Size\", \"Training FLOP\", \"loss\""));
  EXPECT_THAT(error_of("a\n1\n", {{"N", "a"}, {"loss", "a"}}), HasSubstr("one of D"));
  EXPECT_THAT(error_of("a\n1\n", {{"N", "a"}, {"D", "a"}, {"C", "a"}, {"loss", "a"}}),
              HasSubstr("one of D"));
  EXPECT_THAT(error_of("a\n1\n", {{"N", "a"}, {"D", "a"}, {"loss", "a"}, {"tokens", "a"}}),
              HasSubstr("unknown key \"tokens\""));
  EXPECT_THAT(error_of("Model Size,Training FLOP,loss\n1,2\n"), HasSubstr("row 2: 2 fields"));
  EXPECT_THAT(error_of("Model Size,Training FLOP,loss\n\"1,2,3\n"), HasSubstr("not closed"));
  EXPECT_THAT(error_of("Model Size,Training FLOP,loss\n"), HasSubstr("no data rows"));
}

TEST(Csv, ReferenceFileAndExcludeTopLoss) {
  const auto all = read_observations_csv(
      MOESCALE_SHARED_DIR "/data/chinchilla_epoch_svg_extracted.csv", kChinchilla);
  ASSERT_EQ(all.size(), 245u);
  const auto kept = exclude_top_loss(all, 5);
  ASSERT_EQ(kept.size(), 240u);
  double max_all = 0, max_kept = 0;
  for (const auto& o : all) max_all = std::max(max_all, o.loss);
  for (const auto& o : kept) max_kept = std::max(max_kept, o.loss);
  EXPECT_LT(max_kept, max_all);
  int above = 0;
  for (const auto& o : all) above += o.loss > max_kept;
  EXPECT_EQ(above, 5);
  EXPECT_THROW(exclude_top_loss(all, 245), std::invalid_argument);
  EXPECT_THAT([] { read_observations_csv("/nonexistent.csv", kChinchilla); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("cannot open")));
}

TEST(Observations, ValidationNamesThePoint) {
  std::vector<Observation> obs(3,
                               Observation{.n_active = 1e6, .tokens = 1e8, .loss = 3, .where = ""});
  obs[1].tokens = std::numeric_limits<double>::infinity();
  EXPECT_THAT([&] { validate_observations(obs); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("point 2: D is inf")));
  obs[1].tokens = 1e8;
  obs[2].where = "run 7";
  obs[2].experts = 0;
  EXPECT_THAT([&] { validate_observations(obs); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("run 7: E is 0")));
}

}  // namespace
}  // namespace moescale::fitting
