// The training loop of `levanter train` (Levanter's train_lm.main + Trainer).
//
// Reproducibility: the model init, the data order and dropout are pure functions of trainer.seed (and
// data_seed); the batch for step s is read by index, so resuming needs no iterator state; a checkpoint holds
// the f32 parameters, the optimizer state (including its step count), the step and the root key. With the same
// thread count, a run killed at any moment and started again with the same command continues to the same
// losses, bit for bit, as an uninterrupted run (tests/levanter/trainer/test_resume.cpp checks this).
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "levanter/trainer/config.h"

namespace levanter::trainer {

struct EvalMetrics {
  double loss = 0;        // mean next-token loss (nats) over counted positions
  double perplexity = 0;  // exp(loss)
  double bpb = 0;         // bits per UTF-8 byte of the predicted tokens (special tokens have no bytes)
  int64_t tokens = 0;
  int64_t bytes = 0;
};

struct RunPaths {
  std::string run_id;
  std::string run_dir;         // <log_dir>/<run id>
  std::string metrics;         // <run_dir>/metrics.jsonl
  std::string record;          // <run_dir>/run.json
  std::string checkpoint_base; // where checkpoints go
};

struct TrainResult {
  RunPaths paths;
  int64_t start_step = 0;      // 0, or the step of the checkpoint it resumed from
  int64_t final_step = 0;
  double final_loss = 0;
  std::optional<std::string> last_checkpoint;
  std::map<std::string, EvalMetrics> eval;  // by validation set name ("" = the single set)
};

struct TrainOptions {
  std::string config_file;               // recorded in the run record
  std::vector<std::string> command_line; // recorded in the run record
  bool progress = true;                  // console progress lines on stderr
};

// Runs (or resumes) training as configured. Throws on configuration, data or numerical errors (crash_on_nan)
// with messages that say what to change.
TrainResult train(const TrainLmConfig& config, const TrainOptions& options = {});

// Evaluates a checkpoint's parameters on the configured validation sets (levanter eval).
std::map<std::string, EvalMetrics> evaluate_checkpoint(const TrainLmConfig& config, const std::string& checkpoint_path,
                                                       bool progress = true);

// The run id: trainer.id, or "run-" + 12 hex digits of a hash of the resolved config (so the same command
// finds its own checkpoints again).
std::string run_id_for(const TrainLmConfig& config);

// Peak FLOP/s of this machine for GEMMs in `dtype` (a short probe), the default MFU denominator.
double measure_peak_flops(at::ScalarType dtype);

}  // namespace levanter::trainer
