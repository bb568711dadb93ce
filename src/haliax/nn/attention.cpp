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
      value_error("Axis " + axis_str(ax) +
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

NamedArray prefix_lm_mask(const Axis& QPos, const Axis& KPos, int64_t prefix_len, int64_t q_start, int64_t k_start) {
  if (prefix_len < 0) value_error("prefix_lm_mask: prefix_len must be >= 0, got " + std::to_string(prefix_len));
  NamedArray causal = causal_mask(QPos, KPos, q_start, k_start);
  NamedArray prefix = arange(KPos, k_start) < (prefix_len + k_start);
  return causal | broadcast_axis(prefix, causal.axes());
}

NamedArray forgetful_causal_mask(const Axis& KPos, double mask_prob, bool sample_prob, const random::Key& key,
                                 at::ScalarType dtype) {
  NamedArray zeroth_on = one_hot(int64_t{0}, KPos, at::kBool);
  if (mask_prob == 0.0) return NamedArray(at::ones({KPos.size}, at::kBool), {KPos});
  if (mask_prob == 1.0) return zeroth_on;
  random::Key k = key;
  NamedArray keep_prob = full({}, 1.0 - mask_prob, dtype);
  if (sample_prob) {
    auto [k1, subkey] = key.split2();
    k = k1;
    keep_prob = 1.0 - random::uniform(subkey, {}, dtype, 0.0, mask_prob);
  }
  return random::bernoulli(k, {KPos}, keep_prob) | zeroth_on;
}

NamedArray alibi_attention_bias(const Axis& Heads, const Axis& KPos, double bias_max, at::ScalarType dtype) {
  const double log_bias_max = std::log2(bias_max);
  auto slopes_power_of_2 = [&](int64_t n) {
    const double start = std::pow(2.0, -std::pow(2.0, -(std::log2(static_cast<double>(n)) - log_bias_max)));
    std::vector<double> out;
    for (int64_t i = 0; i < n; ++i) out.push_back(start * std::pow(start, static_cast<double>(i)));
    return out;
  };
  std::vector<double> slopes;
  const double lg = std::log2(static_cast<double>(Heads.size));
  if (lg == std::floor(lg)) {
    slopes = slopes_power_of_2(Heads.size);
  } else {
    // As the ALiBi reference: the slopes of the nearest smaller power of two, then every other slope of the next.
    const int64_t closest = int64_t{1} << static_cast<int64_t>(std::floor(lg));
    slopes = slopes_power_of_2(closest);
    std::vector<double> more = slopes_power_of_2(2 * closest);
    for (size_t i = 0; i < more.size() && static_cast<int64_t>(slopes.size()) < Heads.size; i += 2)
      slopes.push_back(more[i]);
  }
  NamedArray s(at::tensor(slopes, at::kDouble), {Heads});
  NamedArray positions = broadcast_axis(arange(KPos), {Heads, KPos});
  return astype(s * positions, dtype);
}

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
