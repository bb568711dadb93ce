// Selection by name (index, operator[]) and functional updates at a selection (NamedArray::at).
//
// Both follow Haliax's _compute_new_axes_and_slices_for_index: integers and index arrays (NamedArrays, and
// DSlices, which become an arange named after their axis) are numpy "advanced" indices. The index arrays
// broadcast against each other by name; their axes replace the indexed axes in place when the advanced
// indices are contiguous, and go first otherwise (numpy's rule, integers counting as advanced). A kept axis
// whose name an index array also uses is indexed by an arange, so it is matched rather than duplicated.
//
// Plain reads use ATen's basic slicing (views) and at::index. Reads with a DSlice, at().get() and every update
// instead spell the selection out as one position tensor per source axis, each of the result's shape; then
// out-of-range positions can be filled, dropped or clamped (JAX's modes), and updates become scatters over the
// flattened array, which autograd differentiates in both the array and the update. set and add use index_put;
// multiply/divide/power/min/max use scatter_reduce, which libtorch 1.13 calls beta (it warns once per process).
#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <set>

#include "haliax/core.h"
#include "haliax/error.h"

namespace haliax {

namespace {

// How the selection treats each axis of the source array.
struct Selection {
  std::vector<bool> kept;                           // whole axis or a Slice: the axis stays (resized)
  std::vector<int64_t> lo, hi, step;                // the Slice of a kept axis, normalised
  AxisSpec kept_axes;                               // per source axis: what a kept axis becomes
  std::vector<std::optional<NamedArray>> advanced;  // integers (0-d) and index arrays, after broadcasting
  bool any_array = false;                           // some axis is indexed by an array or a DSlice
  bool has_dslice = false;
  AxisSpec out_axes;  // the axes of a[selection]
};

size_t require_axis(const NamedArray& a, const AxisSelector& axis) {
  auto i = a.axis_index(axis);
  if (!i) value_error("axis " + axis.str() + " not found in " + a.str());
  return *i;
}

NamedArray dslice_positions(const NamedArray& a, size_t i, const DSlice& d) {
  const Axis& axis = a.axes()[i];
  if (d.size < 0) value_error("dslice size must be non-negative for axis " + axis.name);
  at::Tensor start;
  if (const int64_t* s = std::get_if<int64_t>(&d.start)) {
    start = at::scalar_tensor(*s, at::TensorOptions().dtype(at::kLong));
  } else {
    const NamedArray& s_arr = std::get<NamedArray>(d.start);
    if (s_arr.ndim() != 0 || !at::isIntegralType(s_arr.dtype(), /*includeBool=*/false)) {
      value_error("dslice start for axis " + axis.name + " must be an integer or a 0-d integer array, got " +
                  s_arr.str());
    }
    start = s_arr.array().to(at::kLong);
  }
  at::Tensor r = at::arange(d.size, at::TensorOptions().dtype(at::kLong).device(a.device())) + start.to(a.device());
  return NamedArray(r, {axis.resize(d.size)});
}

Selection plan(const NamedArray& a, const std::vector<std::pair<AxisSelector, NamedIndex>>& spec) {
  const size_t n = a.axes().size();
  Selection s;
  s.kept.assign(n, true);
  s.lo.assign(n, 0);
  s.step.assign(n, 1);
  s.hi.resize(n);
  for (size_t i = 0; i < n; ++i) s.hi[i] = a.axes()[i].size;
  s.kept_axes = a.axes();
  s.advanced.resize(n);
  std::vector<size_t> array_order;  // axes indexed by arrays, in the order Haliax broadcasts them
  std::set<std::string> index_names;
  std::vector<bool> seen(n, false);
  for (const auto& [sel, idx] : spec) {
    const size_t i = require_axis(a, sel);
    const Axis& axis = a.axes()[i];
    if (seen[i]) value_error("Axis " + axis.name + " is indexed more than once");
    seen[i] = true;
    const auto& v = idx.value();
    if (const int64_t* k = std::get_if<int64_t>(&v)) {
      if (*k < -axis.size || *k >= axis.size) {
        value_error("index " + std::to_string(*k) + " is out of bounds for axis " + to_string(axis));
      }
      s.kept[i] = false;
      s.advanced[i] =
          NamedArray(at::scalar_tensor(*k < 0 ? *k + axis.size : *k, at::TensorOptions().dtype(at::kLong)), {});
    } else if (const Slice* sl = std::get_if<Slice>(&v)) {
      if (sl->step <= 0) value_error("slice step must be positive for axis " + axis.name);
      auto norm = [&](std::optional<int64_t> x, int64_t dflt) {
        if (!x) return dflt;
        return std::clamp<int64_t>(*x < 0 ? *x + axis.size : *x, 0, axis.size);
      };
      s.lo[i] = norm(sl->start, 0);
      s.hi[i] = std::max(norm(sl->stop, axis.size), s.lo[i]);
      s.step[i] = sl->step;
      s.kept_axes[i] = axis.resize((s.hi[i] - s.lo[i] + sl->step - 1) / sl->step);
    } else if (const NamedArray* arr = std::get_if<NamedArray>(&v)) {
      if (!at::isIntegralType(arr->dtype(), /*includeBool=*/false)) {
        value_error("Only integer NamedArrays can be used for indexing axis " + axis.name + ", got " + arr->str());
      }
      s.kept[i] = false;
      s.advanced[i] = *arr;
      array_order.push_back(i);
      for (const Axis& ax : arr->axes()) index_names.insert(ax.name);
    } else {
      s.kept[i] = false;
      s.advanced[i] = dslice_positions(a, i, std::get<DSlice>(v));
      s.has_dslice = true;
      array_order.push_back(i);
      index_names.insert(axis.name);
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (s.kept[i] && index_names.count(a.axes()[i].name)) {
      // As Haliax: the whole axis (a Slice on it is replaced) becomes an index array matched by name.
      s.advanced[i] = arange(a.axes()[i]);
      s.kept[i] = false;
      array_order.push_back(i);
    }
  }
  if (array_order.empty()) {
    for (size_t i = 0; i < n; ++i) {
      if (s.kept[i]) s.out_axes.push_back(s.kept_axes[i]);
    }
    return s;
  }
  s.any_array = true;
  std::vector<NamedArray> arrays;
  for (size_t i : array_order) arrays.push_back(*s.advanced[i]);
  auto [bcast, bcast_axes] = broadcast_arrays(arrays, /*require_subset=*/false, /*ensure_order=*/true);
  for (size_t i = 0; i < n; ++i) {
    if (s.kept[i] && index_of(bcast_axes, s.kept_axes[i].name)) {
      value_error("Array Axis " + to_string(a.axes()[i]) + " is present in slice (the index arrays have axes " +
                  to_string(bcast_axes) + ")");
    }
  }
  for (size_t k = 0; k < array_order.size(); ++k) s.advanced[array_order[k]] = bcast[k];
  // numpy's placement rule (integers count as advanced indices).
  size_t first = n, last = 0, count = 0;
  for (size_t i = 0; i < n; ++i) {
    if (s.kept[i]) continue;
    first = std::min(first, i);
    last = i;
    ++count;
  }
  const bool contiguous = last - first + 1 == count;
  if (contiguous) {
    for (size_t i = 0; i < first; ++i) s.out_axes.push_back(s.kept_axes[i]);
    s.out_axes.insert(s.out_axes.end(), bcast_axes.begin(), bcast_axes.end());
    for (size_t i = last + 1; i < n; ++i) s.out_axes.push_back(s.kept_axes[i]);
  } else {
    s.out_axes = bcast_axes;
    for (size_t i = 0; i < n; ++i) {
      if (s.kept[i]) s.out_axes.push_back(s.kept_axes[i]);
    }
  }
  check_unique(s.out_axes);
  return s;
}

// The selection as one int64 position tensor per source axis, each of the result's shape (expanded views of
// the small per-axis positions), clamped into range; and, for kFill/kDrop, which result elements have every
// position in range (undefined when all do). Negative positions (from index arrays and DSlices) count from
// the end first, as in JAX. Kept axes (Slices) are always in range.
std::pair<std::vector<at::Tensor>, at::Tensor> bounded_positions(const NamedArray& a, const Selection& s,
                                                                 IndexMode mode) {
  std::vector<at::Tensor> pos;
  at::Tensor valid;
  const auto opts = at::TensorOptions().dtype(at::kLong).device(a.device());
  auto expand = [&](const at::Tensor& t, const AxisSpec& axes) {
    return broadcast_to(NamedArray(t, axes), s.out_axes, /*ensure_order=*/true, /*enforce_no_extra_axes=*/true).array();
  };
  for (size_t i = 0; i < a.axes().size(); ++i) {
    const int64_t size = a.axes()[i].size;
    if (s.kept[i]) {
      pos.push_back(expand(at::arange(s.lo[i], s.lo[i] + s.kept_axes[i].size * s.step[i], s.step[i], opts)
                               .narrow(0, 0, s.kept_axes[i].size),
                           {s.kept_axes[i]}));
      continue;
    }
    const NamedArray& adv = *s.advanced[i];
    at::Tensor p = adv.array().to(at::kLong).to(a.device());
    p = at::where(p < 0, p + size, p);
    if (mode != IndexMode::kClip) {
      at::Tensor v = expand((p >= 0).logical_and(p < size), adv.axes());
      valid = valid.defined() ? valid.logical_and(v) : v;
    }
    pos.push_back(expand(p.clamp(0, std::max<int64_t>(size - 1, 0)), adv.axes()));
  }
  return {pos, valid};
}

at::Scalar default_fill(at::ScalarType dtype) {
  if (dtype == at::kBool) return true;
  if (at::isFloatingType(dtype)) return std::numeric_limits<double>::quiet_NaN();
  if (dtype == at::kByte) return 255;
  switch (dtype) {
    case at::kChar:
      return std::numeric_limits<int8_t>::min();
    case at::kShort:
      return std::numeric_limits<int16_t>::min();
    case at::kInt:
      return std::numeric_limits<int32_t>::min();
    default:
      return std::numeric_limits<int64_t>::min();
  }
}

NamedArray gather(const NamedArray& a, const Selection& s, IndexMode mode, const at::Scalar& fill) {
  auto [pos, valid] = bounded_positions(a, s, mode);
  c10::List<c10::optional<at::Tensor>> list;
  for (const at::Tensor& p : pos) list.push_back(p);
  at::Tensor g = at::index(a.array(), list);
  if (valid.defined()) g = at::where(valid, g, at::full({}, fill, g.options()));
  return NamedArray(g, s.out_axes);
}

}  // namespace

NamedArray index(const NamedArray& a, const std::vector<std::pair<AxisSelector, NamedIndex>>& index_spec) {
  Selection s = plan(a, index_spec);
  // Haliax reads with JAX's fill mode (fill value 0) whenever a DSlice is involved.
  if (s.has_dslice) return gather(a, s, IndexMode::kFill, 0);
  at::Tensor t = a.array();
  for (size_t i = 0; i < s.kept.size(); ++i) {
    if (s.kept[i] && (s.lo[i] != 0 || s.hi[i] != a.axes()[i].size || s.step[i] != 1)) {
      t = t.slice(static_cast<int64_t>(i), s.lo[i], s.hi[i], s.step[i]);
    }
  }
  if (!s.any_array) {
    // Only integers: select them from the last to the first so positions stay valid.
    for (size_t i = s.kept.size(); i-- > 0;) {
      if (!s.kept[i]) t = t.select(static_cast<int64_t>(i), s.advanced[i]->array().item<int64_t>());
    }
    return NamedArray(t, s.out_axes);
  }
  // ATen applies numpy's placement rule too; the broadcast index arrays all share bcast_axes' layout.
  c10::List<c10::optional<at::Tensor>> list;
  for (size_t i = 0; i < s.kept.size(); ++i) {
    list.push_back(s.kept[i] ? c10::nullopt
                             : c10::optional<at::Tensor>(s.advanced[i]->array().to(at::kLong).to(a.device())));
  }
  return NamedArray(at::index(t, list), s.out_axes);
}

NamedArray NamedArray::operator[](std::initializer_list<std::pair<AxisSelector, NamedIndex>> idx) const {
  return haliax::index(*this, std::vector<std::pair<AxisSelector, NamedIndex>>(idx));
}

NamedArray NamedArray::operator[](const std::vector<std::pair<AxisSelector, NamedIndex>>& idx) const {
  return haliax::index(*this, idx);
}

IndexUpdateRef NamedArray::at(std::initializer_list<std::pair<AxisSelector, NamedIndex>> idx) const {
  return IndexUpdateRef(*this, std::vector<std::pair<AxisSelector, NamedIndex>>(idx));
}

IndexUpdateRef NamedArray::at(const std::vector<std::pair<AxisSelector, NamedIndex>>& idx) const {
  return IndexUpdateRef(*this, idx);
}

// --- at ----------------------------------------------------------------------------------------------------

NamedArray IndexUpdateRef::get(IndexMode mode, const std::optional<at::Scalar>& fill_value) const {
  Selection s = plan(array_, index_);
  return gather(array_, s, mode, fill_value ? *fill_value : default_fill(array_.dtype()));
}

NamedArray IndexUpdateRef::scalar_update(const at::Scalar& value) const {
  return NamedArray(at::scalar_tensor(value, array_.array().options().requires_grad(false)), {});
}

namespace {

// Row-major linear positions into `a` of every selected element (in the selection's row-major order), with
// out-of-range ones clamped (kClip) or left out (kDrop; `keep` then says which elements remain).
at::Tensor linear_positions(const NamedArray& a, const Selection& s, IndexMode mode, at::Tensor* keep) {
  auto [pos, valid] = bounded_positions(a, s, mode == IndexMode::kClip ? IndexMode::kClip : IndexMode::kDrop);
  std::vector<int64_t> out_shape;
  for (const Axis& ax : s.out_axes) out_shape.push_back(ax.size);
  at::Tensor lin = at::zeros(out_shape, at::TensorOptions().dtype(at::kLong).device(a.device()));
  int64_t stride = 1;
  for (size_t i = pos.size(); i-- > 0;) {
    lin = lin + pos[i] * stride;
    stride *= a.axes()[i].size;
  }
  lin = lin.reshape({-1});
  if (valid.defined()) {
    *keep = valid.reshape({-1});
    lin = lin.masked_select(*keep);
  }
  return lin;
}

}  // namespace

NamedArray IndexUpdateRef::scatter(Op op, const NamedArray& update, IndexMode mode) const {
  const at::Tensor& x = array_.array();
  if ((op == Op::kDivide || op == Op::kPower) && !at::isFloatingType(x.scalar_type())) {
    value_error(std::string("at().") + (op == Op::kDivide ? "divide" : "power") +
                " needs a floating-point array, got " + array_.str());
  }
  Selection s = plan(array_, index_);
  // The update broadcasts by name to the selection's axes (no extra axes), as in Haliax.
  at::Tensor u = broadcast_to(update, s.out_axes, /*ensure_order=*/true, /*enforce_no_extra_axes=*/true)
                     .array()
                     .to(x.scalar_type())
                     .to(x.device())
                     .reshape({-1});
  at::Tensor keep;
  at::Tensor lin = linear_positions(array_, s, mode, &keep);
  if (keep.defined()) u = u.masked_select(keep);
  at::Tensor flat = x.reshape({-1});
  at::Tensor out;
  switch (op) {
    case Op::kSet: {
      // Keep only the last update to each position, so the winner (and its gradient) is deterministic: after a
      // stable sort, an update wins when the next one goes elsewhere.
      const int64_t m = lin.numel();
      at::Tensor wins = at::zeros({m}, lin.options().dtype(at::kBool));
      if (m > 0) {
        auto [sorted, perm] = at::sort(lin, /*stable=*/c10::optional<bool>(true), /*dim=*/0, /*descending=*/false);
        at::Tensor last_of_run =
            at::cat({sorted.slice(0, 0, m - 1).ne(sorted.slice(0, 1, m)), at::ones({1}, wins.options())});
        c10::List<c10::optional<at::Tensor>> at_perm;
        at_perm.push_back(perm);
        wins = at::index_put(wins, at_perm, last_of_run);
      }
      c10::List<c10::optional<at::Tensor>> list;
      list.push_back(lin.masked_select(wins));
      out = at::index_put(flat, list, u.masked_select(wins));
      break;
    }
    case Op::kAdd: {
      c10::List<c10::optional<at::Tensor>> list;
      list.push_back(lin);
      out = at::index_put(flat, list, u, /*accumulate=*/true);
      break;
    }
    case Op::kMultiply:
      out = flat.scatter_reduce(0, lin, u, "prod", /*include_self=*/true);
      break;
    case Op::kDivide:
      // JAX's divide: x / (the product of the updates at each position).
      out = flat / at::ones_like(flat).scatter_reduce(0, lin, u, "prod", /*include_self=*/true);
      break;
    case Op::kPower:
      // JAX's power: x ** (the product of the updates at each position).
      out = flat.pow(at::ones_like(flat).scatter_reduce(0, lin, u, "prod", /*include_self=*/true));
      break;
    case Op::kMin:
      out = flat.scatter_reduce(0, lin, u, "amin", /*include_self=*/true);
      break;
    case Op::kMax:
      out = flat.scatter_reduce(0, lin, u, "amax", /*include_self=*/true);
      break;
  }
  return NamedArray(out.reshape(x.sizes()), array_.axes());
}

NamedArray IndexUpdateRef::set(const NamedArray& update, IndexMode mode) const {
  return scatter(Op::kSet, update, mode);
}
NamedArray IndexUpdateRef::set(const at::Scalar& update, IndexMode mode) const {
  return scatter(Op::kSet, scalar_update(update), mode);
}
NamedArray IndexUpdateRef::add(const NamedArray& update, IndexMode mode) const {
  return scatter(Op::kAdd, update, mode);
}
NamedArray IndexUpdateRef::add(const at::Scalar& update, IndexMode mode) const {
  return scatter(Op::kAdd, scalar_update(update), mode);
}
NamedArray IndexUpdateRef::multiply(const NamedArray& update, IndexMode mode) const {
  return scatter(Op::kMultiply, update, mode);
}
NamedArray IndexUpdateRef::multiply(const at::Scalar& update, IndexMode mode) const {
  return scatter(Op::kMultiply, scalar_update(update), mode);
}
NamedArray IndexUpdateRef::divide(const NamedArray& update, IndexMode mode) const {
  return scatter(Op::kDivide, update, mode);
}
NamedArray IndexUpdateRef::divide(const at::Scalar& update, IndexMode mode) const {
  return scatter(Op::kDivide, scalar_update(update), mode);
}
NamedArray IndexUpdateRef::min(const NamedArray& update, IndexMode mode) const {
  return scatter(Op::kMin, update, mode);
}
NamedArray IndexUpdateRef::min(const at::Scalar& update, IndexMode mode) const {
  return scatter(Op::kMin, scalar_update(update), mode);
}
NamedArray IndexUpdateRef::max(const NamedArray& update, IndexMode mode) const {
  return scatter(Op::kMax, update, mode);
}
NamedArray IndexUpdateRef::max(const at::Scalar& update, IndexMode mode) const {
  return scatter(Op::kMax, scalar_update(update), mode);
}

NamedArray IndexUpdateRef::power(const NamedArray& update, IndexMode mode) const {
  return scatter(Op::kPower, update, mode);
}
NamedArray IndexUpdateRef::power(const at::Scalar& update, IndexMode mode) const {
  return scatter(Op::kPower, scalar_update(update), mode);
}

NamedArray IndexUpdateRef::apply(const std::function<NamedArray(const NamedArray&)>& func, IndexMode mode) const {
  const at::Tensor& x = array_.array();
  Selection s = plan(array_, index_);
  at::Tensor keep;
  at::Tensor lin = linear_positions(array_, s, mode, &keep);
  // Each distinct position gets func applied once per time it is selected (numpy's ufunc.at, JAX's apply).
  auto [positions, inverse, counts] = at::_unique2(lin, /*sorted=*/true, /*return_inverse=*/false,
                                                   /*return_counts=*/true);
  at::Tensor flat = x.reshape({-1});
  at::Tensor values = flat.index_select(0, positions);
  const Axis elements("__at_apply", values.numel());
  const int64_t most = counts.numel() > 0 ? counts.max().item<int64_t>() : 0;
  for (int64_t c = 1; c <= most; ++c) {
    NamedArray applied = func(NamedArray(values, {elements}));
    if (applied.axes() != AxisSpec{elements}) {
      value_error("at().apply: func must be elementwise, but it turned " + to_string(AxisSpec{elements}) + " into " +
                  to_string(applied.axes()));
    }
    values = at::where(counts >= c, applied.array().to(x.scalar_type()), values);
  }
  c10::List<c10::optional<at::Tensor>> list;
  list.push_back(positions);
  return NamedArray(at::index_put(flat, list, values).reshape(x.sizes()), array_.axes());
}

}  // namespace haliax
