// Run safety (issue 15): one run per run directory (a lock naming the holder; run ids that are not directory
// names refused), output that cannot be written stops the run with an error naming the file (after a checkpoint),
// SIGINT/SIGTERM/SIGHUP stop between steps with a checkpoint and a distinct exit status (the resume is bit-exact),
// and metrics.jsonl holds each step's row once after a resume. In process where possible, through the CLI in child
// processes where the user-visible behaviour (exit status, messages, real signals) is the point.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "levanter/checkpoint/checkpoint.h"
#include "levanter/config/config.h"
#include "levanter/runtime/file_io.h"
#include "levanter/runtime/signals.h"
#include "levanter/temp_dir.h"
#include "levanter/trainer/run_lock.h"
#include "levanter/trainer/trainer.h"

extern char** environ;

namespace fs = std::filesystem;
using levanter::trainer::TrainLmConfig;
using levanter::trainer::TrainOptions;
using levanter::trainer::TrainResult;
using ::testing::HasSubstr;

namespace {

const std::string kCorpus = std::string(LEVANTER_SOURCE_DIR) + "/data/corpus/austen/validation.jsonl.gz";
const std::string kBinary = std::string(LEVANTER_BINARY_DIR) + "/levanter";

using levanter::testing::slurp;

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

// The `step`s of the rows that have `key`, in file order.
std::vector<int64_t> steps_with(const fs::path& metrics, const char* key) {
  std::vector<int64_t> out;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    auto row = nlohmann::json::parse(line);
    if (row.contains(key)) out.push_back(row["step"].get<int64_t>());
  }
  return out;
}

// A child process running the CLI with stdout and stderr to `log`.
struct Child {
  pid_t pid = -1;
  int wait() {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    pid = -1;
    return status;
  }
  ~Child() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      wait();
    }
  }
};

std::unique_ptr<Child> spawn(const std::vector<std::string>& args, const fs::path& log) {
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(kBinary.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, stops;
  sigemptyset(&none);
  sigemptyset(&stops);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&stops, s);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &stops);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  auto c = std::make_unique<Child>();
  int rc = posix_spawn(&c->pid, kBinary.c_str(), &fa, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw std::runtime_error("posix_spawn failed");
  return c;
}

int run_cli(const std::vector<std::string>& args, const fs::path& log) { return spawn(args, log)->wait(); }

// Waits until metrics.jsonl has a train row of step >= `step` (or the child exited). False on timeout.
bool wait_for_step(const fs::path& metrics, int64_t step, pid_t pid) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream in(metrics);
    for (std::string line; std::getline(in, line);) {
      auto row = nlohmann::json::parse(line, nullptr, false);
      if (!row.is_discarded() && row.contains("train/loss") && row["step"].get<int64_t>() >= step) return true;
    }
    if (::waitpid(pid, nullptr, WNOHANG) != 0) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

class RunSafetyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = levanter::testing::fresh_test_dir("levanter_run_safety");
    levanter::runtime::clear_stop_request();
  }
  void TearDown() override {
    levanter::runtime::clear_stop_request();
    fs::remove_all(root_);
  }

  // A 2-layer, 16-wide GPT-2 on the bundled validation split, with dropout (so the resumed key matters too).
  fs::path write_config(int64_t steps, const std::string& keep_every = "3") {
    fs::path f = root_ / "tiny.yaml";
    std::ofstream(f) << "data:\n  train_urls: [\"" << kCorpus << "\"]\n  validation_urls: [\"" << kCorpus
                     << "\"]\n  cache_dir: " << (root_ / "cache").string()
                     << "\nmodel:\n  type: gpt2\n  hidden_dim: 16\n  num_heads: 2\n  num_layers: 2\n  seq_len: 32\n"
                        "  resid_pdrop: 0.1\n"
                        "trainer:\n  seed: 1\n  num_train_steps: "
                     << steps
                     << "\n  train_batch_size: 4\n  steps_per_eval: 2\n"
                        "  max_eval_batches: 1\n  num_threads: 2\n  peak_flops: 1e9\n  id: t\n  log_dir: "
                     << (root_ / "logs").string() << "\n  checkpointer:\n    base_path: " << (root_ / "ckpt").string()
                     << "\n    save_interval: 0s\n    keep: [{every: " << keep_every
                     << "}]\n"
                        "optimizer:\n  learning_rate: 1e-2\n  warmup: 0.25\n";
    return f;
  }
  TrainLmConfig config(int64_t steps = 6, const std::vector<std::string>& overrides = {},
                       const std::string& keep_every = "3") {
    return levanter::trainer::load_train_config(write_config(steps, keep_every).string(), overrides);
  }
  static TrainOptions quiet() {
    TrainOptions o;
    o.progress = false;
    return o;
  }
  fs::path metrics() const { return root_ / "logs" / "t" / "metrics.jsonl"; }
  std::vector<std::string> cli_train(const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> a{"train", "--config", (root_ / "tiny.yaml").string()};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }

  fs::path root_;
};

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

