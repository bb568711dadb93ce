// Losses (haliax.nn.loss).
#pragma once

#include <optional>

#include "haliax/named_array.h"

namespace haliax::nn {

// How a per-element loss is reduced: Haliax's reduction functions (mean is the default; kNone keeps it).
enum class Reduction { kMean, kSum, kNone };

// The losses' keyword arguments (Haliax's reduction=, where=, weight=, reduction_axis=), by name:
//   nn::cross_entropy_loss(logits, Vocab, targets, nn::LossOptions().set_where(mask).set_reduction_axis(Pos));
struct LossOptions {
  Reduction reduction = Reduction::kMean;
  std::optional<NamedArray> where;              // bool: positions that count
  std::optional<NamedArray> weight;             // per-position weights (broadcast to the loss's axes)
  std::optional<AxisSelection> reduction_axis;  // default: all axes; an empty selection: no reduction
  LossOptions& set_reduction(Reduction v) {
    reduction = v;
    return *this;
  }
  LossOptions& set_where(NamedArray v) {
    where = std::move(v);
    return *this;
  }
  LossOptions& set_weight(NamedArray v) {
    weight = std::move(v);
    return *this;
  }
  LossOptions& set_reduction_axis(AxisSelection v) {
    reduction_axis = std::move(v);
    return *this;
  }
};

// Cross entropy between `logits` and `targets` over the `Label` axis.
//  * targets with the Label axis: a distribution (e.g. one_hot): loss = -sum(targets * log_softmax(logits)).
//  * integer targets without it: class ids (the sparse form, no one-hot is materialised; Haliax has no sparse
//    form: it would dot the ids with the logits).
// The per-position loss is then reduced as reduce_loss does.
NamedArray cross_entropy_loss(const NamedArray& logits, const AxisSelector& Label, const NamedArray& targets,
                              const LossOptions& options);
// The positional form kept for existing callers (no weight).
NamedArray cross_entropy_loss(const NamedArray& logits, const AxisSelector& Label, const NamedArray& targets,
                              Reduction reduction = Reduction::kMean,
                              const std::optional<NamedArray>& where = std::nullopt,
                              const std::optional<AxisSelection>& reduction_axis = std::nullopt);
// Per-position loss and log normaliser (logsumexp over Label), unreduced.
std::pair<NamedArray, NamedArray> cross_entropy_loss_and_log_normalizers(const NamedArray& logits,
                                                                         const AxisSelector& Label,
                                                                         const NamedArray& targets);
// -t log sigmoid(x) - (1 - t) log sigmoid(-x), reduced as reduce_loss does.
NamedArray binary_cross_entropy_loss(const NamedArray& logits, const NamedArray& targets, const LossOptions& options);
NamedArray binary_cross_entropy_loss(const NamedArray& logits, const NamedArray& targets,
                                     Reduction reduction = Reduction::kMean,
                                     const std::optional<NamedArray>& where = std::nullopt,
                                     const std::optional<AxisSelection>& reduction_axis = std::nullopt);
// Haliax's maybe_reduce_loss / reduce_loss. `where` and `weight` combine into one effective weight
// (weight * where, broadcast to the loss's axes). With it, mean is sum(loss * w) / sum(w) (0 where sum(w) is 0,
// so an all-masked batch gives 0, not NaN) and sum is sum(loss * w); with kNone (or an empty reduction_axis) the
// loss is returned multiplied by it. Differs: positions `where` masks out are zeroed first, so a NaN or inf loss
// there stays out (Haliax multiplies by the mask, and NaN * 0 poisons its sum).
NamedArray reduce_loss(const NamedArray& loss, const LossOptions& options);
NamedArray reduce_loss(const NamedArray& loss, Reduction reduction, const std::optional<AxisSelection>& axis,
                       const std::optional<NamedArray>& where);

}  // namespace haliax::nn
