// LayerNorm and RmsNorm over one or more named axes.
#pragma once

#include <optional>

#include "haliax/named_array.h"
#include "haliax/nn/module.h"

namespace haliax::nn {

// Init options, by name: nn::LayerNormOptions().set_eps(1e-6).set_use_bias(false).
struct LayerNormOptions {
  double eps = 1e-5;
  bool use_weight = true;
  bool use_bias = true;
  at::ScalarType dtype = at::kFloat;
  LayerNormOptions& set_eps(double v) {
    eps = v;
    return *this;
  }
  LayerNormOptions& set_use_weight(bool v) {
    use_weight = v;
    return *this;
  }
  LayerNormOptions& set_use_bias(bool v) {
    use_bias = v;
    return *this;
  }
  LayerNormOptions& set_dtype(at::ScalarType v) {
    dtype = v;
    return *this;
  }
};

struct LayerNorm {
  AxisSpec axis;
  std::optional<NamedArray> weight;  // ones(axis)
  std::optional<NamedArray> bias;    // zeros(axis)
  double eps = 1e-5;

  static LayerNorm init(const AxisSpec& axis, const LayerNormOptions& options = {});
  // (x - mean) / sqrt(var + eps) * weight + bias over `axis`, in x's dtype.
  NamedArray operator()(const NamedArray& x) const;
  void visit(ParamVisitor& v) {
    v("weight", weight, ParamKind::kNormWeight);
    v("bias", bias, ParamKind::kBias);
  }
};

// RmsNorm's defaults differ from LayerNorm's: eps 1e-6 and no bias.
struct RmsNormOptions {
  double eps = 1e-6;
  bool use_weight = true;
  bool use_bias = false;
  at::ScalarType dtype = at::kFloat;
  RmsNormOptions& set_eps(double v) {
    eps = v;
    return *this;
  }
  RmsNormOptions& set_use_weight(bool v) {
    use_weight = v;
    return *this;
  }
  RmsNormOptions& set_use_bias(bool v) {
    use_bias = v;
    return *this;
  }
  RmsNormOptions& set_dtype(at::ScalarType v) {
    dtype = v;
    return *this;
  }
};

struct RmsNorm {
  AxisSpec axis;
  std::optional<NamedArray> weight;
  std::optional<NamedArray> bias;
  double eps = 1e-6;

  static RmsNorm init(const AxisSpec& axis, const RmsNormOptions& options = {});
  // x / sqrt(mean(x^2) + eps) * weight + bias.
  NamedArray operator()(const NamedArray& x) const;
  void visit(ParamVisitor& v) {
    v("weight", weight, ParamKind::kNormWeight);
    v("bias", bias, ParamKind::kBias);
  }
};

}  // namespace haliax::nn
