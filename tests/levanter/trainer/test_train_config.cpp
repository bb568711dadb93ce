// The training config: Levanter's own example configs load with only their data locations changed, our ready
// configs load, and mistakes are errors that name the file, the line, the key and what would be valid.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "levanter/models/gpt2/gpt2.h"
#include "levanter/trainer/config.h"

namespace fs = std::filesystem;
using levanter::trainer::load_train_config;
using levanter::trainer::MixedPrecision;
using levanter::trainer::TrainLmConfig;
using ::testing::HasSubstr;

namespace {

const std::string kSource = LEVANTER_SOURCE_DIR;

// Loads from the repository root, where the configs' relative data paths point.
TrainLmConfig load_in_source(const std::string& rel, const std::vector<std::string>& overrides = {}) {
  fs::path old = fs::current_path();
  fs::current_path(kSource);
  try {
    TrainLmConfig c = load_train_config(rel, overrides);
    fs::current_path(old);
    return c;
  } catch (...) {
    fs::current_path(old);
    throw;
  }
}

std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  fs::path f = fs::temp_directory_path() / ("levanter_cfg_" + std::to_string(::getpid()) + ".yaml");
  std::ofstream(f) << yaml;
  try {
    load_train_config(f.string(), overrides);
  } catch (const std::exception& e) {
    fs::remove(f);
    return e.what();
  }
  fs::remove(f);
  return "(no error)";
}

const char* kData = "data:\n  train_urls: [\"x.jsonl\"]\n";

}  // namespace

TEST(TrainConfig, LevantersGpt2NanoLoads) {
  TrainLmConfig c = load_in_source("tests/data/levanter_configs/gpt2_nano.yaml");
  EXPECT_EQ(c.model.type(), "gpt2");
  EXPECT_EQ(c.model.as<levanter::models::Gpt2Config>().hidden_dim, 32);
  EXPECT_EQ(c.model.as<levanter::models::Gpt2Config>().num_heads, 4);
  EXPECT_EQ(c.model.as<levanter::models::Gpt2Config>().num_layers, 2);
  EXPECT_EQ(c.model.as<levanter::models::Gpt2Config>().seq_len, 1024);  // Levanter's default
  EXPECT_EQ(c.trainer.mp.param, at::kBFloat16);
  EXPECT_EQ(c.trainer.mp.compute, at::kBFloat16);
  EXPECT_EQ(c.trainer.num_train_steps, 100);
  EXPECT_EQ(c.trainer.train_batch_size, 32);
  EXPECT_EQ(c.trainer.microbatch_size(), 32);
  EXPECT_EQ(c.trainer.checkpointer.save_interval.seconds(), 300.0);
  ASSERT_EQ(c.trainer.checkpointer.keep.intervals.size(), 1u);
  EXPECT_EQ(c.trainer.checkpointer.keep.intervals[0].every, 50);
  EXPECT_EQ(*c.trainer.tensor_parallel_axes, (std::vector<std::string>{"mlp", "heads"}));
  EXPECT_EQ(*c.trainer.fsdp_axis, (std::vector<std::string>{"embed"}));  // a string is a one-axis list
  EXPECT_EQ(c.trainer.batch_axis, "batch");
  // Levanter's optimizer defaults.
  EXPECT_DOUBLE_EQ(c.optimizer.learning_rate, 6e-4);
  EXPECT_DOUBLE_EQ(c.optimizer.beta1, 0.9);
  EXPECT_DOUBLE_EQ(c.optimizer.beta2, 0.95);
  EXPECT_DOUBLE_EQ(c.optimizer.epsilon, 1e-8);
  EXPECT_DOUBLE_EQ(c.optimizer.weight_decay, 0.1);
}

