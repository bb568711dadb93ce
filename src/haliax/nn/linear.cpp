#include "haliax/nn/linear.h"

#include <ATen/ATen.h>

#include <cmath>

#include "haliax/core.h"
#include "haliax/ops.h"

namespace haliax::nn {

Linear Linear::init(const AxisSpec& In, const AxisSpec& Out, const random::Key& key, bool use_bias, double init_scale,
                    bool out_first, at::ScalarType dtype) {
  AxisSpec joint = out_first ? concat_axes(Out, In) : concat_axes(In, Out);
  NamedArray w = random::truncated_normal(key, joint, -3.0, 3.0) * (init_scale / std::sqrt(double(axis_size(In))));
  Linear l{In, Out, astype(w, dtype), std::nullopt};
  if (use_bias) l.bias = zeros(Out, dtype);
  return l;
}

NamedArray Linear::operator()(const NamedArray& x) const {
  NamedArray out = dot(x, weight, AxisSelection(In));
  if (bias) out = out + *bias;
  return out;
}

}  // namespace haliax::nn
