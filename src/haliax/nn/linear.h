// Linear: out = dot(x, weight, In) + bias, with multi-axis In and Out.
#pragma once

#include <optional>

#include "haliax/named_array.h"
#include "haliax/nn/module.h"
#include "haliax/random.h"

namespace haliax::nn {

// Linear::init's options, by name: nn::LinearOptions().set_use_bias(false).set_out_first(false).
struct LinearOptions {
  bool use_bias = true;
  double init_scale = 1.0;
  bool out_first = true;  // weight (Out..., In...) as torch.nn.Linear; false: (In..., Out...) as HF's Conv1D
  at::ScalarType dtype = at::kFloat;
  LinearOptions& set_use_bias(bool v) {
    use_bias = v;
    return *this;
  }
  LinearOptions& set_init_scale(double v) {
    init_scale = v;
    return *this;
  }
  LinearOptions& set_out_first(bool v) {
    out_first = v;
    return *this;
  }
  LinearOptions& set_dtype(at::ScalarType v) {
    dtype = v;
    return *this;
  }
};

struct Linear {
  AxisSpec In;
  AxisSpec Out;
  NamedArray weight;               // (Out..., In...) if out_first (PyTorch's layout), else (In..., Out...)
  std::optional<NamedArray> bias;  // (Out...)

  // weight ~ truncated_normal(-3, 3) * init_scale / sqrt(|In|), bias = 0 (Haliax's default init).
  static Linear init(const AxisSpec& In, const AxisSpec& Out, const random::Key& key,
                     const LinearOptions& options = {});
  // x must have the In axes; they are replaced by the Out axes.
  NamedArray operator()(const NamedArray& x) const;
  bool bias_axes_are_out() const;
  void visit(ParamVisitor& v) {
    v("weight", weight, ParamKind::kLinearWeight);
    v("bias", bias, ParamKind::kBias);
  }
};

}  // namespace haliax::nn
