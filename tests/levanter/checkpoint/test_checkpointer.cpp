// The Checkpointer's policies (Levanter's tests, ported: step policies, time policy, both), the end-of-run
// save, deletion of temporary checkpoints, and trainer.checkpointer config parsing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include "levanter/checkpoint/checkpoint_testing.h"
#include "levanter/checkpoint/checkpointer.h"

using namespace levanter::checkpoint;
using namespace levanter::checkpoint::testing;
using levanter::config::ConfigError;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

namespace {

// A clock the test moves by hand.
struct FakeClock {
  std::chrono::steady_clock::time_point now{std::chrono::hours(1000)};
  void advance(double seconds) {
    now += std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds));
  }
  Checkpointer::Clock fn() {
    return [this] { return now; };
  }
};

TensorGroups tiny(int64_t step) { return {{"model", {{"w", at::full({2}, static_cast<double>(step))}}}}; }

// Levanter's on_step: save when the policy says so.
void on_step(Checkpointer& c, int64_t step) {
  if (c.should_save(step)) c.save(step, tiny(step));
}

std::vector<int64_t> steps_on_disk(const std::string& base) {
  std::vector<int64_t> out;
  for (const auto& [step, path] : list_checkpoints(base)) out.push_back(step);
  return out;
}

CheckpointerConfig policy(double save_interval_s, std::vector<CheckpointInterval> keep) {
  CheckpointerConfig c;
  c.save_interval = std::chrono::duration<double>(save_interval_s);
  c.keep.intervals = std::move(keep);
  return c;
}

const std::vector<CheckpointInterval> kChanging = {{2, 10}, {5, 20}, {10, std::nullopt}};

struct Root {
  struct Trainer {
    CheckpointerConfig checkpointer;
    template <typename V>
    void fields(V& v) {
      v("checkpointer", checkpointer, "Checkpoints");
    }
  } trainer;
  template <typename V>
  void fields(V& v) {
    v("trainer", trainer, "Trainer");
  }
};

}  // namespace

TEST(Checkpointer, ChangingStepPolicy) {
  TempDir dir;
  Checkpointer c(dir.str(), policy(0, kChanging));
  for (int64_t step = 1; step < 50; ++step) on_step(c, step);
  EXPECT_EQ(steps_on_disk(dir.str()), (std::vector<int64_t>{2, 4, 6, 8, 10, 15, 20, 30, 40}));
}

TEST(Checkpointer, TemporalPolicy) {
  TempDir dir;
  FakeClock clock;
  Checkpointer c(dir.str(), policy(10, {}), clock.fn());
  on_step(c, 0);
  clock.advance(10);
  on_step(c, 1);
  EXPECT_THAT(steps_on_disk(dir.str()), ElementsAre(1));
  clock.advance(9);
  on_step(c, 2);
  EXPECT_THAT(steps_on_disk(dir.str()), ElementsAre(1));
  clock.advance(1);
  on_step(c, 3);
  EXPECT_THAT(steps_on_disk(dir.str()), ElementsAre(3));  // the temporary step-1 went once step-3 was complete
}

TEST(Checkpointer, MixedPolicy) {
  TempDir dir;
  FakeClock clock;
  Checkpointer c(dir.str(), policy(10, kChanging), clock.fn());
  on_step(c, 0);
  clock.advance(10);
  on_step(c, 1);
  EXPECT_THAT(steps_on_disk(dir.str()), ElementsAre(1));
  clock.advance(9);
  on_step(c, 2);  // permanent by step; the temporary step-1 is deleted
  EXPECT_THAT(steps_on_disk(dir.str()), ElementsAre(2));
  clock.advance(1);
  on_step(c, 3);  // the timer restarted at step 2
  EXPECT_THAT(steps_on_disk(dir.str()), ElementsAre(2));
  for (int64_t step = 4; step < 11; ++step) {
    clock.advance(10);
    on_step(c, step);
  }
  EXPECT_EQ(steps_on_disk(dir.str()), (std::vector<int64_t>{2, 4, 6, 8, 10}));
  clock.advance(9);
  on_step(c, 11);
  EXPECT_EQ(steps_on_disk(dir.str()), (std::vector<int64_t>{2, 4, 6, 8, 10}));
  for (int64_t step = 12; step < 50; ++step) {
    on_step(c, step);
    clock.advance(10);
  }
  EXPECT_EQ(steps_on_disk(dir.str()), (std::vector<int64_t>{2, 4, 6, 8, 10, 15, 20, 30, 40, 49}));
  EXPECT_TRUE(load_checkpoint(dir / "step-49").is_temporary());
  EXPECT_FALSE(load_checkpoint(dir / "step-40").is_temporary());
}

