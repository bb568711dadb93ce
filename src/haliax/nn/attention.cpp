#include "haliax/nn/attention.h"

#include <ATen/ATen.h>

#include <cmath>

#include "haliax/core.h"
#include "haliax/error.h"
#include "haliax/nn/activations.h"
#include "haliax/nn/dropout.h"
#include "haliax/ops.h"

namespace haliax::nn {

NamedArray dot_product_attention_weights(const Contract& contract, const AttendOver& over, const NamedArray& query,
                                         const NamedArray& key, const AttentionOptions& o) {
  at::ScalarType orig = query.dtype();
  double scale =
      o.scaling_factor ? *o.scaling_factor : 1.0 / std::sqrt(static_cast<double>(query.axis_size(contract.axis)));
  NamedArray q = query * scale;
  NamedArray k = key;
  if (o.attention_dtype) {
    q = astype(q, *o.attention_dtype);
    k = astype(k, *o.attention_dtype);
  }
  NamedArray weights = dot(q, k, AxisSelection(contract.axis));
  if (o.bias) weights = weights + *o.bias;
  if (o.mask) weights = where(*o.mask, weights, -1e9);
  weights = astype(softmax(weights, over.axes), orig);
  if (o.dropout > 0.0 && o.key) weights = Dropout{o.dropout}(weights, o.key);
  return weights;
}

NamedArray dot_product_attention(const Contract& contract, const AttendOver& over, const NamedArray& query,
                                 const NamedArray& key, const NamedArray& value, const AttentionOptions& o) {
  AxisSpec kpos = key.resolve_axes(over.axes);
  for (const Axis& ax : kpos) {
    if (query.axis_index(AxisSelector(ax.name))) {
      value_error("Axis " + to_string(ax) +
                  " in KPos is also in query. Attended-to axes must be distinct from query axis");
    }
  }
  NamedArray weights = dot_product_attention_weights(contract, AttendOver(AxisSelection(kpos)), query, key, o);
  return dot(weights, value, AxisSelection(kpos));
}

NamedArray causal_mask(const Axis& QPos, const Axis& KPos, int64_t q_start, int64_t k_start) {
  NamedArray q = arange(QPos, q_start);
  NamedArray k = arange(KPos, k_start);
  // (QPos, KPos): broadcast both to the pair explicitly (they share no axes).
  return broadcast_axis(q, {QPos, KPos}) >= broadcast_axis(k, {QPos, KPos});
}

NamedArray sliding_window_mask(const Axis& QPos, const Axis& KPos, int64_t width) {
  NamedArray q = broadcast_axis(arange(QPos), {QPos, KPos});
  NamedArray k = broadcast_axis(arange(KPos), {QPos, KPos});
  return (q >= k) & (q - k < width);
}

NamedArray prefix_mask(const Axis& KPos, int64_t length) { return arange(KPos) < length; }

std::optional<NamedArray> combine_masks_and(const std::optional<NamedArray>& a, const std::optional<NamedArray>& b) {
  if (!a) return b;
  if (!b) return a;
  return *a & broadcast_axis(*b, a->axes());
}

std::optional<NamedArray> combine_masks_or(const std::optional<NamedArray>& a, const std::optional<NamedArray>& b) {
  if (!a) return b;
  if (!b) return a;
  return *a | broadcast_axis(*b, a->axes());
}

NamedArray mask_to_bias(const NamedArray& mask, double mask_value) {
  return where(mask, 0.0, full_like(NamedArray(at::zeros(mask.array().sizes(), at::kFloat), mask.axes()), mask_value));
}

}  // namespace haliax::nn