// --- 1. one run per run directory ---------------------------------------------------------------------------

TEST_F(RunSafetyTest, RunIdsThatAreNotDirectoryNamesAreRefused) {
  for (const char* bad : {"../escape", "a/b", "..", ".", ""}) {
    std::string e = error_of([&] { config(6, {"--trainer.id", bad}); });
    EXPECT_THAT(e, HasSubstr("trainer.id")) << "id '" << bad << "'";
    EXPECT_THAT(e, HasSubstr("names a directory")) << "id '" << bad << "'";
  }
  // A config built in code is checked by the Trainer too.
  TrainLmConfig c = config();
  c.trainer.id = "x/../../y";
  EXPECT_THAT(error_of([&] { levanter::trainer::Trainer t(c, quiet()); }), HasSubstr("trainer.id"));
  EXPECT_FALSE(fs::exists(root_ / "y"));
  EXPECT_NO_THROW(config(6, {"--trainer.id", "run-1.v2_ok"}));
}

TEST_F(RunSafetyTest, ASecondTrainerOfTheSameRunIsRefusedNamingTheHolder) {
  TrainLmConfig c = config();
  {
    levanter::trainer::Trainer first(c, quiet());
    std::string e = error_of([&] { levanter::trainer::Trainer second(c, quiet()); });
    EXPECT_THAT(e, HasSubstr("run directory " + (root_ / "logs" / "t").string() + " is in use"));
    EXPECT_THAT(e, HasSubstr("pid " + std::to_string(::getpid())));
    char host[256] = {0};
    ::gethostname(host, sizeof(host) - 1);
    EXPECT_THAT(e, HasSubstr(std::string(" on ") + host));
    EXPECT_THAT(e, HasSubstr("--trainer.id"));
    // Another log_dir, the same checkpoint directory: refused too.
    TrainLmConfig other = config(6, {"--trainer.log_dir", (root_ / "logs2").string()});
    EXPECT_THAT(error_of([&] { levanter::trainer::Trainer t(other, quiet()); }),
                HasSubstr("checkpoint directory " + (root_ / "ckpt" / "t").string() + " is in use"));
  }
  // Released with the Trainer.
  EXPECT_NO_THROW(levanter::trainer::Trainer again(c, quiet()));
  // The run directory and the checkpoint directory may be one directory: locked once.
  TrainLmConfig same = config(6, {"--trainer.log_dir", (root_ / "both").string(), "--trainer.checkpointer.base_path",
                                  (root_ / "both").string()});
  EXPECT_NO_THROW(levanter::trainer::Trainer t(same, quiet()));
}

