// trainer.sample: continuations of fixed prompts logged as text (samples/<i>) at the configured steps and at the
// end; each is what inference::generate writes for the model of that step (checked against the checkpoint of the
// step), and a run stopped and resumed logs the same samples as one that was not.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>

#include "levanter/config/config.h"
#include "levanter/data/text.h"
#include "levanter/data/tokenizer/tokenizer.h"
#include "levanter/inference/generate.h"
#include "levanter/runtime/signals.h"
#include "levanter/temp_dir.h"
#include "levanter/tracker/tracker.h"
#include "levanter/trainer/sample_hook.h"
#include "levanter/trainer/trainer.h"

namespace fs = std::filesystem;
using levanter::trainer::TrainLmConfig;
using ::testing::HasSubstr;
using ::testing::StartsWith;

namespace {

const std::string kCorpus = std::string(LEVANTER_SOURCE_DIR) + "/data/corpus/austen/validation.jsonl.gz";

class SampleHookTest : public ::testing::Test {
 protected:
  void SetUp() override { root_ = levanter::testing::fresh_test_dir("levanter_sample"); }
  void TearDown() override { fs::remove_all(root_); }

  TrainLmConfig config(const std::vector<std::string>& overrides, const std::string& id) {
    fs::path f = root_ / "tiny.yaml";
    std::ofstream(f) << "data:\n  train_urls: [\"" << kCorpus << "\"]\n  validation_urls: [\"" << kCorpus
                     << "\"]\n  cache_dir: " << (root_ / "cache").string()
                     << "\nmodel:\n  type: gpt2\n  hidden_dim: 16\n  num_heads: 2\n  num_layers: 2\n  seq_len: 32\n"
                        "trainer:\n  seed: 1\n  num_train_steps: 5\n  train_batch_size: 4\n  steps_per_eval: 100\n"
                        "  max_eval_batches: 1\n  num_threads: 2\n  peak_flops: 1e9\n  id: "
                     << id << "\n  log_dir: " << (root_ / "logs").string()
                     << "\n  checkpointer:\n    base_path: " << (root_ / ("ckpt_" + id)).string()
                     << "\n    save_interval: 0s\n    keep: [{every: 1}]\n"
                        "  sample:\n    steps: 2\n    prompts: [\"It is a truth\", \"\"]\n    max_new_tokens: 8\n"
                        "optimizer:\n  learning_rate: 1e-2\n";
    return levanter::trainer::load_train_config(f.string(), overrides);
  }

  levanter::trainer::TrainResult train(const TrainLmConfig& c) {
    levanter::trainer::TrainOptions o;
    o.progress = false;
    return levanter::trainer::train(c, o);
  }

  // step -> [samples/0, samples/1]
  static std::map<int64_t, std::vector<std::string>> samples(const std::string& metrics) {
    std::map<int64_t, std::vector<std::string>> out;
    std::ifstream in(metrics);
    for (std::string line; std::getline(in, line);) {
      auto r = nlohmann::json::parse(line);
      if (r.contains("samples/0")) out[r["step"]] = {r["samples/0"], r["samples/1"]};
    }
    return out;
  }

  fs::path root_;
};

}  // namespace

TEST_F(SampleHookTest, LogsWhatTheModelOfThatStepWrites) {
  TrainLmConfig c = config({}, "a");
  auto r = train(c);
  auto s = samples(r.paths.metrics);
  // Every 2 steps and at the end.
  ASSERT_EQ(s.size(), 3u);
  ASSERT_TRUE(s.count(2) && s.count(4) && s.count(5));
  for (const auto& [step, texts] : s) {
    EXPECT_THAT(texts[0], StartsWith("It is a truth")) << step;
    EXPECT_GT(texts[0].size(), std::string("It is a truth").size()) << step;
  }
  EXPECT_NE(s[2][0], s[4][0]) << "the model changed between steps 2 and 4; the draws too";

  // The text logged at step 4 is what generate writes for the checkpoint of step 4 with the run's sample key.
  levanter::data::TextData data(c.data);
  levanter::trainer::TrainerState state;
  int64_t step = 0;
  fs::path step4;
  for (const auto& e : fs::recursive_directory_iterator(root_ / "ckpt_a")) {
    if (e.path().filename() == "step-4") step4 = e.path();
  }
  ASSERT_FALSE(step4.empty());
  state.model = levanter::trainer::load_model_from_checkpoint(c, step4.string(), nullptr, &step);
  state.step = step;
  ASSERT_EQ(step, 4);
  levanter::tracker::NoopTracker noop;
  levanter::trainer::SampleHook hook(c.trainer.sample, *data.tokenizer(),
                                     haliax::random::Key(1).fold_in(0x73616d706c65ULL), noop);
  EXPECT_EQ(hook.samples(state), s[4]);
  // The unconditional sample does not show the BOS token.
  EXPECT_THAT(s[4][1], ::testing::Not(HasSubstr("<|endoftext|>")));
}

TEST_F(SampleHookTest, AResumedRunLogsTheSameSamples) {
  auto whole = samples(train(config({}, "whole")).paths.metrics);
  {
    // Stopped (as by SIGTERM) after 3 steps: a checkpoint of step 3, no samples at the end.
    levanter::trainer::TrainOptions o;
    o.progress = false;
    levanter::trainer::Trainer t(config({}, "parts"), o);
    t.add_hook(3, [](const auto&, auto&) { levanter::runtime::request_stop(SIGTERM); });
    auto r = t.train();
    levanter::runtime::clear_stop_request();
    ASSERT_EQ(r.final_step, 3);
  }
  auto parts = samples(train(config({}, "parts")).paths.metrics);
  EXPECT_EQ(parts, whole);
}

TEST_F(SampleHookTest, MistakesAreNamed) {
  try {
    config({"--trainer.sample.top_p", "0"}, "x");
    FAIL();
  } catch (const levanter::config::ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("trainer.sample.top_p"));
  }
  try {
    TrainLmConfig c = config({"--trainer.sample.max_new_tokens", "40"}, "y");
    train(c);
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("exceeds the model's 32 positions"));
  }
}
