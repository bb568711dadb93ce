// Stacked<M>: L copies of a module M held as one module whose parameters have a leading layer axis.
//
// Parameters are initialised per layer with keys split from one key, then stacked. `fold` applies the layers
// in order. Each call takes per-layer views with ONE unbind per parameter (unbind_layers, layer_grads.h: its
// backward returns one buffer, into which the f32 Linear layer computes its weight's gradient in place; other
// gradients are copied in, as unbind's stack); a per-layer select would write a full-size zero gradient per layer,
// O(L^2) memory traffic per step.
// State dicts unstack to "prefix.0.*", "prefix.1.*" (see module.h).
// With gradient_checkpointing, each layer's activations are recomputed in backward instead of stored
// (checkpoint.h); the layer function is then copied and called again later, so it must capture by value.
#pragma once

#include <functional>
#include <memory>
#include <type_traits>
#include <vector>

#include "haliax/nn/checkpoint.h"
#include "haliax/nn/layer_grads.h"

#include "haliax/core.h"
#include "haliax/hof.h"
#include "haliax/named_array.h"
#include "haliax/nn/module.h"
#include "haliax/random.h"

namespace haliax::nn {

// Parameters held in pieces and gathered layer by layer (FSDP, levanter/trainer/fsdp.h): while a LayerGather is
// installed on this thread, Stacked's fold and scan pass each layer's parameters through it just before the layer
// runs, inside a checkpointed layer (so that its recomputation in backward gathers again). `fn(param, layer)` returns
// the parameter to use: the whole of a piece. The function is captured when the layers run, so a backward pass
// after the scope has ended still gathers.
using LayerGatherFn = std::function<NamedArray(const NamedArray& param, int64_t layer)>;
class LayerGather {
 public:
  explicit LayerGather(LayerGatherFn fn);
  ~LayerGather();
  LayerGather(const LayerGather&) = delete;
  LayerGather& operator=(const LayerGather&) = delete;
  // The installed function, or null.
  static std::shared_ptr<const LayerGatherFn> current();

 private:
  std::shared_ptr<const LayerGatherFn> previous_;
};

template <typename M>
struct Stacked {
  Axis Layers;
  M stacked;  // M whose every parameter has Layers as its first axis
  bool gradient_checkpointing = false;

  // init_one(key) builds one layer; layer i gets key.split(L)[i]. Each layer is copied into its slot of the stacked
  // parameters as soon as it is built, so no more than the stack and one layer exist at a time (the same arrays as
  // stack_layers over all the layers, which would hold them all and the stack).
  template <typename InitFn>
  static Stacked init(const Axis& Layers, const random::Key& key, InitFn&& init_one) {
    if (Layers.size < 1)
      throw std::invalid_argument("Stacked: need at least one layer, got " + std::to_string(Layers.size));
    std::vector<random::Key> keys = key.split(Layers.size);
    M out = init_one(keys[0]);
    std::vector<at::Tensor> stacks;
    for_each_parameter(out, [&](const ParamInfo&, NamedArray& p) {
      std::vector<int64_t> sizes{Layers.size};
      for (int64_t d : p.array().sizes()) sizes.push_back(d);
      at::Tensor s = at::empty(sizes, p.array().options());
      s.select(0, 0).copy_(p.array());
      stacks.push_back(s);
      AxisSpec axes{Layers};
      axes.insert(axes.end(), p.axes().begin(), p.axes().end());
      p = NamedArray(s, axes);
    });
    for (int64_t i = 1; i < Layers.size; ++i) {
      M layer = init_one(keys[static_cast<size_t>(i)]);
      size_t k = 0;
      for_each_parameter(layer, [&](const ParamInfo& info, NamedArray& p) {
        if (k >= stacks.size() || stacks[k].sizes().slice(1) != p.array().sizes()) {
          throw std::invalid_argument("Stacked: layer " + std::to_string(i) + "'s parameter " + info.path +
                                      " differs in shape from layer 0's");
        }
        stacks[k++].select(0, i).copy_(p.array());
      });
    }
    return Stacked{Layers, std::move(out), false};
  }

  // Stack already-built layers (all with the same parameter axes).
  static Stacked stack_layers(const Axis& Layers, std::vector<M> layers) {
    if (layers.empty() || static_cast<int64_t>(layers.size()) != Layers.size) {
      throw std::invalid_argument("Stacked: need " + std::to_string(Layers.size) + " layers, got " +
                                  std::to_string(layers.size()));
    }
    std::vector<std::vector<NamedArray>> per_param;
    for (M& layer : layers) {
      size_t k = 0;
      for_each_parameter(layer, [&](const ParamInfo&, NamedArray& p) {
        if (per_param.size() <= k) per_param.emplace_back();
        per_param[k++].push_back(p);
      });
    }
    M out = layers[0];
    size_t k = 0;
    for_each_parameter(out, [&](const ParamInfo&, NamedArray& p) { p = stack(Layers, per_param[k++]); });
    return Stacked{Layers, std::move(out), false};
  }

  // Per-layer modules whose parameters are views of the stacked ones (gradients flow to the stack).
  std::vector<M> unstacked() const {
    M proto = stacked;
    std::vector<std::vector<NamedArray>> slices;
    for_each_parameter(proto, [&](const ParamInfo&, NamedArray& p) {
      if (p.ndim() == 0 || p.axes()[0].name != Layers.name) {
        slices.push_back(unbind(p, Layers));
        return;
      }
      // unbind_layers: the same views, whose backward returns one buffer the layers' gradients may be computed in.
      const AxisSpec rest(p.axes().begin() + 1, p.axes().end());
      std::vector<NamedArray> views;
      for (const at::Tensor& t : unbind_layers(p.array())) views.emplace_back(t, rest);
      slices.push_back(std::move(views));
    });
    std::vector<M> out(static_cast<size_t>(Layers.size), proto);
    for (size_t i = 0; i < out.size(); ++i) {
      size_t k = 0;
      for_each_parameter(out[i], [&](const ParamInfo&, NamedArray& p) { p = slices[k++][i]; });
    }
    return out;
  }

