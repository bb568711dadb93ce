// The memory estimate made before a model is built (trainer/memory.h): exact parameter counts per family, the
// estimate's parts for a known config, the refusal of a run that cannot fit (before anything large is allocated),
// and the one-line message of an allocation that fails anyway.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "haliax/nn/module.h"
#include "levanter/models/backpack/backpack.h"
#include "levanter/models/gpt2/gpt2.h"
#include "levanter/models/llama/llama.h"
#include "levanter/models/lm_loss.h"
#include "levanter/temp_dir.h"
#include "levanter/trainer/memory.h"
#include "levanter/trainer/trainer.h"

namespace fs = std::filesystem;
namespace models = levanter::models;
using levanter::trainer::MemoryEstimate;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

int64_t built_count(const models::LmConfig& c, int64_t vocab) {
  auto model = c.build(haliax::Axis("vocab", vocab), haliax::random::Key(0));
  return haliax::nn::parameter_count(*model);
}

const std::string kCorpus = std::string(LEVANTER_SOURCE_DIR) + "/data/corpus/austen/validation.jsonl.gz";

// Runs `levanter ARGS` under a shell (so `ulimit` can go first); returns the exit code and stderr.
std::pair<int, std::string> run_shell(const std::string& prefix, const std::string& args) {
  const fs::path err = fs::temp_directory_path() / ("levanter_memory_" + std::to_string(::getpid()) + ".txt");
  const std::string cmd =
      prefix + std::string(LEVANTER_BINARY_DIR) + "/levanter " + args + " > /dev/null 2> '" + err.string() + "'";
  int rc = std::system(("bash -c \"" + cmd + "\"").c_str());
  std::ifstream in(err);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  fs::remove(err);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, text};
}

std::string tiny_config(const levanter::testing::TempDir& dir) {
  const std::string path = dir / "c.yaml";
  std::ofstream(path) << "data:\n  train_urls: [\"" << kCorpus << "\"]\n  validation_urls: [\"" << kCorpus
                      << "\"]\n  cache_dir: " << (dir / "cache")
                      << "\nmodel: {type: gpt2, hidden_dim: 16, num_heads: 2, num_layers: 1, seq_len: 32}\n"
                         "trainer:\n  num_train_steps: 2\n  train_batch_size: 2\n  num_threads: 1\n"
                         "  peak_flops: 1e9\n  log_dir: "
                      << (dir / "logs") << "\n  checkpointer: {base_path: " << (dir / "ckpt") << "}\n";
  return path;
}

}  // namespace

TEST(MemoryEstimate, Gpt2ParameterCountIsExact) {
  models::Gpt2Config c;
  c.hidden_dim = 24;
  c.num_heads = 3;
  c.num_layers = 2;
  c.seq_len = 16;
  EXPECT_EQ(*c.parameter_count(101), built_count(c, 101));
  c.use_bias = false;
  c.mlp_scale = 3;
  EXPECT_EQ(*c.parameter_count(101), built_count(c, 101));
  // GPT-2 small as Hugging Face counts it (wte, wpe, 12 blocks, ln_f): 124,439,808.
  models::Gpt2Config small;
  EXPECT_EQ(*small.parameter_count(50257), 124439808);
}

TEST(MemoryEstimate, LlamaParameterCountIsExact) {
  models::LlamaConfig c;
  c.hidden_dim = 32;
  c.intermediate_dim = 40;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.num_layers = 2;
  c.seq_len = 16;
  EXPECT_EQ(*c.parameter_count(97), built_count(c, 97));
  c.tie_word_embeddings = true;
  c.use_bias = true;
  c.head_dim = 6;
  EXPECT_EQ(*c.parameter_count(97), built_count(c, 97));
  c.use_layer_norm_weight = false;
  c.use_bias = false;
  EXPECT_EQ(*c.parameter_count(97), built_count(c, 97));
}

TEST(MemoryEstimate, BackpackParameterCountIsExact) {
  models::BackpackConfig c;
  c.gpt2.hidden_dim = 32;
  c.gpt2.num_heads = 4;
  c.gpt2.num_layers = 1;
  c.gpt2.seq_len = 16;
  c.num_senses = 4;
  c.sense_intermediate_scale = 2;
  EXPECT_EQ(*c.parameter_count(89), built_count(c, 89));
  c.gpt2.use_bias = false;
  EXPECT_EQ(*c.parameter_count(89), built_count(c, 89));
}

