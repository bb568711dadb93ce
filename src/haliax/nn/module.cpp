#include "haliax/nn/module.h"

#include <ATen/ATen.h>

#include <map>
#include <set>

#include "haliax/core.h"
#include "haliax/error.h"

namespace haliax {

StateDict entries_under(const StateDict& dict, const std::string& prefix) {
  if (prefix.empty()) return dict;
  StateDict out;
  for (const auto& [k, t] : dict) {
    if (k == prefix ||
        (k.size() > prefix.size() && k.compare(0, prefix.size(), prefix) == 0 && k[prefix.size()] == '.'))
      out.emplace_back(k, t);
  }
  return out;
}

}  // namespace haliax

namespace haliax::nn {

namespace {

std::string shape_str(at::IntArrayRef s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + ")";
}

}  // namespace

std::string ParamInfo::layer_path(int64_t layer) const {
  // path is stack_prefix + "." + rest, or just rest for a Stacked module at the top level (empty prefix).
  std::string rest = path.substr(stack_prefix.size());
  if (!rest.empty() && rest[0] == '.') rest.erase(0, 1);
  return ParamVisitor::join(ParamVisitor::join(stack_prefix, std::to_string(layer)), rest);
}

const char* to_string(ParamKind kind) {
  switch (kind) {
    case ParamKind::kLinearWeight:
      return "linear_weight";
    case ParamKind::kBias:
      return "bias";
    case ParamKind::kNormWeight:
      return "norm_weight";
    case ParamKind::kEmbedding:
      return "embedding";
    default:
      return "other";
  }
}

void ParamVisitor::operator()(const std::string& name, NamedArray& param, ParamKind kind) const {
  ParamInfo info{join(prefix_, name), kind, stacked_axis_, stack_prefix_};
  if (stacked_axis_) {
    if (param.ndim() == 0 || param.axes()[0].name != stacked_axis_->name) {
      value_error("Stacked parameter " + info.path + " must have the layer axis " + stacked_axis_->name +
                  " first, got " + to_string(param.axes()));
    }
  }
  fn_(info, param);
}

void ParamVisitor::operator()(const std::string& name, std::optional<NamedArray>& param, ParamKind kind) const {
  if (param) (*this)(name, *param, kind);
}

ParamVisitor ParamVisitor::scope(const std::string& name) const {
  ParamVisitor v = *this;
  v.prefix_ = join(prefix_, name);
  return v;
}

ParamVisitor ParamVisitor::stacked(const Axis& axis) const {
  if (stacked_axis_) value_error("Nested Stacked modules are not supported (at " + prefix_ + ")");
  ParamVisitor v = *this;
  v.stacked_axis_ = axis;
  v.stack_prefix_ = prefix_;
  return v;
}

StateDict state_dict_from(const std::vector<std::pair<ParamInfo, NamedArray>>& params) {
  // Stacked parameters are emitted per layer ("h.0.*" for every parameter of layer 0, then layer 1, ...), as a
  // group at the place where the Stacked module's first parameter is visited (Hugging Face's order).
  StateDict out;
  std::vector<std::string> done;
  for (size_t k = 0; k < params.size(); ++k) {
    const ParamInfo& info = params[k].first;
    if (!info.stacked_axis) {
      out.emplace_back(info.path, params[k].second.array());
      continue;
    }
    if (std::find(done.begin(), done.end(), info.stack_prefix) != done.end()) continue;
    done.push_back(info.stack_prefix);
    std::vector<size_t> group;
    std::vector<std::vector<at::Tensor>> layers;
    for (size_t j = k; j < params.size(); ++j) {
      if (params[j].first.stacked_axis && params[j].first.stack_prefix == info.stack_prefix) {
        group.push_back(j);
        layers.push_back(at::unbind(params[j].second.array(), 0));
      }
    }
    for (int64_t i = 0; i < info.stacked_axis->size; ++i) {
      for (size_t g = 0; g < group.size(); ++g) out.emplace_back(params[group[g]].first.layer_path(i), layers[g][i]);
    }
  }
  return out;
}

void load_state_dict_slots(const std::vector<std::pair<ParamInfo, NamedArray*>>& slots, const StateDict& dict) {
  std::map<std::string, const at::Tensor*> by_key;
  for (const auto& [k, t] : dict) {
    if (!by_key.emplace(k, &t).second) value_error("State dict has key '" + k + "' twice");
  }
  std::set<std::string> used;
  auto fetch = [&](const std::string& key, at::IntArrayRef expect) -> const at::Tensor& {
    auto it = by_key.find(key);
    if (it == by_key.end())
      value_error("State dict is missing key '" + key + "' (expected shape " + shape_str(expect) + ")");
    if (it->second->sizes() != expect) {
      value_error("State dict key '" + key + "' has shape " + shape_str(it->second->sizes()) +
                  " but the model expects " + shape_str(expect));
    }
    used.insert(key);
    return *it->second;
  };
  for (const auto& [info, slot] : slots) {
    const NamedArray& p = *slot;
    at::Tensor t;
    if (!info.stacked_axis) {
      t = fetch(info.path, p.array().sizes());
    } else {
      std::vector<at::Tensor> layers;
      at::IntArrayRef full = p.array().sizes();
      std::vector<int64_t> layer_shape(full.begin() + 1, full.end());
      for (int64_t i = 0; i < info.stacked_axis->size; ++i) layers.push_back(fetch(info.layer_path(i), layer_shape));
      t = at::stack(layers, 0);
    }
    // Always a fresh copy in the parameter's dtype: parameters never alias the caller's tensors.
    t = t.to(p.array().options().requires_grad(false), /*non_blocking=*/false, /*copy=*/true).contiguous();
    if (p.requires_grad()) t.requires_grad_(true);
    *slot = NamedArray(t, p.axes());
  }
  for (const auto& [k, t] : dict) {
    if (!used.count(k)) value_error("State dict has unexpected key '" + k + "' (no parameter has that path)");
  }
}

}  // namespace haliax::nn
