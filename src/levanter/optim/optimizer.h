// The optimizers of `optimizer.type`, with global-norm gradient clipping and a weight-decay mask, on float32
// parameters (master weights) updated in place:
//
// - `adam` (AdamW): Levanter's AdamConfig.build, i.e.
//     optax.chain(clip_by_global_norm(max_grad_norm), scale_by_adam(b1, b2, eps), add_decayed_weights(wd, mask),
//                 scale(-lr))
//   with float32 moments m and v (below).
// - `lion` (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): Levanter's LionConfig.build,
//     optax.chain(clip_by_global_norm(max_grad_norm), scale_by_lion(b1, b2), add_decayed_weights(wd, mask),
//                 scale(-lr))
//   with one float32 moment m, in one fused pass per element:
//     g = g * clip_scale
//     u = sign((1 - b1) g + b1 m)          (sign(0) = 0)
//     m = (1 - b2) g + b2 m
//     p = p - lr (u + wd p)
//
// - `sophia-h` (Liu et al. 2023, "Sophia: A Scalable Stochastic Second-order Optimizer"): Levanter's
//   SophiaHConfig.build: momentum m, and an EMA h of Hutchinson's estimate of the Hessian diagonal (z * Hz with
//   Gaussian z) refreshed every `update_interval` updates:
//     m = (1 - b1) g + b1 m
//     u = clip((m / (1 - b1^t)) / max(gamma h, eps), -clip_threshold, clip_threshold)
//     p = p - lr (u + wd p)
//   and, after every update_interval-th update, h = (1 - b2) estimate + b2 h. The estimate needs the model and the
//   batch: the caller (the trainer) asks needs_hessian(), draws hessian_probes(), computes z * (H z) and passes it
//   to step().
//
// AdamW:
// The update is one fused pass per element over p, g, m, v (p, m, v read and written once, g read once), in
// float32, with optax's operations in optax's order except that dividing by a bias correction is multiplying by
// its float32 reciprocal (one division per element instead of three):
//   g  = g * clip_scale                                  (clip_scale = max_norm / norm when norm >= max_norm)
//   m  = (1 - b1) g   + b1 m
//   v  = (1 - b2) g^2 + b2 v
//   u  = (m * r1) / (sqrt(v * r2) + eps) + wd p          (r_i = 1 / (1 - b_i^t), t = updates so far + 1;
//   p  = p - lr u                                         wd = 0 off the mask)
// (Nesterov: m * r1 becomes b1 (m / (1 - b1^(t+1))) + (1 - b1) (g * r1), as optax.)
// Elements are independent and the loop has no fused multiply-add, so the bits do not depend on the thread count
// or on whether the AVX2 or the scalar path ran. Gradients may be float32 or bfloat16 (widened in the loop).
//
// The gradient norm is the L2 norm over all gradients, accumulated in double in fixed 64Ki-element blocks with a
// fixed lane order and summed in parameter order: the same bits for any thread count.
//
// Threads: as many as at::get_num_threads() (OMP_NUM_THREADS). Parameters that are not contiguous CPU tensors
// (e.g. CUDA) take an ATen path with the same math and different rounding.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "haliax/nn/module.h"
#include "haliax/random.h"
#include "levanter/optim/config.h"

namespace levanter::optim {

// What one update did, for logs.
struct StepStats {
  double grad_norm = 0;      // global L2 norm of the gradients before clipping
  double clip_scale = 1;     // factor the gradients were multiplied by (1: not clipped)
  double learning_rate = 0;  // the learning rate applied
};

class Optimizer {
 public:
  using Param = std::pair<haliax::nn::ParamInfo, at::Tensor>;
  enum class Kernel { kFused, kATen };  // kATen: ~10 ATen ops per tensor (reference and benchmark baseline)

  // `params`: every trainable parameter with its path and kind (haliax::nn::named_parameters), float32. The
  // optimizer (config.type: adam or lion) keeps the tensors and updates them in place; paths must be unique.
  Optimizer(const OptimizerConfig& config, std::vector<Param> params, Kernel kernel = Kernel::kFused);
  Optimizer(const OptimizerConfig& config,
            const std::vector<std::pair<haliax::nn::ParamInfo, haliax::NamedArray>>& params,
            Kernel kernel = Kernel::kFused);
  // Move-only: a copy would share the parameters and the moments with the original.
  Optimizer(Optimizer&&) = default;
  Optimizer& operator=(Optimizer&&) = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update. grads[i] is the gradient of params()[i] (same shape; float32 or bfloat16; undefined means zero).
  // Gradients are not modified. Computes their global norm (always: it is logged), clips to max_grad_norm (when
  // set and > 0), then applies the update with `learning_rate` (e.g. learning_rate_at(config, step_count(),
  // num_train_steps)).
  // Sophia-H: when needs_hessian(), `hessian_estimate` (z * Hz per parameter, z = hessian_probes()) is required.
  StepStats step(const std::vector<at::Tensor>& grads, double learning_rate,
                 const std::vector<at::Tensor>* hessian_estimate = nullptr);

