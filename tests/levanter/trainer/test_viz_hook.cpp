// The token-probability view during training (trainer/viz_hook.h), through the real CLI in subprocesses: records at
// step 0, every trainer.viz.steps and at the end; training bit for bit the same with and without it; a run killed
// twice and resumed shows exactly the view of a run never interrupted; no validation set is a warning; and
// `levanter viz` on the final checkpoint writes a page whose embedded scores are the hook's last record.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "levanter/temp_dir.h"
#include "levanter/viz/token_probs.h"

namespace fs = std::filesystem;

namespace {

const std::string kBinary = std::string(LEVANTER_BINARY_DIR) + "/levanter";
const std::string kRun = "viz-test";

fs::path make_config(const fs::path& dir, const std::string& viz, bool validation = true) {
  fs::create_directories(dir);
  const std::string corpus = std::string(LEVANTER_SOURCE_DIR) + "/data/corpus/austen/validation.jsonl.gz";
  std::ofstream(dir / "tiny.yaml") << "data:\n  train_urls: [\"" << corpus << "\"]\n"
                                   << (validation ? "  validation_urls: [\"" + corpus + "\"]\n" : "")
                                   << "  cache_dir: " << (dir / "cache").string()
                                   << "\nmodel:\n  type: gpt2\n  hidden_dim: 16\n  num_heads: 2\n  num_layers: 2\n"
                                      "  seq_len: 32\n  resid_pdrop: 0.1\n"
                                      "trainer:\n  seed: 3\n  num_train_steps: 12\n  train_batch_size: 4\n"
                                      "  per_device_parallelism: 2\n  steps_per_eval: 100\n  max_eval_batches: 1\n"
                                      "  num_threads: 2\n  peak_flops: 1e9\n  id: "
                                   << kRun
                                   << "\n  checkpointer:\n    save_interval: 0s\n    keep: [{every: 3}]\n"
                                      "  viz:\n"
                                   << viz << "optimizer:\n  warmup: 2\n  learning_rate: 1e-2\n";
  return dir / "tiny.yaml";
}

using levanter::testing::slurp;

int run(const std::string& args, const fs::path& work, const std::string& fault = "") {
  fs::create_directories(work);
  const std::string cmd = "cd '" + work.string() + "' && " + (fault.empty() ? "" : "LEVANTER_FAULT=" + fault + " ") +
                          kBinary + " " + args + " > '" + (work / "out.txt").string() + "' 2>&1";
  return std::system(cmd.c_str());
}

int train(const fs::path& config, const fs::path& work, const std::string& fault = "") {
  return run("train --quiet --config '" + config.string() + "' --trainer.log_dir '" + (work / "logs").string() +
                 "' --trainer.checkpointer.base_path '" + (work / "ckpt").string() + "'",
             work, fault);
}

fs::path view_file(const fs::path& work) { return work / "logs" / kRun / levanter::viz::kTokenProbsFile; }

std::vector<std::string> train_losses(const fs::path& work) {
  std::vector<std::string> out;
  std::ifstream in(work / "logs" / kRun / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto row = nlohmann::json::parse(line);
    if (row.contains("train/loss")) out.push_back(row["train/loss"].dump());
  }
  return out;
}

// The page data embedded in a page levanter viz wrote (std::regex would recurse once per character: no).
nlohmann::json embedded_data(const std::string& html) {
  const std::string open = "id=\"token-view-data\">";
  const size_t start = html.find(open);
  if (start == std::string::npos) return nullptr;
  const size_t end = html.find("</script>", start);
  return nlohmann::json::parse(html.substr(start + open.size(), end - start - open.size()));
}

bool killed(int status) { return WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGKILL); }

struct Root {
  fs::path path;
  explicit Root(const std::string& name)
      : path(fs::temp_directory_path() / ("levanter_viz_" + name + std::to_string(::getpid()))) {
    fs::remove_all(path);
  }
  ~Root() { fs::remove_all(path); }
};

}  // namespace