namespace {

// A 2-layer GPT-2 of width 64 and 32 positions, trained on batches of 8.
levanter::trainer::TrainLmConfig small_gpt2_run() {
  levanter::trainer::TrainLmConfig config;
  auto& g = config.model.as<models::Gpt2Config>();
  g.hidden_dim = 64;
  g.num_heads = 4;
  g.num_layers = 2;
  g.seq_len = 32;
  config.trainer.train_batch_size = 8;
  return config;
}

}  // namespace

TEST(MemoryEstimate, PartsOfAKnownConfig) {
  levanter::trainer::TrainLmConfig config = small_gpt2_run();
  auto& g = config.model.as<models::Gpt2Config>();
  g.gradient_checkpointing = false;
  config.trainer.per_device_parallelism = 4;
  config.trainer.mp = levanter::trainer::MixedPrecision::parse("p=f32,c=bfloat16");
  const int64_t P = *g.parameter_count(1000);
  MemoryEstimate e = *levanter::trainer::estimate_training_memory(config, 1000);
  EXPECT_EQ(e.parameters, P);
  EXPECT_DOUBLE_EQ(e.weights, 4.0 * P);
  EXPECT_DOUBLE_EQ(e.gradients, 4.0 * P);
  EXPECT_DOUBLE_EQ(e.optimizer, 8.0 * P);     // Adam: m and v in f32
  EXPECT_DOUBLE_EQ(e.compute_copy, 4.0 * P);  // bf16 copy and its gradients
  EXPECT_DOUBLE_EQ(e.temporaries, 4.0 * P);
  // 4 sequences of 32 tokens; per token 3d + 2 x (10d + 2 x 4d + 2 x heads x T) bf16 elements.
  EXPECT_DOUBLE_EQ(e.activations, 4.0 * 32.0 * (3 * 64 + 2 * (10 * 64 + 2 * 256 + 2 * 4 * 32)) * 2.0);
  // The fused LM head + loss over all 128 positions in one block: bf16 logits, written over with their gradient by
  // the CPU kernel where it runs (x86 with AVX2 and FMA); elsewhere also their f32 copy and its gradient, and the bf16
  // gradient for the GEMMs.
  EXPECT_DOUBLE_EQ(e.loss, 128.0 * 1000.0 * (models::fused_loss_in_place(at::kBFloat16) ? 2 : 2 + 4 + 4 + 2));
  {
    // Sophia-H differentiates the full logits twice through ATen's ops: all of them, with the copy and gradient.
    levanter::trainer::TrainLmConfig sophia = config;
    sophia.optimizer.type.name = "sophia-h";
    EXPECT_DOUBLE_EQ(levanter::trainer::estimate_training_memory(sophia, 1000)->loss, 128.0 * 1000.0 * (2 + 4 + 4 + 2));
  }
  const double without = e.activations;
  g.gradient_checkpointing = true;  // each block's input, plus one block recomputed
  e = *levanter::trainer::estimate_training_memory(config, 1000);
  EXPECT_LT(e.activations, without);
  config.optimizer.type.name = "lion";
  EXPECT_DOUBLE_EQ(levanter::trainer::estimate_training_memory(config, 1000)->optimizer, 4.0 * P);
}

// Per process of a job: under FSDP (the default fsdp_axis) a quarter of the master weights, their gradients and the
// optimizer state in each of 4 processes, plus the whole compute copy (f32 here) and its gradients; each process's
// microbatch is its share of the batch. Replicated (fsdp_axis: null) holds everything.
TEST(MemoryEstimate, PerProcessUnderFsdp) {
  levanter::trainer::TrainLmConfig config = small_gpt2_run();
  const int64_t P = *config.model.as<models::Gpt2Config>().parameter_count(1000);
  MemoryEstimate one = *levanter::trainer::estimate_training_memory(config, 1000, 1);
  MemoryEstimate four = *levanter::trainer::estimate_training_memory(config, 1000, 4);
  EXPECT_DOUBLE_EQ(four.weights, P);
  EXPECT_DOUBLE_EQ(four.gradients, P);
  EXPECT_DOUBLE_EQ(four.optimizer, 2.0 * P);
  EXPECT_DOUBLE_EQ(four.compute_copy, 8.0 * P);
  EXPECT_DOUBLE_EQ(four.activations, one.activations / 4);  // 2 of the 8 rows
  // Mixed precision: the bf16 copy and its gradients, and the microbatches' gradients summed whole in f32.
  config.trainer.mp = levanter::trainer::MixedPrecision::parse("p=f32,c=bfloat16");
  MemoryEstimate mixed = *levanter::trainer::estimate_training_memory(config, 1000, 4);
  EXPECT_DOUBLE_EQ(mixed.compute_copy, 4.0 * P);
  EXPECT_DOUBLE_EQ(mixed.gradients, P + 4.0 * P);
  config.trainer.mp = levanter::trainer::MixedPrecision::parse("f32");
  config.trainer.fsdp_axis.reset();
  MemoryEstimate replicated = *levanter::trainer::estimate_training_memory(config, 1000, 4);
  EXPECT_DOUBLE_EQ(replicated.weights, 4.0 * P);
  EXPECT_DOUBLE_EQ(replicated.compute_copy, 0.0);
  // Tensor parallelism over 2 processes: all but the token embeddings (1000 rows of the model's width) in halves.
  const double embedding = (*config.model.as<models::Gpt2Config>().parameter_count(1001) - P) * 1000.0;
  MemoryEstimate tp = *levanter::trainer::estimate_training_memory(config, 1000, 1, 2);
  EXPECT_DOUBLE_EQ(tp.weights, 4.0 * (embedding + (P - embedding) / 2));
  EXPECT_DOUBLE_EQ(tp.optimizer, 8.0 * (embedding + (P - embedding) / 2));
  EXPECT_EQ(embedding, 1000.0 * config.model.as<models::Gpt2Config>().hidden_dim);
}