TEST(TrainConfig, LevantersGpt2SmallLoadsThroughItsInclude) {
  TrainLmConfig c = load_in_source("tests/data/levanter_configs/gpt2_small.yaml");
  EXPECT_EQ(c.model.as<levanter::models::Gpt2Config>().hidden_dim, 768);
  EXPECT_EQ(c.model.as<levanter::models::Gpt2Config>().num_layers, 12);
  EXPECT_EQ(c.model.as<levanter::models::Gpt2Config>().seq_len, 1024);
  EXPECT_TRUE(c.model.as<levanter::models::Gpt2Config>().gradient_checkpointing);
  EXPECT_TRUE(c.model.as<levanter::models::Gpt2Config>().scale_attn_by_inverse_layer_idx);
  EXPECT_EQ(*c.model.as<levanter::models::Gpt2Config>().attn_backend, "jax_flash");
  EXPECT_EQ(c.trainer.mp.param, at::kFloat);
  EXPECT_EQ(c.trainer.mp.compute, at::kBFloat16);
  EXPECT_EQ(c.trainer.train_batch_size, 512);
  EXPECT_EQ(*c.trainer.tracker[0].project, "levanter");
  EXPECT_EQ(c.trainer.tracker[0].tags, (std::vector<std::string>{"openwebtext", "gpt2"}));
  EXPECT_DOUBLE_EQ(c.optimizer.learning_rate, 6e-4);
  EXPECT_DOUBLE_EQ(c.optimizer.min_lr_ratio, 0.1);
  // The data section came from data/openwebtext_source.yaml, brace pattern and all.
  ASSERT_EQ(c.data.train_urls.size(), 1u);
  EXPECT_EQ(c.data.train_urls[0], "data/corpus/austen/{train,validation}.jsonl.gz");
  EXPECT_EQ(c.data.cache_dir, "cache/openwebtext_local/");
}

TEST(TrainConfig, OurReadyConfigsLoad) {
  TrainLmConfig nano = load_in_source("config/gpt2_nano.yaml");
  EXPECT_EQ(nano.model.as<levanter::models::Gpt2Config>().hidden_dim, 128);
  TrainLmConfig small = load_in_source("config/gpt2_small.yaml");
  EXPECT_EQ(small.model.as<levanter::models::Gpt2Config>().hidden_dim, 768);
  EXPECT_EQ(small.model.as<levanter::models::Gpt2Config>().num_layers, 12);
  EXPECT_EQ(small.model.as<levanter::models::Gpt2Config>().num_heads, 12);
  EXPECT_EQ(small.model.as<levanter::models::Gpt2Config>().seq_len, 1024);
  EXPECT_EQ(small.trainer.mp.compute, at::kBFloat16);
}

TEST(TrainConfig, OverridesWinOverTheFile) {
  TrainLmConfig c =
      load_in_source("config/gpt2_nano.yaml",
                     {"--trainer.num_train_steps", "7", "--optimizer.learning_rate=1e-3", "--model.num_layers", "2"});
  EXPECT_EQ(c.trainer.num_train_steps, 7);
  EXPECT_DOUBLE_EQ(c.optimizer.learning_rate, 1e-3);
  EXPECT_EQ(c.model.as<levanter::models::Gpt2Config>().num_layers, 2);
}

TEST(TrainConfig, UnknownKeyNamesFileLineAndNearestKey) {
  std::string e = error_of(std::string(kData) + "trainer:\n  num_train_step: 5\n");
  EXPECT_THAT(e, HasSubstr(".yaml:4"));
  EXPECT_THAT(e, HasSubstr("unknown key 'trainer.num_train_step'"));
  EXPECT_THAT(e, HasSubstr("did you mean 'num_train_steps'"));
  std::string m = error_of(std::string(kData) + "model:\n  type: gpt2\n  hiden_dim: 5\n");
  EXPECT_THAT(m, HasSubstr("unknown key 'model.hiden_dim'"));
  EXPECT_THAT(m, HasSubstr("did you mean 'hidden_dim'"));
  std::string top = error_of(std::string(kData) + "optimiser:\n  learning_rate: 1\n");
  EXPECT_THAT(top, HasSubstr("did you mean 'optimizer'"));
}

TEST(TrainConfig, WrongTypeNamesKeyAndValue) {
  std::string e = error_of(std::string(kData) + "trainer:\n  train_batch_size: lots\n");
  EXPECT_THAT(e, HasSubstr(".yaml:4"));
  EXPECT_THAT(e, HasSubstr("trainer.train_batch_size"));
  EXPECT_THAT(e, HasSubstr("lots"));
}