TEST(VizHook, RecordsAtStepZeroEveryNStepsAndTheEndWithoutChangingTraining) {
  Root root("every");
  const fs::path config = make_config(root.path, "    steps: 5\n    num_docs: 3\n    max_tokens: 20\n    top_k: 4\n");
  const fs::path with = root.path / "with";
  ASSERT_EQ(train(config, with), 0) << slurp(with / "out.txt");
  const fs::path without = root.path / "without";
  ASSERT_EQ(train(config.string() + "' --trainer.viz.steps '0", without), 0) << slurp(without / "out.txt");
  EXPECT_FALSE(fs::exists(view_file(without)));
  // The hook only reads the model: the same loss bits at every step.
  EXPECT_EQ(train_losses(with), train_losses(without));
  EXPECT_EQ(train_losses(with).size(), 12u);

  const std::string text = slurp(view_file(with));
  std::vector<nlohmann::json> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 5u) << text;
  EXPECT_EQ(lines[0]["kind"], "docs");
  EXPECT_EQ(lines[0]["source"], "validation");
  EXPECT_EQ(lines[0]["top_k"], 4);
  ASSERT_EQ(lines[0]["docs"].size(), 3u);
  std::vector<int64_t> steps;
  for (size_t i = 1; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i]["kind"], "step");
    steps.push_back(lines[i]["step"].get<int64_t>());
    ASSERT_EQ(lines[i]["docs"].size(), 3u);
    for (size_t d = 0; d < 3; ++d) {
      const size_t n = lines[0]["docs"][d]["tokens"].size();
      EXPECT_GE(n, 2u);
      EXPECT_LE(n, 20u);
      EXPECT_EQ(lines[i]["docs"][d]["p"].size(), n - 1);
      EXPECT_EQ(lines[i]["docs"][d]["rank"].size(), n - 1);
      EXPECT_EQ(lines[i]["docs"][d]["top"][0].size(), 4u);
    }
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{0, 5, 10, 12}));
  // Training lowers the loss of the sample (the documents come from the training text).
  double first = 0, last = 0;
  for (size_t d = 0; d < 3; ++d) {
    first += lines[1]["docs"][d]["loss"].get<double>();
    last += lines[4]["docs"][d]["loss"].get<double>();
  }
  EXPECT_LT(last, first);

  // The same sample from the same seed; another seed picks other documents.
  const fs::path again = root.path / "again";
  ASSERT_EQ(train(config, again), 0) << slurp(again / "out.txt");
  EXPECT_EQ(slurp(view_file(again)), text);
  const fs::path other = root.path / "other";
  ASSERT_EQ(train(config.string() + "' --trainer.seed '4", other), 0) << slurp(other / "out.txt");
  EXPECT_NE(nlohmann::json::parse(slurp(view_file(other)).substr(0, slurp(view_file(other)).find('\n')))["docs"],
            lines[0]["docs"]);

  // `levanter viz` on the final checkpoint scores the same sample: its page embeds the hook's last record.
  const fs::path page = root.path / "page.html";
  ASSERT_EQ(run("viz --config '" + config.string() + "' --checkpoint '" + (with / "ckpt" / kRun).string() +
                    "' --output '" + page.string() + "'",
                root.path / "cli"),
            0)
      << slurp(root.path / "cli" / "out.txt");
  const nlohmann::json data = embedded_data(slurp(page));
  ASSERT_FALSE(data.is_null());
  const nlohmann::json hook = levanter::viz::read_page_data(view_file(with).string());
  ASSERT_EQ(data["series"].size(), 1u);
  EXPECT_EQ(data["series"][0]["step"], 12);
  EXPECT_EQ(data["series"][0]["docs"], hook["series"].back()["docs"]);
  EXPECT_EQ(data["docs"], hook["docs"]);
  EXPECT_TRUE(data["compare"].is_null());

  // What training recorded, every step, as a page.
  const fs::path page3 = root.path / "page3.html";
  ASSERT_EQ(
      run("viz --run '" + (with / "logs" / kRun).string() + "' --output '" + page3.string() + "'", root.path / "cli"),
      0)
      << slurp(root.path / "cli" / "out.txt");
  EXPECT_EQ(embedded_data(slurp(page3)),
            levanter::viz::read_page_data(view_file(with).string(), "Token probabilities: " + kRun));

  // Two checkpoints, and documents from a file (Levanter's option names).
  const fs::path docs = root.path / "docs.jsonl";
  std::ofstream(docs) << "{\"text\": \"It is a truth universally acknowledged.\"}\n\n"
                         "{\"text\": \"naïve café — ☃ 🙂\\nsecond line\"}\n";
  const fs::path page2 = root.path / "page2.html";
  ASSERT_EQ(
      run("viz --config '" + config.string() + "' --checkpoint_path '" + (with / "ckpt" / kRun / "step-3").string() +
              "' --comparison_model_path '" + (with / "ckpt" / kRun).string() + "' --data '" + docs.string() +
              "' --path '" + page2.string() + "' --top_k 2",
          root.path / "cli"),
      0)
      << slurp(root.path / "cli" / "out.txt");
  const nlohmann::json data2 = embedded_data(slurp(page2));
  ASSERT_FALSE(data2.is_null());
  ASSERT_EQ(data2["series"].size(), 2u);
  EXPECT_EQ(data2["series"][0]["step"], 3);
  EXPECT_EQ(data2["series"][1]["step"], 12);
  EXPECT_EQ(data2["compare"], (nlohmann::json{{"a", 0}, {"b", 1}}));
  ASSERT_EQ(data2["docs"].size(), 2u);
  EXPECT_EQ(data2["top_k"], 2);
  EXPECT_EQ(data2["docs"][0]["pieces"][0], "It");
  std::string joined;
  for (const auto& p : data2["docs"][1]["pieces"]) joined += p.get<std::string>();
  EXPECT_THAT(joined, ::testing::HasSubstr("café"));

  // Bad input names the file and line.
  std::ofstream(docs) << "{\"text\": \"fine\"}\n{\"txt\": 1}\n";
  EXPECT_NE(run("viz --config '" + config.string() + "' --checkpoint '" + (with / "ckpt" / kRun).string() +
                    "' --data '" + docs.string() + "' --num_docs 5 --output '" + page2.string() + "'",
                root.path / "cli"),
            0);
  EXPECT_THAT(slurp(root.path / "cli" / "out.txt"), ::testing::HasSubstr(docs.string() + ":2"));
}

