// Losses (haliax.nn.loss).
#pragma once

#include <optional>

#include "haliax/named_array.h"

namespace haliax::nn {

// How a per-element loss is reduced: Haliax's reduction functions (mean is the default; kNone keeps it).
enum class Reduction { kMean, kSum, kNone };

// Cross entropy between `logits` and `targets` over the `Label` axis.
//  * targets with the Label axis: a distribution (e.g. one_hot): loss = -sum(targets * log_softmax(logits)).
//  * integer targets without it: class ids (the sparse form, no one-hot is materialised).
// The per-position loss is then reduced over `reduction_axis` (default: all axes), counting only positions
// where `where` is true; with Reduction::kNone masked positions are zero.
NamedArray cross_entropy_loss(const NamedArray& logits, const AxisSelector& Label, const NamedArray& targets,
                              Reduction reduction = Reduction::kMean,
                              const std::optional<NamedArray>& where = std::nullopt,
                              const std::optional<AxisSelection>& reduction_axis = std::nullopt);
// Per-position loss and log normaliser (logsumexp over Label), unreduced.
std::pair<NamedArray, NamedArray> cross_entropy_loss_and_log_normalizers(const NamedArray& logits,
                                                                         const AxisSelector& Label,
                                                                         const NamedArray& targets);
NamedArray binary_cross_entropy_loss(const NamedArray& logits, const NamedArray& targets,
                                     Reduction reduction = Reduction::kMean,
                                     const std::optional<NamedArray>& where = std::nullopt,
                                     const std::optional<AxisSelection>& reduction_axis = std::nullopt);
// Apply a reduction as the losses do (mean/sum over `axis` or everything, honouring `where`).
NamedArray reduce_loss(const NamedArray& loss, Reduction reduction, const std::optional<AxisSelection>& axis,
                       const std::optional<NamedArray>& where);

}  // namespace haliax::nn
