#include "haliax/nn/attention.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <string>
#include <vector>

#include "haliax/core.h"
#include "haliax/error.h"
#include "haliax/nn/activations.h"
#include "haliax/nn/attention_cpu.h"
#include "haliax/nn/dropout.h"
#include "haliax/nn/gemm_bf16.h"
#include "haliax/ops.h"
#include "haliax/partitioning.h"

namespace haliax::nn {

namespace {

// The fused f32 CPU attention (attention_cpu.h) as an autograd function of q [N, Q, C], k [N, K, C], v [N, K, D]. A
// backward that is itself differentiated (Sophia-H's Hessian-vector products) takes the unfused formulas in ATen ops,
// which autograd can differentiate again.
// The mask is not an input autograd sees (libtorch 1.13 refuses an undefined tensor there): it is wrapped.
struct MaskArg {
  at::Tensor mask;  // bool [Q, K], or undefined
};
struct FusedAttentionF32 : public torch::autograd::Function<FusedAttentionF32> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, const MaskArg& m, double scale) {
    const at::Tensor& mask = m.mask;
    auto [out, lse] = kernels::attention_f32_forward(q, k, v, mask, scale);
    ctx->save_for_backward({q, k, v, lse});
    ctx->saved_data["has_mask"] = mask.defined();
    // A copy (Q x K bytes): saved_data has no version check, so an in-place edit of the caller's mask before the
    // backward would go unnoticed.
    if (mask.defined()) ctx->saved_data["mask"] = mask.clone();
    ctx->saved_data["scale"] = scale;
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &lse = saved[3];
    const at::Tensor mask = ctx->saved_data["has_mask"].toBool() ? ctx->saved_data["mask"].toTensor() : at::Tensor();
    const double scale = ctx->saved_data["scale"].toDouble();
    const at::Tensor& g = grad_outputs[0];
    if (at::GradMode::is_enabled()) {
      // The unfused path's gradients, differentiable: logits where(mask, scale q k^T, -1e9), softmax, then the
      // products' and the softmax's backward formulas; a masked logit gets no gradient.
      at::Tensor s = at::matmul(q * scale, k.transpose(-1, -2));
      if (mask.defined()) s = at::where(mask, s, -1e9);
      const at::Tensor p = at::softmax(s, -1);
      const at::Tensor dp = at::matmul(g, v.transpose(-1, -2));
      at::Tensor ds = p * (dp - (dp * p).sum(-1, true));
      if (mask.defined()) ds = at::where(mask, ds, 0.0);
      return {at::matmul(ds, k) * scale, at::matmul(ds.transpose(-1, -2), q * scale),
              at::matmul(p.transpose(-1, -2), g), at::Tensor(), at::Tensor()};
    }
    auto [dq, dk, dv] = kernels::attention_f32_backward(g, q, k, v, mask, lse, scale);
    return {dq, dk, dv, at::Tensor(), at::Tensor()};
  }
};

// The axes, in order, of where(mask, x, ...) for an x with these axes: the mask broadcast against a stand-in of x
// (a zero-strided view, no memory). The fused kernels give their results this order, as the unfused ops do.
AxisSpec where_axes(const NamedArray& mask, const AxisSpec& x_axes) {
  std::vector<int64_t> sizes;
  for (const Axis& a : x_axes) sizes.push_back(a.size);
  return broadcast_arrays({mask, NamedArray(at::zeros({}, at::kFloat).expand(sizes), x_axes)}).second;
}