  // x = f(layer_i, x, i) for i = 0..L-1.
  template <typename Carry, typename F>
  Carry fold(Carry x, F&& f) const {
    std::vector<M> layers = unstacked();
    if constexpr (std::is_same_v<Carry, NamedArray>) {
      if (gradient_checkpointing && checkpointing_enabled())
        return fold_checkpointed(std::move(x), layers, std::forward<F>(f));
    }
    const auto gather = LayerGather::current();
    for (size_t i = 0; i < layers.size(); ++i) {
      if (!gather) {
        x = f(layers[i], x, static_cast<int64_t>(i));
        continue;
      }
      M layer = layers[i];  // the gathered layer lives only while it runs (and in autograd's graph)
      gather_layer(*gather, layer, static_cast<int64_t>(i));
      x = f(layer, x, static_cast<int64_t>(i));
    }
    return x;
  }

  // x = layer_i(x) for every layer.
  template <typename Carry>
  Carry fold(Carry x) const {
    return fold(std::move(x), [](const M& layer, const Carry& c, int64_t) { return layer(c); });
  }

  // (carry, ys) with (carry, y_i) = f(layer_i, carry, i) for i = 0..L-1 and ys the y_i stacked on Layers as
  // their first axis, as Haliax's Stacked.scan. f returns a std::pair or 2-tuple; carry and y may be NamedArray or
  // std::vector/std::pair/std::tuple trees of them, and the carry must keep its axes and dtype (hof.h). With
  // gradient_checkpointing each layer is recomputed in backward (f must then capture by value). Unlike Haliax,
  // extra arguments are captured by f rather than passed (and sliced) here, as in fold.
  template <typename Carry, typename F>
  auto scan(const Carry& init, F&& f) const {
    using R = std::decay_t<std::invoke_result_t<F&, const M&, const Carry&, int64_t>>;
    static_assert(hof_detail::IsPairLike<R>::value, "Stacked::scan: f must return std::pair or std::tuple (carry, y)");
    using Y = std::decay_t<std::tuple_element_t<1, R>>;
    std::vector<M> layers = unstacked();
    // Each step rebuilds its layer from the parameters it is given, so that a checkpointed step keeps only them.
    M proto = layers[0];
    for_each_parameter(proto, [](const ParamInfo&, NamedArray& p) { p = NamedArray(); });
    auto step = [proto, fn = std::decay_t<F>(std::forward<F>(f)), gather = LayerGather::current()](
                    const Carry& c, int64_t i, const std::vector<NamedArray>& params) {
      M layer = proto;
      size_t k = 0;
      for_each_parameter(layer, [&](const ParamInfo&, NamedArray& p) { p = params[k++]; });
      if (gather) gather_layer(*gather, layer, i);
      R r = fn(static_cast<const M&>(layer), c, i);
      return std::pair<Carry, Y>(std::get<0>(std::move(r)), std::get<1>(std::move(r)));
    };
    auto params_of = [&layers](int64_t i) {
      std::vector<NamedArray> params;
      for_each_parameter(layers[static_cast<size_t>(i)], [&](const ParamInfo&, NamedArray& p) { params.push_back(p); });
      return params;
    };
    ScanOptions options;
    options.gradient_checkpointing = gradient_checkpointing;
    return hof_detail::scan_loop("Stacked::scan", Layers, options, init, params_of, step);
  }

  // (carry, y) = layer_i(carry) for every layer; the ys stacked on Layers.
  template <typename Carry>
  auto scan(const Carry& init) const {
    return scan(init, [](const M& layer, const Carry& c, int64_t) { return layer(c); });
  }

  template <typename F>
  static NamedArray fold_checkpointed(NamedArray x, const std::vector<M>& layers, F&& f) {
    auto fn = std::make_shared<std::decay_t<F>>(std::forward<F>(f));
    const auto gather = LayerGather::current();
    for (size_t i = 0; i < layers.size(); ++i) {
      std::vector<at::Tensor> inputs{x.array()};
      M proto = layers[i];
      for_each_parameter(proto, [&](const ParamInfo&, NamedArray& p) { inputs.push_back(p.array()); });
      auto out_axes = std::make_shared<AxisSpec>();
      AxisSpec in_axes = x.axes();
      const int64_t index = static_cast<int64_t>(i);
      TensorsFn run = [proto, in_axes, out_axes, fn, index, gather](const std::vector<at::Tensor>& t) {
        M layer = proto;
        size_t k = 1;
        for_each_parameter(layer, [&](const ParamInfo&, NamedArray& p) { p = NamedArray(t[k++], p.axes()); });
        if (gather) gather_layer(*gather, layer, index);
        NamedArray out = (*fn)(layer, NamedArray(t[0], in_axes), index);
        *out_axes = out.axes();
        return std::vector<at::Tensor>{out.array()};
      };
      std::vector<at::Tensor> outs = checkpoint(run, inputs);
      x = NamedArray(outs[0], *out_axes);
    }
    return x;
  }

  void visit(ParamVisitor& v) {
    ParamVisitor sv = v.stacked(Layers);
    stacked.visit(sv);
  }

  static void gather_layer(const LayerGatherFn& gather, M& layer, int64_t i) {
    for_each_parameter(layer, [&](const ParamInfo&, NamedArray& p) { p = gather(p, i); });
  }
};

}  // namespace haliax::nn
