// Reproducibility as a test: a run killed with SIGKILL at arbitrary points (once in the middle of a step,
// once while a checkpoint is being written) and started again with the same command produces, at every
// step, exactly the same loss bits as a run that was never interrupted. Runs the real CLI in subprocesses.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

namespace fs = std::filesystem;

namespace {

const std::string kBinary = std::string(LEVANTER_BINARY_DIR) + "/levanter";

fs::path make_config(const fs::path& dir, const std::string& optimizer = "  learning_rate: 1e-2\n") {
  fs::create_directories(dir);
  std::string corpus = std::string(LEVANTER_SOURCE_DIR) + "/data/corpus/austen/validation.jsonl.gz";
  std::ofstream(dir / "tiny.yaml") << "data:\n"
                                      "  train_urls: [\""
                                   << corpus << "\"]\n  validation_urls: [\"" << corpus
                                   << "\"]\n"
                                      "  cache_dir: "
                                   << (dir / "cache").string()
                                   << "\n"
                                      "model:\n  type: gpt2\n  hidden_dim: 16\n  num_heads: 2\n  num_layers: 2\n"
                                      "  seq_len: 32\n  resid_pdrop: 0.1\n"
                                      "trainer:\n  seed: 3\n  num_train_steps: 12\n  train_batch_size: 4\n"
                                      "  per_device_parallelism: 2\n  steps_per_eval: 100\n  max_eval_batches: 1\n"
                                      "  num_threads: 2\n  peak_flops: 1e9\n  id: resume-test\n"
                                      "  checkpointer:\n    save_interval: 0s\n    keep: [{every: 3}]\n"
                                      "optimizer:\n  warmup: 2\n"
                                   << optimizer;
  return dir / "tiny.yaml";
}

// Runs `levanter train` with the given LEVANTER_FAULT (empty: none); returns the wait status.
int run_train(const fs::path& config, const fs::path& work, const std::string& fault) {
  std::string cmd = "cd '" + work.string() + "' && " + (fault.empty() ? "" : "LEVANTER_FAULT=" + fault + " ") +
                    kBinary + " train --quiet --config '" + config.string() + "' --trainer.log_dir '" +
                    (work / "logs").string() + "' --trainer.checkpointer.base_path '" + (work / "ckpt").string() +
                    "' > '" + (work / "out.txt").string() + "' 2>&1";
  return std::system(cmd.c_str());
}

// step -> every train/loss value logged for it, as the JSON text of the number (exact bits).
std::map<int64_t, std::vector<std::string>> losses(const fs::path& metrics) {
  std::map<int64_t, std::vector<std::string>> out;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    auto row = nlohmann::json::parse(line);
    if (row.contains("train/loss")) out[row["step"].get<int64_t>()].push_back(row["train/loss"].dump());
  }
  return out;
}

bool killed(int status) { return WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGKILL); }

void killed_twice_and_resumed(const std::string& name, const std::string& optimizer) {
  fs::path root = fs::temp_directory_path() / ("levanter_resume_" + name + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::path config = make_config(root, optimizer);

  // Uninterrupted.
  fs::path a = root / "straight";
  fs::create_directories(a);
  ASSERT_EQ(run_train(config, a, ""), 0) << std::ifstream(a / "out.txt").rdbuf();
  auto straight = losses(a / "logs" / "resume-test" / "metrics.jsonl");
  ASSERT_EQ(straight.size(), 12u);

  // Interrupted: killed in the middle of step 4 (after backward, before the update), then while writing the
  // checkpoint of step 9, then run to the end.
  fs::path b = root / "interrupted";
  fs::create_directories(b);
  int s1 = run_train(config, b, "train_step_mid:4");
  EXPECT_TRUE(killed(s1)) << "status " << s1 << ": " << std::ifstream(b / "out.txt").rdbuf();
  int s2 = run_train(config, b, "checkpoint_write:9");
  EXPECT_TRUE(killed(s2)) << "status " << s2 << ": " << std::ifstream(b / "out.txt").rdbuf();
  // The half-written step-9 checkpoint must not be what the next start loads: it resumes from step 6.
  ASSERT_EQ(run_train(config, b, ""), 0) << std::ifstream(b / "out.txt").rdbuf();
  std::ifstream record(b / "logs" / "resume-test" / "run.json");
  EXPECT_THAT(std::string(std::istreambuf_iterator<char>(record), {}), ::testing::HasSubstr("step-6"));
  auto resumed = losses(b / "logs" / "resume-test" / "metrics.jsonl");

  ASSERT_EQ(resumed.size(), straight.size());
  for (const auto& [step, values] : straight) {
    ASSERT_TRUE(resumed.count(step)) << "step " << step << " missing";
    for (const std::string& v : resumed[step]) EXPECT_EQ(v, values[0]) << "step " << step;
  }
  // Metrics rows are 0-based step indices, checkpoint step-N holds N finished steps. The first kill (inside
  // step 4) resumed from step-3: step 3 ran twice; the second kill (writing step-9, after step 8 was logged)
  // resumed from step-6: steps 6, 7 and 8 ran twice. A resumed run rewrites the rows of the steps it redoes
  // (metrics.jsonl keeps the last attempt's), so every step has one row.
  for (int64_t s = 0; s < 12; ++s) EXPECT_EQ(resumed[s].size(), 1u) << "step " << s;
  fs::remove_all(root);
}

}  // namespace

TEST(Resume, KilledTwiceAndResumedGivesIdenticalLossBits) {
  killed_twice_and_resumed("adam", "  learning_rate: 1e-2\n");
}

// Lion's state (one moment per parameter, no second moment) resumes bit for bit too.
TEST(Resume, LionKilledTwiceAndResumedGivesIdenticalLossBits) {
  killed_twice_and_resumed("lion", "  type: lion\n  learning_rate: 1e-3\n");
}

// Sophia-H: momentum, Hessian estimate and the count that seeds its probes; estimates every 2 steps (double backward
// over 2 microbatches with dropout and activation checkpointing), one of them redone after each kill.
TEST(Resume, SophiaKilledTwiceAndResumedGivesIdenticalLossBits) {
  killed_twice_and_resumed("sophia", "  type: sophia-h\n  learning_rate: 1e-3\n  update_interval: 2\n");
}

// Sophia-G: labels sampled from the model for its estimate, from a key that comes back with the state.
TEST(Resume, SophiaGKilledTwiceAndResumedGivesIdenticalLossBits) {
  killed_twice_and_resumed("sophiag", "  type: sophia-g\n  learning_rate: 1e-3\n  update_interval: 2\n");
}

TEST(Resume, SameConfigSameThreadsSameLosses) {
  fs::path root = fs::temp_directory_path() / ("levanter_repeat_" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::path config = make_config(root);
  for (const char* run : {"one", "two"}) {
    fs::create_directories(root / run);
    ASSERT_EQ(run_train(config, root / run, ""), 0) << std::ifstream(root / run / "out.txt").rdbuf();
  }
  EXPECT_EQ(losses(root / "one" / "logs" / "resume-test" / "metrics.jsonl"),
            losses(root / "two" / "logs" / "resume-test" / "metrics.jsonl"));
  fs::remove_all(root);
}
