#include "haliax/nn/embedding.h"

#include "haliax/core.h"
#include "haliax/ops.h"

#include <torch/csrc/autograd/custom_function.h>

#include <vector>

namespace haliax::nn {

Embedding Embedding::init(const Axis& Vocab, const AxisSpec& Embed, const random::Key& key, double init_scale,
                          at::ScalarType dtype) {
  // Haliax's standard parameterisation scales the init by 1 / |Embed| (EmbeddingStandardParam.init_scale).
  NamedArray w = random::truncated_normal(key, concat_axes({Vocab}, Embed), -3.0, 3.0) *
                 (init_scale / static_cast<double>(axis_size(Embed)));
  return Embedding{Vocab, Embed, astype(w, dtype)};
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// weight [V, ...] rows at ids [n] (int64): index_select's values; the gradient as EmbedGradient::kRows says.
struct TakeRows : public torch::autograd::Function<TakeRows> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& weight, const at::Tensor& ids) {
    ctx->save_for_backward({ids});
    ctx->saved_data["sizes"] = weight.sizes().vec();
    return at::index_select(weight, 0, ids);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const at::Tensor ids = ctx->get_saved_variables()[0];
    const std::vector<int64_t> sizes = ctx->saved_data["sizes"].toIntVector();
    const at::Tensor& g = grad_outputs[0];
    // index_select's own gradient (zeros, the rows added in the order of the ids), differentiable: for create_graph.
    if (at::GradMode::is_enabled()) return {at::zeros(sizes, g.options()).index_add(0, ids, g), at::Tensor()};
    // Each distinct row once, its occurrences added in the same order into zeros: the dense gradient's rows, bit for
    // bit. Sorted and distinct, so the tensor is coalesced as built.
    auto [rows, inverse, counts] = at::_unique2(ids, /*sorted=*/true, /*return_inverse=*/true, /*return_counts=*/false);
    std::vector<int64_t> value_sizes = sizes;
    value_sizes[0] = rows.size(0);
    at::Tensor values = at::zeros(value_sizes, g.options()).index_add_(0, inverse, g);
    at::Tensor sparse =
        at::_sparse_coo_tensor_unsafe(rows.unsqueeze(0), values, sizes, g.options().layout(at::kSparse));
    return {sparse._coalesced_(true), at::Tensor()};
  }
};

}  // namespace

NamedArray Embedding::embed(const NamedArray& ids, EmbedGradient gradient) const {
  // Rows of a table whose first axis is Vocab (every table init makes); otherwise take()'s general gather.
  bool plain = gradient == EmbedGradient::kRows && !weight.axes().empty() && weight.axes()[0] == Vocab &&
               at::isIntegralType(ids.dtype(), /*includeBool=*/false);
  for (const Axis& a : ids.axes()) plain = plain && !weight.has_axis(a.name);  // else take() batches over it
  if (!plain) return take(weight, Vocab, ids);
  AxisSpec out = ids.axes();
  for (size_t i = 1; i < weight.axes().size(); ++i) out.push_back(weight.axes()[i]);
  check_unique(out);
  std::vector<int64_t> sizes;
  for (const Axis& a : out) sizes.push_back(a.size);
  at::Tensor rows = TakeRows::apply(weight.array(), ids.array().reshape({-1}).to(at::kLong));
  return NamedArray(rows.reshape(sizes), out);
}

NamedArray Embedding::unembed(const NamedArray& x) const { return dot(x, weight, AxisSelection(Embed)); }

}  // namespace haliax::nn