TEST(TrainConfig, UnsupportedLevanterKeysAreNamedNotIgnored) {
  std::string e = error_of(std::string(kData) + "trainer:\n  model_averaging:\n    type: ema\n");
  EXPECT_THAT(e, HasSubstr("trainer.model_averaging is not supported by levanter-cpp"));
  // (hf_save_path is implemented now: docs/interop.md; uploading to the hub is not.)
  EXPECT_THAT(error_of(std::string(kData) + "hf_upload: me/model\n"), HasSubstr("hf_upload is not supported"));
  EXPECT_THAT(error_of(std::string(kData) + "model:\n  type: mistral\n"),
              HasSubstr("model type 'mistral' is not implemented; valid: gpt2, llama, backpack"));
  EXPECT_THAT(error_of(std::string(kData) + "trainer:\n  replica_ici_axis_size: 0\n"),
              HasSubstr("trainer.replica_ici_axis_size: must be >= 1, got 0"));
  EXPECT_THAT(error_of(std::string(kData) + "trainer:\n  model_axis_size: 0\n"),
              HasSubstr("trainer.model_axis_size: must be >= 1, got 0"));
  EXPECT_THAT(error_of(std::string(kData) + "trainer:\n  tracker:\n    type: wandb\n"),
              HasSubstr("wandb needs an account and network access"));
}

TEST(TrainConfig, TrackerIsOneOrAListAsInLevanter) {
  auto load = [](const std::string& yaml) {
    fs::path f = fs::temp_directory_path() / ("levanter_cfg_tr_" + std::to_string(::getpid()) + ".yaml");
    std::ofstream(f) << yaml;
    TrainLmConfig c = load_train_config(f.string(), {});
    fs::remove(f);
    return c;
  };
  TrainLmConfig one = load(std::string(kData) + "trainer:\n  tracker:\n    type: tensorboard\n    logdir: tb\n");
  ASSERT_EQ(one.trainer.tracker.size(), 1u);
  EXPECT_EQ(one.trainer.tracker[0].type, "tensorboard");
  EXPECT_EQ(*one.trainer.tracker[0].logdir, "tb");
  TrainLmConfig two = load(std::string(kData) +
                           "trainer:\n  tracker:\n    - type: json_logger\n    - type: tensorboard\n"
                           "      logdir: tb\n      flush_secs: 30\n");
  ASSERT_EQ(two.trainer.tracker.size(), 2u);
  EXPECT_EQ(two.trainer.tracker[0].type, "json_logger");
  EXPECT_EQ(*two.trainer.tracker[1].flush_secs, 30);
  // Dumped (config.yaml in the run directory) and read again: the same list.
  YAML::Node dumped = levanter::config::to_yaml_value(two.trainer.tracker);
  ASSERT_TRUE(dumped.IsSequence());
  EXPECT_EQ(dumped[1]["logdir"].as<std::string>(), "tb");
  // Overrides reach a single tracker's keys.
  fs::path f = fs::temp_directory_path() / ("levanter_cfg_tr2_" + std::to_string(::getpid()) + ".yaml");
  std::ofstream(f) << kData;
  TrainLmConfig o = load_train_config(f.string(), {"--trainer.tracker.type", "noop"});
  fs::remove(f);
  EXPECT_EQ(o.trainer.tracker[0].type, "noop");
}

TEST(TrainConfig, TrackerMistakesAreNamed) {
  EXPECT_THAT(error_of(std::string(kData) + "trainer:\n  tracker:\n    - type: json\n    - type: wandb\n"),
              HasSubstr("trainer.tracker.1.type: wandb needs an account and network access"));
  EXPECT_THAT(error_of(std::string(kData) + "trainer:\n  tracker:\n    type: json\n    logdir: tb\n"),
              HasSubstr("trainer.tracker.logdir: a key of the tensorboard tracker, but this tracker is json"));
  EXPECT_THAT(error_of(std::string(kData) + "trainer:\n  tracker: []\n"), HasSubstr("an empty list of trackers"));
  EXPECT_THAT(error_of(std::string(kData) + "trainer:\n  tracker:\n    - type: json\n    - type: tensorboard\n"
                                            "      logdri: tb\n"),
              HasSubstr(".yaml:7: unknown key 'trainer.tracker.1.logdri'"));
  // A list of one is that tracker (so that --trainer.tracker.type reaches it), named without the index.
  EXPECT_THAT(error_of(std::string(kData) + "trainer:\n  tracker:\n    - type: tensorboard\n      logdri: tb\n"),
              HasSubstr(".yaml:6: unknown key 'trainer.tracker.logdri'"));
  EXPECT_THAT(error_of(std::string(kData) + "trainer:\n  tracker:\n    - type: tensorboard\n",
                       {"--trainer.tracker.logdir", "x", "--trainer.tracker.type", "json"}),
              HasSubstr("trainer.tracker.logdir: a key of the tensorboard tracker, but this tracker is json"));
}

