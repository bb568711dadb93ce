#include "haliax/nn/mlp.h"

#include "haliax/nn/activations.h"

namespace haliax::nn {

MLP MLP::init(const AxisSpec& Input, const AxisSpec& Output, const Axis& Width, int depth, const random::Key& key,
              Activation activation, bool use_bias, bool use_final_bias, double init_scale, bool out_first) {
  std::vector<random::Key> keys = key.split(depth + 1);
  MLP m;
  m.activation = activation ? std::move(activation) : Activation([](const NamedArray& x) { return relu(x); });
  if (depth == 0) {
    m.layers.push_back(Linear::init(Input, Output, keys[0], use_final_bias, init_scale, out_first));
    return m;
  }
  Axis cur = Width, next = Width.alias(Width.name + "2");
  m.layers.push_back(Linear::init(Input, {cur}, keys[0], use_bias, init_scale, out_first));
  for (int i = 1; i < depth; ++i) {
    m.layers.push_back(Linear::init({cur}, {next}, keys[i], use_bias, init_scale, out_first));
    std::swap(cur, next);
  }
  m.layers.push_back(Linear::init({cur}, Output, keys[depth], use_final_bias, init_scale, out_first));
  return m;
}

MLP MLP::init(const AxisSpec& Input, const AxisSpec& Output, int64_t width, int depth, const random::Key& key,
              Activation activation, bool use_bias, bool use_final_bias, double init_scale, bool out_first) {
  return init(Input, Output, Axis("mlp", width), depth, key, std::move(activation), use_bias, use_final_bias, init_scale,
              out_first);
}

NamedArray MLP::operator()(const NamedArray& x) const {
  NamedArray h = x;
  for (size_t i = 0; i + 1 < layers.size(); ++i) h = activation(layers[i](h));
  return layers.back()(h);
}

}  // namespace haliax::nn