TEST_F(RunSafetyTest, ASecondProcessIsRefusedAndTheLockOfAKilledOneIsTakenOver) {
  write_config(100000, "1000");
  auto first = spawn(cli_train({"--quiet"}), root_ / "first.txt");
  ASSERT_TRUE(wait_for_step(metrics(), 1, first->pid)) << slurp(root_ / "first.txt");
  int status = run_cli(cli_train({"--quiet"}), root_ / "second.txt");
  const std::string second = slurp(root_ / "second.txt");
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status << ": " << second;
  EXPECT_THAT(second, HasSubstr("error: the run directory " + (root_ / "logs" / "t").string() + " is in use"));
  EXPECT_THAT(second, HasSubstr("pid " + std::to_string(first->pid)));
  // The refused run wrote nothing: the first one's metrics are all rows of consecutive steps.
  auto steps = steps_with(metrics(), "train/loss");
  for (size_t i = 0; i < steps.size(); ++i) EXPECT_EQ(steps[i], static_cast<int64_t>(i));

  // Killed, the first process leaves its lock file (with its pid) behind: no lock any more.
  ::kill(first->pid, SIGKILL);
  first->wait();
  ASSERT_TRUE(fs::exists(root_ / "logs" / "t" / levanter::trainer::RunLock::kFileName));
  EXPECT_THAT(slurp(root_ / "logs" / "t" / "run.lock"), HasSubstr("\"pid\":"));
  status = run_cli(cli_train({"--quiet", "--trainer.num_train_steps", "3"}), root_ / "third.txt");
  EXPECT_EQ(status, 0) << slurp(root_ / "third.txt");
}

// --- 2. output that cannot be written --------------------------------------------------------------------------

TEST_F(RunSafetyTest, MetricsThatCannotBeWrittenStopTheRunAfterACheckpoint) {
  fs::create_directories(root_ / "logs" / "t");
  fs::create_symlink("/dev/full", metrics());
  std::string e = error_of([&] { levanter::trainer::train(config(), quiet()); });
  EXPECT_THAT(e, HasSubstr(metrics().string() + ": write failed"));
  EXPECT_THAT(e, HasSubstr("No space left on device"));
  // The first step's row could not be written: stopped after step 1, with a checkpoint of it.
  EXPECT_THAT(e,
              HasSubstr("stopped after step 1 of 6: saved checkpoint " + (root_ / "ckpt" / "t" / "step-1").string()));
  EXPECT_TRUE(fs::exists(root_ / "ckpt" / "t" / "step-1" / "manifest.json"));
}

TEST_F(RunSafetyTest, ARunDirectoryRemovedMidRunStopsTheRun) {
  levanter::trainer::Trainer t(config(), quiet());
  t.add_hook(1, [&](const levanter::trainer::StepInfo& info, levanter::trainer::TrainerState&) {
    if (info.step == 1) fs::remove_all(root_ / "logs" / "t");
  });
  std::string e = error_of([&] { t.train(); });
  EXPECT_THAT(e, HasSubstr(metrics().string() + ": the metrics file is gone"));
  // Step 2's row went nowhere: stopped after step 3 with its checkpoint (step-3 is also a periodic one).
  EXPECT_THAT(e, HasSubstr("stopped after step 3 of 6"));
  EXPECT_THAT(e, HasSubstr((root_ / "ckpt" / "t" / "step-3").string()));
  EXPECT_TRUE(fs::exists(root_ / "ckpt" / "t" / "step-3" / "manifest.json"));
}

TEST_F(RunSafetyTest, TheCliExitsWithAnErrorWhenMetricsCannotBeWritten) {
  write_config(4);
  fs::create_directories(root_ / "logs" / "t");
  fs::create_symlink("/dev/full", metrics());
  int status = run_cli(cli_train({"--quiet"}), root_ / "out.txt");
  const std::string out = slurp(root_ / "out.txt");
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status << ": " << out;
  EXPECT_THAT(out, HasSubstr("error: " + metrics().string() + ": write failed"));
}

TEST_F(RunSafetyTest, RunRecordThatCannotBeWrittenIsAnError) {
  fs::create_directories(root_ / "logs" / "t" / "run.json" / "in-the-way");
  EXPECT_THAT(error_of([&] { levanter::trainer::train(config(), quiet()); }), HasSubstr("run.json"));
}

