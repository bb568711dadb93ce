#include "haliax/nn/linear.h"

#include <ATen/ATen.h>

#include <cmath>

#include "haliax/core.h"
#include "haliax/ops.h"
#include "haliax/ops/contract.h"
#include "haliax/partitioning.h"

namespace haliax::nn {

Linear Linear::init(const AxisSpec& In, const AxisSpec& Out, const random::Key& key, const LinearOptions& o) {
  AxisSpec joint = o.out_first ? concat_axes(Out, In) : concat_axes(In, Out);
  NamedArray w = random::truncated_normal(key, joint, -3.0, 3.0) * (o.init_scale / std::sqrt(double(axis_size(In))));
  Linear l{In, Out, astype(w, o.dtype), std::nullopt};
  if (o.use_bias) l.bias = zeros(Out, o.dtype);
  return l;
}

NamedArray Linear::operator()(const NamedArray& x_in) const {
  // The axes as the weight has them: under tensor parallelism (partitioning.h) a split axis is this process's piece
  // of the axis the layer was built with.
  AxisSpec In = this->In, Out = this->Out;
  for (AxisSpec* spec : {&In, &Out}) {
    for (Axis& a : *spec) {
      if (auto i = index_of(weight.axes(), a.name)) a = weight.axes()[*i];
    }
  }
  // Tensor parallelism: x's gradient is summed over the processes when the weight's output is split, the product
  // when its input is (the bias added once, after the sum).
  // dot's output axes: x's, then the weight's others, without In (by name: x may hold a split axis whole).
  AxisSpec out_axes;
  for (const AxisSpec* spec : {&x_in.axes(), &weight.axes()}) {
    for (const Axis& a : *spec) {
      if (!index_of(In, a.name) && !index_of(out_axes, a.name)) out_axes.push_back(a);
    }
  }
  bool sum_result = false;
  const NamedArray x = prepare_contraction({x_in, weight}, out_axes, &sum_result)[0];
  NamedArray out;
  // Fast path, the common case: the weight is laid out (Out, In) or (In, Out). Then the layer is one GEMM with
  // the bias fused in (addmm), as torch's nn.Linear does: one pass over the output forward, and the bias
  // gradient comes out of the same backward. If x's In axes are not already its trailing axes, they are moved
  // there first (one copy, the same one a positional implementation makes with transpose().contiguous()).
  const size_t k = In.size();
  bool out_first = weight.axes() == concat_axes(Out, In);
  bool in_first = !out_first && weight.axes() == concat_axes(In, Out);
  bool same_dtype = x.dtype() == weight.dtype() && (!bias || bias->dtype() == x.dtype());
  if ((out_first || in_first) && same_dtype && (!bias || bias->axes() == Out) && x.has_axis(AxisSelection(In))) {
    NamedArray xt = x;
    const AxisSpec& xa = x.axes();
    bool trailing = xa.size() >= k && std::equal(xa.end() - static_cast<long>(k), xa.end(), In.begin());
    if (!trailing) {
      std::vector<AxisSelector> order{AxisSelector(kEllipsis)};
      for (const Axis& a : In) order.emplace_back(a);
      xt = rearrange(x, AxisSelection(order));
    }
    const int64_t n_in = axis_size(In), n_out = axis_size(Out);
    at::Tensor x2 = xt.array().reshape({-1, n_in});
    at::Tensor w2 = out_first ? weight.array().reshape({n_out, n_in}).t() : weight.array().reshape({n_in, n_out});
    at::Tensor y = bias && !sum_result ? at::addmm(bias->array().reshape({n_out}), x2, w2) : at::mm(x2, w2);
    AxisSpec axes(xt.axes().begin(), xt.axes().end() - static_cast<long>(k));
    axes.insert(axes.end(), Out.begin(), Out.end());
    std::vector<int64_t> sizes;
    for (const Axis& a : axes) sizes.push_back(a.size);
    out = NamedArray(y.reshape(sizes), axes);
    if (bias && !sum_result) return out;
  } else {
    out = detail::contract({x, weight}, out_axes);
  }
  if (sum_result) out = sum_partial_results(out);
  if (bias) out = out + *bias;
  return out;
}

bool Linear::bias_axes_are_out() const { return !bias || bias->axes() == Out; }

}  // namespace haliax::nn