TEST(VizHook, KilledTwiceAndResumedShowsTheViewOfAnUninterruptedRun) {
  Root root("resume");
  const fs::path config = make_config(root.path, "    steps: 3\n    num_docs: 2\n    max_tokens: 24\n");
  const fs::path a = root.path / "straight";
  ASSERT_EQ(train(config, a), 0) << slurp(a / "out.txt");
  const fs::path b = root.path / "interrupted";
  // Killed inside step 4 (resumes from step-3: step 3's record is written again), then while writing the checkpoint
  // of step 9 (resumes from step-6: the records of 6 and 9 again).
  int s1 = train(config, b, "train_step_mid:4");
  EXPECT_TRUE(killed(s1)) << s1 << ": " << slurp(b / "out.txt");
  int s2 = train(config, b, "checkpoint_write:9");
  EXPECT_TRUE(killed(s2)) << s2 << ": " << slurp(b / "out.txt");
  ASSERT_EQ(train(config, b), 0) << slurp(b / "out.txt");
  const std::string raw = slurp(view_file(b));
  EXPECT_THAT(raw, ::testing::HasSubstr("{\"kind\":\"resume\",\"step\":3}"));
  EXPECT_THAT(raw, ::testing::HasSubstr("{\"kind\":\"resume\",\"step\":6}"));
  const nlohmann::json straight = levanter::viz::read_page_data(view_file(a).string());
  const nlohmann::json resumed = levanter::viz::read_page_data(view_file(b).string());
  ASSERT_EQ(straight["series"].size(), 5u);  // 0, 3, 6, 9, 12
  EXPECT_EQ(resumed.dump(), straight.dump());

  // Run again once complete: the end is scored again, and the view is unchanged.
  ASSERT_EQ(train(config, b), 0) << slurp(b / "out.txt");
  EXPECT_EQ(levanter::viz::read_page_data(view_file(b).string()).dump(), straight.dump());
  // Trained further, twice: the end of the shorter run (13, not one of every 3 steps) keeps its record.
  ASSERT_EQ(train(config.string() + "' --trainer.num_train_steps '13", b), 0) << slurp(b / "out.txt");
  ASSERT_EQ(train(config.string() + "' --trainer.num_train_steps '14", b), 0) << slurp(b / "out.txt");
  const nlohmann::json longer = levanter::viz::read_page_data(view_file(b).string());
  std::vector<int64_t> steps;
  for (const auto& s : longer["series"]) steps.push_back(s["step"].get<int64_t>());
  EXPECT_EQ(steps, (std::vector<int64_t>{0, 3, 6, 9, 12, 13, 14}));
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(longer["series"][i].dump(), straight["series"][i].dump()) << i;
}

TEST(VizHook, NoValidationSetIsAWarningNotAnError) {
  Root root("noval");
  const fs::path config = make_config(root.path, "    steps: 5\n", /*validation=*/false);
  const fs::path w = root.path / "run";
  ASSERT_EQ(train(config.string() + "' --trainer.num_train_steps '4", w), 0) << slurp(w / "out.txt");
  EXPECT_FALSE(fs::exists(view_file(w)));
  const std::string out = slurp(w / "out.txt");
  const std::string warning = "warning: trainer.viz: no validation set";
  ASSERT_THAT(out, ::testing::HasSubstr(warning));
  EXPECT_EQ(out.find(warning), out.rfind(warning)) << "one warning: " << out;
}

TEST(VizHook, ResumedWithAnotherSampleLeavesTheFileAlone) {
  Root root("changed");
  const fs::path config = make_config(root.path, "    steps: 2\n    num_docs: 2\n    max_tokens: 10\n");
  const fs::path w = root.path / "run";
  ASSERT_EQ(train(config.string() + "' --trainer.num_train_steps '4", w), 0) << slurp(w / "out.txt");
  const std::string before = slurp(view_file(w));
  ASSERT_EQ(train(config.string() + "' --trainer.num_train_steps '6' --trainer.viz.num_docs '3", w), 0)
      << slurp(w / "out.txt");
  EXPECT_THAT(slurp(w / "out.txt"), ::testing::HasSubstr("holds another sample"));
  EXPECT_EQ(slurp(view_file(w)), before);
  EXPECT_EQ(levanter::viz::read_page_data(view_file(w).string())["series"].size(), 3u);  // 0, 2, 4
}
