// trainer.dashboard: the Trainer serves the live dashboard of its run directory while it lives (URL on stderr and in
// <run dir>/dashboard.url), reports the run as live (it holds run.lock), stops and removes the URL when destroyed;
// a port in use is an error naming it; a run without a json tracker is told that the dashboard has nothing to plot.
// And `levanter dashboard RUN_DIR` serves a finished run until SIGTERM, refusing a directory that is not a run.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "levanter/temp_dir.h"
#include "levanter/trainer/trainer.h"
#include "levanter/viz/dashboard.h"

namespace fs = std::filesystem;
using levanter::trainer::TrainLmConfig;
using ::testing::HasSubstr;

namespace {

const std::string kCorpus = std::string(LEVANTER_SOURCE_DIR) + "/data/corpus/austen/validation.jsonl.gz";

using levanter::testing::slurp;

class RunDashboard : public ::testing::Test {
 protected:
  void SetUp() override { root_ = levanter::testing::fresh_test_dir("levanter_run_dashboard"); }
  void TearDown() override { fs::remove_all(root_); }

  fs::path write_config(const std::string& extra) {
    const fs::path f = root_ / "tiny.yaml";
    std::ofstream(f) << "data:\n  train_urls: [\"" << kCorpus << "\"]\n  validation_urls: [\"" << kCorpus
                     << "\"]\n  cache_dir: " << (root_ / "cache").string()
                     << "\nmodel: {type: gpt2, hidden_dim: 16, num_heads: 2, num_layers: 1, seq_len: 16}\n"
                        "trainer:\n  num_train_steps: 3\n  train_batch_size: 2\n  steps_per_eval: 3\n"
                        "  max_eval_batches: 1\n  num_threads: 1\n  peak_flops: 1e9\n  id: d\n  log_dir: "
                     << (root_ / "logs").string() << "\n  checkpointer: {base_path: " << (root_ / "ckpt").string()
                     << ", save_interval: 1h, keep: []}\n"
                     << extra;
    return f;
  }
  TrainLmConfig config(const std::string& extra) {
    return levanter::trainer::load_train_config(write_config(extra).string(), {});
  }
  levanter::trainer::TrainOptions options() {
    levanter::trainer::TrainOptions o;
    o.progress = false;
    return o;
  }
  fs::path root_;
};

}  // namespace

TEST_F(RunDashboard, TheTrainerServesItsRunWhileItLives) {
  const TrainLmConfig c = config("  dashboard: {port: 0}\n");
  const fs::path run_dir = root_ / "logs" / "d";
  std::string url;
  ::testing::internal::CaptureStderr();
  {
    levanter::trainer::Trainer trainer(c, options());
    const std::string err = ::testing::internal::GetCapturedStderr();
    ASSERT_TRUE(fs::exists(run_dir / "dashboard.url"));
    url = slurp(run_dir / "dashboard.url");
    ASSERT_EQ(url.back(), '\n');
    url.pop_back();
    EXPECT_THAT(err, HasSubstr("levanter: dashboard at " + url + "\n"));
    ASSERT_EQ(url.rfind("http://127.0.0.1:", 0), 0u) << url;
    const int port = std::stoi(url.substr(17));
    httplib::Client client("127.0.0.1", port);
    nlohmann::json seen;  // what the dashboard answers after the second step, while training
    trainer.add_hook(1, [&](const levanter::trainer::StepInfo& info, levanter::trainer::TrainerState&) {
      if (info.step != 1) return;
      auto r = client.Get("/api/metrics");
      if (r) seen = nlohmann::json::parse(r->body);
    });
    trainer.train();
    ASSERT_FALSE(seen.is_null());
    EXPECT_EQ(seen["rows"].size(), 2u);
    EXPECT_EQ(seen["live"], true);  // this process holds run.lock
    EXPECT_EQ(nlohmann::json::parse(client.Get("/api/run")->body)["run_id"], "d");
    EXPECT_THAT(nlohmann::json::parse(client.Get("/api/config")->body)["text"].get<std::string>(),
                HasSubstr("num_train_steps: 3"));
  }
  EXPECT_FALSE(fs::exists(run_dir / "dashboard.url"));
  EXPECT_FALSE(httplib::Client("127.0.0.1", std::stoi(url.substr(17))).Get("/"));
}

TEST_F(RunDashboard, APortInUseIsAnErrorAndARunWithoutJsonTrackerIsWarned) {
  levanter::viz::Dashboard other((root_).string());
  const int port = other.start();
  try {
    levanter::trainer::Trainer trainer(config("  dashboard: {port: " + std::to_string(port) + "}\n"), options());
    FAIL() << "the trainer started on a port in use";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("port " + std::to_string(port)));
    EXPECT_THAT(e.what(), HasSubstr("in use"));
  }
  ::testing::internal::CaptureStderr();
  { levanter::trainer::Trainer trainer(config("  dashboard: {port: 0}\n  tracker: {type: noop}\n"), options()); }
  EXPECT_THAT(::testing::internal::GetCapturedStderr(), HasSubstr("no json tracker"));
}

TEST_F(RunDashboard, TheCommandServesARunDirectoryUntilSigterm) {
  const std::string bin = std::string(LEVANTER_BINARY_DIR) + "/levanter";
  const fs::path err = root_ / "err.txt";
  // Not a run directory: an error naming it (and the runs below it).
  fs::create_directories(root_ / "logs" / "r1");
  std::ofstream(root_ / "logs" / "r1" / "run.json") << "{\"run_id\": \"r1\"}\n";
  int rc = std::system((bin + " dashboard '" + (root_ / "logs").string() + "' 2> '" + err.string() + "'").c_str());
  EXPECT_NE(WEXITSTATUS(rc), 0);
  EXPECT_THAT(slurp(err), HasSubstr("is not a run directory"));
  EXPECT_THAT(slurp(err), HasSubstr("r1"));
  rc = std::system((bin + " dashboard '" + (root_ / "nope").string() + "' 2> '" + err.string() + "'").c_str());
  EXPECT_NE(WEXITSTATUS(rc), 0);
  EXPECT_THAT(slurp(err), HasSubstr("no such directory"));

  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    ::execl(bin.c_str(), bin.c_str(), "dashboard", (root_ / "logs" / "r1").c_str(), "--port", "0",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::string url;
  for (int i = 0; i < 300 && url.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const std::string text = slurp(err);
    const size_t at = text.find("dashboard at ");
    if (at != std::string::npos && text.find(' ', at + 13) != std::string::npos) {
      url = text.substr(at + 13, text.find(' ', at + 13) - at - 13);
    }
  }
  ASSERT_FALSE(url.empty()) << slurp(err);
  httplib::Client client("127.0.0.1", std::stoi(url.substr(17)));
  auto r = client.Get("/api/run");
  ASSERT_TRUE(r);
  EXPECT_EQ(nlohmann::json::parse(r->body)["run_id"], "r1");
  EXPECT_EQ(nlohmann::json::parse(client.Get("/api/metrics")->body)["exists"], false);
  ::kill(pid, SIGTERM);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}
