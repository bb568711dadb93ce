// Learning-rate schedule: Levanter's OptimizerConfig.lr_scheduler, step for step.
//
// Per cycle (one cycle unless cycles / cycle_length / haps say otherwise):
//   [warmup: linear from the previous cycle's final lr (0 for the first) to learning_rate]
//   [stable: learning_rate, only when `decay` leaves room (WSD)]
//   [decay: cosine | linear | constant | inv_sqrt | inv, from learning_rate towards min_lr_ratio * learning_rate]
// then an optional (deprecated) linear cooldown to the minimum. Pieces are joined as optax.join_schedules joins
// them: each piece sees the step count since its own start.
//
// `step` is the 0-based index of the optimizer update (Levanter's optimizer state count): the first update uses
// learning_rate_at(config, 0, n), which is 0 when there is a warmup. Values are computed in double; Levanter's
// (JAX) are float32, so they agree to float32 rounding.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "levanter/optim/config.h"

namespace levanter::optim {

double learning_rate_at(const OptimizerConfig& config, int64_t step, int64_t num_train_steps);

// The schedule resolved for a run length: the pieces and the steps where they start (for logs and tests).
struct LrSchedule {
  struct Piece {
    enum class Kind { kLinear, kConstant, kCosine, kInvSqrt, kInv } kind;
    double from = 0, to = 0;  // linear: from -> to over `steps`; constant: from; cosine/inv/inv_sqrt: peak from, min to
    int64_t steps = 0;        // linear, cosine, inv: transition steps; inv_sqrt: the warmup steps it offsets by
    double exponent = 1, alpha = 0, timescale = 10000;
    double at(int64_t count) const;  // value `count` steps after the piece starts
  };
  std::vector<Piece> pieces;
  std::vector<int64_t> boundaries;  // boundaries[k]: the step where pieces[k + 1] starts

  static LrSchedule build(const OptimizerConfig& config, int64_t num_train_steps);
  double at(int64_t step) const;
  std::string describe() const;  // e.g. "linear 0->0.0006 over 10, cosine 0.0006->6e-05 over 990"
};

}  // namespace levanter::optim