TEST(Checkpointer, DecideIsLevantersRule) {
  TempDir dir;
  FakeClock clock;
  Checkpointer c(dir.str(), policy(60, {{100, 1000}, {500, std::nullopt}}), clock.fn());
  auto t = clock.now;
  EXPECT_EQ(c.decide(0, t + std::chrono::hours(1)), SaveKind::kNone);  // never at step 0
  EXPECT_EQ(c.decide(200, t), SaveKind::kPermanent);
  EXPECT_EQ(c.decide(1000, t), SaveKind::kPermanent);  // `until` is inclusive
  EXPECT_EQ(c.decide(1100, t), SaveKind::kNone);       // past 1000, every 500
  EXPECT_EQ(c.decide(1500, t), SaveKind::kPermanent);
  EXPECT_EQ(c.decide(7, t + std::chrono::seconds(59)), SaveKind::kNone);
  EXPECT_EQ(c.decide(7, t + std::chrono::seconds(60)), SaveKind::kTemporary);
  c.save(7, tiny(7));  // forced: the policy did not ask, so permanent
  EXPECT_FALSE(load_checkpoint(dir / "step-7").is_temporary());
  EXPECT_EQ(c.decide(7, t + std::chrono::hours(5)), SaveKind::kNone);  // already saved
}

TEST(Checkpointer, RunEndSavesAPermanentCheckpointOnce) {
  TempDir dir;
  FakeClock clock;
  Checkpointer c(dir.str(), policy(10, {{100, std::nullopt}}), clock.fn());
  clock.advance(11);
  on_step(c, 3);  // temporary
  EXPECT_TRUE(load_checkpoint(dir / "step-3").is_temporary());
  // The run ends at step 3: the temporary checkpoint is replaced by a permanent one (atomically).
  EXPECT_EQ(c.on_run_end(3, tiny(3)), dir / "step-3");
  EXPECT_FALSE(load_checkpoint(dir / "step-3").is_temporary());
  EXPECT_EQ(c.on_run_end(3, tiny(3)), std::nullopt);
  // A later attempt that resumes at the very end does not rewrite it.
  Checkpointer again(dir.str(), policy(10, {{100, std::nullopt}}), clock.fn());
  EXPECT_EQ(again.on_run_end(3, tiny(3)), std::nullopt);
  EXPECT_EQ(again.on_run_end(4, tiny(4)), dir / "step-4");
  EXPECT_THAT(steps_on_disk(dir.str()), ElementsAre(3, 4));
}

TEST(Checkpointer, DeletesATemporaryCheckpointLeftByAnEarlierAttempt) {
  for (bool delete_old : {true, false}) {
    SCOPED_TRACE(delete_old);
    TempDir dir;
    FakeClock clock;
    {
      Checkpointer first(dir.str(), policy(10, {{100, std::nullopt}}), clock.fn());
      clock.advance(10);
      on_step(first, 5);
    }
    CheckpointerConfig cfg = policy(10, {{100, std::nullopt}});
    cfg.delete_old_temp_checkpoints = delete_old;
    ::testing::internal::CaptureStderr();
    Checkpointer second(dir.str(), cfg, clock.fn());
    ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(second.pending_temporary().has_value(), delete_old);
    second.save(100, tiny(100));
    EXPECT_EQ(steps_on_disk(dir.str()), (delete_old ? std::vector<int64_t>{100} : std::vector<int64_t>{5, 100}));
  }
}

TEST(Checkpointer, NeverDeletesTheOnlyCheckpointBeforeANewerOneIsComplete) {
  TempDir dir;
  FakeClock clock;
  Checkpointer c(dir.str(), policy(10, {}), clock.fn());
  clock.advance(10);
  on_step(c, 5);  // temporary, the only checkpoint
  // A save that fails...
  EXPECT_THROW(c.save(6, {{"model", {{"c", at::zeros({1}, at::kComplexFloat)}}}}), CheckpointError);
  EXPECT_THAT(steps_on_disk(dir.str()), ElementsAre(5));
  // ...and one killed mid-write leave step-5 as the latest complete checkpoint.
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("LEVANTER_FAULT", "checkpoint_write:7", 1);
    c.save(7, tiny(7), {{"num_threads", 1}});
    std::_Exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  EXPECT_EQ(latest_checkpoint(dir.str()), dir / "step-5");
  // The next successful save replaces it and cleans up the dead writer's directory.
  clock.advance(10);
  ::testing::internal::CaptureStderr();
  on_step(c, 8);
  ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(steps_on_disk(dir.str()), ElementsAre(8));
  for (const auto& e : fs::directory_iterator(dir.str())) EXPECT_EQ(e.path().filename(), "step-8");
}