TEST(TrainConfig, ValidationNamesTheKey) {
  EXPECT_THAT(error_of(std::string(kData) + "trainer:\n  train_batch_size: 6\n  per_device_parallelism: 4\n"),
              HasSubstr("trainer.per_device_parallelism: 4 does not divide train_batch_size 6"));
  EXPECT_THAT(error_of(std::string(kData) + "model:\n  hidden_dim: 10\n  num_heads: 3\n"),
              HasSubstr("model.num_heads: hidden_dim (10) must be divisible by num_heads (3)"));
  EXPECT_THAT(error_of(std::string(kData) + "trainer:\n  mp: p=f32,c=float16\n"),
              HasSubstr("float16 is not supported"));
  EXPECT_THAT(error_of(std::string(kData) + "z_loss_weight: -1\n"), HasSubstr("z_loss_weight: must be >= 0"));
}

TEST(TrainConfig, MixedPrecisionPolicies) {
  MixedPrecision a = MixedPrecision::parse("p=f32,c=bfloat16");
  EXPECT_EQ(a.param, at::kFloat);
  EXPECT_EQ(a.compute, at::kBFloat16);
  EXPECT_EQ(a.output, at::kFloat);
  MixedPrecision b = MixedPrecision::parse("params=float32, compute=bf16, output=bf16");
  EXPECT_EQ(b.compute, at::kBFloat16);
  EXPECT_EQ(b.output, at::kBFloat16);
  MixedPrecision c = MixedPrecision::parse("bfloat16");
  EXPECT_EQ(c.param, at::kBFloat16);
  EXPECT_THROW(MixedPrecision::parse("q=f32"), std::invalid_argument);
  EXPECT_THROW(MixedPrecision::parse("f64"), std::invalid_argument);
}

TEST(TrainConfig, ConfigReferenceListsEveryKey) {
  auto rows = levanter::trainer::describe_train_config();
  std::vector<std::string> keys;
  for (const auto& r : rows) keys.push_back(r.key);
  for (const char* k :
       {"data.train_urls", "data.cache_dir", "data.tokenizer", "model.hidden_dim", "model.upcast_attn", "trainer.mp",
        "trainer.checkpointer.save_interval", "trainer.checkpointer.keep", "trainer.per_device_parallelism",
        "optimizer.learning_rate", "optimizer.max_grad_norm", "optimizer.lr_schedule", "z_loss_weight"}) {
    EXPECT_NE(std::find(keys.begin(), keys.end(), k), keys.end()) << k;
  }
}

