// Learning-rate schedule against Levanter's OptimizerConfig.lr_scheduler (optax schedules, joined with
// optax.join_schedules). First by formulas written out here, then against tables computed with a float64 Python
// transliteration of Levanter's lr_scheduler and optax's schedule functions.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "levanter/optim/schedule.h"

using namespace levanter::optim;
using levanter::config::ConfigError;
using ::testing::HasSubstr;

namespace {

OptimizerConfig parse(const std::string& yaml) { return levanter::config::parse_string<OptimizerConfig>(yaml); }

// Relative 1e-12: both sides are float64 evaluations of the same formulas.
void expect_lr(const OptimizerConfig& c, int64_t n, const std::vector<std::pair<int64_t, double>>& table) {
  for (const auto& [step, want] : table) {
    double got = learning_rate_at(c, step, n);
    EXPECT_NEAR(got, want, 1e-12 * std::abs(want) + 1e-18) << "step " << step << " of " << n;
  }
}

}  // namespace

TEST(OptimSchedule, WarmupThenCosineByHand) {
  // lr 1e-3, warmup 0.1 of 100 steps = 10 steps (int(0.1 * 100)), cosine over the other 90 to 0.1 * lr.
  OptimizerConfig c = parse("learning_rate: 1e-3\nwarmup: 0.1\n");
  const double lr = 1e-3, alpha = 0.1;
  for (int64_t s = 0; s <= 10; ++s) EXPECT_NEAR(learning_rate_at(c, s, 100), lr * s / 10.0, 1e-18) << s;
  for (int64_t s = 10; s <= 120; ++s) {
    double t = std::min<double>(s - 10, 90);
    double want = lr * ((1 - alpha) * 0.5 * (1 + std::cos(M_PI * t / 90.0)) + alpha);
    EXPECT_NEAR(learning_rate_at(c, s, 100), want, 1e-18) << s;
  }
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 55, 100), 0.55e-3);  // half way through the decay: (0.9 * 0.5 + 0.1) lr
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 100, 100), 1e-4);
}

TEST(OptimSchedule, LinearConstantAndWsdByHand) {
  OptimizerConfig lin = parse("learning_rate: 2e-3\nwarmup: 5\nlr_schedule: linear\nmin_lr_ratio: 0.25\n");
  for (int64_t s = 5; s <= 45; ++s) {
    double want = (2e-3 - 0.5e-3) * (1 - (s - 5) / 40.0) + 0.5e-3;  // optax.linear_schedule(lr, min_lr, 40)
    EXPECT_NEAR(learning_rate_at(lin, s, 45), want, 1e-18) << s;
  }
  OptimizerConfig cst = parse("learning_rate: 2e-3\nwarmup: 0.5\nlr_schedule: constant\n");
  EXPECT_DOUBLE_EQ(learning_rate_at(cst, 2, 10), 0.8e-3);
  EXPECT_DOUBLE_EQ(learning_rate_at(cst, 5, 10), 2e-3);
  EXPECT_DOUBLE_EQ(learning_rate_at(cst, 10, 10), 2e-3);
  // WSD: warmup 10 steps, stable, then the last 20% (20 steps) decays.
  OptimizerConfig wsd = parse("learning_rate: 1e-3\nwarmup: 10\ndecay: 0.2\n");
  EXPECT_DOUBLE_EQ(learning_rate_at(wsd, 50, 100), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate_at(wsd, 80, 100), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate_at(wsd, 90, 100), 1e-3 * (0.9 * 0.5 + 0.1));
  LrSchedule s = LrSchedule::build(wsd, 100);
  ASSERT_EQ(s.pieces.size(), 3u);
  EXPECT_EQ(s.boundaries, (std::vector<int64_t>{10, 80}));
}

