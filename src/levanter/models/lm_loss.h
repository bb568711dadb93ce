// Causal language-model losses (Levanter's models/loss.py).
#pragma once

#include <optional>

#include "haliax/haliax.h"

namespace levanter::models {

namespace hax = haliax;

struct LossOptions {
  // Levanter's z-loss (logsumexp penalty): adds weight * logsumexp(logits)^2 per position.
  double z_loss_weight = 0.0;
  hax::nn::Reduction reduction = hax::nn::Reduction::kMean;
  // fused_next_token_loss: positions per block (0: automatic, about 256 MB of f32 logits per block).
  int64_t block_size = 0;
  // LmHeadModel::compute_next_token_loss: compute the full logits with plain ATen ops instead of the fused LM head +
  // loss, so that the loss can be differentiated twice (Hessian-vector products). Same value; more memory.
  bool differentiable_twice = false;
};

// Next-token loss: the logits at position t are scored against input_ids at t + 1; the last position, and any
// position where `loss_mask` is false, does not count. logits (..., position, vocab); ids (..., position).
// Returns the mean (or sum) over counted positions, or the per-position loss with Reduction::kNone.
hax::NamedArray next_token_loss(const hax::NamedArray& logits, const hax::NamedArray& input_ids,
                                const std::optional<hax::NamedArray>& loss_mask = std::nullopt,
                                const LossOptions& options = {});

// The positions per block fused_next_token_loss uses for `positions` positions (block_size 0: automatic).
int64_t fused_loss_block_rows(int64_t block_size, int64_t positions, int64_t vocab);

// Whether the fused loss writes each block's gradient over its logits on this machine for logits of `dtype` (the CPU
// kernel: f32 or bf16 with AVX2 and FMA, the vocabulary not split over processes): then a block costs one [rows, V]
// buffer in that dtype; otherwise ATen's ops also make an f32 copy and a gradient of it.
bool fused_loss_in_place(at::ScalarType dtype);

// The LM head and next_token_loss in one pass over blocks of positions: the value and gradients of
// next_token_loss(astype(dot(hidden, lm_head, "embed"), f32), input_ids, ...) without ever holding the full
// (position, vocab) logits, their softmax or their gradient. Per block: logits in hidden's dtype, upcast to f32,
// log-sum-exp, loss; when a gradient is wanted, the block's d loss / d logits (softmax minus one-hot, scaled by
// the reduction's weight and the z-loss term) goes straight into d hidden and d lm_head, so backward only scales
// them. hidden (..., position, embed), lm_head (vocab, embed), input_ids (..., position). Gradients need
// Reduction::kMean or kSum (a per-position loss with kNone is for evaluation, without gradients).
// Under a haliax::TensorParallelScope whose split_compute holds `vocab`, each process computes only its block of the
// head's rows (haliax::compute_block), exchanging per block of positions the softmax's statistics; every process gets
// the same loss, hidden's gradient summed over the processes and lm_head's whole gradient (the blocks gathered).
hax::NamedArray fused_next_token_loss(const hax::NamedArray& hidden, const hax::NamedArray& lm_head,
                                      const hax::NamedArray& input_ids,
                                      const std::optional<hax::NamedArray>& loss_mask = std::nullopt,
                                      const LossOptions& options = {});

// The targets (ids shifted left by one along position) and the mask of positions that count.
std::pair<hax::NamedArray, hax::NamedArray> next_token_targets(const hax::NamedArray& input_ids,
                                                               const std::optional<hax::NamedArray>& loss_mask);

}  // namespace levanter::models
