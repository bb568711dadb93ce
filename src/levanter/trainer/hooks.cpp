#include "levanter/trainer/hooks.h"

#include <cstdio>
#include <stdexcept>

#include "levanter/checkpoint/checkpointer.h"
#include "levanter/compat/hf/hf_checkpoint.h"
#include "levanter/optim/optimizer.h"
#include "levanter/runtime/fault.h"
#include "levanter/runtime/format.h"

namespace levanter::trainer {

namespace {

// The checkpoint's tensor groups: the live parameters and optimizer state, not copies. Saving is synchronous and
// runs between steps (checkpointer.h), so nothing updates them while they are written; a copy would double the
// memory of the model and optimizer for the length of the save (2 GB more at GPT-2 124M).
checkpoint::TensorGroups checkpoint_groups(const TrainerState& state) {
  auto detached = [](const haliax::StateDict& sd) {
    haliax::StateDict out;
    for (const auto& [k, t] : sd) out.emplace_back(k, t.detach());
    return out;
  };
  return {{"model", detached(haliax::nn::to_state_dict(*state.model))},
          {"opt_state", detached(state.optimizer->state_dict())}};
}

}  // namespace

void NanPolicyHook::before_update(const StepInfo& info, const TrainerState&) {
  if (!bad(info.loss)) return;
  auto last = checkpointer_.latest();
  throw std::runtime_error(
      "step " + std::to_string(info.step) + ": the loss is " + (std::isnan(info.loss) ? "NaN" : "infinite") +
      "; the update was not applied. Try a lower optimizer.learning_rate or a longer optimizer.warmup, "
      "optimizer.max_grad_norm: 1.0, z_loss_weight: 1e-4, or trainer.mp: f32. Resume from " +
      (last ? *last : std::string("(no checkpoint yet)")) + " (set trainer.crash_on_nan: false to continue anyway)");
}

void NanPolicyHook::after_step(const StepInfo& info, TrainerState&) {
  if (!bad(info.grad_norm)) return;
  throw std::runtime_error("step " + std::to_string(info.step) + ": the gradient norm is " +
                           (std::isnan(info.grad_norm) ? "NaN" : "infinite") + " (loss " + std::to_string(info.loss) +
                           "); parameters are no longer finite. Try a lower optimizer.learning_rate, "
                           "optimizer.max_grad_norm: 1.0 or trainer.mp: f32, and resume from the last checkpoint");
}

void MetricsHook::after_step(const StepInfo& info, TrainerState& state) {
  tracker_.log({{"train/loss", info.loss},
                {"train/learning_rate", info.learning_rate},
                {"train/grad_norm", info.grad_norm},
                {"throughput/tokens_per_second", info.tokens_per_second},
                {"throughput/mfu", info.mfu},
                {"throughput/duration", info.duration_s},
                {"throughput/loading_time", info.loading_s},
                {"throughput/cast_time", info.cast_s},
                {"throughput/forward_time", info.forward_s},
                {"throughput/backward_time", info.backward_s},
                {"throughput/exchange_time", info.exchange_s},
                {"throughput/optimizer_time", info.optimizer_s},
                {"throughput/total_tokens", state.step * info.tokens}},
               info.step);
}

void ProgressHook::after_step(const StepInfo& info, TrainerState&) {
  ema_step_s_ = ema_step_s_ == 0 ? info.duration_s : 0.9 * ema_step_s_ + 0.1 * info.duration_s;
  const int64_t done = info.step + 1;
  const bool first = first_;
  first_ = false;
  if (!(done % log_every_ == 0 || done == num_steps_ || first)) return;
  const double eta = ema_step_s_ * static_cast<double>(num_steps_ - done);
  const int pct = static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(num_steps_));
  std::string bar(20, '.');
  std::fill(bar.begin(), bar.begin() + pct / 5, '#');
  std::fprintf(stderr,
               "step %lld/%lld [%s] %3d%% loss %.4f lr %.3g |g| %.3g  %s tok/s  mfu %.1f%%  %.0f ms/step  ETA %s\n",
               (long long)done, (long long)num_steps_, bar.c_str(), pct, info.loss, info.learning_rate, info.grad_norm,
               runtime::format_si(info.tokens_per_second).c_str(), 100 * info.mfu, 1000 * info.duration_s,
               runtime::format_duration(eta).c_str());
}

void EvalHook::after_step(const StepInfo& info, TrainerState& state) {
  if (info.step + 1 != num_steps_) evaluate(state);
}

void EvalHook::at_end(TrainerState& state) { evaluate(state); }

void EvalHook::evaluate(const TrainerState& state) {
  eval::Evaluator& ev = evaluator_();
  if (ev.empty()) return;
  auto t0 = std::chrono::steady_clock::now();
  results_ = ev.run(*state.model, compute_);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (progress_) {
    for (const auto& [name, em] : results_) {
      std::fprintf(stderr, "eval%s%s step %lld: loss %.4f  ppl %.2f  bpb %.4f  (%lld tokens, %.1fs)\n",
                   name.empty() ? "" : " ", name.c_str(), (long long)state.step, em.loss, em.perplexity, em.bpb,
                   (long long)em.tokens, seconds);
    }
  }
  tracker_.log(eval::to_metrics(results_), state.step);
}

void CheckpointHook::after_step(const StepInfo& info, TrainerState& state) {
  if (checkpointer_.should_save(state.step)) {
    last_checkpoint_ = checkpointer_.save(state.step, checkpoint_groups(state), metadata_(state));
  }
}

void CheckpointHook::at_end(TrainerState& state) {
  if (auto p = checkpointer_.on_run_end(state.step, checkpoint_groups(state), metadata_(state))) last_checkpoint_ = p;
  if (!last_checkpoint_) last_checkpoint_ = checkpointer_.latest();
}

std::string CheckpointHook::save_now(const TrainerState& state, checkpoint::SaveKind kind) {
  last_checkpoint_ = checkpointer_.save(state.step, checkpoint_groups(state), metadata_(state), kind);
  return *last_checkpoint_;
}

void HfExportHook::at_end(TrainerState& state) {
  if (last_saved_ != state.step) save(state);
}

void HfExportHook::save(TrainerState& state) {
  compat::hf::ExportOptions o;
  o.output = base_ + "/step-" + std::to_string(state.step);
  o.dtype = dtype_;
  o.tokenizer_path = tokenizer_path_;
  o.overwrite = true;
  compat::hf::export_model(*state.model, o);
  last_saved_ = state.step;
  if (progress_) std::fprintf(stderr, "exported a Hugging Face model directory to %s\n", o.output.c_str());
}

void FaultHook::before_update(const StepInfo& info, const TrainerState&) {
  runtime::maybe_inject_fault("train_step_mid", info.step, "after backward, before the optimizer update");
}

void FaultHook::after_step(const StepInfo& info, TrainerState& state) {
  runtime::maybe_inject_fault("train_step_end", state.step, "after the step (and its checkpoint, if any)");
}

}  // namespace levanter::trainer
