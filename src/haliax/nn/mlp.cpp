#include "haliax/nn/mlp.h"

#include "haliax/nn/activations.h"

namespace haliax::nn {

MLP MLP::init(const AxisSpec& Input, const AxisSpec& Output, const Axis& Width, int depth, const random::Key& key,
              const MLPOptions& o) {
  std::vector<random::Key> keys = key.split(depth + 1);
  MLP m;
  m.activation = o.activation ? o.activation : Activation([](const NamedArray& x) { return relu(x); });
  const LinearOptions hidden =
      LinearOptions().set_use_bias(o.use_bias).set_init_scale(o.init_scale).set_out_first(o.out_first);
  const LinearOptions last = LinearOptions(hidden).set_use_bias(o.use_final_bias);
  if (depth == 0) {
    m.layers.push_back(Linear::init(Input, Output, keys[0], last));
    return m;
  }
  Axis cur = Width, next = Width.alias(Width.name + "2");
  m.layers.push_back(Linear::init(Input, {cur}, keys[0], hidden));
  for (int i = 1; i < depth; ++i) {
    m.layers.push_back(Linear::init({cur}, {next}, keys[i], hidden));
    std::swap(cur, next);
  }
  m.layers.push_back(Linear::init({cur}, Output, keys[depth], last));
  return m;
}

MLP MLP::init(const AxisSpec& Input, const AxisSpec& Output, int64_t width, int depth, const random::Key& key,
              const MLPOptions& options) {
  return init(Input, Output, Axis("mlp", width), depth, key, options);
}

NamedArray MLP::operator()(const NamedArray& x) const {
  NamedArray h = x;
  for (size_t i = 0; i + 1 < layers.size(); ++i) h = activation(layers[i](h));
  return layers.back()(h);
}

}  // namespace haliax::nn