  // Sophia-H: whether the next step() refreshes the Hessian estimate (every update_interval-th update).
  bool needs_hessian() const;
  // Sophia: the key of the next estimate, a function of optimizer.rng_seed and the number of estimates so far.
  haliax::random::Key hessian_key() const;
  // Sophia-H: the Gaussian probe vectors z of the next estimate, one float32 tensor per parameter (from
  // hessian_key()).
  std::vector<at::Tensor> hessian_probes() const;
  // The same probes for parameters of the given whole shapes (one per parameter, in params() order), where params()
  // holds pieces (FSDP): parameter i's probe depends only on the key, i and its shape, so a piece of it is the piece
  // of the probe one process draws.
  std::vector<at::Tensor> hessian_probes(const std::vector<std::vector<int64_t>>& shapes) const;
  // Parameter i's probe alone, for a parameter of the given whole shape.
  at::Tensor hessian_probe(size_t i, const std::vector<int64_t>& shape) const;

  // Parameters held in pieces by several processes (FSDP): `total(per_parameter)` turns this process's sums of
  // squares of its gradients (one per parameter, in params() order) into the global sum of squares, the same on every
  // process. Unset: their sum in parameter order.
  void set_sum_of_squares(std::function<double(const std::vector<double>&)> total) { total_ = std::move(total); }

  // Mixed precision: copies[i] (bfloat16, contiguous, params()[i]'s shape; undefined: none) receives params()[i]
  // rounded to bfloat16 by every step(), chunk by chunk while the chunk is in cache, instead of a separate pass over
  // the parameters (the same bits as copy_ from the parameter, NaN aside: kernels::round_to_bf16). Empty: none.
  void set_bf16_copies(std::vector<at::Tensor> copies);
  // Whether every parameter has a copy (step() then leaves the whole copy current).
  bool has_bf16_copies() const { return all_copies_; }

  int64_t step_count() const { return count_; }  // updates applied so far
  const std::vector<Param>& params() const { return params_; }
  const std::vector<bool>& decay_mask() const { return decay_; }
  std::vector<std::string> decayed_paths() const;  // Levanter logs these as "decayed_weights"
  const OptimizerConfig& config() const { return config_; }

  // Optimizer state as named tensors: "opt.step" (int64 scalar), "opt.m.<path>" and, for adam, "opt.v.<path>";
  // for sophia-h "opt.hessian_step" (int64) and "opt.h.<path>" (float32, the parameter's shape). The tensors alias the
  // live state: copy them if updates run before they are written.
  haliax::nn::StateDict state_dict() const;
  // Restores state_dict()'s entries (copied into the live state). Strict: a missing "opt.*" entry, an unexpected
  // one, or a wrong shape or dtype is an error naming the key (and, for the state of another optimizer type, the
  // types). Entries outside "opt." are ignored, so a combined
  // model + optimizer dict can be passed as is.
  void load_state_dict(const haliax::nn::StateDict& dict);
  // The per-parameter keys of state_dict(): every key some optimizer type writes for parameter `path` (its moments,
  // the parameter's shape), and back from a key to its parameter's path (nullopt for "opt.step" and the like).
  static std::vector<std::string> state_keys_of(const std::string& path);
  static std::optional<std::string> parameter_of_state_key(const std::string& key);

 private:
  OptimizerConfig config_;
  bool lion_ = false;
  bool sophia_ = false;
  std::vector<Param> params_;
  std::vector<at::Tensor> m_, v_, h_;  // v_: adam only; h_: sophia-h only
  int64_t hessian_count_ = 0;          // sophia-h: estimates folded into h_
  std::vector<bool> decay_;
  std::vector<bool> fused_;         // per parameter: contiguous CPU float32, updated by the fused kernel
  std::vector<at::Tensor> copies_;  // set_bf16_copies
  bool all_copies_ = false;
  int64_t count_ = 0;
  std::function<double(const std::vector<double>&)> total_;
};

// Global L2 norm of `tensors` (any floating dtype; undefined entries count as zero), deterministic as above.
double global_norm(const std::vector<at::Tensor>& tensors);

// optax.clip_by_global_norm in place: when norm >= max_norm, every tensor is multiplied by max_norm / norm.
// Returns the norm before clipping. (Optimizer::step does this inside its fused pass without touching the grads.)
double clip_by_global_norm_(std::vector<at::Tensor>& grads, double max_norm);

}  // namespace levanter::optim