TEST_F(RunSafetyTest, EvalOutputThatCannotBeWrittenIsAnError) {
  TrainResult r = levanter::trainer::train(config(1), quiet());
  ASSERT_TRUE(r.last_checkpoint);
  auto eval = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> a{"eval", "--config", (root_ / "tiny.yaml").string(), "--checkpoint", *r.last_checkpoint};
    a.insert(a.end(), extra.begin(), extra.end());
    return run_cli(a, root_ / "eval.txt");
  };
  int status = eval({"--output", "/dev/full"});
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status << ": " << slurp(root_ / "eval.txt");
  EXPECT_THAT(slurp(root_ / "eval.txt"), HasSubstr("error: /dev/full: write failed"));
  const std::string missing = (root_ / "no" / "such" / "dir" / "eval.jsonl").string();
  status = eval({"--output", missing});
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
  EXPECT_THAT(slurp(root_ / "eval.txt"), HasSubstr("error: " + missing + ": cannot create"));
  // Standard output on a full device.
  const std::string cmd = kBinary + " eval --config '" + (root_ / "tiny.yaml").string() + "' --checkpoint '" +
                          *r.last_checkpoint + "' > /dev/full 2> '" + (root_ / "eval.txt").string() + "'";
  status = std::system(cmd.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
  EXPECT_THAT(slurp(root_ / "eval.txt"), HasSubstr("standard output"));
  // And when it works, one line.
  ASSERT_EQ(eval({"--output", (root_ / "ok.jsonl").string()}), 0) << slurp(root_ / "eval.txt");
  EXPECT_THAT(slurp(root_ / "ok.jsonl"), HasSubstr("\"eval/loss\""));
}

// --- 3. signals --------------------------------------------------------------------------------------------------

namespace {
// Waits up to 10 s for the receiver thread to record a stop signal; whether one was.
bool stop_recorded() {
  for (int i = 0; i < 1000 && levanter::runtime::stop_signal() == 0; ++i) ::usleep(10000);
  return levanter::runtime::stop_signal() != 0;
}
}  // namespace

TEST(StopSignals, TheFirstSignalIsRecordedTheSecondEndsTheProcess) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    EXPECT_EXIT(
        {
          levanter::runtime::install_stop_signal_handlers();
          ::kill(::getpid(), sig);  // to the process, as Ctrl-C and kill send it
          if (!stop_recorded() || levanter::runtime::stop_signal() != sig) std::_Exit(3);
          ::kill(::getpid(), sig);  // the handler was reset by the first: the default action
          ::sleep(10);
          std::_Exit(4);
        },
        ::testing::KilledBySignal(sig), "")
        << levanter::runtime::stop_signal_name(sig);
  }
  // Once the trainer has seen the flag, any of the three ends the process.
  EXPECT_EXIT(
      {
        levanter::runtime::install_stop_signal_handlers();
        ::kill(::getpid(), SIGINT);
        if (!stop_recorded()) std::_Exit(3);
        levanter::runtime::restore_default_stop_signals();
        ::kill(::getpid(), SIGTERM);
        ::sleep(10);
        std::_Exit(4);
      },
      ::testing::KilledBySignal(SIGTERM), "");
  // The thread that installed the handlers (and the threads it starts) never takes them: a signal sent while it
  // computes runs the handler on the receiver's stack.
  EXPECT_EXIT(
      {
        levanter::runtime::install_stop_signal_handlers();
        sigset_t mask;
        ::pthread_sigmask(SIG_BLOCK, nullptr, &mask);
        if (!sigismember(&mask, SIGINT) || !sigismember(&mask, SIGTERM)) std::_Exit(3);
        std::thread([] {
          sigset_t m;
          ::pthread_sigmask(SIG_BLOCK, nullptr, &m);
          if (!sigismember(&m, SIGINT)) std::_Exit(5);
        }).join();
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "");
  EXPECT_EQ(levanter::runtime::stop_exit_code(SIGINT), 130);
  EXPECT_EQ(levanter::runtime::stop_exit_code(SIGTERM), 143);
  EXPECT_EQ(levanter::runtime::stop_exit_code(SIGHUP), 129);
}

