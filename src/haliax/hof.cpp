#include "haliax/hof.h"

#include <ATen/ATen.h>

#include <map>

#include "haliax/core.h"
#include "haliax/error.h"
#include "haliax/nn/checkpoint.h"

namespace haliax::hof_detail {

namespace {

// scan, fold and map are Haliax's scan underneath, so they share its wording.
bool is_scan_like(const std::string& op) { return op != "vmap"; }

std::string type_str(const NamedArray& a) { return dtype_name(a.dtype()) + to_string(a.axes()); }

}  // namespace

SlicePlan plan_slices(const std::string& op, const AxisSelector& axis, const std::vector<NamedArray>& leaves,
                      const std::vector<std::string>& paths) {
  SlicePlan plan;
  plan.sliced.resize(leaves.size(), false);
  std::optional<size_t> first;
  for (size_t k = 0; k < leaves.size(); ++k) {
    // selects_axis throws "Found axis with same name but different size" for an Axis of another size.
    if (!selects_axis(leaves[k].axes(), axis)) continue;
    plan.sliced[k] = true;
    if (!first) first = k;
  }
  if (!first) {
    if (axis.size()) {  // a fixed number of steps, every input passed through
      plan.axis = Axis(axis.name(), *axis.size());
      return plan;
    }
    if (is_scan_like(op)) {
      value_error(op + ": no input has the axis " + axis.name() +
                  ", so the number of steps is unknown; pass an Axis to run a fixed number of steps");
    }
    value_error("vmap must have at least one non-None value in in_axes or axis_size must be specified");
  }
  plan.axis = leaves[*first].resolve_axis(axis.name());
  std::string details;
  std::map<int64_t, size_t> first_of_size{{plan.axis.size, *first}};
  for (size_t k = 0; k < leaves.size(); ++k) {
    if (!plan.sliced[k]) continue;
    const int64_t size = leaves[k].axis_size(axis.name());
    if (size == plan.axis.size) continue;
    if (is_scan_like(op)) {
      details += (details.empty() ? "" : ", ") + paths[k] + " has leading dimension " + std::to_string(size);
    } else {
      first_of_size.emplace(size, k);
    }
  }
  if (!details.empty()) {
    value_error("scan got `length` argument of " + std::to_string(plan.axis.size) +
                " but some inputs had different leading axis sizes: " + details);
  }
  if (first_of_size.size() > 1) {
    std::string msg = "vmap got inconsistent sizes for array axes to be mapped:";
    size_t n = 0;
    for (const auto& [size, k] : first_of_size) {
      msg += "\n  * one axis had size " + std::to_string(size) + ": axis " + axis.name() + " of argument " + paths[k] +
             " of type " + type_str(leaves[k]) + (++n < first_of_size.size() ? ";" : "");
    }
    value_error(msg);
  }
  return plan;
}

StepInputs::StepInputs(const SlicePlan& plan, const std::vector<NamedArray>& leaves)
    : whole_(leaves.size()), slices_(leaves.size()) {
  for (size_t k = 0; k < leaves.size(); ++k) {
    if (plan.sliced[k]) {
      slices_[k] = unbind(leaves[k], plan.axis.name);
    } else {
      whole_[k] = leaves[k];
    }
  }
}

std::vector<NamedArray> StepInputs::at(int64_t step) const {
  std::vector<NamedArray> out;
  out.reserve(whole_.size());
  for (size_t k = 0; k < whole_.size(); ++k) {
    out.push_back(slices_[k].empty() ? whole_[k] : slices_[k][static_cast<size_t>(step)]);
  }
  return out;
}

void check_carry(const std::string& op, const std::vector<NamedArray>& before, const std::vector<NamedArray>& after,
                 int64_t step) {
  const std::string where = op + ": at step " + std::to_string(step) + ", ";
  if (before.size() != after.size()) {
    value_error(where + "the carry went from " + std::to_string(before.size()) + " arrays to " +
                std::to_string(after.size()) + "; the carry must keep its structure");
  }
  for (size_t k = 0; k < before.size(); ++k) {
    if (before[k].axes() != after[k].axes() || before[k].dtype() != after[k].dtype()) {
      value_error(where + "carry array " + std::to_string(k) + " went from " + type_str(before[k]) + " to " +
                  type_str(after[k]) + "; the carry must keep its axes (in order) and dtype");
    }
  }
}

std::vector<NamedArray> stack_steps(const std::string& op, const Axis& axis,
                                    const std::vector<std::vector<NamedArray>>& per_step) {
  if (per_step.empty()) throw_empty_axis(op, axis);
  const size_t n_leaves = per_step[0].size();
  for (size_t i = 1; i < per_step.size(); ++i) {
    if (per_step[i].size() != n_leaves) {
      value_error(op + ": step " + std::to_string(i) + " returned " + std::to_string(per_step[i].size()) +
                  " output arrays but step 0 returned " + std::to_string(n_leaves) +
                  "; every step must return the same structure");
    }
  }
  std::vector<NamedArray> out;
  out.reserve(n_leaves);
  std::vector<NamedArray> column(per_step.size());
  for (size_t k = 0; k < n_leaves; ++k) {
    for (size_t i = 0; i < per_step.size(); ++i) column[i] = per_step[i][k];
    out.push_back(stack(axis, column));
  }
  return out;
}

void throw_empty_axis(const std::string& op, const Axis& axis) {
  value_error(op + " over " + to_string(axis) + ", which has no positions: the outputs' axes are unknown");
}

bool checkpointing(const ScanOptions& options) { return options.gradient_checkpointing && nn::checkpointing_enabled(); }

std::vector<NamedArray> checkpointed(const LeavesFn& fn, const std::vector<NamedArray>& inputs) {
  std::vector<at::Tensor> tensors;
  std::vector<AxisSpec> in_axes;
  tensors.reserve(inputs.size());
  in_axes.reserve(inputs.size());
  for (const NamedArray& a : inputs) {
    tensors.push_back(a.array());
    in_axes.push_back(a.axes());
  }
  auto out_axes = std::make_shared<std::vector<AxisSpec>>();
  nn::TensorsFn run = [fn, in_axes, out_axes](const std::vector<at::Tensor>& t) {
    std::vector<NamedArray> named_in;
    named_in.reserve(t.size());
    for (size_t k = 0; k < t.size(); ++k) named_in.emplace_back(t[k], in_axes[k]);
    std::vector<NamedArray> named_out = fn(named_in);
    std::vector<at::Tensor> out;
    out_axes->clear();
    for (const NamedArray& a : named_out) {
      out.push_back(a.array());
      out_axes->push_back(a.axes());
    }
    return out;
  };
  std::vector<at::Tensor> outs = nn::checkpoint(run, tensors);
  std::vector<NamedArray> result;
  result.reserve(outs.size());
  for (size_t k = 0; k < outs.size(); ++k) result.emplace_back(outs[k], (*out_axes)[k]);
  return result;
}

}  // namespace haliax::hof_detail
