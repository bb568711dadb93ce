#include "haliax/nn/attention.h"

#include <ATen/ATen.h>

#include <cmath>

#include "haliax/core.h"
#include "haliax/error.h"
#include "haliax/nn/activations.h"
#include "haliax/ops.h"

namespace haliax::nn {

NamedArray dot_product_attention_weights(const AxisSelector& Key, const AxisSelection& KPos, const NamedArray& query,
                                         const NamedArray& key, const std::optional<NamedArray>& mask,
                                         const std::optional<NamedArray>& bias,
                                         std::optional<at::ScalarType> attention_dtype,
                                         std::optional<double> scaling_factor) {
  at::ScalarType orig = query.dtype();
  double scale = scaling_factor ? *scaling_factor : 1.0 / std::sqrt(static_cast<double>(query.axis_size(Key)));
  NamedArray q = query * scale;
  NamedArray k = key;
  if (attention_dtype) {
    q = astype(q, *attention_dtype);
    k = astype(k, *attention_dtype);
  }
  NamedArray weights = dot(q, k, Key);
  if (bias) weights = weights + *bias;
  if (mask) weights = where(*mask, weights, -1e9);
  weights = softmax(weights, KPos);
  return astype(weights, orig);
}

NamedArray dot_product_attention(const AxisSelection& KPos, const AxisSelector& Key, const NamedArray& query,
                                 const NamedArray& key, const NamedArray& value, const std::optional<NamedArray>& mask,
                                 const std::optional<NamedArray>& bias, std::optional<at::ScalarType> attention_dtype) {
  AxisSpec kpos = key.resolve_axes(KPos);
  for (const Axis& ax : kpos) {
    if (query.axis_index(AxisSelector(ax.name))) {
      value_error("Axis " + to_string(ax) + " in KPos is also in query. Attended-to axes must be distinct from query axis");
    }
  }
  NamedArray weights = dot_product_attention_weights(Key, AxisSelection(kpos), query, key, mask, bias, attention_dtype);
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
