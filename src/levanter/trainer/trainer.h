// The trainer of `levanter train` (Levanter's Trainer and train_lm.main): a state, a step, and hooks.
//
//   Trainer trainer(config, options);             // run id and directory, data, tracker, checkpointer, hooks
//   TrainerState state = trainer.initial_state(); // the newest complete checkpoint, or a fresh init
//   for (...) {
//     StepInfo info = trainer.train_step(state, batch);   // forward, backward, before-update hooks, the optimizer
//     trainer.run_hooks(info, state);                      // metrics, progress, eval, checkpoints, ...
//   }
// or simply trainer.train(), which does the above over the configured number of steps.
//
// The loop knows nothing of models, metrics or checkpoints: the model comes from the model registry through the
// LmHeadModel interface (models/lm_model.h), and everything periodic is a Hook registered with how often it runs
// (hooks.h holds the built-in ones: NaN policy, metrics to the tracker, progress line, evaluation,
// checkpointing, fault points). A new capability is a new hook, not a change to the loop.
//
// Reproducibility: the model init, the data order and dropout are pure functions of trainer.seed (and
// data_seed); the batch for step s is read by index, so resuming needs no iterator state; a checkpoint holds
// the f32 parameters, the optimizer state (including its step count), the step and the root key. With the same
// thread count, a run killed at any moment and started again with the same command continues to the same
// losses, bit for bit, as an uninterrupted run (tests/levanter/trainer/test_resume.cpp checks this).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "levanter/eval/evaluator.h"
#include "levanter/models/lm_model.h"
#include "levanter/trainer/config.h"

namespace levanter::data {
struct TokenBatch;
}
namespace levanter::optim {
class Optimizer;
}

namespace levanter::trainer {

using eval::EvalMetrics;

struct RunPaths {
  std::string run_id;
  std::string run_dir;          // <log_dir>/<run id>
  std::string metrics;          // <run_dir>/metrics.jsonl
  std::string record;           // <run_dir>/run.json
  std::string checkpoint_base;  // where checkpoints go
};

struct TrainResult {
  RunPaths paths;
  int64_t start_step = 0;  // 0, or the step of the checkpoint it resumed from
  int64_t final_step = 0;
  double final_loss = 0;
  std::optional<std::string> last_checkpoint;
  std::map<std::string, EvalMetrics> eval;  // by validation set name ("" = the single set)
  // Not 0: the run stopped early on this signal (SIGINT, SIGTERM, SIGHUP; runtime/signals.h) after final_step
  // steps, with a checkpoint of that step in last_checkpoint (unless it took no step); no final evaluation.
  int stopped_by_signal = 0;
};

struct TrainOptions {
  std::string config_file;                // recorded in the run record
  std::vector<std::string> command_line;  // recorded in the run record
  bool progress = true;                   // console progress lines on stderr
};

// Everything that changes from step to step (Levanter's TrainerState).
struct TrainerState {
  TrainerState();
  ~TrainerState();
  TrainerState(TrainerState&&) noexcept;
  TrainerState& operator=(TrainerState&&) noexcept;

