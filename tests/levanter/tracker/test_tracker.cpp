// Trackers: the JSON log keeps value types (a float loss reads back with its exact bits), appends across runs,
// the composite fans out to every tracker in order, and unknown or network-only trackers are refused by name.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "levanter/config/config.h"
#include "levanter/tracker/tracker.h"

namespace fs = std::filesystem;
using namespace levanter::tracker;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("levanter_tracker_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::vector<nlohmann::ordered_json> read_rows(const fs::path& p) {
  std::vector<nlohmann::ordered_json> rows;
  std::ifstream in(p);
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::ordered_json::parse(line));
  return rows;
}

struct Recorder : Tracker {
  std::vector<std::string>* log_;
  std::string name_;
  Recorder(std::vector<std::string>* log, std::string name) : log_(log), name_(std::move(name)) {}
  void log_hyperparameters(const Metrics& m) override {
    log_->push_back(name_ + " hparams " + std::to_string(m.size()));
  }
  void log(const Metrics& m, int64_t step) override { log_->push_back(name_ + " log " + std::to_string(step)); }
  void log_summary(const Metrics& m) override { log_->push_back(name_ + " summary"); }
  void finish() override { log_->push_back(name_ + " finish"); }
};

}  // namespace

TEST(Tracker, JsonLoggerWritesOneRowPerStepWithExactValues) {
  fs::path dir = temp_dir("json");
  const float loss = 6.61523008f;  // not representable in a short decimal: its bits must survive
  {
    std::unique_ptr<Tracker> t = make_tracker(TrackerConfigs{}, dir.string(), "run");
    t->log({{"train/loss", loss},
            {"train/learning_rate", 6e-4},
            {"throughput/total_tokens", int64_t{2048}},
            {"note", std::string("x")}},
           3);
    t->finish();
  }
  {
    JsonLogger again((dir / "metrics.jsonl").string());  // a resumed run appends
    again.log({{"eval/loss", 1.5}}, 4);
  }
  auto rows = read_rows(dir / "metrics.jsonl");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].begin().key(), "step");  // the step comes first, then the metrics in the order logged
  EXPECT_EQ(rows[0]["step"], 3);
  float back = rows[0]["train/loss"].get<float>();
  EXPECT_EQ(std::memcmp(&back, &loss, sizeof(float)), 0);
  EXPECT_EQ(rows[0]["train/learning_rate"].get<double>(), 6e-4);
  EXPECT_EQ(rows[0]["throughput/total_tokens"].get<int64_t>(), 2048);
  EXPECT_EQ(rows[0]["note"], "x");
  EXPECT_EQ(rows[1]["step"], 4);
  EXPECT_EQ(rows[1]["eval/loss"].get<double>(), 1.5);
  fs::remove_all(dir);
}

TEST(Tracker, NoopWritesNothingAndCompositeFansOutInOrder) {
  fs::path dir = temp_dir("noop");
  TrackerConfigs noop;
  noop[0].type = "noop";
  make_tracker(noop, dir.string(), "run")->log({{"a", 1.0}}, 0);
  EXPECT_FALSE(fs::exists(dir / "metrics.jsonl"));

  std::vector<std::string> calls;
  std::vector<std::unique_ptr<Tracker>> ts;
  ts.push_back(std::make_unique<Recorder>(&calls, "a"));
  ts.push_back(std::make_unique<Recorder>(&calls, "b"));
  CompositeTracker c(std::move(ts));
  c.log_hyperparameters({{"lr", 1.0}, {"seed", int64_t{0}}});
  c.log({{"x", 1.0}}, 7);
  c.log_summary({});
  c.finish();
  EXPECT_EQ(calls, (std::vector<std::string>{"a hparams 2", "b hparams 2", "a log 7", "b log 7", "a summary",
                                             "b summary", "a finish", "b finish"}));
  fs::remove_all(dir);
}

TEST(Tracker, UnknownAndNetworkTrackersAreRefusedByName) {
  TrackerConfig c;
  c.type = "wandb";
  try {
    c.validate();
    FAIL();
  } catch (const levanter::config::ConfigError& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("trainer.tracker.type: wandb needs an account and network access"));
  }
  c.type = "tensorbored";
  EXPECT_THROW(c.validate(), levanter::config::ConfigError);
}