TEST(MemoryEstimate, CheckNamesTheNumbersAndWhatToReduce) {
  MemoryEstimate e;
  e.parameters = 1000;
  e.weights = 2e9;
  e.activations = 1e9;
  EXPECT_NO_THROW(levanter::trainer::check_memory(e, 3.1e9));
  try {
    levanter::trainer::check_memory(e, 2.5e9);
    FAIL() << "no error";
  } catch (const std::exception& ex) {
    const std::string m = ex.what();
    EXPECT_THAT(m, HasSubstr("the run needs about 3.0 GB (1000 parameters: weights 2.0 GB"));
    EXPECT_THAT(m, HasSubstr("activations 1.0 GB"));
    EXPECT_THAT(m, HasSubstr("but this machine has 2.5 GB available"));
    EXPECT_THAT(m, HasSubstr("trainer.check_memory: false"));
  }
}

TEST(MemoryEstimate, AvailableMemoryIsReadFromTheSystem) {
  std::optional<double> a = levanter::trainer::available_memory_bytes();
  ASSERT_TRUE(a.has_value());
  EXPECT_GT(*a, 1e8);
  EXPECT_LT(*a, 1e15);
}

TEST(MemoryEstimate, AModelThatCannotFitIsRefusedBeforeItIsAllocated) {
  // Before: a 4096-wide, 1000-layer config grew until the kernel's OOM killer ended it.
  levanter::testing::TempDir dir;
  const auto t0 = std::chrono::steady_clock::now();
  auto [rc, err] = run_shell("", "train --config '" + tiny_config(dir) +
                                     "' --model.hidden_dim 4096 --model.num_heads 32 --model.num_layers 1000");
  EXPECT_EQ(rc, 1) << err;
  EXPECT_THAT(err, HasSubstr("error: the run needs about "));
  EXPECT_THAT(err, HasSubstr("201585831936 parameters"));  // 1000 x 12 x 4096^2 + biases, norms, embeddings
  EXPECT_THAT(err, HasSubstr("GB available: reduce the model"));
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 60.0);
  for (const auto& f : fs::recursive_directory_iterator(dir / "logs"))  // refused before the tracker started
    EXPECT_NE(f.path().filename(), "metrics.jsonl");
}

TEST(MemoryEstimate, AFailedAllocationIsOneLineNotAStackTrace) {
  // Before: a 20 GB allocation failure printed a 25-frame C++ stack. With the check off and the address space
  // limited to 6 GB, the 10.8 GB attention weight cannot be allocated.
  levanter::testing::TempDir dir;
  auto [rc, err] = run_shell("ulimit -v 6000000; ", "train --config '" + tiny_config(dir) +
                                                        "' --trainer.check_memory false --model.hidden_dim 30000 "
                                                        "--model.num_heads 1 --model.num_layers 1");
  EXPECT_EQ(rc, 1) << err;
  EXPECT_THAT(err, HasSubstr("error: out of memory allocating 10.8 GB: reduce the model"));
  EXPECT_THAT(err, Not(HasSubstr("frame #")));
  EXPECT_THAT(err, Not(HasSubstr("Exception raised from")));
}