TEST_F(RunSafetyTest, AStopRequestCheckpointsBetweenStepsAndTheResumeIsBitExact) {
  TrainResult straight = levanter::trainer::train(config(6, {"--trainer.id", "straight"}, "1000"), quiet());
  {
    levanter::trainer::Trainer t(config(6, {}, "1000"), quiet());
    t.add_hook(1, [](const levanter::trainer::StepInfo& info, levanter::trainer::TrainerState&) {
      if (info.step == 3) levanter::runtime::request_stop(SIGTERM);
    });
    TrainResult r = t.train();
    EXPECT_EQ(r.stopped_by_signal, SIGTERM);
    EXPECT_EQ(r.final_step, 4);
    ASSERT_TRUE(r.last_checkpoint);
    EXPECT_EQ(*r.last_checkpoint, (root_ / "ckpt" / "t" / "step-4").string());
    // Saved as a temporary checkpoint: the resumed run deletes it once it has saved a newer one.
    EXPECT_TRUE(levanter::checkpoint::read_checkpoint_metadata(*r.last_checkpoint).value("is_temporary", false));
  }
  // The periodic evaluations after steps 2 and 4, no final one.
  EXPECT_EQ(steps_with(metrics(), "eval/loss"), (std::vector<int64_t>{2, 4}));
  levanter::runtime::clear_stop_request();
  TrainResult resumed = levanter::trainer::train(config(6, {}, "1000"), quiet());
  EXPECT_EQ(resumed.start_step, 4);
  EXPECT_EQ(resumed.final_loss, straight.final_loss);
  EXPECT_FALSE(fs::exists(root_ / "ckpt" / "t" / "step-4"));
  EXPECT_EQ(losses(metrics()), losses(root_ / "logs" / "straight" / "metrics.jsonl"));
}

// The real thing: `levanter train` receives SIGTERM while it trains; it finishes its step, checkpoints and exits
// with 143; the same command resumes, and every step's loss has the bits of an uninterrupted run.
TEST_F(RunSafetyTest, SigtermStopsTheCliWithACheckpointAndTheResumeIsBitExact) {
  const int64_t kSteps = 80;
  write_config(kSteps, "1000");
  ASSERT_EQ(run_cli(cli_train({"--quiet", "--trainer.id", "straight"}), root_ / "straight.txt"), 0)
      << slurp(root_ / "straight.txt");
  auto straight = losses(root_ / "logs" / "straight" / "metrics.jsonl");
  ASSERT_EQ(straight.size(), static_cast<size_t>(kSteps));

  auto child = spawn(cli_train(), root_ / "stopped.txt");
  ASSERT_TRUE(wait_for_step(metrics(), 2, child->pid)) << slurp(root_ / "stopped.txt");
  ::kill(child->pid, SIGTERM);
  int status = child->wait();
  const std::string out = slurp(root_ / "stopped.txt");
  ASSERT_TRUE(WIFEXITED(status)) << status << ": " << out;
  ASSERT_EQ(WEXITSTATUS(status), 143) << out;
  // The step it stopped at: the last row written; its checkpoint is there, complete.
  const int64_t stopped = steps_with(metrics(), "train/loss").back() + 1;
  ASSERT_LT(stopped, kSteps) << "the run finished before the signal arrived";
  const std::string ckpt = (root_ / "ckpt" / "t" / ("step-" + std::to_string(stopped))).string();
  EXPECT_THAT(
      out, HasSubstr("stopped by SIGTERM after step " + std::to_string(stopped) + " of 80 (checkpoint: " + ckpt + ")"));
  EXPECT_TRUE(fs::exists(fs::path(ckpt) / "manifest.json"));

  ASSERT_EQ(run_cli(cli_train({"--quiet"}), root_ / "resumed.txt"), 0) << slurp(root_ / "resumed.txt");
  EXPECT_THAT(slurp(root_ / "logs" / "t" / "run.json"), HasSubstr(ckpt));
  auto resumed = losses(metrics());
  ASSERT_EQ(resumed.size(), straight.size());
  for (const auto& [step, values] : straight) {
    ASSERT_EQ(resumed[step].size(), 1u) << "step " << step;
    EXPECT_EQ(resumed[step][0], values[0]) << "step " << step;
  }
}

