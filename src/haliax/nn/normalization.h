// LayerNorm and RmsNorm over one or more named axes.
#pragma once

#include <optional>

#include "haliax/named_array.h"
#include "haliax/nn/module.h"

namespace haliax::nn {

struct LayerNorm {
  AxisSpec axis;
  std::optional<NamedArray> weight;  // ones(axis)
  std::optional<NamedArray> bias;    // zeros(axis)
  double eps = 1e-5;

  static LayerNorm init(const AxisSpec& axis, double eps = 1e-5, bool use_weight = true, bool use_bias = true,
                        at::ScalarType dtype = at::kFloat);
  // (x - mean) / sqrt(var + eps) * weight + bias over `axis`, in x's dtype.
  NamedArray operator()(const NamedArray& x) const;
  void visit(ParamVisitor& v) {
    v("weight", weight, ParamKind::kNormWeight);
    v("bias", bias, ParamKind::kBias);
  }
};

struct RmsNorm {
  AxisSpec axis;
  std::optional<NamedArray> weight;
  std::optional<NamedArray> bias;
  double eps = 1e-6;

  static RmsNorm init(const AxisSpec& axis, double eps = 1e-6, bool use_weight = true, bool use_bias = false,
                      at::ScalarType dtype = at::kFloat);
  // x / sqrt(mean(x^2) + eps) * weight + bias.
  NamedArray operator()(const NamedArray& x) const;
  void visit(ParamVisitor& v) {
    v("weight", weight, ParamKind::kNormWeight);
    v("bias", bias, ParamKind::kBias);
  }
};

}  // namespace haliax::nn