  std::unique_ptr<models::LmHeadModel> model;   // master weights (trainer.mp's param dtype), requiring grad
  std::unique_ptr<optim::Optimizer> optimizer;  // its moments and update count
  int64_t step = 0;                             // steps completed
  haliax::random::Key key{0};                   // training key: dropout of step s derives from key.fold_in(s)
  float last_loss = NAN;                        // the loss of the last completed step (kept in checkpoints)
  std::optional<std::string> resumed_from;      // the checkpoint this state was loaded from
  // Mixed precision: the parameters in the compute dtype, leaves of their own, equal to `model` rounded at the start
  // of every step: written by the optimizer's update (a bfloat16 copy registered with Optimizer::set_bf16_copies), or
  // else refreshed from `model` (one cast per step, into the same buffers). Their gradients are the step's gradients;
  // the optimizer reads them in the compute dtype (widening is exact), so no f32 gradient is made when one microbatch
  // is enough.
  std::unique_ptr<models::LmHeadModel> compute_copy;
  // The master parameters' version counters when the optimizer last wrote compute_copy (empty: it did not). A step
  // skips the refresh only while every version is unchanged, so an in-place write to `model` between steps (a hook's,
  // your own) is still copied.
  std::vector<int64_t> compute_copy_written_at;
};

// What one step did (Levanter's StepInfo).
struct StepInfo {
  int64_t step = 0;  // 0-based index of the step (after it, state.step == step + 1)
  float loss = NAN;  // mean over the microbatches
  double learning_rate = 0;
  double grad_norm = NAN;  // before clipping; NaN in before_update (not yet computed)
  int64_t tokens = 0;      // in this step's batch
  double duration_s = 0;   // the whole step, including waiting for the batch
  double loading_s = 0;    // waiting for the batch
  // Where the rest of the step went (seconds, summed over its microbatches): making the compute-dtype copy of the
  // parameters (mixed precision only), forward passes, backward passes, the gradient exchange between processes,
  // and the optimizer (clipping and the update, Sophia's Hessian estimate included).
  double cast_s = 0;
  double forward_s = 0;
  double backward_s = 0;
  double exchange_s = 0;
  double optimizer_s = 0;
  double tokens_per_second = 0;
  double mfu = 0;  // model FLOPs utilisation against the run's peak (peak_flops.h)
};

// Something the trainer does around steps. `every` (given at registration) is in completed steps:
// after_step runs when (info.step + 1) % every == 0. before_update runs on every step.
class Hook {
 public:
  virtual ~Hook() = default;
  // After backward, before the optimizer update: the loss is known, the parameters unchanged. Throwing here
  // stops the run with the update not applied.
  virtual void before_update(const StepInfo& info, const TrainerState& state) {}
  // Once before the first step of train() (state.step: the steps completed, > 0 when resumed).
  virtual void at_start(const TrainerState& state) {}
  virtual void after_step(const StepInfo& info, TrainerState& state) {}
  // After the last step (also when a resumed run had no steps left).
  virtual void at_end(TrainerState& state) {}
  // Whether the hook reads the model's parameters. Under FSDP (several processes, parameters in pieces) the trainer
  // gathers the whole model for the steps where such a hook runs and shows it to the hook as state.model; hooks that
  // say false (metrics, progress, checkpoints) see the pieces.
  virtual bool reads_model() const { return true; }
};

class Trainer {
 public:
  // Resolves the run id and directory, locks the run directory and the checkpoint base path for the Trainer's
  // lifetime (run_lock.h: RunLockedError if another process holds them; config::ConfigError for a run id that
  // cannot name a directory), opens the data and the tracker, and registers the built-in hooks.
  Trainer(const TrainLmConfig& config, TrainOptions options = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  const TrainLmConfig& config() const;
  const RunPaths& paths() const;

  // Resumes from the newest complete checkpoint (trainer.load_checkpoint / load_checkpoint_path), else
  // trainer.initialize_from, else a fresh init from the seed. Prints resume warnings (thread count, libtorch).
  // Writes the run record. Tells the tracker the step it continues from (metrics.jsonl drops the rows of the steps
  // that will run again).
  TrainerState initial_state();
  // One optimizer step on `batch` (train_batch_size sequences): forward and backward per microbatch, the
  // before_update hooks, then the optimizer (AdamW or Lion) with the scheduled learning rate. state.step advances by
  // one.
  StepInfo train_step(TrainerState& state, const data::TokenBatch& batch);
  // The after_step hooks that are due.
  void run_hooks(const StepInfo& info, TrainerState& state);

  void add_hook(std::shared_ptr<Hook> hook, int64_t every = 1);
  void add_hook(int64_t every, std::function<void(const StepInfo&, TrainerState&)> fn);

  // initial_state, then steps until trainer.num_train_steps, then the at_end hooks.
  // Stops early, between steps, when runtime::stop_signal() is set (a SIGINT/SIGTERM/SIGHUP once the program has
  // called runtime::install_stop_signal_handlers, or runtime::request_stop): saves a (temporary) checkpoint of the
  // step reached and returns with stopped_by_signal set, skipping the at_end hooks.
  // A runtime::IoError from a hook (metrics.jsonl cannot be written, ...) stops the run too: after a checkpoint if
  // one can be saved, rethrown as an IoError whose message adds the step and the checkpoint to resume from.
  TrainResult train();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Trainer(config, options).train().
TrainResult train(const TrainLmConfig& config, const TrainOptions& options = {});

// The model of `config` with the parameters of a checkpoint (`checkpoint_path`: a step-N directory, or a base
// path whose newest complete checkpoint is used). `loaded_from` receives the step-N directory.
std::unique_ptr<models::LmHeadModel> load_model_from_checkpoint(const TrainLmConfig& config,
                                                                const std::string& checkpoint_path,
                                                                std::string* loaded_from = nullptr,
                                                                int64_t* step = nullptr);

// Evaluates a checkpoint's parameters on the configured validation sets (levanter eval). `checkpoint_path` is a
// step-N directory or a base path (its newest complete checkpoint).
std::map<std::string, EvalMetrics> evaluate_checkpoint(const TrainLmConfig& config, const std::string& checkpoint_path,
                                                       bool progress = true);

// The run id: trainer.id, or "run-" + 12 hex digits of a hash of the resolved config (so the same command
// finds its own checkpoints again).
std::string run_id_for(const TrainLmConfig& config);

}  // namespace levanter::trainer
