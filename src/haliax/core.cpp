#include "haliax/core.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <set>

#include "haliax/error.h"
#include "haliax/ops.h"
#include "haliax/partitioning.h"

namespace haliax {

namespace {

std::vector<int64_t> sizes_of(const AxisSpec& axes) {
  std::vector<int64_t> out;
  out.reserve(axes.size());
  for (const Axis& a : axes) out.push_back(a.size);
  return out;
}

size_t require_index(const NamedArray& a, const AxisSelector& axis) {
  auto i = a.axis_index(axis);
  if (!i) value_error("axis " + axis.str() + " not found in " + a.str());
  return *i;
}

}  // namespace

// --- creation ----------------------------------------------------------------------------------------------

// Under a CreatePiecesScope or EvalShapeScope (partitioning.h): this process's piece, or shapes alone.
NamedArray zeros(const AxisSpec& axes, at::TensorOptions options) {
  const Creation c = creation_of(axes);
  return NamedArray(at::zeros(sizes_of(c.axes), c.meta ? options.device(at::kMeta) : options), c.axes);
}
NamedArray ones(const AxisSpec& axes, at::TensorOptions options) {
  const Creation c = creation_of(axes);
  return NamedArray(at::ones(sizes_of(c.axes), c.meta ? options.device(at::kMeta) : options), c.axes);
}
NamedArray full(const AxisSpec& axes, const at::Scalar& value, at::TensorOptions options) {
  const Creation c = creation_of(axes);
  return NamedArray(at::full(sizes_of(c.axes), value, c.meta ? options.device(at::kMeta) : options), c.axes);
}
// a's dtype unless another is asked for (device and layout always a's).
static at::TensorOptions like_options(std::optional<at::ScalarType> dtype) {
  return dtype ? at::TensorOptions().dtype(*dtype) : at::TensorOptions();
}

NamedArray zeros_like(const NamedArray& a, std::optional<at::ScalarType> dtype) {
  return NamedArray(at::zeros_like(a.array(), like_options(dtype)), a.axes());
}
NamedArray ones_like(const NamedArray& a, std::optional<at::ScalarType> dtype) {
  return NamedArray(at::ones_like(a.array(), like_options(dtype)), a.axes());
}
NamedArray full_like(const NamedArray& a, const at::Scalar& value, std::optional<at::ScalarType> dtype) {
  return NamedArray(at::full_like(a.array(), value, like_options(dtype)), a.axes());
}

NamedArray arange(const Axis& axis, int64_t start, int64_t step, at::ScalarType dtype) {
  at::Tensor t = at::arange(start, start + step * axis.size, step, at::TensorOptions().dtype(at::kLong));
  return NamedArray(t.to(dtype), {axis});
}

NamedArray linspace(const Axis& axis, double start, double stop, at::ScalarType dtype) {
  return NamedArray(at::linspace(start, stop, axis.size, at::TensorOptions().dtype(dtype)), {axis});
}

// --- dtype and names ---------------------------------------------------------------------------------------

NamedArray astype(const NamedArray& a, at::ScalarType dtype) {
  if (a.dtype() == dtype) return a;
  return NamedArray(a.array().to(dtype), a.axes());
}

NamedArray rename(const NamedArray& a, const std::vector<std::pair<AxisSelector, AxisSelector>>& renames) {
  for (const auto& [from, to] : renames) {
    if (from.size() && to.size() && *from.size() != *to.size()) {
      value_error("Cannot rename axis " + from.str() + " to " + to.str() + ": size mismatch");
    }
  }
  AxisSpec axes = a.axes();
  for (Axis& ax : axes) {
    for (const auto& [from, to] : renames) {
      if (from.name() != ax.name) continue;
      if (from.size() && *from.size() != ax.size) {
        value_error("Cannot rename axis " + from.str() + ": the array's axis is " + to_string(ax));
      }
      if (to.size() && *to.size() != ax.size) {
        value_error("Cannot rename axis " + to_string(ax) + " to " + to.str() + ": size mismatch");
      }
      ax = Axis(to.name(), ax.size);
      break;
    }
  }
  return NamedArray(a.array(), axes);
}

NamedArray flatten_axes(const NamedArray& a, const AxisSelection& old_axes_sel, const AxisSelector& new_axis_sel) {
  AxisSpec old_axes = a.resolve_axes(old_axes_sel);
  int64_t total = axis_size(old_axes);
  if (new_axis_sel.size() && *new_axis_sel.size() != total) {
    value_error("Cannot merge " + to_string(old_axes) + " into " + new_axis_sel.str() + ": size mismatch");
  }
  Axis new_axis(new_axis_sel.name(), total);
  if (old_axes.empty()) return NamedArray(a.array().unsqueeze(0), concat_axes({new_axis}, a.axes()));
  // Make the old axes contiguous, starting where the first of them is, then merge them with one reshape.
  std::vector<AxisSelector> order;
  AxisSpec new_axes;
  bool placed = false;
  for (const Axis& ax : a.axes()) {
    if (std::find(old_axes.begin(), old_axes.end(), ax) != old_axes.end()) {
      if (placed) continue;
      placed = true;
      for (const Axis& o : old_axes) order.emplace_back(o);
      new_axes.push_back(new_axis);
    } else {
      order.emplace_back(ax);
      new_axes.push_back(ax);
    }
  }
  NamedArray arranged = rearrange(a, AxisSelection(order));
  return NamedArray(arranged.array().reshape(sizes_of(new_axes)), new_axes);
}

NamedArray unflatten_axis(const NamedArray& a, const AxisSelector& axis, const AxisSpec& new_axes) {
  size_t i = require_index(a, axis);
  if (new_axes.empty()) value_error("Must specify at least one axis to split");
  if (axis_size(new_axes) != a.axes()[i].size) {
    value_error("Cannot split " + to_string(a.axes()[i]) + " into " + to_string(new_axes) + ": product of sizes " +
                std::to_string(axis_size(new_axes)) + " != " + std::to_string(a.axes()[i].size));
  }
  AxisSpec out = replace_axis(a.axes(), a.axes()[i], new_axes);
  return NamedArray(a.array().reshape(sizes_of(out)), out);
}

NamedArray flatten(const NamedArray& a, const AxisSelector& new_axis) {
  return flatten_axes(a, AxisSelection(a.axes()), new_axis);
}

// --- splitting and joining ---------------------------------------------------------------------------------

std::vector<NamedArray> split(const NamedArray& a, const AxisSelector& axis, const AxisSpec& new_axes) {
  size_t i = require_index(a, axis);
  int64_t total = 0;
  std::vector<int64_t> sizes;
  for (const Axis& ax : new_axes) {
    total += ax.size;
    sizes.push_back(ax.size);
  }
  if (total != a.axes()[i].size) {
    value_error("The total length of the new axes " + std::to_string(total) +
                " does not match the length of the axis " + to_string(a.axes()[i]));
  }
  std::vector<at::Tensor> parts = at::split_with_sizes(a.array(), sizes, static_cast<int64_t>(i));
  std::vector<NamedArray> out;
  for (size_t k = 0; k < parts.size(); ++k) {
    AxisSpec axes = a.axes();
    axes[i] = new_axes[k];
    out.emplace_back(parts[k], axes);
  }
  return out;
}

NamedArray concatenate(const AxisSelector& axis, const std::vector<NamedArray>& arrays) {
  int64_t total = 0;
  for (const NamedArray& x : arrays) total += x.resolve_axis(AxisSelector(axis.name())).size;
  if (axis.size() && *axis.size() != total) {
    value_error("Cannot concatenate arrays along axis " + axis.name() + " of size " + std::to_string(*axis.size()) +
                " with total size " + std::to_string(total));
  }
  Axis new_axis(axis.name(), total);
  if (arrays.empty()) return zeros({new_axis});
  size_t i = *arrays[0].axis_index(AxisSelector(axis.name()));
  // The other arrays may differ in the concatenated axis's size, so order them by name.
  std::vector<AxisSelector> order;
  for (const Axis& ax : arrays[0].axes()) order.emplace_back(ax.name);
  std::vector<at::Tensor> tensors;
  for (const NamedArray& x : arrays) {
    for (const Axis& ax : arrays[0].axes()) {
      if (ax.name != axis.name() && x.resolve_axis(AxisSelector(ax.name)).size != ax.size) {
        value_error("Cannot concatenate: axis " + ax.name + " has size " + std::to_string(ax.size) + " in " +
                    arrays[0].str() + " but " + std::to_string(x.axis_size(AxisSelector(ax.name))) + " in " + x.str());
      }
    }
    if (x.ndim() != arrays[0].ndim()) {
      value_error("Cannot concatenate " + x.str() + " with " + arrays[0].str() + ": different axes");
    }
    tensors.push_back(rearrange(x, AxisSelection(order)).array());
  }
  AxisSpec out = arrays[0].axes();
  out[i] = new_axis;
  return NamedArray(at::cat(tensors, static_cast<int64_t>(i)), out);
}

NamedArray stack(const AxisSelector& axis, const std::vector<NamedArray>& arrays) {
  Axis new_axis(axis.name(), static_cast<int64_t>(arrays.size()));
  if (axis.size() && *axis.size() != new_axis.size) {
    value_error("Cannot stack " + std::to_string(arrays.size()) + " arrays along " + axis.str());
  }
  if (arrays.empty()) return zeros({new_axis});
  std::vector<at::Tensor> tensors;
  AxisSelection order(arrays[0].axes());
  for (const NamedArray& x : arrays) {
    if (x.ndim() != arrays[0].ndim() || !x.has_axis(order)) {
      value_error("Cannot stack " + x.str() + " with " + arrays[0].str() + ": different axes");
    }
    tensors.push_back(rearrange(x, order).array());
  }
  return NamedArray(at::stack(tensors, 0), concat_axes({new_axis}, arrays[0].axes()));
}

std::vector<NamedArray> unbind(const NamedArray& a, const AxisSelector& axis) {
  size_t i = require_index(a, axis);
  AxisSpec rest = a.axes();
  rest.erase(rest.begin() + static_cast<long>(i));
  std::vector<NamedArray> out;
  for (const at::Tensor& t : at::unbind(a.array(), static_cast<int64_t>(i))) out.emplace_back(t, rest);
  return out;
}

// --- indexing ----------------------------------------------------------------------------------------------

NamedArray slice(const NamedArray& a, const AxisSelector& axis, int64_t start, int64_t length) {
  size_t i = require_index(a, axis);
  return slice(a, axis, start, a.axes()[i].resize(length));
}

NamedArray slice(const NamedArray& a, const AxisSelector& axis, int64_t start, const Axis& new_axis) {
  size_t i = require_index(a, axis);
  int64_t total = a.axes()[i].size;
  if (start < 0 || new_axis.size < 0 || start + new_axis.size > total) {
    value_error("slice " + std::to_string(start) + ":" + std::to_string(start) + " + " + std::to_string(new_axis.size) +
                " is out of bounds for axis " + a.axes()[i].name + " of length " + std::to_string(total));
  }
  AxisSpec axes = a.axes();
  axes[i] = new_axis;
  return NamedArray(a.array().narrow(static_cast<int64_t>(i), start, new_axis.size), axes);
}

NamedArray slice(const NamedArray& a, const AxisSelector& axis, const NamedArray& start, int64_t length) {
  size_t i = require_index(a, axis);
  if (start.ndim() != 0 || !at::isIntegralType(start.dtype(), /*includeBool=*/false)) {
    value_error("slice: a runtime start must be a 0-d integer array, got " + start.str());
  }
  int64_t total = a.axes()[i].size;
  if (length > total) {
    value_error("slice length " + std::to_string(length) + " is longer than axis " + to_string(a.axes()[i]));
  }
  // jax.lax.dynamic_slice semantics: a negative start counts from the end, and the start is clamped so the
  // slice stays in bounds. A gather keeps it a
  // single op whose start can come from a tensor.
  at::Tensor s = start.array().to(at::kLong);
  s = at::clamp(at::where(s < 0, s + total, s), 0, total - length);  // negative starts count from the end
  at::Tensor idx = at::arange(length, at::TensorOptions().dtype(at::kLong).device(a.device())) + s;
  AxisSpec axes = a.axes();
  axes[i] = a.axes()[i].resize(length);
  return NamedArray(at::index_select(a.array(), static_cast<int64_t>(i), idx), axes);
}

NamedArray take(const NamedArray& a, const AxisSelector& axis, int64_t index) {
  size_t i = require_index(a, axis);
  int64_t n = a.axes()[i].size;
  if (index < -n || index >= n) {
    value_error("index " + std::to_string(index) + " is out of bounds for axis " + to_string(a.axes()[i]));
  }
  AxisSpec rest = a.axes();
  rest.erase(rest.begin() + static_cast<long>(i));
  return NamedArray(a.array().select(static_cast<int64_t>(i), index), rest);
}

NamedArray take(const NamedArray& a, const AxisSelector& axis_sel, const NamedArray& index) {
  size_t i = require_index(a, axis_sel);
  const Axis axis = a.axes()[i];
  if (!at::isIntegralType(index.dtype(), /*includeBool=*/false)) {
    value_error("Index must be an integer array, got " + dtype_name(index.dtype()));
  }
  AxisSpec remaining = eliminate_axes(a.axes(), AxisSelection(axis));
  AxisSpec shared = intersect_axes(remaining, index.axes());
  if (shared.empty()) {
    // Plain gather: the index's axes take the place of `axis`.
    AxisSpec out(a.axes().begin(), a.axes().begin() + static_cast<long>(i));
    out.insert(out.end(), index.axes().begin(), index.axes().end());
    out.insert(out.end(), a.axes().begin() + static_cast<long>(i) + 1, a.axes().end());
    check_unique(out);
    at::Tensor flat = at::index_select(a.array(), static_cast<int64_t>(i), index.array().reshape({-1}).to(at::kLong));
    std::vector<int64_t> sizes;
    for (const Axis& ax : out) sizes.push_back(ax.size);
    return NamedArray(flat.reshape(sizes), out);
  }
  // Axes shared by the index and the array are batched over (take_along_axis): broadcast both to a common
  // set of axes, then gather along `axis`.
  NamedArray idx = index;
  const std::string dummy = "__DUMMY_" + axis.name;
  bool use_dummy = idx.axis_index(AxisSelector(axis.name)).has_value();
  if (use_dummy) idx = rename(idx, {{AxisSelector(axis.name), AxisSelector(dummy)}});
  NamedArray arr = broadcast_to(a, idx.axes(), /*ensure_order=*/false, /*enforce_no_extra_axes=*/false);
  AxisSpec new_axes = eliminate_axes(arr.axes(), AxisSelection(axis));
  idx = broadcast_to(idx, new_axes, /*ensure_order=*/true, /*enforce_no_extra_axes=*/true);
  int64_t pos = static_cast<int64_t>(*arr.axis_index(AxisSelector(axis.name)));
  at::Tensor gathered = at::gather(arr.array(), pos, idx.array().to(at::kLong).unsqueeze(pos)).squeeze(pos);
  NamedArray out(gathered, new_axes);
  if (use_dummy) out = rename(out, {{AxisSelector(dummy), AxisSelector(axis.name)}});
  return out;
}

NamedArray updated_slice(const NamedArray& a, const std::vector<std::pair<AxisSelector, SliceStart>>& start,
                         const NamedArray& update) {
  // The axes of array-valued starts are mapped over: Haliax vmaps over each, which moves them to the front of
  // the result (the last one outermost).
  std::vector<std::string> mapped;
  for (const auto& [sel, s] : start) {
    if (const NamedArray* t = std::get_if<NamedArray>(&s)) {
      if (!at::isIntegralType(t->dtype(), /*includeBool=*/false)) {
        value_error("updated_slice: start for axis " + sel.name() + " must be an integer array, got " + t->str());
      }
      for (const Axis& ax : t->axes()) {
        if (std::find(mapped.begin(), mapped.end(), ax.name) == mapped.end()) mapped.push_back(ax.name);
      }
    }
  }
  AxisSpec out_axes;
  for (auto it = mapped.rbegin(); it != mapped.rend(); ++it) {
    auto i = a.axis_index(AxisSelector(*it));
    if (!i) value_error("axis " + *it + " not found in original array's axes: " + to_string(a.axes()));
    out_axes.push_back(a.axes()[*i]);
  }
  const size_t n_mapped = out_axes.size();
  for (const Axis& ax : a.axes()) {
    if (std::find(mapped.begin(), mapped.end(), ax.name) == mapped.end()) out_axes.push_back(ax);
  }
  for (const Axis& ax : update.axes()) {
    if (!a.axis_index(AxisSelector(ax.name))) {
      value_error("Update array with shape " + to_string(update.axes()) + " has axes ['" + ax.name +
                  "'] that are not in the original array with shape " + to_string(a.axes()) +
                  ". This is not allowed in updated_slice.");
    }
  }
  // The block written: the update's size on its axes; axes it lacks are written whole (broadcast), except
  // that a 0-d update (besides mapped axes) writes one element of a 1-d array, as dynamic_update_slice does.
  bool scalar_block = true;
  for (size_t k = n_mapped; k < out_axes.size(); ++k) {
    if (update.axis_index(AxisSelector(out_axes[k].name))) scalar_block = false;
  }
  if (scalar_block && out_axes.size() - n_mapped != 1) {
    value_error("updated_slice: a 0-d update (besides the mapped axes) needs a 1-d array, got " + a.str());
  }
  std::vector<int64_t> len(out_axes.size());
  for (size_t k = 0; k < out_axes.size(); ++k) {
    const Axis& ax = out_axes[k];
    auto j = update.axis_index(AxisSelector(ax.name));
    if (k < n_mapped || !j) {
      len[k] = k < n_mapped ? ax.size : scalar_block ? 1 : ax.size;
    } else {
      len[k] = update.axes()[*j].size;
      if (len[k] > ax.size) {
        value_error("update axis " + ax.name + " of size " + std::to_string(len[k]) +
                    " is larger than the array's axis " + to_string(ax));
      }
    }
  }
  // Start offsets, counted from the end when negative and clamped so the block fits (as
  // jax.lax.dynamic_update_slice does), shaped to broadcast over the
  // block: array starts vary along the mapped axes at the front.
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(a.device());
  const AxisSpec mapped_axes(out_axes.begin(), out_axes.begin() + static_cast<long>(n_mapped));
  std::vector<at::Tensor> starts(out_axes.size());
  for (const auto& [sel, s] : start) {
    auto k = index_of(out_axes, sel);
    if (!k) value_error("axis " + sel.str() + " not found in " + a.str());
    if (*k < n_mapped)
      value_error("axis " + sel.str() + " not found in " + a.str() + " once its start's axes are mapped over");
    const int64_t total = out_axes[*k].size, upd_len = len[*k];
    if (const int64_t* v = std::get_if<int64_t>(&s)) {
      if (update.axis_index(AxisSelector(out_axes[*k].name)) && *v + upd_len > total) {
        value_error("update axis " + sel.name() + " is too large to start at " + std::to_string(*v) +
                    ". Array size is " + std::to_string(total) + ", update size is " + std::to_string(upd_len));
      }
      const int64_t from_end = *v < 0 ? *v + total : *v;  // negative starts count from the end, as in JAX
      starts[*k] = at::scalar_tensor(std::clamp<int64_t>(from_end, 0, total - upd_len), long_opts);
    } else {
      NamedArray t = broadcast_to(std::get<NamedArray>(s), mapped_axes, /*ensure_order=*/true,
                                  /*enforce_no_extra_axes=*/true);
      std::vector<int64_t> shape(out_axes.size(), 1);
      for (size_t m = 0; m < n_mapped; ++m) shape[m] = mapped_axes[m].size;
      at::Tensor st = t.array().to(at::kLong).to(a.device());
      starts[*k] = at::clamp(at::where(st < 0, st + total, st), 0, total - upd_len).reshape(shape);
    }
  }
  // Scatter through index_put with one broadcasting index tensor per axis: differentiable in both inputs.
  c10::List<c10::optional<at::Tensor>> list;
  AxisSpec block;
  for (size_t k = 0; k < out_axes.size(); ++k) {
    std::vector<int64_t> shape(out_axes.size(), 1);
    shape[k] = len[k];
    at::Tensor r = at::arange(len[k], long_opts).reshape(shape);
    if (starts[k].defined()) r = r + starts[k];
    list.push_back(r);
    block.push_back(out_axes[k].resize(len[k]));
  }
  NamedArray upd = broadcast_to(update, block, /*ensure_order=*/true, /*enforce_no_extra_axes=*/true);
  NamedArray base = n_mapped > 0 ? rearrange(a, AxisSelection(out_axes)) : a;
  return NamedArray(at::index_put(base.array(), list, upd.array().to(a.dtype()).to(a.device())), out_axes);
}

}  // namespace haliax
