#include <gtest/gtest.h>

#include "planner/planner.h"
#include "tests/planner/config_error.h"

namespace moescale {
namespace {

const char* kValid = R"(
[sweep]
name = "s"
budgets = [1e11, 3e11]
experts = [1, 8]
routers = ["topk", "rmoe"]
[model]
top_k = 2
[train]
batch_size = 8
)";

TEST(Config, ParsesAValidConfig) {
  const SweepConfig c = parse_sweep_config(kValid, "cfg.toml");
  EXPECT_EQ(c.name, "s");
  EXPECT_EQ(c.budgets, (std::vector<double>{1e11, 3e11}));
  EXPECT_EQ(c.routers, (std::vector<Router>{Router::topk, Router::rmoe}));
  EXPECT_EQ(c.train.batch_size, 8);
  EXPECT_EQ(c.base.top_k, 2);
}

TEST(Config, RenormalizeAndReplicates) {
  const SweepConfig defaults = parse_sweep_config(kValid, "cfg.toml");
  EXPECT_FALSE(defaults.base.renormalize.has_value());
  EXPECT_TRUE(defaults.base.renormalizes()) << "top_k = 2 renormalises by default";
  EXPECT_EQ(defaults.replicates, 1);
  std::string text = kValid;
  text.replace(text.find("top_k = 2"), 9, "top_k = 1\nrenormalize = true");
  text.replace(text.find("experts ="), 0, "replicates = 2\nreplicate_budgets = [3e11]\n");
  const SweepConfig c = parse_sweep_config(text, "cfg.toml");
  EXPECT_TRUE(c.base.renormalizes());
  EXPECT_EQ(c.replicates, 2);
  EXPECT_EQ(c.replicate_budgets, (std::vector<double>{3e11}));
  text.replace(text.find("[3e11]"), 6, "[5e11]");
  EXPECT_NE(config_error(text).find("sweep.replicate_budgets in cfg.toml"), std::string::npos);
  ModelShape k1;
  EXPECT_FALSE(k1.renormalizes()) << "top-1 scales by the router probability by default";
}

// Every shape a shipped config plans is one the trainer builds: heads even for rotary
// positions (a d = 44 model once got heads 11 wide), whole heads, kv groups that divide.
TEST(Config, ShippedConfigsPlanShapesTheTrainerBuilds) {
  for (const char* path : {"/configs/tiny-cpu.toml", "/examples/gpu-sweep.toml"}) {
    SweepConfig c = load_sweep_config(std::string(MOESCALE_SOURCE_DIR) + path);
    // A fitted rule needs its tuning sweep's store; the shapes do not depend on the rate.
    if (c.lr_rule.name == "fit") c.lr_rule = LrRule{};
    const auto runs = plan_sweep(c);
    EXPECT_FALSE(runs.empty()) << path;
    for (const PlannedRun& r : runs) {
      const ModelShape& s = r.spec.shape;
      EXPECT_EQ(s.head_dim % 2, 0) << path << " " << r.spec.key();
      EXPECT_EQ(s.n_heads * s.head_dim, s.d_model) << path << " " << r.spec.key();
      EXPECT_EQ(s.n_heads % s.n_kv_heads, 0) << path << " " << r.spec.key();
    }
  }
}

struct BadCase {
  std::string from, to, expect;
};

TEST(Config, ErrorsNameTheKeyAndTheFile) {
  const std::vector<BadCase> cases{
      {"batch_size = 8", "batch_sise = 8", "train.batch_sise in cfg.toml: unknown key"},
      {"batch_size = 8", "batch_size = \"8\"", "train.batch_size in cfg.toml: expected an integer"},
      {"budgets = [1e11, 3e11]", "budgets = [-1e11]",
       "sweep.budgets in cfg.toml: values must be positive"},
      {"top_k = 2", "top_k = 9", "model.top_k in cfg.toml: top_k = 9 exceeds experts = 8"},
      {"routers = [\"topk\", \"rmoe\"]", "routers = [\"sinkhorn\"]",
       "sweep.routers in cfg.toml: unknown router"},
      {"[train]", "[trian]", "trian in cfg.toml: unknown section"},
      {"name = \"s\"", "name = \"s", "cfg.toml:3:"},
      {"budgets = [1e11, 3e11]", "", "sweep.budgets in cfg.toml: an isoflop sweep needs budgets"},
      {"name = \"s\"", "name = \"s\"\ndesign = \"random\"", "sweep.design in cfg.toml: 'random'"},
      {"name = \"s\"", "name = \"s\"\noptimum_exponent = 1.0",
       "sweep.optimum_exponent in cfg.toml: must be below 1"},
      {"name = \"s\"", "name = \"s\"\noptimum_exponent = 0", "sweep.optimum_exponent in cfg.toml"},
      {"top_k = 2", "top_k = 2\nhead_dim = 11", "model.head_dim in cfg.toml: must be even"},
  };
  for (const BadCase& c : cases) {
    std::string text = kValid;
    text.replace(text.find(c.from), c.from.size(), c.to);
    const std::string err = config_error(text);
    EXPECT_NE(err.find(c.expect), std::string::npos) << "got: " << err << "\nwant: " << c.expect;
  }
  EXPECT_NE(config_error(std::string(kValid) + "[model]\nvocab = 0\n").find("cfg.toml"),
            std::string::npos);
}

TEST(Config, MissingFileIsAClearError) {
  EXPECT_THROW(load_sweep_config("/nonexistent/sweep.toml"), std::invalid_argument);
}

}  // namespace
}  // namespace moescale
