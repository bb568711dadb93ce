// The optimizer section: Levanter's keys and defaults, explicit errors for what is not implemented, and the
// weight-decay mask (cases from Levanter's tests/test_weight_decay_mask.py on its GPT-2 parameter paths).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "levanter/optim/config.h"
#include "optim_testing.h"

using namespace levanter::optim;
using levanter::config::ConfigError;
using ::testing::HasSubstr;

namespace {

OptimizerConfig parse(const std::string& yaml) {
  return levanter::config::parse_string<OptimizerConfig>(yaml, "opt.yaml");
}

std::string error_of(const std::string& yaml) {
  try {
    parse(yaml);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

// Paths that decay.
std::vector<std::string> decayed(const OptimizerConfig& c, const std::vector<haliax::nn::ParamInfo>& infos) {
  std::vector<bool> mask = weight_decay_mask(c, infos);
  std::vector<std::string> out;
  for (size_t i = 0; i < infos.size(); ++i) {
    if (mask[i]) out.push_back(infos[i].path);
  }
  return out;
}

const std::vector<std::string> kLinearWeights = {
    "transformer.blocks.attn.c_attn.weight", "transformer.blocks.attn.c_proj.weight",
    "transformer.blocks.mlp.c_fc.weight", "transformer.blocks.mlp.c_proj.weight"};

std::vector<std::string> with_embeddings() {
  std::vector<std::string> v = {"embeddings.token_embeddings.weight", "embeddings.position_embeddings.weight"};
  v.insert(v.end(), kLinearWeights.begin(), kLinearWeights.end());
  return v;
}

}  // namespace

TEST(OptimConfig, DefaultsAreLevanters) {
  OptimizerConfig c = parse("{}");
  EXPECT_EQ(c.type.name, "adam");
  EXPECT_EQ(c.learning_rate, 6e-4);
  EXPECT_EQ(c.weight_decay, 0.1);
  EXPECT_EQ(c.min_lr_ratio, 0.1);
  EXPECT_EQ(c.warmup, 0.01);
  EXPECT_FALSE(c.decay.has_value());
  EXPECT_EQ(c.rewarmup, 0.0);
  EXPECT_EQ(c.lr_schedule.name, "cosine");
  EXPECT_EQ(c.beta1, 0.9);
  EXPECT_EQ(c.beta2, 0.95);
  EXPECT_EQ(c.epsilon, 1e-8);
  ASSERT_TRUE(c.max_grad_norm.has_value());
  EXPECT_EQ(*c.max_grad_norm, 1.0);
  EXPECT_FALSE(c.nesterov);
  EXPECT_TRUE(c.weight_decay_modules.is_none());
  EXPECT_FALSE(c.default_weight_decay_mask.has_value());
}

TEST(OptimConfig, ParsesLevanterConfigsAndRoundTrips) {
  // config/gpt2_small.yaml's optimizer section, plus the other keys.
  OptimizerConfig c = parse(
      "type: adamw\nlearning_rate: 6E-4\nweight_decay: 0.1\nmin_lr_ratio: 0.1\nwarmup: 1000\ndecay: 0.2\n"
      "lr_schedule: linear\nbeta2: 0.98\nmax_grad_norm: null\nweight_decay_modules: [c_attn, c_fc]\n"
      "default_weight_decay_mask: true\nskip_bad_steps: false\nupdate_rms_clipping: null\nnesterov: true\n");
  EXPECT_EQ(c.type.name, "adam");
  EXPECT_EQ(c.warmup, 1000);
  EXPECT_EQ(*c.decay, 0.2);
  EXPECT_EQ(c.lr_schedule.name, "linear");
  EXPECT_FALSE(c.max_grad_norm.has_value());
  EXPECT_EQ(c.weight_decay_modules.kind, WeightDecayModules::Kind::kSubstrings);
  EXPECT_EQ(c.weight_decay_modules.substrings, (std::vector<std::string>{"c_attn", "c_fc"}));
  EXPECT_TRUE(c.nesterov);
  std::string yaml = levanter::config::dump(levanter::config::to_yaml_value(c));
  OptimizerConfig back = parse(yaml);
  EXPECT_EQ(levanter::config::dump(levanter::config::to_yaml_value(back)), yaml);
  EXPECT_EQ(back.weight_decay_modules.substrings, c.weight_decay_modules.substrings);

  OptimizerConfig r = parse("weight_decay_modules: '.*attn.*weight'\nlr_schedule: {type: inv_sqrt, timescale: 500}\n");
  EXPECT_EQ(r.weight_decay_modules.kind, WeightDecayModules::Kind::kRegex);
  EXPECT_EQ(r.lr_schedule.timescale, 500);
  std::string ryaml = levanter::config::dump(levanter::config::to_yaml_value(r));
  EXPECT_EQ(levanter::config::dump(levanter::config::to_yaml_value(parse(ryaml))), ryaml);
}

TEST(OptimConfig, UnsupportedTypesAndKeysAreErrors) {
  std::string e = error_of("type: muon\n");
  EXPECT_THAT(e, HasSubstr("opt.yaml:1: type: unsupported optimizer type 'muon'"));
  EXPECT_THAT(e, HasSubstr("implements 'adam' (AdamW, also spelled 'adamw'), 'lion', 'sophia-h' and 'sophia-g'"));
  EXPECT_EQ(error_of("type: lion\n"), "(no error)");
  EXPECT_THAT(error_of("type: lion\nnesterov: true\n"), HasSubstr("optimizer.nesterov: is an Adam key"));
  EXPECT_THAT(error_of("update_rms_clipping: 1.0\n"), HasSubstr("update_rms_clipping: not supported"));
  EXPECT_THAT(error_of("clip_update_norm: {sigma_factor: 2.0}\n"), HasSubstr("clip_update_norm: not supported"));
  EXPECT_THAT(error_of("skip_bad_steps: true\n"), HasSubstr("skip_bad_steps: not supported"));
  EXPECT_THAT(error_of("skip_bad_steps: 128\n"), HasSubstr("skip_bad_steps: not supported"));
  EXPECT_THAT(error_of("lr_schedule: power\n"), HasSubstr("'power' (Shen et al. 2024) is not implemented"));
  EXPECT_THAT(error_of("lr_schedule: cosin\n"), HasSubstr("did you mean 'cosine'"));
  EXPECT_THAT(error_of("lr_schedule: {type: linear, exponent: 2}\n"), HasSubstr("unknown key for lr_schedule"));
  EXPECT_THAT(error_of("warmup_steps: 100\n"), HasSubstr("did you mean 'warmup'"));
  EXPECT_THAT(error_of("warmup: 1.5\n"), HasSubstr("optimizer.warmup: invalid value 1.5"));
  EXPECT_THAT(error_of("beta2: 1.0\n"), HasSubstr("optimizer.beta2"));
  EXPECT_THAT(error_of("weight_decay_modules: '(unclosed'\n"), HasSubstr("invalid regular expression"));
  EXPECT_THAT(error_of("cycles: 0\n"), HasSubstr("optimizer.cycles"));
}

TEST(OptimConfig, DescribeListsEveryLevanterKey) {
  std::vector<levanter::config::DocRow> rows;
  levanter::config::describe(rows, "optimizer", OptimizerConfig{});
  std::set<std::string> keys;
  for (const auto& r : rows) keys.insert(r.key);
  // Levanter's OptimizerConfig and AdamConfig fields (src/levanter/optim/config.py), plus the choice key.
  for (const char* k : {"type",
                        "learning_rate",
                        "weight_decay",
                        "min_lr_ratio",
                        "warmup",
                        "decay",
                        "rewarmup",
                        "cooldown",
                        "cycle_length",
                        "cycles",
                        "lr_schedule",
                        "haps",
                        "weight_decay_modules",
                        "default_weight_decay_mask",
                        "beta1",
                        "beta2",
                        "epsilon",
                        "max_grad_norm",
                        "nesterov",
                        "update_rms_clipping",
                        "clip_update_norm",
                        "skip_bad_steps",
                        "adamc_weight_decay"}) {
    EXPECT_TRUE(keys.count(std::string("optimizer.") + k)) << k;
  }
}

// --- the mask -----------------------------------------------------------------------------------------------

TEST(OptimMask, DefaultDecaysLinearWeightsOnly) {
  auto infos = optim_testing::gpt2_like_infos();
  EXPECT_EQ(decayed(parse("{}"), infos), kLinearWeights);
  EXPECT_EQ(decayed(parse("default_weight_decay_mask: true\n"), infos), kLinearWeights);
  // A parameter of no known kind decays by default, as in Levanter (only norms, embeddings, biases are exempt).
  infos.push_back({"transformer.blocks.attn.scale", haliax::nn::ParamKind::kOther});
  EXPECT_EQ(decayed(parse("{}"), infos).back(), "transformer.blocks.attn.scale");
}

TEST(OptimMask, DefaultOffWithoutModulesDecaysEverything) {
  // Levanter returns mask=None, and optax.add_decayed_weights then decays every parameter.
  auto infos = optim_testing::gpt2_like_infos();
  EXPECT_EQ(decayed(parse("default_weight_decay_mask: false\n"), infos).size(), infos.size());
}

TEST(OptimMask, LevanterTestCases) {
  auto infos = optim_testing::gpt2_like_infos();
  const std::vector<std::string> want = with_embeddings();
  // test_weight_decay_masking: a list of substrings, and a regex.
  EXPECT_EQ(decayed(parse("weight_decay_modules: [attn.c_attn.weight, attn.c_proj.weight, mlp.c_fc.weight, "
                          "mlp.c_proj.weight, token_embeddings.weight, position_embeddings.weight]\n"),
                    infos),
            want);
  EXPECT_EQ(decayed(parse("weight_decay_modules: '.*attn.*weight|.*mlp.*weight|.*token_embeddings|"
                          ".*position_embeddings'\n"),
                    infos),
            want);
  // test_weight_decay_masking_with_class_names: "<Class>.<field>" key paths.
  EXPECT_EQ(decayed(parse("weight_decay_modules: [Linear.weight, Embedding.weight]\n"), infos), want);
}

TEST(OptimMask, RegexMatchesAtStartListMatchesAnywhere) {
  auto infos = optim_testing::gpt2_like_infos();
  // re.match: "attn" does not match "transformer.blocks.attn..." at position 0.
  EXPECT_TRUE(decayed(parse("weight_decay_modules: 'attn'\n"), infos).empty());
  EXPECT_EQ(decayed(parse("weight_decay_modules: 'transformer\\.blocks\\.attn'\n"), infos),
            (std::vector<std::string>{"transformer.blocks.attn.c_attn.weight", "transformer.blocks.attn.c_attn.bias",
                                      "transformer.blocks.attn.c_proj.weight", "transformer.blocks.attn.c_proj.bias"}));
  EXPECT_EQ(decayed(parse("weight_decay_modules: [c_attn]\n"), infos),
            (std::vector<std::string>{"transformer.blocks.attn.c_attn.weight", "transformer.blocks.attn.c_attn.bias"}));
  // Linear.bias is a class path only for biases next to a Linear weight (not LayerNorm biases).
  EXPECT_EQ(decayed(parse("weight_decay_modules: [Linear.bias]\n"), infos),
            (std::vector<std::string>{"transformer.blocks.attn.c_attn.bias", "transformer.blocks.attn.c_proj.bias",
                                      "transformer.blocks.mlp.c_fc.bias", "transformer.blocks.mlp.c_proj.bias"}));
}

TEST(OptimMask, ModulesWithDefaultMask) {
  // Patterns decide first; what they do not match falls back to the default (no decay for norms, biases,
  // embeddings; decay otherwise).
  auto infos = optim_testing::gpt2_like_infos();
  std::vector<std::string> got =
      decayed(parse("weight_decay_modules: [c_attn]\ndefault_weight_decay_mask: true\n"), infos);
  EXPECT_EQ(got,
            (std::vector<std::string>{"transformer.blocks.attn.c_attn.weight", "transformer.blocks.attn.c_attn.bias",
                                      "transformer.blocks.attn.c_proj.weight", "transformer.blocks.mlp.c_fc.weight",
                                      "transformer.blocks.mlp.c_proj.weight"}));
}
