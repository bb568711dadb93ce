#include "haliax/nn/loss.h"

#include <ATen/ATen.h>

#include "haliax/core.h"
#include "haliax/error.h"
#include "haliax/ops.h"

namespace haliax::nn {

std::pair<NamedArray, NamedArray> cross_entropy_loss_and_log_normalizers(const NamedArray& logits,
                                                                         const AxisSelector& Label,
                                                                         const NamedArray& targets) {
  Axis label = logits.resolve_axis(Label);
  NamedArray log_normalizers = logsumexp(logits, label);
  if (targets.axis_index(AxisSelector(label.name))) {
    // A target distribution over the labels.
    NamedArray neg_log_normalized = log_normalizers - logits;
    return {dot(targets, neg_log_normalized, label), log_normalizers};
  }
  if (!at::isIntegralType(targets.dtype(), false)) {
    value_error("cross_entropy_loss: targets must have the " + label.name +
                " axis (a distribution) or be integer class ids, got " + targets.str());
  }
  // Class ids: -log p(target) = logsumexp - logit[target].
  NamedArray picked = take(logits, label, targets);
  return {log_normalizers - picked, log_normalizers};
}

NamedArray reduce_loss(const NamedArray& loss, Reduction reduction, const std::optional<AxisSelection>& axis,
                       const std::optional<NamedArray>& where) {
  bool reduce = reduction != Reduction::kNone && !(axis && axis->empty());
  if (!reduce) return where ? haliax::where(*where, loss, 0.0) : loss;
  AxisSelection ax = axis ? *axis : AxisSelection(loss.axes());
  if (reduction == Reduction::kMean) return where ? mean(loss, ax, *where) : mean(loss, ax);
  return where ? sum(loss, ax, *where) : sum(loss, ax);
}

NamedArray cross_entropy_loss(const NamedArray& logits, const AxisSelector& Label, const NamedArray& targets,
                              Reduction reduction, const std::optional<NamedArray>& where,
                              const std::optional<AxisSelection>& reduction_axis) {
  auto [loss, _] = cross_entropy_loss_and_log_normalizers(logits, Label, targets);
  return reduce_loss(loss, reduction, reduction_axis, where);
}

NamedArray binary_cross_entropy_loss(const NamedArray& logits, const NamedArray& targets, Reduction reduction,
                                     const std::optional<NamedArray>& where,
                                     const std::optional<AxisSelection>& reduction_axis) {
  NamedArray log_p(at::log_sigmoid(logits.array()), logits.axes());
  NamedArray log_not_p(at::log_sigmoid(-logits.array()), logits.axes());
  NamedArray t = astype(targets, logits.dtype());
  NamedArray loss = -(t * log_p) - (1.0 - t) * log_not_p;
  return reduce_loss(loss, reduction, reduction_axis, where);
}

}  // namespace haliax::nn
