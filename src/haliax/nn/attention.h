// Dot-product attention over named axes (haliax.nn.attention).
//
// Nothing here mentions batch or heads: any axis of the query that is not contracted (Key) or attended over
// (KPos) is carried through, so the same call does single-head, multi-head, multi-query and 2-D attention.
#pragma once

#include <optional>

#include "haliax/named_array.h"

namespace haliax::nn {

// softmax(q . k / sqrt(|Key|) + bias, masked) over KPos. Masked-out logits get -1e9 (as Haliax), so a fully
// masked row is uniform rather than NaN. `attention_dtype` upcasts q and k (e.g. f32 for bf16 models).
NamedArray dot_product_attention_weights(const AxisSelector& Key, const AxisSelection& KPos, const NamedArray& query,
                                         const NamedArray& key, const std::optional<NamedArray>& mask = std::nullopt,
                                         const std::optional<NamedArray>& bias = std::nullopt,
                                         std::optional<at::ScalarType> attention_dtype = std::nullopt,
                                         std::optional<double> scaling_factor = std::nullopt);
// weights . value over KPos. KPos must not be an axis of the query.
NamedArray dot_product_attention(const AxisSelection& KPos, const AxisSelector& Key, const NamedArray& query,
                                 const NamedArray& key, const NamedArray& value,
                                 const std::optional<NamedArray>& mask = std::nullopt,
                                 const std::optional<NamedArray>& bias = std::nullopt,
                                 std::optional<at::ScalarType> attention_dtype = std::nullopt);

// mask[q, k] = (k + k_start) <= (q + q_start): bool (QPos, KPos).
NamedArray causal_mask(const Axis& QPos, const Axis& KPos, int64_t q_start = 0, int64_t k_start = 0);
// Causal sliding window: k <= q and q - k < width.
NamedArray sliding_window_mask(const Axis& QPos, const Axis& KPos, int64_t width);
// mask[k] = k < length (padding).
NamedArray prefix_mask(const Axis& KPos, int64_t length);
// And/or of two optional masks (the second broadcast to the first's axes); absent masks are neutral.
std::optional<NamedArray> combine_masks_and(const std::optional<NamedArray>& a, const std::optional<NamedArray>& b);
std::optional<NamedArray> combine_masks_or(const std::optional<NamedArray>& a, const std::optional<NamedArray>& b);
// A bool mask (true = attend) as an additive bias: 0 where true, mask_value where false.
NamedArray mask_to_bias(const NamedArray& mask, double mask_value = -1e9);

}  // namespace haliax::nn