TEST(OptimSchedule, MatchesPythonTranscriptionOfLevanter) {
  // Values printed by tests/levanter/optim/schedule_reference.py: Levanter's lr_scheduler with optax's schedules,
  // re-expressed in float64 Python.
  expect_lr(OptimizerConfig{}, 1000,
            {{0, 0},
             {1, 5.9999999999999941e-05},
             {5, 0.00029999999999999997},
             {10, 0.00059999999999999995},
             {11, 0.00059999864055149869},
             {500, 0.00033428381023539814},
             {999, 6.0001359448501207e-05},
             {1000, 5.9999999999999995e-05},
             {1200, 5.9999999999999995e-05}});
  expect_lr(parse("learning_rate: 1e-3\nwarmup: 10\ndecay: 0.2\n"), 100,
            {{0, 0},
             {3, 0.00030000000000000003},
             {10, 0.001},
             {50, 0.001},
             {79, 0.001},
             {80, 0.001},
             {85, 0.00086819805153394642},
             {90, 0.00055000000000000003},
             {99, 0.00010554024673218806},
             {100, 0.0001}});
  expect_lr(parse("learning_rate: 2e-3\nwarmup: 0.1\nlr_schedule: linear\nmin_lr_ratio: 0.0\n"), 50,
            {{0, 0},
             {4, 0.0016000000000000001},
             {5, 0.002},
             {6, 0.0019555555555555554},
             {30, 0.00088888888888888882},
             {49, 4.4444444444444508e-05},
             {50, 0}});
  expect_lr(parse("learning_rate: 1e-3\nwarmup: 0.1\nrewarmup: 0.2\ncycles: 2\n"), 100,
            {{0, 0},
             {4, 0.00080000000000000004},
             {5, 0.001},
             {30, 0.00047185832004988137},
             {49, 0.00010109617738307913},
             {50, 0.00010000000000000005},
             {55, 0.00055000000000000003},
             {60, 0.001},
             {61, 0.00099861280017990764},
             {99, 0.00010138719982009242},
             {100, 0.0001}});
  expect_lr(parse("learning_rate: 1e-3\nwarmup: 0.1\ncooldown: 0.2\nlr_schedule: linear\n"), 100,
            {{0, 0},
             {10, 0.00097500000000000006},
             {50, 0.00047499999999999994},
             {79, 0.00011249999999999996},
             {80, 0.0001},
             {90, 0.0001},
             {100, 0.0001}});
  expect_lr(parse("learning_rate: 1e-3\nwarmup: 1000\nlr_schedule: inv_sqrt\n"), 100000,
            {{0, 0},
             {500, 0.00050000000000000001},
             {1000, 0.001},
             {9000, 0.001},
             {20000, 0.00070710678118654751},
             {99999, 0.00031622934716752667}});
  expect_lr(parse("learning_rate: 1e-3\nwarmup: 0.0\nlr_schedule: inv\n"), 1000,
            {{0, 0.0009910802775024779},
             {1, 0.0009910802775024779},
             {2, 0.00098231827111984276},
             {100, 0.0005263157894736842},
             {999, 0.00010009008107296567},
             {1000, 0.0001}});
  expect_lr(parse("learning_rate: 1e-3\nwarmup: 0.05\nlr_schedule: {type: cosine, exponent: 2}\n"), 200,
            {{0, 0}, {10, 0.001}, {60, 0.00073298653086594629}, {150, 0.00012343311640277918}, {200, 0.0001}});
  expect_lr(parse("learning_rate: 1e-3\nwarmup: 0.1\nrewarmup: 0.1\ncycle_length: 30\n"), 90,
            {{0, 0},
             {3, 0.001},
             {29, 0.00010304273901612566},
             {30, 0.00010000000000000005},
             {33, 0.001},
             {60, 0.00010000000000000005},
             {62, 0.00069999999999999999},
             {89, 0.00010304273901612566}});
}

TEST(OptimSchedule, FractionOrStepsFollowsLevanter) {
  // <= 1 is a fraction (1 means all steps), above 1 a whole number of steps; the fraction truncates.
  EXPECT_EQ(fraction_or_steps(0.01, 1000, "warmup"), 10);
  EXPECT_EQ(fraction_or_steps(0.015, 100, "warmup"), 1);
  EXPECT_EQ(fraction_or_steps(1.0, 100, "warmup"), 100);
  EXPECT_EQ(fraction_or_steps(250, 100, "warmup"), 250);
  EXPECT_THROW(fraction_or_steps(1.5, 100, "warmup"), ConfigError);
  EXPECT_THROW(fraction_or_steps(-0.1, 100, "warmup"), ConfigError);
}

TEST(OptimSchedule, ImpossibleSchedulesAreErrors) {
  // warmup: 1 is "all the steps", which leaves cosine no decay steps: optax refuses, so do we.
  try {
    learning_rate_at(parse("warmup: 1\n"), 0, 100);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("cosine needs a decay phase"));
  }
  EXPECT_THROW(learning_rate_at(OptimizerConfig{}, 0, 0), ConfigError);
  EXPECT_THROW(parse("cycles: 2\ncycle_length: 10\n"), ConfigError);
  EXPECT_THROW(learning_rate_at(parse("cycle_length: [60, 60]\n"), 0, 100), ConfigError);
  // A constant schedule with all-warmup is fine (optax.constant_schedule has no steps).
  EXPECT_DOUBLE_EQ(learning_rate_at(parse("warmup: 1\nlr_schedule: constant\n"), 50, 100), 6e-4 * 0.5);
}
