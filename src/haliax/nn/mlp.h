// A multilayer perceptron: Input -> width (depth hidden layers, named "mlp" and "mlp2" alternately) -> Output.
#pragma once

#include <functional>
#include <vector>

#include "haliax/named_array.h"
#include "haliax/nn/linear.h"
#include "haliax/nn/module.h"

namespace haliax::nn {

using Activation = std::function<NamedArray(const NamedArray&)>;

struct MLP {
  std::vector<Linear> layers;
  Activation activation;

  // depth = number of hidden layers (0: a single Linear from Input to Output).
  static MLP init(const AxisSpec& Input, const AxisSpec& Output, const Axis& width, int depth,
                  const random::Key& key, Activation activation = nullptr, bool use_bias = true,
                  bool use_final_bias = true, double init_scale = 1.0, bool out_first = true);
  static MLP init(const AxisSpec& Input, const AxisSpec& Output, int64_t width, int depth, const random::Key& key,
                  Activation activation = nullptr, bool use_bias = true, bool use_final_bias = true,
                  double init_scale = 1.0, bool out_first = true);
  NamedArray operator()(const NamedArray& x) const;
  void visit(ParamVisitor& v) { v("layers", layers); }
};

}  // namespace haliax::nn
