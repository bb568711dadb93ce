// Modules: plain structs of NamedArrays with a static init(..., key) and a call operator. Each module lists
// its parameters once, in `visit`, and everything else is derived from that: dotted parameter paths
// ("transformer.h.0.attn.c_attn.weight"), state dicts, loading, parameter counts, optimizer state, weight-decay
// masks and sharding rules all use the same key space.
//
//   struct Block {
//     nn::LayerNorm ln; nn::Linear fc;
//     void visit(nn::ParamVisitor& v) { v("ln", ln); v("fc", fc); }
//   };
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "haliax/named_array.h"
#include "haliax/state_dict.h"

namespace haliax::nn {

// What a parameter is, as declared by the module that owns it. Optimizers use it for their default
// weight-decay mask (Levanter decays Linear weights only).
enum class ParamKind { kOther, kLinearWeight, kBias, kNormWeight, kEmbedding };
const char* to_string(ParamKind kind);

// Where a parameter sits: its dotted path and, for parameters of a Stacked module, the stacking axis and the
// path prefix after which the layer index goes in state-dict keys ("transformer.h" + ".3" + ".attn...").
struct ParamInfo {
  std::string path;
  ParamKind kind = ParamKind::kOther;
  std::optional<Axis> stacked_axis;
  std::string stack_prefix;

  // State-dict key of layer `layer` of a stacked parameter.
  std::string layer_path(int64_t layer) const;
};

class ParamVisitor {
 public:
  using Fn = std::function<void(const ParamInfo& info, NamedArray& param)>;

  explicit ParamVisitor(Fn fn) : fn_(std::move(fn)) {}

  void operator()(const std::string& name, NamedArray& param, ParamKind kind = ParamKind::kOther) const;
  // An optional parameter (e.g. a bias): visited only when present.
  void operator()(const std::string& name, std::optional<NamedArray>& param, ParamKind kind = ParamKind::kOther) const;
  // A submodule: anything with visit(ParamVisitor&).
  template <typename M, typename = decltype(std::declval<M&>().visit(std::declval<ParamVisitor&>()))>
  void operator()(const std::string& name, M& module) const {
    ParamVisitor child = scope(name);
    module.visit(child);
  }
  template <typename M>
  void operator()(const std::string& name, std::optional<M>& module) const {
    if (module) (*this)(name, *module);
  }
  // A list of submodules: name.0, name.1, ...
  template <typename M>
  void operator()(const std::string& name, std::vector<M>& modules) const {
    for (size_t i = 0; i < modules.size(); ++i) (*this)(join(name, std::to_string(i)), modules[i]);
  }

  // A visitor whose paths are prefixed with `name`.
  ParamVisitor scope(const std::string& name) const;
  // Mark everything visited through the returned visitor as stacked along `axis` (used by Stacked).
  ParamVisitor stacked(const Axis& axis) const;

  static std::string join(const std::string& a, const std::string& b) {
    return a.empty() ? b : b.empty() ? a : a + "." + b;
  }

 private:
  Fn fn_;
  std::string prefix_;
  std::optional<Axis> stacked_axis_;
  std::string stack_prefix_;
};

// Every parameter of `module`, in visiting order, with its path.
template <typename M>
std::vector<std::pair<ParamInfo, NamedArray>> named_parameters(M& module) {
  std::vector<std::pair<ParamInfo, NamedArray>> out;
  ParamVisitor v([&](const ParamInfo& info, NamedArray& p) { out.emplace_back(info, p); });
  module.visit(v);
  return out;
}

// Calls fn(info, param) with mutable access (to replace parameters, e.g. when loading or casting).
template <typename M>
void for_each_parameter(M& module, const ParamVisitor::Fn& fn) {
  ParamVisitor v(fn);
  module.visit(v);
}

template <typename M>
int64_t parameter_count(M& module) {
  int64_t n = 0;
  for_each_parameter(module, [&](const ParamInfo&, NamedArray& p) { n += p.numel(); });
  return n;
}

// Plain-tensor state dict in visiting order. Stacked parameters are unstacked into one entry per layer
// ("h.0.attn.weight", "h.1.attn.weight", ...), as Haliax's state dicts and Hugging Face checkpoints are.
using haliax::StateDict;

StateDict state_dict_from(const std::vector<std::pair<ParamInfo, NamedArray>>& params);
template <typename M>
StateDict to_state_dict(M& module) {
  return state_dict_from(named_parameters(module));
}
// Haliax's to_state_dict(module, prefix): the same entries with every key "prefix.path" (stacked layers
// "prefix.h.3.attn..."); an empty prefix is the form above.
template <typename M>
StateDict to_state_dict(M& module, const std::string& prefix) {
  std::vector<std::pair<ParamInfo, NamedArray>> params;
  ParamVisitor root([&](const ParamInfo& info, NamedArray& p) { params.emplace_back(info, p); });
  root(prefix, module);
  return state_dict_from(params);
}

// Replace every parameter of `module` from `dict` (by path; stacked parameters from their per-layer keys).
// Strict: a missing key, an unexpected key or a shape mismatch is an error naming the key and both shapes.
// Loaded tensors keep the parameter's dtype and requires_grad.
void load_state_dict_slots(const std::vector<std::pair<ParamInfo, NamedArray*>>& slots, const StateDict& dict);
template <typename M>
void from_state_dict(M& module, const StateDict& dict) {
  std::vector<std::pair<ParamInfo, NamedArray*>> slots;
  for_each_parameter(module, [&](const ParamInfo& info, NamedArray& p) { slots.emplace_back(info, &p); });
  load_state_dict_slots(slots, dict);
}
// Haliax's from_state_dict(module, dict, prefix): parameter `path` is read from key "prefix.path", so a
// submodule loads from a whole model's dict. Keys outside the prefix are ignored, as in Haliax. Differs: under
// the prefix we stay strict (a key no parameter has is an error, as in the form above), where Haliax ignores it.
template <typename M>
void from_state_dict(M& module, const StateDict& dict, const std::string& prefix) {
  std::vector<std::pair<ParamInfo, NamedArray*>> slots;
  ParamVisitor root([&](const ParamInfo& info, NamedArray& p) { slots.emplace_back(info, &p); });
  root(prefix, module);
  load_state_dict_slots(slots, entries_under(dict, prefix));
}

// Make every parameter a leaf that requires grad (or not).
template <typename M>
void requires_grad_(M& module, bool requires = true) {
  for_each_parameter(module, [&](const ParamInfo&, NamedArray& p) {
    p = NamedArray(p.array().detach().requires_grad_(requires), p.axes());
  });
}

// Cast floating-point parameters to `dtype` (e.g. bf16 compute copies of f32 master weights).
template <typename M>
M cast_floating(const M& module, at::ScalarType dtype) {
  M out = module;
  for_each_parameter(out, [&](const ParamInfo&, NamedArray& p) {
    if (at::isFloatingType(p.dtype()) && p.dtype() != dtype) p = NamedArray(p.array().to(dtype), p.axes());
  });
  return out;
}

}  // namespace haliax::nn
