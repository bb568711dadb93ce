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
};

// Next-token loss: the logits at position t are scored against input_ids at t + 1; the last position, and any
// position where `loss_mask` is false, does not count. logits (..., position, vocab); ids (..., position).
// Returns the mean (or sum) over counted positions, or the per-position loss with Reduction::kNone.
hax::NamedArray next_token_loss(const hax::NamedArray& logits, const hax::NamedArray& input_ids,
                                const std::optional<hax::NamedArray>& loss_mask = std::nullopt,
                                const LossOptions& options = {});

// The targets (ids shifted left by one along position) and the mask of positions that count.
std::pair<hax::NamedArray, hax::NamedArray> next_token_targets(const hax::NamedArray& input_ids,
                                                               const std::optional<hax::NamedArray>& loss_mask);

}  // namespace levanter::models
