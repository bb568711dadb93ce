// The TensorBoard tracker checked by TensorBoard itself (tests/interop/tensorboard_reference.py, EventAccumulator in
// the pinned venv of scripts/interop_env): a real training run with `trainer.tracker: [json, tensorboard]` shows in
// TensorBoard every metric of metrics.jsonl at the same step with the same float32 value, the text samples of
// trainer.sample at their steps, and the resolved config as text; a run killed (SIGKILL) after 5 steps and resumed from
// its checkpoint after 4 shows exactly what an uninterrupted run shows: each step once, bit-identical losses.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "levanter/temp_dir.h"

namespace fs = std::filesystem;

namespace {

using levanter::testing::slurp;

class TensorboardInterop : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("levanter_tb_interop_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // A tiny GPT-2 on the bundled Austen text, 6 steps, evaluations every 2, checkpoints kept every 2.
  fs::path write_config(const std::string& id) {
    const std::string corpus = std::string(LEVANTER_SOURCE_DIR) + "/data/corpus/austen/";
    const fs::path c = root_ / (id + ".yaml");
    std::ofstream(c) << "data:\n  train_urls: [\"" << corpus << "train.jsonl.gz\"]\n  validation_urls: [\"" << corpus
                     << "validation.jsonl.gz\"]\n  cache_dir: " << (root_ / "cache").string()
                     << "\nmodel: {type: gpt2, hidden_dim: 32, num_heads: 2, num_layers: 1, seq_len: 32}\n"
                        "trainer:\n  id: "
                     << id
                     << "\n  num_train_steps: 6\n  train_batch_size: 4\n  steps_per_eval: 2\n  max_eval_batches: 2\n"
                        "  num_threads: 1\n  peak_flops: 1e9\n  log_dir: "
                     << (root_ / "logs").string() << "\n  checkpointer: {base_path: " << (root_ / "ckpt").string()
                     << ", save_interval: 1h, keep: [{every: 2}]}\n"
                     << "  sample: {steps: 3, prompts: [\"It is\"], max_new_tokens: 6}\n"
                     << "  tracker:\n    - type: json\n    - type: tensorboard\n      logdir: "
                     << (root_ / "tb").string() << "\n";
    return c;
  }

  int train(const fs::path& config, const std::string& env = "") {
    const std::string cmd = env + " " + LEVANTER_BINARY_DIR + "/levanter train --quiet --config '" + config.string() +
                            "' > '" + (root_ / "out.txt").string() + "' 2>&1";
    const int rc = std::system(cmd.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  }

  // What TensorBoard loads from <root>/tb/<id>.
  nlohmann::json tensorboard_view(const std::string& id) {
    const std::string python = LEVANTER_INTEROP_PYTHON;
    EXPECT_TRUE(fs::exists(python)) << python << " is missing: run scripts/interop_env (scripts/test does)";
    const fs::path out = root_ / "view.json";
    const std::string cmd = python + " " + LEVANTER_SOURCE_DIR + "/tests/interop/tensorboard_reference.py '" +
                            (root_ / "tb" / id).string() + "' > '" + out.string() + "' 2> '" +
                            (root_ / "py.txt").string() + "'";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << slurp(root_ / "py.txt");
    return nlohmann::json::parse(slurp(out));
  }

  fs::path root_;
};

// tag -> step -> value for the metrics whose values do not depend on timing.
std::map<std::string, std::map<int64_t, double>> deterministic(const nlohmann::json& scalars) {
  std::map<std::string, std::map<int64_t, double>> out;
  for (auto it = scalars.begin(); it != scalars.end(); ++it) {
    const std::string& tag = it.key();
    if (tag.rfind("throughput/", 0) == 0 || tag.find("time") != std::string::npos) continue;
    for (const auto& point : it.value()) {
      EXPECT_EQ(out[tag].count(point[0].get<int64_t>()), 0u) << tag << " logged twice at step " << point[0];
      out[tag][point[0].get<int64_t>()] = point[1].get<double>();
    }
  }
  return out;
}

}  // namespace

TEST_F(TensorboardInterop, TensorboardLoadsEveryMetricOfTheRunWithItsValue) {
  ASSERT_EQ(train(write_config("whole")), 0) << slurp(root_ / "out.txt");
  const nlohmann::json view = tensorboard_view("whole");
  EXPECT_EQ(view["files"], 1);
  // Every numeric value of metrics.jsonl is in TensorBoard at its step, as the float32 TensorBoard stores.
  std::ifstream rows(root_ / "logs" / "whole" / "metrics.jsonl");
  int compared = 0, texts = 0;
  std::map<std::string, std::map<int64_t, double>> tb;
  for (auto it = view["scalars"].begin(); it != view["scalars"].end(); ++it) {
    for (const auto& p : it.value()) tb[it.key()][p[0].get<int64_t>()] = p[1].get<double>();
  }
  for (std::string line; std::getline(rows, line);) {
    const nlohmann::json row = nlohmann::json::parse(line);
    const int64_t step = row["step"].get<int64_t>();
    for (auto it = row.begin(); it != row.end(); ++it) {
      if (it.value().is_string()) {  // the text samples: TensorBoard's Text tab shows each at its step
        bool found = false;
        for (const auto& p : view["text"].value(it.key(), nlohmann::json::array())) {
          if (p[0] == step) found = (p[1] == it.value());
        }
        EXPECT_TRUE(found) << it.key() << " at step " << step << " is not in TensorBoard as text: " << view["text"];
        ++texts;
        continue;
      }
      if (it.key() == "step" || !it.value().is_number()) continue;
      ASSERT_TRUE(tb[it.key()].count(step)) << it.key() << " at step " << step << " is not in TensorBoard";
      EXPECT_EQ(tb[it.key()][step], static_cast<double>(static_cast<float>(it.value().get<double>()))) << it.key();
      ++compared;
    }
  }
  EXPECT_GT(compared, 6 * 3);  // at least loss, learning rate and one more per step
  EXPECT_EQ(texts, 2);         // samples/0 after 3 and 6 steps
  ASSERT_EQ(tb["train/loss"].size(), 6u);
  EXPECT_EQ(tb["train/loss"].begin()->first, 0);
  EXPECT_EQ(tb["eval/loss"].size(), 3u);  // after 2, 4 and 6 steps
  // The resolved config, as a text summary at step 0 (markdown: an indented code block).
  ASSERT_TRUE(view["text"].contains("config"));
  const std::string text = view["text"]["config"][0][1];
  EXPECT_THAT(text, ::testing::HasSubstr("    trainer:\n"));
  EXPECT_THAT(text, ::testing::HasSubstr("num_train_steps: 6"));
}

TEST_F(TensorboardInterop, AKilledAndResumedRunShowsWhatAnUninterruptedRunShows) {
  ASSERT_EQ(train(write_config("whole")), 0) << slurp(root_ / "out.txt");
  const fs::path resumed = write_config("resumed");
  ASSERT_NE(train(resumed, "LEVANTER_FAULT=train_step_end:5"), 0);  // SIGKILL after step 5; checkpoint after 4
  ASSERT_EQ(train(resumed), 0) << slurp(root_ / "out.txt");
  const nlohmann::json view = tensorboard_view("resumed");
  EXPECT_EQ(view["files"], 2);  // one per process, as TensorBoard's writers do
  const auto whole = deterministic(tensorboard_view("whole")["scalars"]);
  const auto again = deterministic(view["scalars"]);
  EXPECT_EQ(again, whole);  // the same tags, steps and (bitwise resume) values
  ASSERT_TRUE(again.count("train/loss"));
  EXPECT_EQ(again.at("train/loss").size(), 6u);
}