// Levanter's axis_resources and parameter_axis_resources: the compute and parameter mappings are built as its
// TrainerConfig builds them, and what they say becomes this trainer's tensor-parallel and FSDP axes; mappings it
// cannot run are refused, naming the key.
TEST(TrainConfig, LevantersAxisMappingsBecomeTensorParallelAndFsdpAxes) {
  using Mapping = levanter::trainer::TrainerConfig::ResourceMapping;
  using V = std::vector<std::string>;
  const std::string base = std::string(kData) + "trainer:\n  model_axis_size: 2\n";
  {
    // Levanter's defaults: fsdp_axis embed, batch over (replica, data).
    const TrainLmConfig c = load_train_config("", {"--data.train_urls", "[x.jsonl]"});
    EXPECT_EQ(c.trainer.compute_axis_mapping(), (Mapping{{"batch", V{"replica", "data"}}}));
    EXPECT_EQ(c.trainer.parameter_axis_mapping(), (Mapping{{"embed", V{"data"}}}));
    EXPECT_EQ(c.trainer.fsdp_axes(), V{"embed"});
    EXPECT_TRUE(c.trainer.model_axes().empty());
  }
  fs::path f = fs::temp_directory_path() / ("levanter_axes_" + std::to_string(::getpid()) + ".yaml");
  std::ofstream(f) << base
                   << "  fsdp_axis: null\n  tensor_parallel_axes: [heads]\n"
                      "  axis_resources: {mlp: model, batch: data, position: null}\n"
                      "  parameter_axis_resources: {embed: [data], vocab: null}\n";
  const TrainLmConfig c = load_train_config(f.string(), {});
  fs::remove(f);
  EXPECT_EQ(c.trainer.compute_axis_mapping(),
            (Mapping{{"batch", V{"replica", "data"}}, {"heads", V{"model"}}, {"mlp", V{"model"}}, {"position", {}}}));
  EXPECT_EQ(
      c.trainer.parameter_axis_mapping(),
      (Mapping{{"embed", V{"data"}}, {"heads", V{"model"}}, {"mlp", V{"model"}}, {"position", {}}, {"vocab", {}}}));
  EXPECT_EQ(c.trainer.model_axes(), (V{"heads", "mlp"}));
  EXPECT_EQ(c.trainer.fsdp_axes(), V{"embed"});
  // The vocabulary: computed over model, held whole (this trainer's split_compute).
  EXPECT_EQ(load_train_config("", {"--data.train_urls", "[x.jsonl]", "--trainer.tensor_parallel_axes", "[mlp, vocab]"})
                .trainer.parameter_axis_mapping()
                .at("vocab"),
            V{"model"});

  EXPECT_THAT(error_of(base + "  axis_resources: {embed: data}\n"),
              HasSubstr("trainer.axis_resources.embed: data: in compute, only the batch axis (trainer.batch_axis: "
                        "batch) is split over data here, and any other axis over model (tensor parallelism)"));
  EXPECT_THAT(error_of(base + "  axis_resources: {mlp: [replica, model]}\n"),
              HasSubstr("trainer.axis_resources.mlp: [replica, model]: in compute, only the batch axis"));
  EXPECT_THAT(error_of(base + "  parameter_axis_resources: {mlp: model}\n"),
              HasSubstr("trainer.parameter_axis_resources.mlp: 'mlp' held in pieces over model but computed whole "
                        "is not supported: add it to trainer.tensor_parallel_axes"));
  EXPECT_THAT(error_of(base + "  tensor_parallel_axes: [mlp]\n  parameter_axis_resources: {mlp: null}\n"),
              HasSubstr("trainer.parameter_axis_resources.mlp: 'mlp' computed over model but held whole is not "
                        "supported (only the vocabulary is)"));
  // Null, as Levanter's configs may write it: no mapping.
  EXPECT_EQ(error_of(base + "  tensor_parallel_axes: [mlp]\n  axis_resources: null\n  parameter_axis_resources:\n"),
            "(no error)");
  // An axis the model cannot split is named by the key that asked for it.
  EXPECT_THAT(error_of(base + "  fsdp_axis: null\n  axis_resources: {embed: model}\n"),
              HasSubstr("trainer.axis_resources.embed: 'embed' cannot be split in a gpt2 model (it can split: heads, "
                        "mlp, vocab)"));
  // fsdp_axis is applied last, as in Levanter: {embed: replica} is overridden by the default fsdp_axis, embed.
  EXPECT_EQ(error_of(base + "  parameter_axis_resources: {embed: replica}\n"), "(no error)");
  EXPECT_THAT(error_of(base + "  tensor_parallel_axes: [mlp]\n  parameter_axis_resources: {mlp: data}\n"),
              HasSubstr("trainer.parameter_axis_resources.mlp: 'mlp' is also in trainer.tensor_parallel_axes; an axis "
                        "is split over data (FSDP) or over model (tensor parallelism), not both"));
  EXPECT_THAT(error_of(base + "  fsdp_axis: mlp\n  axis_resources: {mlp: model}\n"),
              HasSubstr("trainer.fsdp_axis: 'mlp' is also in trainer.axis_resources (model); an axis is split over "
                        "data (FSDP) or over model"));
  EXPECT_THAT(error_of(base + "  parameter_axis_resources: {mlp: replica}\n"),
              HasSubstr("trainer.parameter_axis_resources.mlp: replica: parameters are held in pieces over data "
                        "(FSDP) or model (tensor parallelism) here"));
}
