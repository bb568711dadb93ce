#include "haliax/shape.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <string>

#include "haliax/core.h"
#include "haliax/error.h"

namespace haliax {

namespace {

std::vector<int64_t> sizes_of(const AxisSpec& axes) {
  std::vector<int64_t> out;
  for (const Axis& a : axes) out.push_back(a.size);
  return out;
}

int64_t position(const NamedArray& a, const AxisSelector& axis, const char* message_start) {
  auto i = a.axis_index(axis);
  if (!i) value_error(std::string(message_start) + " " + axis.name() + " not found in " + a.str());
  return static_cast<int64_t>(*i);
}

// Haliax prints an Axis in this form in pad_left's message: "pos(3)".
std::string short_name(const Axis& axis) { return axis.name + "(" + std::to_string(axis.size) + ")"; }

}  // namespace

// --- creation ----------------------------------------------------------------------------------------------

NamedArray arange(const AxisSpec& axes, const at::Scalar& start, const at::Scalar& step,
                  std::optional<at::ScalarType> dtype) {
  // JAX: iota(dtype or result_type(start)) * step + start; a float start or step makes it float64.
  at::ScalarType t = dtype.value_or(start.isFloatingPoint() || step.isFloatingPoint() ? at::kDouble : at::kLong);
  at::Tensor iota = at::arange(axis_size(axes), at::TensorOptions().dtype(at::kLong)).to(t);
  at::Tensor out = (iota * step + start).to(t);
  return NamedArray(out.reshape(sizes_of(axes)), axes);
}

// --- repetition --------------------------------------------------------------------------------------------

NamedArray tile(const NamedArray& a, const std::vector<std::pair<AxisSelector, int64_t>>& reps) {
  AxisSpec new_axes;
  std::vector<int64_t> dim_reps(a.axes().size(), 1);
  for (const auto& [axis, n] : reps) {
    if (n < 0) value_error("tile: negative repetitions " + std::to_string(n) + " for axis " + axis.name());
    auto i = index_of(a.axes(), axis.name());
    if (i)
      dim_reps[*i] = n;
    else
      new_axes.emplace_back(axis.name(), n);
  }
  std::vector<int64_t> all_reps = sizes_of(new_axes);
  all_reps.insert(all_reps.end(), dim_reps.begin(), dim_reps.end());
  // at::tile puts new leading dims of size 1 in front and repeats them `reps` times: the new axes.
  at::Tensor t = at::tile(a.array(), all_reps);
  AxisSpec out = new_axes;
  for (size_t i = 0; i < a.axes().size(); ++i) out.push_back(a.axes()[i].resize(a.axes()[i].size * dim_reps[i]));
  return NamedArray(t, out);
}

NamedArray repeat(const NamedArray& a, int64_t repeats, const AxisSelector& axis) {
  auto i = a.axis_index(axis);
  if (!i) value_error("Axis " + axis.name() + " not found in array " + a.str());
  if (repeats < 0) value_error("repeat: negative repeats " + std::to_string(repeats));
  AxisSpec out = a.axes();
  out[*i] = out[*i].resize(out[*i].size * repeats);
  return NamedArray(at::repeat_interleave(a.array(), repeats, static_cast<int64_t>(*i)), out);
}

// --- triangles ---------------------------------------------------------------------------------------------

NamedArray tril(const NamedArray& a, const AxisSelector& axis1, const AxisSelector& axis2, int64_t k) {
  NamedArray r = rearrange(a, AxisSelection{kEllipsis, axis1, axis2});
  return NamedArray(at::tril(r.array(), k), r.axes());
}
NamedArray triu(const NamedArray& a, const AxisSelector& axis1, const AxisSelector& axis2, int64_t k) {
  NamedArray r = rearrange(a, AxisSelection{kEllipsis, axis1, axis2});
  return NamedArray(at::triu(r.array(), k), r.axes());
}

// --- padding -----------------------------------------------------------------------------------------------

namespace {

// (before, after) for each axis of `a`, in its order.
std::vector<std::pair<int64_t, int64_t>> widths_for(const NamedArray& a, const PadWidths& pad_width) {
  std::vector<std::pair<int64_t, int64_t>> out(a.axes().size(), {0, 0});
  for (const auto& [axis, lr] : pad_width) {
    if (lr.first < 0 || lr.second < 0) value_error("index can't contain negative values");
    auto i = index_of(a.axes(), axis.name());
    if (i) out[*i] = lr;
  }
  return out;
}

// Source index in [0, n) of padded position p (which runs from -before to n + after - 1), numpy's rules.
int64_t source_index(int64_t p, int64_t n, PadMode mode) {
  auto mod = [](int64_t x, int64_t m) { return ((x % m) + m) % m; };
  switch (mode) {
    case PadMode::edge:
      return std::clamp<int64_t>(p, 0, n - 1);
    case PadMode::wrap:
      return mod(p, n);
    case PadMode::symmetric: {
      int64_t q = mod(p, 2 * n);
      return q < n ? q : 2 * n - 1 - q;
    }
    case PadMode::reflect: {
      if (n == 1) return 0;
      int64_t q = mod(p, 2 * (n - 1));
      return q < n ? q : 2 * (n - 1) - q;
    }
    case PadMode::constant:
      break;
  }
  return p;
}

}  // namespace

NamedArray pad(const NamedArray& a, const PadWidths& pad_width, const at::Scalar& constant_value) {
  auto widths = widths_for(a, pad_width);
  // constant_pad_nd takes (before, after) pairs from the last dimension backwards.
  std::vector<int64_t> flat;
  AxisSpec out = a.axes();
  for (size_t i = widths.size(); i-- > 0;) {
    flat.push_back(widths[i].first);
    flat.push_back(widths[i].second);
    out[i] = out[i].resize(out[i].size + widths[i].first + widths[i].second);
  }
  if (flat.empty()) return a;
  return NamedArray(at::constant_pad_nd(a.array(), flat, constant_value), out);
}

NamedArray pad(const NamedArray& a, const PadWidths& pad_width, PadMode mode) {
  if (mode == PadMode::constant) return pad(a, pad_width, 0);
  auto widths = widths_for(a, pad_width);
  at::Tensor t = a.array();
  AxisSpec out = a.axes();
  for (size_t i = 0; i < widths.size(); ++i) {
    auto [before, after] = widths[i];
    if (before == 0 && after == 0) continue;
    int64_t n = out[i].size;
    if (n == 0) value_error("can't extend empty axis " + out[i].name + " using modes other than 'constant'");
    // A gather by computed source positions: one index_select per padded axis, differentiable.
    std::vector<int64_t> src;
    for (int64_t p = -before; p < n + after; ++p) src.push_back(source_index(p, n, mode));
    t = at::index_select(t, static_cast<int64_t>(i), at::tensor(src, at::TensorOptions().dtype(at::kLong)));
    out[i] = out[i].resize(n + before + after);
  }
  return NamedArray(t, out);
}

NamedArray pad_left(const NamedArray& a, const Axis& axis, const Axis& new_axis, const at::Scalar& value) {
  int64_t amount = new_axis.size - axis.size;
  if (amount < 0) value_error("Cannot pad " + short_name(axis) + " to " + short_name(new_axis));
  auto i = a.axis_index(axis);
  if (!i) value_error("Axis " + short_name(axis) + " not found in array. Available axes: " + to_string(a.axes()));
  std::vector<int64_t> flat(2 * a.axes().size(), 0);
  flat[2 * (a.axes().size() - 1 - *i)] = amount;  // constant_pad_nd counts from the last dimension
  AxisSpec out = a.axes();
  out[*i] = new_axis;
  return NamedArray(at::constant_pad_nd(a.array(), flat, value), out);
}

// --- reordering --------------------------------------------------------------------------------------------

NamedArray roll(const NamedArray& a, int64_t shift, const AxisSelection& axis) {
  return roll(a, std::vector<int64_t>{shift}, axis);
}

NamedArray roll(const NamedArray& a, const std::vector<int64_t>& shift, const AxisSelection& axis) {
  std::vector<int64_t> dims;
  for (const AxisSelector& s : axis) dims.push_back(position(a, s, "axis"));
  if (dims.empty()) return a;
  std::vector<int64_t> shifts = shift;
  // numpy broadcasts the shifts against the axes.
  if (shifts.size() == 1 && dims.size() > 1) shifts.assign(dims.size(), shifts[0]);
  if (dims.size() == 1 && shifts.size() > 1) dims.assign(shifts.size(), dims[0]);
  if (shifts.size() != dims.size()) {
    value_error("roll: " + std::to_string(shifts.size()) + " shifts for " + std::to_string(dims.size()) + " axes " +
                axis.str());
  }
  return NamedArray(at::roll(a.array(), shifts, dims), a.axes());
}

NamedArray roll(const NamedArray& a, const NamedArray& shift, const AxisSelection& axis) {
  if (shift.ndim() != 0) value_error("shift must be a scalar, got " + shift.str());
  if (!at::isIntegralType(shift.dtype(), false)) value_error("shift must be an integer, got " + shift.str());
  return roll(a, shift.item<int64_t>(), axis);
}

NamedArray flip(const NamedArray& a, const AxisSelection& axis) {
  std::vector<int64_t> dims;
  for (const AxisSelector& s : axis) dims.push_back(position(a, s, "axis"));
  if (dims.empty()) return a;
  return NamedArray(at::flip(a.array(), dims), a.axes());
}

std::pair<NamedArray, NamedArray> top_k(const NamedArray& a, const AxisSelector& axis, int64_t k,
                                        const std::optional<AxisSelector>& new_axis) {
  int64_t pos = position(a, axis, "Axis");
  const Axis& old = a.axes()[pos];
  if (k < 0 || k > old.size) {
    std::string shape;
    for (const Axis& ax : a.axes()) shape += (shape.empty() ? "" : ", ") + std::to_string(ax.size);
    value_error("k argument to top_k must be no larger than size along axis; got k=" + std::to_string(k) +
                " with shape=[" + shape + "] and axis=" + std::to_string(pos));
  }
  Axis out_axis = old.resize(k);
  if (new_axis) {
    if (new_axis->size() && *new_axis->size() != k) {
      value_error("top_k: new axis " + new_axis->str() + " must have size k=" + std::to_string(k));
    }
    out_axis = Axis(new_axis->name(), k);
  }
  // A stable descending sort, so equal values come out lowest index first (as lax.top_k orders them).
  auto [values, indices] = at::sort(a.array(), /*stable=*/true, pos, /*descending=*/true);
  AxisSpec out = a.axes();
  out[pos] = out_axis;
  check_unique(out);
  return {NamedArray(values.narrow(pos, 0, k), out), NamedArray(indices.narrow(pos, 0, k), out)};
}

}  // namespace haliax
