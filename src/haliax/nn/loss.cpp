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

NamedArray reduce_loss(const NamedArray& loss_in, const LossOptions& o) {
  // Masked-out positions are zeroed before they are weighted, so a NaN or inf there cannot reach the sum.
  const NamedArray loss = o.where ? where(*o.where, loss_in, 0.0) : loss_in;
  std::optional<NamedArray> w = o.weight;
  if (o.where) {
    NamedArray mask = astype(*o.where, w ? w->dtype() : loss.dtype());
    w = w ? *w * mask : mask;
  }
  if (w) w = astype(broadcast_axis(*w, loss.axes()), loss.dtype());
  const bool reduce = o.reduction != Reduction::kNone && !(o.reduction_axis && o.reduction_axis->empty());
  if (!reduce) return w ? loss * *w : loss;
  const AxisSelection axis = o.reduction_axis ? *o.reduction_axis : AxisSelection(loss.axes());
  if (!w) return o.reduction == Reduction::kMean ? mean(loss, axis) : sum(loss, axis);
  NamedArray weighted = sum(loss * *w, axis);
  if (o.reduction == Reduction::kSum) return weighted;
  NamedArray denom = sum(*w, axis);
  // Where the weights sum to 0 the mean is 0; the division is guarded so its gradient stays finite.
  NamedArray nonzero = not_equal(denom, 0.0);
  NamedArray safe = where(nonzero, denom, 1.0);
  return where(nonzero, weighted / safe, 0.0);
}

NamedArray reduce_loss(const NamedArray& loss, Reduction reduction, const std::optional<AxisSelection>& axis,
                       const std::optional<NamedArray>& where) {
  LossOptions o;
  o.reduction = reduction;
  o.reduction_axis = axis;
  o.where = where;
  return reduce_loss(loss, o);
}

NamedArray cross_entropy_loss(const NamedArray& logits, const AxisSelector& Label, const NamedArray& targets,
                              const LossOptions& options) {
  auto [loss, _] = cross_entropy_loss_and_log_normalizers(logits, Label, targets);
  return reduce_loss(loss, options);
}

NamedArray cross_entropy_loss(const NamedArray& logits, const AxisSelector& Label, const NamedArray& targets,
                              Reduction reduction, const std::optional<NamedArray>& where,
                              const std::optional<AxisSelection>& reduction_axis) {
  auto [loss, _] = cross_entropy_loss_and_log_normalizers(logits, Label, targets);
  return reduce_loss(loss, reduction, reduction_axis, where);
}

NamedArray binary_cross_entropy_loss(const NamedArray& logits, const NamedArray& targets, const LossOptions& options) {
  NamedArray log_p(at::log_sigmoid(logits.array()), logits.axes());
  NamedArray log_not_p(at::log_sigmoid(-logits.array()), logits.axes());
  NamedArray t = astype(targets, logits.dtype());
  NamedArray loss = -(t * log_p) - (1.0 - t) * log_not_p;
  return reduce_loss(loss, options);
}

NamedArray binary_cross_entropy_loss(const NamedArray& logits, const NamedArray& targets, Reduction reduction,
                                     const std::optional<NamedArray>& where,
                                     const std::optional<AxisSelection>& reduction_axis) {
  LossOptions o;
  o.reduction = reduction;
  o.where = where;
  o.reduction_axis = reduction_axis;
  return binary_cross_entropy_loss(logits, targets, o);
}

}  // namespace haliax::nn