// softmax(where(mask, x, -1e9)) over the last axis of x [R, K] through the one-pass CPU kernel (attention_cpu.h). The
// backward uses the saved weights, as ATen's softmax does; one that is itself differentiated takes the same formula in
// ATen ops on them (autograd differentiates through the saved output back into this function).
struct MaskRowsArg {
  kernels::MaskRows rows;
};
struct MaskedSoftmax : public torch::autograd::Function<MaskedSoftmax> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const MaskRowsArg& m) {
    at::Tensor p = kernels::masked_softmax_forward(x, m.rows);
    ctx->save_for_backward({p});
    ctx->saved_data["has_mask"] = m.rows.mask.defined();
    if (m.rows.mask.defined()) {
      // A copy (the mask's own size): saved_data has no version check, so an in-place edit of the caller's mask
      // before the backward would go unnoticed.
      ctx->saved_data["mask"] = m.rows.mask.clone();
      ctx->saved_data["offsets"] = m.rows.row_offsets;
      ctx->saved_data["key_stride"] = m.rows.key_stride;
    }
    return p;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const at::Tensor p = ctx->get_saved_variables()[0];
    kernels::MaskRows m;
    if (ctx->saved_data["has_mask"].toBool()) {
      m.mask = ctx->saved_data["mask"].toTensor();
      m.row_offsets = ctx->saved_data["offsets"].toTensor();
      m.key_stride = ctx->saved_data["key_stride"].toInt();
    }
    const at::Tensor& dy = grad_outputs[0];
    if (at::GradMode::is_enabled() || dy.scalar_type() != p.scalar_type()) {
      at::Tensor dx = p * (dy - (dy * p).sum(-1, true));
      if (m.mask.defined()) {
        const int64_t K = p.size(1);
        const at::Tensor index = m.row_offsets.unsqueeze(1) + at::arange(K, m.row_offsets.options()) * m.key_stride;
        dx = at::where(m.mask.reshape({-1}).index_select(0, index.reshape({-1})).view(p.sizes()), dx, 0.0);
      }
      return {dx.to(p.scalar_type()), at::Tensor()};
    }
    return {kernels::masked_softmax_backward(dy, p, m), at::Tensor()};
  }
};

// The attention weights' where(mask, x, -1e9) and softmax over KPos through MaskedSoftmax, when x is f32 or bf16 on a
// CPU the kernel runs on, KPos is one axis of x (not split by tensor parallelism), and the mask (if any) is bool over
// axes of x. Otherwise nullopt, and the caller takes the ATen ops. The result has their result's axes, in its order.
std::optional<NamedArray> fused_masked_softmax(const NamedArray& x, const std::optional<NamedArray>& mask,
                                               const AxisSelection& over) {
  if (!kernels::attention_f32_supported() || !x.device().is_cpu()) return {};
  if (x.dtype() != at::kFloat && x.dtype() != at::kBFloat16) return {};
  const AxisSpec kpos = x.resolve_axes(over);
  if (kpos.size() != 1 || (TensorParallelScope::current() && is_split(kpos[0].name))) return {};
  const Axis KP = kpos[0];
  if (mask && (mask->dtype() != at::kBool || !mask->device().is_cpu())) return {};
  AxisSpec order = x.axes();
  if (mask) {
    for (const Axis& a : mask->axes()) {
      const auto i = index_of(x.axes(), a.name);
      if (!i || x.axes()[*i].size != a.size) return {};  // an axis x lacks, or a size that broadcasts
    }
    order = where_axes(*mask, x.axes());
  }
  // Laid out with KPos last, rows in the result's order.
  AxisSpec laid_out;
  for (const Axis& a : order) {
    if (a.name != KP.name) laid_out.push_back(a);
  }
  laid_out.push_back(KP);
  const int64_t K = KP.size, R = K == 0 ? 0 : axis_size(laid_out) / K;
  if (R == 0 || K == 0) return {};
  kernels::MaskRows rows;
  if (mask) {
    // The mask's own entries in the laid-out order of its axes; row r of the scores reads its entries from offset
    // row_offsets[r], found by broadcasting the entries' indices over the scores' axes.
    AxisSpec mask_order;
    for (const Axis& a : laid_out) {
      if (index_of(mask->axes(), a.name)) mask_order.push_back(a);
    }
    rows.mask = mask->rearrange(AxisSelection(mask_order)).array().contiguous();
    const NamedArray index(at::arange(rows.mask.numel(), at::kLong).view(rows.mask.sizes()), mask_order);
    const at::Tensor spread = broadcast_axis(index, laid_out).rearrange(AxisSelection(laid_out)).array();
    rows.key_stride = index_of(mask_order, KP.name) ? 1 : 0;
    rows.row_offsets = spread.select(-1, 0).reshape({R}).contiguous();
  }
  const at::Tensor scores = x.rearrange(AxisSelection(laid_out)).array().contiguous().view({R, K});
  if (!kernels::masked_softmax_supported(scores)) return {};
  std::vector<int64_t> sizes;
  for (const Axis& a : laid_out) sizes.push_back(a.size);
  const NamedArray p(MaskedSoftmax::apply(scores, MaskRowsArg{rows}).view(sizes), laid_out);
  return p.rearrange(AxisSelection(order));
}

