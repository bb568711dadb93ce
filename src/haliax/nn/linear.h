// Linear: out = dot(x, weight, In) + bias, with multi-axis In and Out.
#pragma once

#include <optional>

#include "haliax/named_array.h"
#include "haliax/nn/module.h"
#include "haliax/random.h"

namespace haliax::nn {

struct Linear {
  AxisSpec In;
  AxisSpec Out;
  NamedArray weight;               // (Out..., In...) if out_first (PyTorch's layout), else (In..., Out...)
  std::optional<NamedArray> bias;  // (Out...)

  // weight ~ truncated_normal(-3, 3) * init_scale / sqrt(|In|), bias = 0 (Haliax's default init).
  static Linear init(const AxisSpec& In, const AxisSpec& Out, const random::Key& key, bool use_bias = true,
                     double init_scale = 1.0, bool out_first = true, at::ScalarType dtype = at::kFloat);
  // x must have the In axes; they are replaced by the Out axes.
  NamedArray operator()(const NamedArray& x) const;
  bool bias_axes_are_out() const;
  void visit(ParamVisitor& v) {
    v("weight", weight, ParamKind::kLinearWeight);
    v("bias", bias, ParamKind::kBias);
  }
};

}  // namespace haliax::nn
