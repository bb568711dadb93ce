#include "haliax/core.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <set>

#include "haliax/error.h"
#include "haliax/ops.h"

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

NamedArray zeros(const AxisSpec& axes, at::TensorOptions options) {
  return NamedArray(at::zeros(sizes_of(axes), options), axes);
}
NamedArray ones(const AxisSpec& axes, at::TensorOptions options) {
  return NamedArray(at::ones(sizes_of(axes), options), axes);
}
NamedArray full(const AxisSpec& axes, const at::Scalar& value, at::TensorOptions options) {
  return NamedArray(at::full(sizes_of(axes), value, options), axes);
}
NamedArray zeros_like(const NamedArray& a) { return NamedArray(at::zeros_like(a.array()), a.axes()); }
NamedArray ones_like(const NamedArray& a) { return NamedArray(at::ones_like(a.array()), a.axes()); }
NamedArray full_like(const NamedArray& a, const at::Scalar& value) {
  return NamedArray(at::full_like(a.array(), value), a.axes());
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
  // jax.lax.dynamic_slice semantics: the start is clamped so the slice stays in bounds. A gather keeps it a
  // single op whose start can come from a tensor.
  at::Tensor s = at::clamp(start.array().to(at::kLong), 0, total - length);
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
  for (const Axis& ax : update.axes()) {
    if (!a.axis_index(AxisSelector(ax.name))) {
      value_error("Update array with shape " + to_string(update.axes()) + " has axes ['" + ax.name +
                  "'] that are not in the original array with shape " + to_string(a.axes()) +
                  ". This is not allowed in updated_slice.");
    }
  }
  std::vector<at::Tensor> starts(a.axes().size());
  for (const auto& [sel, s] : start) {
    size_t i = require_index(a, sel);
    int64_t upd_len =
        update.axis_index(AxisSelector(a.axes()[i].name)) ? update.axis_size(AxisSelector(a.axes()[i].name)) : 1;
    int64_t total = a.axes()[i].size;
    if (const int64_t* v = std::get_if<int64_t>(&s)) {
      if (*v < 0 || *v + upd_len > total) {
        value_error("update axis " + sel.name() + " is too large to start at " + std::to_string(*v) +
                    ". Array size is " + std::to_string(total) + ", update size is " + std::to_string(upd_len));
      }
      starts[i] = at::scalar_tensor(*v, at::TensorOptions().dtype(at::kLong));
    } else {
      const NamedArray& t = std::get<NamedArray>(s);
      if (t.ndim() != 0) value_error("updated_slice: start for axis " + sel.name() + " must be 0-d, got " + t.str());
      // dynamic_update_slice clamps the start so the update fits.
      starts[i] = at::clamp(t.array().to(at::kLong), 0, total - upd_len);
    }
  }
  // Broadcast the update to the array's axis names (with the update's own, possibly smaller, sizes).
  AxisSpec target;
  for (const Axis& ax : a.axes()) {
    auto j = update.axis_index(AxisSelector(ax.name));
    target.push_back(j ? update.axes()[*j] : ax.resize(1));
  }
  at::Tensor upd = update.array();
  {
    std::vector<AxisSelector> order;
    for (const Axis& ax : a.axes()) {
      if (update.axis_index(AxisSelector(ax.name))) order.emplace_back(ax.name);
    }
    if (!order.empty()) upd = rearrange(update, AxisSelection(order)).array();
    // Insert size-1 dims for the axes the update lacks; they are written at their start offset.
    for (size_t i = 0; i < a.axes().size(); ++i) {
      if (!update.axis_index(AxisSelector(a.axes()[i].name))) upd = upd.unsqueeze(static_cast<int64_t>(i));
    }
  }
  // Scatter through index_put with one index tensor per axis: differentiable in both `a` and `update`.
  std::vector<c10::optional<at::Tensor>> indices;
  for (size_t i = 0; i < a.axes().size(); ++i) {
    int64_t len = target[i].size;
    at::Tensor r = at::arange(len, at::TensorOptions().dtype(at::kLong).device(a.device()));
    if (starts[i].defined()) r = r + starts[i].to(a.device());
    std::vector<int64_t> shape(a.axes().size(), 1);
    shape[i] = len;
    indices.emplace_back(r.reshape(shape));
  }
  c10::List<c10::optional<at::Tensor>> list;
  for (auto& t : indices) list.push_back(t);
  return NamedArray(at::index_put(a.array(), list, upd.to(a.dtype())), a.axes());
}