// The logits' scale: the options' scaling_factor, else 1 / sqrt(|Contract|).
double scaling(const Contract& contract, const NamedArray& query, const AttentionOptions& o) {
  return o.scaling_factor ? *o.scaling_factor : 1.0 / std::sqrt(static_cast<double>(query.axis_size(contract.axis)));
}

// The same attention through the fused f32 CPU kernel, when the call has its shape: f32 CPU operands (or bf16 ones on
// a CPU whose bf16 GEMMs are widened to f32, gemm_bf16.h: the kernel then takes them widened, exactly, and its output
// is rounded to bf16 once, where the unfused ops would round the logits, the weights and the output), one contracted
// axis C, one attended-over axis KPos; key = (batch axes, KPos, C), value = (batch axes, KPos, value axes), where the
// batch axes are the query's other axes that key has; no bias, no dropout; the mask (if any) bool over the query-only
// axes and KPos; no tensor-parallel split except of batch axes. Otherwise nullopt, and the caller computes unfused.
// The result has the unfused result's axes, in its order.
std::optional<NamedArray> fused_attention(const Contract& contract, const AxisSpec& kpos, const NamedArray& query,
                                          const NamedArray& key, const NamedArray& value, double scale,
                                          const AttentionOptions& o) {
  if (!kernels::attention_f32_supported() || o.bias || (o.dropout > 0.0 && o.key) || kpos.size() != 1) return {};
  const at::ScalarType dtype = query.dtype();
  if (dtype != at::kFloat && !(dtype == at::kBFloat16 && bf16_gemm_route() == Bf16Gemm::widened)) return {};
  if (o.attention_dtype && *o.attention_dtype != at::kFloat && *o.attention_dtype != dtype) return {};
  for (const NamedArray* a : {&query, &key, &value}) {
    if (a->dtype() != dtype || !a->device().is_cpu()) return {};
  }
  if (o.mask && (o.mask->dtype() != at::kBool || !o.mask->device().is_cpu())) return {};
  const std::optional<size_t> qc = query.axis_index(contract.axis);
  if (!qc) return {};
  const Axis C = query.axes()[*qc];
  const Axis& KP = kpos[0];
  auto size_in = [](const NamedArray& a, const std::string& name) -> int64_t {
    const auto i = index_of(a.axes(), name);
    return i ? a.axes()[*i].size : -1;
  };
  if (size_in(key, C.name) != C.size || size_in(value, KP.name) != KP.size) return {};
  // Batch axes (in the query's order) and the query-only axes.
  AxisSpec batch, qonly;
  for (const Axis& a : query.axes()) {
    if (a.name == C.name) continue;
    const int64_t ks = size_in(key, a.name);
    if (ks == -1) {
      qonly.push_back(a);
      continue;
    }
    if (ks != a.size || size_in(value, a.name) != a.size) return {};
    batch.push_back(a);
  }
  if (key.ndim() != static_cast<int64_t>(batch.size()) + 2) return {};  // key has an axis the query lacks
  AxisSpec vonly;                                                       // the value's own axes, in its order
  for (const Axis& a : value.axes()) {
    if (a.name != KP.name && !index_of(batch, a.name)) vonly.push_back(a);
  }
  for (const Axis& a : vonly) {
    if (index_of(qonly, a.name)) return {};  // would collide with a query axis in the output
  }
  if (TensorParallelScope::current()) {
    for (const NamedArray* arr : {&query, &key, &value}) {
      for (const Axis& a : arr->axes()) {
        if (is_split(a.name) && !index_of(batch, a.name)) return {};
      }
    }
  }
  at::Tensor mask;
  if (o.mask) {
    AxisSpec mask_axes = qonly;
    mask_axes.push_back(KP);
    for (const Axis& a : o.mask->axes()) {
      const auto i = index_of(mask_axes, a.name);
      if (!i || mask_axes[*i].size != a.size) return {};  // over a batch axis, or broadcast: unfused
    }
    mask = broadcast_axis(*o.mask, mask_axes)
               .rearrange(AxisSelection(mask_axes))
               .array()
               .contiguous()
               .view({axis_size(qonly), KP.size});
  }
  auto permuted = [](const NamedArray& a, const std::vector<AxisSpec>& groups) {
    std::vector<int64_t> perm;
    std::vector<int64_t> shape;
    for (const AxisSpec& g : groups) {
      for (const Axis& ax : g) perm.push_back(static_cast<int64_t>(*index_of(a.axes(), ax.name)));
      shape.push_back(axis_size(g));
    }
    return contiguous_f32(a.array().permute(perm)).view(shape);
  };
  const at::Tensor q = permuted(query, {batch, qonly, {C}});
  const at::Tensor k = permuted(key, {batch, {KP}, {C}});
  const at::Tensor v = permuted(value, {batch, {KP}, vonly});
  at::Tensor out = FusedAttentionF32::apply(q, k, v, MaskArg{mask}, scale);
  if (dtype != at::kFloat) out = out.to(dtype);
  // Laid out (batch, query-only, value axes). The unfused result's order is its weights' without KPos, then the value's
  // own axes; the weights come from dot(q, k) in the query's order without C, then KPos, unless where() with a mask as
  // large as they are (no batch axis, or batch axes of size 1) puts them in the mask's order (where_axes).
  AxisSpec laid_out = batch;
  laid_out.insert(laid_out.end(), qonly.begin(), qonly.end());
  laid_out.insert(laid_out.end(), vonly.begin(), vonly.end());
  std::vector<int64_t> sizes;
  for (const Axis& a : laid_out) sizes.push_back(a.size);
  AxisSpec weights;
  for (const Axis& a : query.axes()) {
    if (a.name != C.name) weights.push_back(a);
  }
  weights.push_back(KP);
  if (o.mask) weights = where_axes(*o.mask, weights);
  AxisSpec order;
  for (const Axis& a : weights) {
    if (a.name != KP.name) order.push_back(a);
  }
  order.insert(order.end(), vonly.begin(), vonly.end());
  std::vector<int64_t> perm;
  for (const Axis& a : order) perm.push_back(static_cast<int64_t>(*index_of(laid_out, a.name)));
  return NamedArray(out.view(sizes).permute(perm), order);
}

}  // namespace

NamedArray dot_product_attention_weights(const Contract& contract, const AttendOver& over, const NamedArray& query,
                                         const NamedArray& key, const AttentionOptions& o) {
  at::ScalarType orig = query.dtype();
  const double scale = scaling(contract, query, o);
  NamedArray q = query * scale;
  NamedArray k = key;
  if (o.attention_dtype) {
    q = astype(q, *o.attention_dtype);
    k = astype(k, *o.attention_dtype);
  }
  NamedArray weights = dot(q, k, AxisSelection(contract.axis));
  if (o.bias) weights = weights + *o.bias;
  if (auto fused = fused_masked_softmax(weights, o.mask, over.axes)) {
    weights = astype(*fused, orig);
  } else {
    if (o.mask) weights = where(*o.mask, weights, -1e9);
    weights = astype(softmax(weights, over.axes), orig);
  }
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
  const double scale = scaling(contract, query, o);
  if (auto fused = fused_attention(contract, kpos, query, key, value, scale, o)) return *fused;
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
