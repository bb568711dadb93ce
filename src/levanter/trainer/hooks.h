// The trainer's built-in hooks (trainer.h: Hook), registered by Trainer in this order:
//
//   NanPolicyHook    trainer.crash_on_nan / crash_on_inf: stop before the update on a bad loss, after it on a
//                    bad gradient norm, with a message that says what to try
//   MetricsHook      every step's train/ and throughput/ metrics to the tracker (Levanter's names)
//   ProgressHook     the console progress line every trainer.log_every steps
//   EvalHook         evaluation every trainer.steps_per_eval steps and at the end
//   CheckpointHook   checkpoints as trainer.checkpointer's policy says, and at the end
//   HfExportHook     Hugging Face model directories (hf_save_path, every hf_save_steps and at the end)
//   FaultHook        LEVANTER_FAULT=train_step_mid:<step> / train_step_end:<step> (crash tests)
#pragma once

#include <c10/core/ScalarType.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "levanter/eval/evaluator.h"
#include "levanter/tracker/tracker.h"
#include "levanter/trainer/trainer.h"

namespace levanter::checkpoint {
class Checkpointer;
enum class SaveKind;
}  // namespace levanter::checkpoint

namespace levanter::trainer {

class NanPolicyHook : public Hook {
 public:
  bool reads_model() const override { return false; }
  NanPolicyHook(bool crash_on_nan, bool crash_on_inf, const checkpoint::Checkpointer& checkpointer)
      : crash_on_nan_(crash_on_nan), crash_on_inf_(crash_on_inf), checkpointer_(checkpointer) {}
  void before_update(const StepInfo& info, const TrainerState& state) override;
  void after_step(const StepInfo& info, TrainerState& state) override;

 private:
  bool bad(double v) const { return (crash_on_nan_ && std::isnan(v)) || (crash_on_inf_ && std::isinf(v)); }
  bool crash_on_nan_, crash_on_inf_;
  const checkpoint::Checkpointer& checkpointer_;
};

class MetricsHook : public Hook {
 public:
  bool reads_model() const override { return false; }
  explicit MetricsHook(tracker::Tracker& tracker) : tracker_(tracker) {}
  void after_step(const StepInfo& info, TrainerState& state) override;

 private:
  tracker::Tracker& tracker_;
};

class ProgressHook : public Hook {
 public:
  bool reads_model() const override { return false; }
  ProgressHook(int64_t num_train_steps, int64_t log_every) : num_steps_(num_train_steps), log_every_(log_every) {}
  void after_step(const StepInfo& info, TrainerState& state) override;

 private:
  int64_t num_steps_, log_every_;
  bool first_ = true;
  double ema_step_s_ = 0;
};

class EvalHook : public Hook {
 public:
  // `evaluator` is made on first use (it waits for the validation caches).
  EvalHook(std::function<eval::Evaluator&()> evaluator, at::ScalarType compute, int64_t num_train_steps,
           tracker::Tracker& tracker, bool progress, eval::EvalResults& results)
      : evaluator_(std::move(evaluator)),
        compute_(compute),
        num_steps_(num_train_steps),
        tracker_(tracker),
        progress_(progress),
        results_(results) {}
  // Registered every trainer.steps_per_eval steps; the last step is left to at_end.
  void after_step(const StepInfo& info, TrainerState& state) override;
  void at_end(TrainerState& state) override;

 private:
  void evaluate(const TrainerState& state);
  std::function<eval::Evaluator&()> evaluator_;
  at::ScalarType compute_;
  int64_t num_steps_;
  tracker::Tracker& tracker_;
  bool progress_;
  eval::EvalResults& results_;
};

class CheckpointHook : public Hook {
 public:
  bool reads_model() const override { return false; }
  // `metadata(state)`: metadata.json's run-specific keys (run id, root key, config, ...).
  CheckpointHook(checkpoint::Checkpointer& checkpointer, std::function<nlohmann::json(const TrainerState&)> metadata,
                 std::optional<std::string>& last_checkpoint)
      : checkpointer_(checkpointer), metadata_(std::move(metadata)), last_checkpoint_(last_checkpoint) {}
  void after_step(const StepInfo& info, TrainerState& state) override;
  void at_end(TrainerState& state) override;
  // A checkpoint of `state` now, of the given kind (a run stopping early); returns its path.
  std::string save_now(const TrainerState& state, checkpoint::SaveKind kind);

 private:
  checkpoint::Checkpointer& checkpointer_;
  std::function<nlohmann::json(const TrainerState&)> metadata_;
  std::optional<std::string>& last_checkpoint_;
};

// hf_save_path / hf_save_steps: a Hugging Face model directory every `every` steps and at the end, at
// <hf_save_path>/<run id>/step-N (replacing one left by an earlier attempt of the same step).
class HfExportHook : public Hook {
 public:
  HfExportHook(std::string base, std::string tokenizer_path, std::optional<at::ScalarType> dtype, bool progress)
      : base_(std::move(base)), tokenizer_path_(std::move(tokenizer_path)), dtype_(dtype), progress_(progress) {}
  void after_step(const StepInfo& info, TrainerState& state) override { save(state); }
  void at_end(TrainerState& state) override;

 private:
  void save(TrainerState& state);
  std::string base_, tokenizer_path_;
  std::optional<at::ScalarType> dtype_;
  bool progress_;
  int64_t last_saved_ = -1;
};

class FaultHook : public Hook {
 public:
  bool reads_model() const override { return false; }
  void before_update(const StepInfo& info, const TrainerState& state) override;
  void after_step(const StepInfo& info, TrainerState& state) override;
};

}  // namespace levanter::trainer
