#include "levanter/trainer/fsdp.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdio>
#include <set>
#include <stdexcept>

#include "haliax/error.h"
#include "haliax/nn/module.h"
#include "levanter/distributed/process_group.h"
#include "levanter/optim/optimizer.h"

namespace levanter::trainer {

namespace nn = haliax::nn;

Fsdp::Fsdp(const models::LmHeadModel& full, haliax::AxisMapping mapping, haliax::Mesh mesh, int rank, Unit unit,
           std::string axis)
    : mapping_(std::move(mapping)), mesh_(std::move(mesh)), rank_(rank), axis_(std::move(axis)), unit_(unit) {
  for (const auto& [logical, physical] : mapping_) {
    if (physical != axis_)
      throw std::logic_error("Fsdp: a plan splits over one mesh axis, not " + axis_ + " and " + physical);
  }
  auto& model = const_cast<models::LmHeadModel&>(full);  // visiting only reads
  for (const auto& [info, p] : nn::named_parameters(model)) {
    const auto spec = haliax::pspec_for(p.axes(), mapping_, mesh_, info.path);
    int64_t dim = -1;
    for (size_t d = 0; d < spec.size(); ++d) {
      if (spec[d] && mesh_.axis_size(*spec[d]) > 1) {
        if (dim >= 0) {
          throw haliax::ValueError(info.path + ": axes '" + p.axes()[dim].name + "' and '" + p.axes()[d].name +
                                   "' are both split over mesh axis " + axis_ +
                                   "; a parameter is split along one axis per mesh axis");
        }
        dim = static_cast<int64_t>(d);
      }
    }
    paths_.push_back(info.path);
    dims_.push_back(dim);
    stacked_.push_back(info.stacked_axis.has_value());
    axes_.push_back(p.axes());
    if (dim < 0) continue;
    if (!info.stacked_axis) {
      model_key_dims_[info.path] = dim;
      continue;
    }
    if (dim == 0)
      throw haliax::ValueError(info.path + ": its stacking axis '" + info.stacked_axis->name + "' is split");
    for (int64_t l = 0; l < info.stacked_axis->size; ++l) model_key_dims_[info.layer_path(l)] = dim - 1;
  }
}

std::string Fsdp::describe() const {
  std::set<std::string> axes;
  double split_elements = 0, total_elements = 0;
  for (size_t i = 0; i < dims_.size(); ++i) {
    const double n = static_cast<double>(haliax::axis_size(axes_[i]));
    total_elements += n;
    if (dims_[i] < 0) continue;
    split_elements += n;
    axes.insert(axes_[i][dims_[i]].name);
  }
  std::string names;
  for (const auto& a : axes) names += (names.empty() ? "" : ", ") + a;
  char pct[32];
  std::snprintf(pct, sizeof(pct), "%.1f%%", total_elements > 0 ? 100.0 * split_elements / total_elements : 0.0);
  const std::string where = " over " + axis_ + " (" + std::to_string(mesh_.axis_size(axis_)) + " processes)";
  if (axes.empty()) return "no parameter in pieces" + where;
  std::string out = names + where + ": " + pct + " of the parameters in pieces";
  if (axis_ == "model") return out;  // tensor parallelism: the pieces are what the model computes with
  return out + ", " + (unit_ == Unit::kLayer ? "stacked layers gathered layer by layer" : "gathered for each step");
}

std::vector<std::string> Fsdp::shard_(models::LmHeadModel& model) const {
  const int64_t N = mesh_.axis_size(axis_);
  std::vector<std::string> cut;
  size_t i = 0;
  nn::for_each_parameter(model, [&](const nn::ParamInfo& info, haliax::NamedArray& p) {
    if (i >= dims_.size() || paths_[i] != info.path) throw std::logic_error("FSDP: the model does not match its plan");
    const int64_t d = dims_[i];
    if (d >= 0) {
      const int64_t whole = axes_[i][d].size, held = p.axes()[d].size;
      if (held == whole) {
        p = haliax::shard(p.detach(), mapping_, mesh_, rank_, info.path);
        cut.push_back(info.path);
      } else if (held * N != whole) {
        throw std::logic_error("FSDP: " + info.path + " holds " + std::to_string(held) + " of axis '" +
                               axes_[i][d].name + "' (" + std::to_string(whole) + " whole)");
      }  // else already this process's piece (created in pieces)
    }
    ++i;
  });
  return cut;
}

haliax::StateDict Fsdp::shard_optimizer_state(const haliax::StateDict& full) const {
  std::map<std::string, int64_t> by_path;
  for (size_t i = 0; i < paths_.size(); ++i)
    if (dims_[i] >= 0) by_path[paths_[i]] = dims_[i];
  const int64_t N = mesh_.axis_size(axis_), r = mesh_.coordinate(rank_, axis_);
  haliax::StateDict out;
  for (const auto& [key, t] : full) {
    int64_t dim = -1;
    if (auto path = optim::Optimizer::parameter_of_state_key(key)) {
      auto it = by_path.find(*path);
      if (it != by_path.end()) dim = it->second;
    }
    if (dim < 0) {
      out.emplace_back(key, t);
      continue;
    }
    const int64_t k = t.size(dim) / N;
    out.emplace_back(key, t.narrow(dim, r * k, k).clone(at::MemoryFormat::Contiguous));
  }
  return out;
}

std::vector<at::Tensor> Fsdp::pieces_of(std::vector<at::Tensor> whole) const {
  if (whole.size() != dims_.size())
    throw std::logic_error("FSDP: " + std::to_string(whole.size()) + " tensors for " + std::to_string(dims_.size()) +
                           " parameters");
  for (size_t i = 0; i < whole.size(); ++i) whole[i] = piece_of(i, whole[i]);
  return whole;
}

at::Tensor Fsdp::piece_of(size_t i, const at::Tensor& whole) const {
  if (i >= dims_.size()) throw std::logic_error("FSDP: no parameter " + std::to_string(i));
  if (dims_[i] < 0 || !whole.defined()) return whole;
  const int64_t N = mesh_.axis_size(axis_), r = mesh_.coordinate(rank_, axis_);
  const int64_t k = whole.size(dims_[i]) / N;
  return whole.narrow(dims_[i], r * k, k).contiguous();
}

std::vector<std::vector<int64_t>> Fsdp::whole_shapes() const {
  std::vector<std::vector<int64_t>> out;
  for (const auto& axes : axes_) {
    std::vector<int64_t> shape;
    for (const auto& a : axes) shape.push_back(a.size);
    out.push_back(std::move(shape));
  }
  return out;
}

Fsdp::CheckpointDims Fsdp::checkpoint_dims() const {
  CheckpointDims out;
  for (const auto& [key, dim] : model_key_dims_) out["model"][key][axis_] = dim;
  auto& opt = out["opt_state"];
  for (size_t i = 0; i < paths_.size(); ++i) {
    if (dims_[i] < 0) continue;
    for (const std::string& key : optim::Optimizer::state_keys_of(paths_[i])) opt[key][axis_] = dims_[i];
  }
  return out;
}

std::unique_ptr<models::LmHeadModel> Fsdp::whole_like(const models::LmHeadModel& pieces, at::ScalarType dtype,
                                                      bool keep_layer_pieces) const {
  std::unique_ptr<models::LmHeadModel> out = pieces.clone();
  const std::vector<std::vector<int64_t>> shapes = whole_shapes();
  size_t i = 0;
  nn::for_each_parameter(*out, [&](const nn::ParamInfo&, haliax::NamedArray& p) {
    const at::ScalarType t = at::isFloatingType(p.dtype()) ? dtype : p.dtype();
    if (keep_layer_pieces && gathered_by_layer(i)) {
      p = haliax::NamedArray(at::empty(p.array().sizes(), p.array().options().dtype(t)), p.axes());
    } else {
      p = haliax::NamedArray(at::empty(shapes[i], p.array().options().dtype(t)), axes_[i]);
    }
    ++i;
  });
  return out;
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What the per-layer gathers of one step share.
struct LayerGatherState : torch::CustomClassHolder {
  distributed::ProcessGroup* pg = nullptr;
  std::vector<at::Tensor> pieces;  // per parameter: the compute copy's stacked piece (kLayer ones), else undefined
  std::vector<int64_t> dims;       // per parameter: the split dimension of one layer's slice
  std::shared_ptr<std::vector<at::Tensor>> grads;
  std::vector<std::vector<bool>> filled;  // per parameter and layer: a gradient was stored
};

// Forward: the whole of one layer's piece (all-gather along `dim`). Backward: the whole gradient widened to f32,
// summed over processes in rank order, this process's piece added to the step's gradient of (parameter, layer); no
// gradient reaches autograd's leaf.
struct GatherLayerFunction : public torch::autograd::Function<GatherLayerFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& piece, c10::intrusive_ptr<LayerGatherState> st,
                            int64_t index, int64_t layer) {
    ctx->saved_data["state"] = c10::IValue::make_capsule(st);
    ctx->saved_data["index"] = index;
    ctx->saved_data["layer"] = layer;
    const int64_t dim = st->dims[index], N = st->pg->size();
    std::vector<int64_t> shape = piece.sizes().vec();
    shape[dim] *= N;
    std::vector<at::Tensor> whole{at::empty(shape, piece.options())}, pieces{piece.contiguous()};
    st->pg->all_gather(pieces, {dim}, whole);
    return whole[0];
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto st = c10::static_intrusive_pointer_cast<LayerGatherState>(ctx->saved_data["state"].toCapsule());
    const int64_t index = ctx->saved_data["index"].toInt(), layer = ctx->saved_data["layer"].toInt();
    const at::Tensor& g = grad_outputs[0];
    if (g.defined()) {
      const int64_t dim = st->dims[index];
      at::Tensor& acc = (*st->grads)[index];
      const at::Tensor& p = st->pieces[index];
      if (!acc.defined()) acc = at::zeros(p.sizes(), p.options().dtype(at::kFloat));
      std::vector<at::Tensor> whole{g.to(at::kFloat).contiguous()};
      std::vector<int64_t> shape = whole[0].sizes().vec();
      shape[dim] /= st->pg->size();
      std::vector<at::Tensor> mine{at::empty(shape, whole[0].options())};
      st->pg->reduce_scatter_in_rank_order(whole, {dim}, mine);
      at::Tensor slot = acc.select(0, layer);
      if (st->filled[index][layer]) {
        slot.add_(mine[0]);
      } else {
        slot.copy_(mine[0]);  // the first microbatch's sum itself, as one process's accumulation starts
        st->filled[index][layer] = true;
      }
    }
    return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

haliax::nn::LayerGatherFn Fsdp::layer_gather(distributed::ProcessGroup& pg, const models::LmHeadModel& compute_copy,
                                             std::shared_ptr<std::vector<at::Tensor>> layer_grads) const {
  auto st = c10::make_intrusive<LayerGatherState>();
  st->pg = &pg;
  st->grads = std::move(layer_grads);
  st->grads->resize(dims_.size());
  size_t i = 0;
  st->pieces.resize(dims_.size());
  st->dims.assign(dims_.size(), -1);
  st->filled.resize(dims_.size());
  for (const auto& [info, p] : nn::named_parameters(const_cast<models::LmHeadModel&>(compute_copy))) {
    if (gathered_by_layer(i)) {
      st->pieces[i] = p.array();
      st->dims[i] = dims_[i] - 1;  // within one layer's slice (the layer axis is first)
      st->filled[i].assign(static_cast<size_t>(p.array().size(0)), false);
    }
    ++i;
  }
  return [st](const haliax::NamedArray& param, int64_t layer) -> haliax::NamedArray {
    for (size_t j = 0; j < st->pieces.size(); ++j) {
      if (!st->pieces[j].defined() || !param.array().is_alias_of(st->pieces[j])) continue;
      haliax::AxisSpec axes = param.axes();
      axes[st->dims[j]].size *= st->pg->size();
      return haliax::NamedArray(GatherLayerFunction::apply(param.array(), st, static_cast<int64_t>(j), layer), axes);
    }
    return param;  // whole already (not split, or outside the compute copy's stacks)
  };
}

void Fsdp::gather(distributed::ProcessGroup& pg, const models::LmHeadModel& pieces, models::LmHeadModel& full) const {
  at::NoGradGuard no_grad;
  const auto src = nn::named_parameters(const_cast<models::LmHeadModel&>(pieces));
  const auto dst = nn::named_parameters(full);
  if (src.size() != dims_.size() || dst.size() != dims_.size())
    throw std::logic_error("FSDP: the models do not match the plan");
  std::vector<at::Tensor> shards, wholes;
  std::vector<int64_t> dims;
  for (size_t i = 0; i < dims_.size(); ++i) {
    if (dims_[i] < 0 || dst[i].second.array().sizes().equals(src[i].second.array().sizes())) {
      dst[i].second.array().copy_(src[i].second.array());
      continue;
    }
    shards.push_back(src[i].second.array());
    wholes.push_back(dst[i].second.array());
    dims.push_back(dims_[i]);
  }
  pg.all_gather(shards, dims, wholes);
}

std::vector<at::Tensor> Fsdp::reduce_gradients(distributed::ProcessGroup& pg, std::vector<at::Tensor> full) const {
  if (full.size() != dims_.size()) throw std::logic_error("FSDP: gradients do not match the plan");
  std::vector<at::Tensor> out(full.size()), split_full, split_out, whole;
  std::vector<int64_t> dims;
  const int64_t N = mesh_.axis_size(axis_);
  for (size_t i = 0; i < full.size(); ++i) {
    if (!full[i].defined()) continue;
    if (gathered_by_layer(i) && full[i].size(dims_[i]) != axes_[i][dims_[i]].size) {
      out[i] = full[i];  // a piece already summed over the processes in backward
      continue;
    }
    if (dims_[i] < 0) {
      out[i] = full[i].contiguous();
      whole.push_back(out[i]);
      continue;
    }
    std::vector<int64_t> shape = full[i].sizes().vec();
    shape[dims_[i]] /= N;
    out[i] = at::empty(shape, full[i].options());
    split_full.push_back(full[i]);
    split_out.push_back(out[i]);
    dims.push_back(dims_[i]);
    full[i] = at::Tensor();
  }
  pg.reduce_scatter_in_rank_order(split_full, dims, split_out);
  split_full.clear();
  pg.sum_in_rank_order(whole);
  return out;
}

std::vector<double> Fsdp::sums_of_squares(distributed::ProcessGroup& pg, const std::vector<double>& local) const {
  if (local.size() != dims_.size()) throw std::logic_error("FSDP: sums do not match the plan");
  at::Tensor sums = at::zeros({static_cast<int64_t>(local.size())}, at::kDouble);
  double* s = sums.data_ptr<double>();
  for (size_t i = 0; i < local.size(); ++i) s[i] = dims_[i] >= 0 || pg.rank() == 0 ? local[i] : 0.0;
  std::vector<at::Tensor> v{sums};
  pg.sum_in_rank_order(v);
  return std::vector<double>(v[0].data_ptr<double>(), v[0].data_ptr<double>() + local.size());
}

}  // namespace levanter::trainer
