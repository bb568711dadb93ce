// Dot-product attention over named axes (haliax.nn.attention).
//
// Nothing here mentions batch or heads: any axis of the query that is not contracted (Key) or attended over
// (KPos) is carried through, so the same call does single-head, multi-head, multi-query and 2-D attention.
#pragma once

#include <initializer_list>
#include <optional>
#include <utility>

#include "haliax/named_array.h"
#include "haliax/random.h"

namespace haliax::nn {

// The two axes of an attention call have types of their own, so that they cannot be swapped by accident
// (Haliax takes them positionally, and in opposite orders in its two functions):
//   Contract(HeadSize)     the axis q and k are contracted over (Haliax's `Key`)
//   AttendOver(KeyPos)     the axis or axes the softmax normalises over (Haliax's `KPos`)
struct Contract {
  explicit Contract(AxisSelector axis) : axis(std::move(axis)) {}
  AxisSelector axis;
};
struct AttendOver {
  explicit AttendOver(AxisSelection axes) : axes(std::move(axes)) {}
  AttendOver(std::initializer_list<AxisSelector> axes) : axes(AxisSelection(std::vector<AxisSelector>(axes))) {}
  AxisSelection axes;
};

// Everything optional about an attention call, by name:
//   nn::AttentionOptions o;  o.mask = causal;  o.attention_dtype = at::kFloat;  o.dropout = 0.1;  o.key = k;
struct AttentionOptions {
  std::optional<NamedArray> mask;                 // bool, true = attend; broadcast by name
  std::optional<NamedArray> bias;                 // added to the logits before masking
  std::optional<at::ScalarType> attention_dtype;  // upcast q and k (e.g. f32 for a bf16 model)
  std::optional<double> scaling_factor;           // default 1 / sqrt(|Contract|)
  double dropout = 0.0;                           // dropout on the attention weights (Levanter's attn_pdrop)...
  std::optional<random::Key> key;                 // ...applied only with a key (absent: inference)
  // Chainable, for one-expression calls: nn::AttentionOptions().set_mask(causal).set_attention_dtype(at::kFloat).
  AttentionOptions& set_mask(NamedArray v) {
    mask = std::move(v);
    return *this;
  }
  AttentionOptions& set_bias(NamedArray v) {
    bias = std::move(v);
    return *this;
  }
  AttentionOptions& set_attention_dtype(at::ScalarType v) {
    attention_dtype = v;
    return *this;
  }
  AttentionOptions& set_scaling_factor(double v) {
    scaling_factor = v;
    return *this;
  }
  AttentionOptions& set_dropout(double p, const random::Key& k) {
    dropout = p;
    key = k;
    return *this;
  }
};

// softmax(q . k * scale + bias, masked) over AttendOver, then dropout. Masked-out logits get -1e9 (as Haliax),
// so a fully masked row is uniform rather than NaN. Returned in the query's dtype.
NamedArray dot_product_attention_weights(const Contract& contract, const AttendOver& over, const NamedArray& query,
                                         const NamedArray& key, const AttentionOptions& options = {});
// weights . value over AttendOver. The attended-over axes must not be axes of the query.
NamedArray dot_product_attention(const Contract& contract, const AttendOver& over, const NamedArray& query,
                                 const NamedArray& key, const NamedArray& value, const AttentionOptions& options = {});

// mask[q, k] = (k + k_start) <= (q + q_start): bool (QPos, KPos).
NamedArray causal_mask(const Axis& QPos, const Axis& KPos, int64_t q_start = 0, int64_t k_start = 0);
// Causal sliding window: k <= q and q - k < width.
NamedArray sliding_window_mask(const Axis& QPos, const Axis& KPos, int64_t width);
// mask[k] = k < length (padding).
NamedArray prefix_mask(const Axis& KPos, int64_t length);
// Haliax's prefix_lm_mask: causal, except that every query sees the first prefix_len keys; bool (QPos, KPos).
NamedArray prefix_lm_mask(const Axis& QPos, const Axis& KPos, int64_t prefix_len, int64_t q_start = 0,
                          int64_t k_start = 0);
// Forgetful causal masking (arXiv 2210.13432), Haliax's forgetful_causal_mask: bool (KPos), each key position
// kept with probability 1 - p, position 0 always kept; with sample_prob, p is first drawn uniformly from
// [0, mask_prob) (the key is split as Haliax splits it). `dtype` is the float type of the draws: JAX's default
// float, f32 (f64 under jax_enable_x64), so the same key gives JAX's mask bit for bit.
NamedArray forgetful_causal_mask(const Axis& KPos, double mask_prob, bool sample_prob, const random::Key& key,
                                 at::ScalarType dtype = at::kFloat);
// ALiBi attention bias (Press et al.), Haliax's alibi_attention_bias: (Heads, KPos), slope_h * k, with the
// slopes of the ALiBi paper for bias_max = 8 (Mosaic's generalisation for other values).
NamedArray alibi_attention_bias(const Axis& Heads, const Axis& KPos, double bias_max = 8.0,
                                at::ScalarType dtype = at::kFloat);
// And/or of two optional masks (the second broadcast to the first's axes); absent masks are neutral.
std::optional<NamedArray> combine_masks_and(const std::optional<NamedArray>& a, const std::optional<NamedArray>& b);
std::optional<NamedArray> combine_masks_or(const std::optional<NamedArray>& a, const std::optional<NamedArray>& b);
// A bool mask (true = attend) as an additive bias: 0 where true, mask_value where false. Differs: Haliax
// returns mask * mask_value, i.e. mask_value where the mask is *true*, which inverts a true-means-attend mask.
NamedArray mask_to_bias(const NamedArray& mask, double mask_value = -1e9);

}  // namespace haliax::nn