TEST(CheckpointerConfig, ParsesLevantersKeysWithDefaults) {
  Root r = levanter::config::parse_string<Root>("trainer:\n  checkpointer: {}\n");
  const CheckpointerConfig& d = r.trainer.checkpointer;
  EXPECT_EQ(d.base_path, "checkpoints/");
  EXPECT_DOUBLE_EQ(d.save_interval.seconds(), 900);
  ASSERT_EQ(d.keep.intervals.size(), 1u);
  EXPECT_EQ(d.keep.intervals[0].every, 10000);
  EXPECT_FALSE(d.keep.intervals[0].until);
  EXPECT_TRUE(d.append_run_id_to_base_path);
  EXPECT_TRUE(d.delete_old_temp_checkpoints);

  r = levanter::config::parse_string<Root>(
      "trainer:\n  checkpointer:\n    base_path: /ckpt\n    save_interval: 10m\n"
      "    keep:\n      - every: 2\n        until: 10\n      - every: 5\n    append_run_id_to_base_path: false\n");
  const CheckpointerConfig& c = r.trainer.checkpointer;
  EXPECT_DOUBLE_EQ(c.save_interval.seconds(), 600);
  ASSERT_EQ(c.keep.intervals.size(), 2u);
  EXPECT_EQ(*c.keep.intervals[0].until, 10);
  EXPECT_EQ(c.keep.intervals[1].every, 5);
  EXPECT_EQ(c.expanded_path("run1"), "/ckpt");
  CheckpointerConfig with_id;
  EXPECT_EQ(with_id.expanded_path("run1"), "checkpoints/run1");

  // Dump and re-parse give the same config.
  std::string yaml = levanter::config::dump(levanter::config::to_yaml_value(r));
  EXPECT_THAT(yaml, HasSubstr("keep: [{every: 2, until: 10}, {every: 5}]"));
  Root back = levanter::config::parse_string<Root>(yaml);
  EXPECT_EQ(levanter::config::dump(levanter::config::to_yaml_value(back)), yaml);

  std::vector<levanter::config::DocRow> rows;
  levanter::config::describe(rows, "", Root{});
  bool found = false;
  for (const auto& row : rows) {
    if (row.key == "trainer.checkpointer.keep") {
      found = true;
      EXPECT_EQ(row.default_value, "[{every: 10000}]");
      EXPECT_EQ(row.type, "list of {every, until}");
    }
  }
  EXPECT_TRUE(found);
}

TEST(CheckpointerConfig, BadKeepPoliciesAndUnsupportedValuesAreClearErrors) {
  auto error = [](const std::string& yaml) {
    try {
      levanter::config::parse_string<Root>(yaml, "run.yaml").trainer.checkpointer.validate();
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_THAT(error("trainer:\n  checkpointer:\n    keep:\n      - every: 2\n      - every: 5\n        until: 20\n"),
              HasSubstr("run.yaml:4: trainer.checkpointer.keep.0.until: only the last keep policy may omit 'until'"));
  EXPECT_THAT(error("trainer:\n  checkpointer:\n    keep: [{every: 2, until: 20}, {every: 5, until: 10}]\n"),
              HasSubstr("trainer.checkpointer.keep.1.until: keep policies must be sorted by increasing 'until'"));
  EXPECT_THAT(error("trainer:\n  checkpointer:\n    keep: [{every: 0}]\n"),
              HasSubstr("trainer.checkpointer.keep.0.every: must be a positive number of steps"));
  EXPECT_THAT(error("trainer:\n  checkpointer:\n    keep: [{evry: 3}]\n"), HasSubstr("did you mean 'every'"));
  EXPECT_THAT(error("trainer:\n  checkpointer:\n    save_intervl: 5m\n"), HasSubstr("did you mean 'save_interval'"));
  EXPECT_THAT(error("trainer:\n  checkpointer:\n    base_path: gs://bucket/ckpt\n"),
              HasSubstr("only local paths are supported (gs:// is not)"));
  EXPECT_EQ(error("trainer:\n  checkpointer:\n    keep: []\n    save_interval: 0\n"), "(no error)");
  // Configs built in code are checked when a Checkpointer is made.
  TempDir dir;
  EXPECT_THROW(Checkpointer(dir.str(), policy(1, {{5, std::nullopt}, {10, 100}})), ConfigError);
}