// SIGINT, as Ctrl-C sends it: exit status 130.
TEST_F(RunSafetyTest, SigintStopsTheCliWith130) {
  write_config(100000, "1000");
  auto child = spawn(cli_train({"--quiet"}), root_ / "out.txt");
  ASSERT_TRUE(wait_for_step(metrics(), 0, child->pid)) << slurp(root_ / "out.txt");
  ::kill(child->pid, SIGINT);
  int status = child->wait();
  const std::string out = slurp(root_ / "out.txt");
  ASSERT_TRUE(WIFEXITED(status)) << status << ": " << out;
  EXPECT_EQ(WEXITSTATUS(status), 130) << out;
  EXPECT_THAT(out, HasSubstr("stopped by SIGINT after step"));
}

// --- 4. metrics rows after a resume ------------------------------------------------------------------------------

TEST_F(RunSafetyTest, AResumedRunRewritesTheRowsOfTheStepsItRedoes) {
  TrainResult straight = levanter::trainer::train(config(6, {"--trainer.id", "straight"}), quiet());
  {
    // Crashes right after step 5 (index 4): its rows of steps 3 and 4 and the evaluation after 4 steps are in
    // metrics.jsonl, the newest checkpoint is step-3.
    levanter::trainer::Trainer t(config(), quiet());
    t.add_hook(1, [](const levanter::trainer::StepInfo& info, levanter::trainer::TrainerState&) {
      if (info.step == 4) throw std::logic_error("crash after step 5");
    });
    EXPECT_THROW(t.train(), std::logic_error);
  }
  EXPECT_EQ(steps_with(metrics(), "train/loss"), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(steps_with(metrics(), "eval/loss"), (std::vector<int64_t>{2, 4}));
  std::ofstream(metrics(), std::ios::app) << "{\"step\": 5, \"train/lo";  // a write a crash cut short

  TrainResult resumed = levanter::trainer::train(config(), quiet());
  EXPECT_EQ(resumed.start_step, 3);
  // Every row once, in order; the evaluation after step 2 (before the checkpoint) was kept, not redone.
  EXPECT_EQ(steps_with(metrics(), "train/loss"), (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(steps_with(metrics(), "eval/loss"), (std::vector<int64_t>{2, 4, 6}));
  EXPECT_EQ(losses(metrics()), losses(root_ / "logs" / "straight" / "metrics.jsonl"));
  std::ifstream in(metrics());
  for (std::string line; std::getline(in, line);) EXPECT_NO_THROW(nlohmann::json::parse(line)) << line;

  // A finished run started again evaluates again: its final evaluation row is replaced, not repeated.
  levanter::trainer::train(config(), quiet());
  EXPECT_EQ(steps_with(metrics(), "train/loss"), (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(steps_with(metrics(), "eval/loss"), (std::vector<int64_t>{2, 4, 6}));
}

TEST_F(RunSafetyTest, AFreshStartForgetsTheRowsOfAnEarlierAttempt) {
  levanter::trainer::train(config(4), quiet());
  // Starting over (the checkpoints deleted): the old rows would be mixed with the new run's.
  fs::remove_all(root_ / "ckpt" / "t");
  levanter::trainer::train(config(4), quiet());
  EXPECT_EQ(steps_with(metrics(), "train/loss"), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(steps_with(metrics(), "eval/loss"), (std::vector<int64_t>{2, 4}));
}