NamedArray index(const NamedArray& a, const std::vector<std::pair<AxisSelector, NamedIndex>>& index_spec) {
  const size_t n = a.axes().size();
  // Basic indexing first (integers and slices), which ATen does with views; then advanced (array) indexing.
  std::vector<bool> kept(n, true);
  std::vector<std::optional<NamedArray>> advanced(n);
  at::Tensor t = a.array();
  AxisSpec axes = a.axes();
  std::vector<bool> seen(n, false);
  for (const auto& [sel, idx] : index_spec) {
    size_t i = require_index(a, sel);
    if (seen[i]) value_error("Axis " + a.axes()[i].name + " is indexed more than once");
    seen[i] = true;
    const auto& v = idx.value();
    if (const int64_t* k = std::get_if<int64_t>(&v)) {
      int64_t size = a.axes()[i].size;
      if (*k < -size || *k >= size) {
        value_error("index " + std::to_string(*k) + " is out of bounds for axis " + to_string(a.axes()[i]));
      }
      kept[i] = false;
      advanced[i] = NamedArray(at::scalar_tensor(*k < 0 ? *k + size : *k, at::TensorOptions().dtype(at::kLong)), {});
    } else if (const Slice* s = std::get_if<Slice>(&v)) {
      int64_t size = a.axes()[i].size;
      if (s->step <= 0) value_error("slice step must be positive for axis " + a.axes()[i].name);
      auto norm = [&](std::optional<int64_t> x, int64_t dflt) {
        if (!x) return dflt;
        int64_t y = *x < 0 ? *x + size : *x;
        return std::clamp<int64_t>(y, 0, size);
      };
      int64_t lo = norm(s->start, 0), hi = std::max(norm(s->stop, size), norm(s->start, 0));
      t = t.slice(static_cast<int64_t>(i), lo, hi, s->step);
      axes[i] = axes[i].resize(t.size(static_cast<int64_t>(i)));
    } else {
      const NamedArray& arr = std::get<NamedArray>(v);
      if (!at::isIntegralType(arr.dtype(), /*includeBool=*/false)) {
        value_error("Only integer NamedArrays can be used for indexing axis " + a.axes()[i].name + ", got " +
                    arr.str());
      }
      kept[i] = false;
      advanced[i] = arr;
    }
  }
  bool any_array = false;
  for (size_t i = 0; i < n; ++i) {
    if (advanced[i] && advanced[i]->ndim() > 0) any_array = true;
  }
  if (!any_array) {
    // Only integers: select them from the last to the first so positions stay valid.
    for (size_t i = n; i-- > 0;) {
      if (advanced[i]) t = t.select(static_cast<int64_t>(i), advanced[i]->array().item<int64_t>());
    }
    AxisSpec out;
    for (size_t i = 0; i < n; ++i) {
      if (kept[i]) out.push_back(axes[i]);
    }
    return NamedArray(t, out);
  }
  // Index arrays broadcast against each other by name (any overlap is allowed). Kept axes that an index array
  // also names become advanced indices too (an arange), so that they are matched rather than duplicated.
  std::set<std::string> index_names;
  for (size_t i = 0; i < n; ++i) {
    if (advanced[i]) {
      for (const Axis& ax : advanced[i]->axes()) index_names.insert(ax.name);
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (kept[i] && index_names.count(axes[i].name)) {
      advanced[i] = arange(axes[i]);
      kept[i] = false;
    }
  }
  std::vector<NamedArray> idx_arrays;
  std::vector<size_t> idx_pos;
  for (size_t i = 0; i < n; ++i) {
    if (advanced[i]) {
      idx_arrays.push_back(*advanced[i]);
      idx_pos.push_back(i);
    }
  }
  auto [bcast, bcast_axes] = broadcast_arrays(idx_arrays, /*require_subset=*/false, /*ensure_order=*/true);
  for (size_t i = 0; i < n; ++i) {
    if (kept[i] && index_of(bcast_axes, axes[i].name)) {
      value_error("Array Axis " + to_string(axes[i]) + " is present in the index arrays");
    }
  }
  c10::List<c10::optional<at::Tensor>> list;
  for (size_t i = 0; i < n; ++i) list.push_back(c10::nullopt);
  for (size_t k = 0; k < idx_pos.size(); ++k)
    list.set(idx_pos[k], c10::optional<at::Tensor>(bcast[k].array().to(at::kLong)));
  // numpy's placement rule: contiguous advanced indices put their axes in place; otherwise they go first.
  size_t first = idx_pos.front(), last = idx_pos.back();
  bool contiguous = (last - first + 1) == idx_pos.size();
  AxisSpec out;
  if (contiguous) {
    out.insert(out.end(), axes.begin(), axes.begin() + static_cast<long>(first));
    out.insert(out.end(), bcast_axes.begin(), bcast_axes.end());
    for (size_t i = last + 1; i < n; ++i) out.push_back(axes[i]);
  } else {
    out = bcast_axes;
    for (size_t i = 0; i < n; ++i) {
      if (kept[i]) out.push_back(axes[i]);
    }
  }
  return NamedArray(at::index(t, list), out);
}

NamedArray NamedArray::operator[](std::initializer_list<std::pair<AxisSelector, NamedIndex>> idx) const {
  return haliax::index(*this, std::vector<std::pair<AxisSelector, NamedIndex>>(idx));
}

NamedArray NamedArray::operator[](const std::vector<std::pair<AxisSelector, NamedIndex>>& idx) const {
  return haliax::index(*this, idx);
}

}  // namespace haliax
