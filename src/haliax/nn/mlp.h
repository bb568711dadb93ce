// A multilayer perceptron: Input -> width (depth hidden layers, named "mlp" and "mlp2" alternately) -> Output.
#pragma once

#include <functional>
#include <vector>

#include "haliax/named_array.h"
#include "haliax/nn/linear.h"
#include "haliax/nn/module.h"

namespace haliax::nn {

using Activation = std::function<NamedArray(const NamedArray&)>;

// MLP::init's options, by name: nn::MLPOptions().set_activation(nn::silu).set_use_final_bias(false).
struct MLPOptions {
  Activation activation;       // default: relu
  bool use_bias = true;        // on the hidden layers
  bool use_final_bias = true;  // on the output layer
  double init_scale = 1.0;
  bool out_first = true;
  MLPOptions& set_activation(Activation v) {
    activation = std::move(v);
    return *this;
  }
  MLPOptions& set_use_bias(bool v) {
    use_bias = v;
    return *this;
  }
  MLPOptions& set_use_final_bias(bool v) {
    use_final_bias = v;
    return *this;
  }
  MLPOptions& set_init_scale(double v) {
    init_scale = v;
    return *this;
  }
  MLPOptions& set_out_first(bool v) {
    out_first = v;
    return *this;
  }
};

struct MLP {
  std::vector<Linear> layers;
  Activation activation;

  // depth = number of hidden layers (0: a single Linear from Input to Output).
  static MLP init(const AxisSpec& Input, const AxisSpec& Output, const Axis& width, int depth, const random::Key& key,
                  const MLPOptions& options = {});
  static MLP init(const AxisSpec& Input, const AxisSpec& Output, int64_t width, int depth, const random::Key& key,
                  const MLPOptions& options = {});
  NamedArray operator()(const NamedArray& x) const;
  void visit(ParamVisitor& v) { v("layers", layers); }
};

}  // namespace haliax::nn
