// NamedArray: an at::Tensor whose every dimension has a name and a size.
//
// Invariant: axes().size() == array().dim(), axes()[i].size == array().size(i), names unique. Every op resolves
// names to positions and calls ATen, so autograd, dtypes and devices are libtorch's. Elementwise operators
// broadcast by name with Haliax's subset rule (one operand's axes must be a subset of the other's); scalars
// (C++ numbers and 0-d arrays) broadcast freely.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "haliax/axis.h"

namespace haliax {

class NamedIndex;
class IndexUpdateRef;

class NamedArray {
 public:
  NamedArray() = default;  // undefined; defined() is false
  // Checks that the axes match the tensor's shape and that names are unique.
  NamedArray(at::Tensor array, AxisSpec axes);

  const at::Tensor& array() const { return array_; }
  const AxisSpec& axes() const { return axes_; }
  bool defined() const { return array_.defined(); }
  int64_t ndim() const { return static_cast<int64_t>(axes_.size()); }
  int64_t numel() const { return haliax::axis_size(axes_); }
  // Name -> size.
  std::map<std::string, int64_t> shape() const;
  at::ScalarType dtype() const;
  at::Device device() const;

  // Position of the selected axis, or nullopt. Throws if the name is present with another size.
  std::optional<size_t> axis_index(const AxisSelector& axis) const { return index_of(axes_, axis); }
  bool has_axis(const AxisSelection& axes) const;
  int64_t axis_size(const AxisSelector& axis) const { return resolve_axis(axis).size; }
  Axis resolve_axis(const AxisSelector& axis) const;
  AxisSpec resolve_axes(const AxisSelection& axes) const;

  // For 0-d arrays: the 0-d tensor, and its value. Throws "Expected scalar, got N-dimensional array".
  at::Tensor scalar() const;
  double item() const;
  template <typename T>
  T item() const {
    return scalar().item<T>();
  }

  // Selection by name: x[{{"batch", 0}, {"pos", Slice(0, 8)}, {"vocab", ids}}] (see NamedIndex).
  NamedArray operator[](std::initializer_list<std::pair<AxisSelector, NamedIndex>> index) const;
  NamedArray operator[](const std::vector<std::pair<AxisSelector, NamedIndex>>& index) const;
  // Functional updates at a selection (JAX's `x.at[...]`): x.at({{"b", 1}, {"c", Slice(0, 2)}}).set(v) returns a
  // new array; see IndexUpdateRef.
  IndexUpdateRef at(std::initializer_list<std::pair<AxisSelector, NamedIndex>> index) const;
  IndexUpdateRef at(const std::vector<std::pair<AxisSelector, NamedIndex>>& index) const;

  // Autograd conveniences over the underlying tensor.
  bool requires_grad() const { return array_.requires_grad(); }
  NamedArray grad() const;  // undefined NamedArray if no gradient
  NamedArray detach() const { return NamedArray(array_.detach(), axes_); }

  // Member shortcuts for the most used free functions (see ops.h / core.h).
  NamedArray astype(at::ScalarType dtype) const;
  NamedArray rename(const std::vector<std::pair<AxisSelector, AxisSelector>>& renames) const;
  NamedArray rearrange(const AxisSelection& axes) const;
  NamedArray broadcast_axis(const AxisSpec& axes) const;

  std::string str() const;  // NamedArray(dtype=float32, axes={'batch': 2, 'embed': 4})

 private:
  at::Tensor array_;
  AxisSpec axes_;
};

// A python-style slice along one axis: [start, stop) with step; negative values count from the end.
struct Slice {
  std::optional<int64_t> start, stop;
  int64_t step = 1;
  Slice() = default;
  Slice(std::optional<int64_t> start_, std::optional<int64_t> stop_, int64_t step_ = 1)
      : start(start_), stop(stop_), step(step_) {}
};

// A dynamic slice (Haliax's `dslice` / `ds`): `size` elements from `start`, which may be a 0-d integer array
// known only at run time. It indexes like an integer array (an arange named after the axis), so it takes part in
// numpy's advanced-index placement as in Haliax. Reads past either end give 0 (`index` uses JAX's fill mode);
// writes there through `at` are dropped. Negative positions count from the end, as in JAX.
struct DSlice {
  std::variant<int64_t, NamedArray> start;
  int64_t size = 0;
  // Block `idx` of `size` elements: DSlice(idx * size, size) (Haliax's dslice.block / dblock).
  static DSlice block(int64_t idx, int64_t size) { return DSlice{idx * size, size}; }
};
inline DSlice dslice(int64_t start, int64_t size) { return DSlice{start, size}; }
inline DSlice dslice(int64_t start, const Axis& length) { return DSlice{start, length.size}; }
inline DSlice dslice(const NamedArray& start, int64_t size) { return DSlice{start, size}; }
inline DSlice dslice(const NamedArray& start, const Axis& length) { return DSlice{start, length.size}; }
inline DSlice ds(int64_t start, int64_t size) { return dslice(start, size); }
inline DSlice ds(int64_t start, const Axis& length) { return dslice(start, length); }
inline DSlice ds(const NamedArray& start, int64_t size) { return dslice(start, size); }
inline DSlice ds(const NamedArray& start, const Axis& length) { return dslice(start, length); }
inline DSlice dblock(int64_t idx, int64_t size) { return DSlice::block(idx, size); }

// What one axis is indexed by in operator[] and at(): an integer (drops the axis), a Slice (keeps it, resized),
// an integer NamedArray (its axes replace the indexed axis; several arrays broadcast against each other), or a
// DSlice.
class NamedIndex {
 public:
  NamedIndex(int64_t i) : v_(i) {}
  NamedIndex(int i) : v_(static_cast<int64_t>(i)) {}
  NamedIndex(Slice s) : v_(s) {}
  NamedIndex(NamedArray a) : v_(std::move(a)) {}
  NamedIndex(DSlice d) : v_(std::move(d)) {}
  const std::variant<int64_t, Slice, NamedArray, DSlice>& value() const { return v_; }

 private:
  std::variant<int64_t, Slice, NamedArray, DSlice> v_;
};

// How out-of-range positions (from index arrays or DSlices) are treated by `at`, as JAX's `mode`:
// kFill / kDrop (one mode, JAX's "fill" = "drop"): reads give the fill value, writes are dropped;
// kClip: positions are clamped into range. Negative positions count from the end first in both.
enum class IndexMode { kFill, kDrop, kClip };

// The result of x.at(selection) (Haliax's `_NamedIndexUpdateRef`). Every method returns a new array with x's
// axes; updates broadcast by name to the selection's axes (the axes x[selection] would have) and are cast to
// x's dtype. Differentiable in x and in the update. With repeated positions: add accumulates, multiply/divide/
// power combine all factors, min/max take the extreme of all (gradients split between ties, as JAX's), and set
// keeps the LAST update in row-major order of the selection (what JAX on CPU does; the others get no gradient).
class IndexUpdateRef {
 public:
  IndexUpdateRef(NamedArray array, std::vector<std::pair<AxisSelector, NamedIndex>> index)
      : array_(std::move(array)), index_(std::move(index)) {}

  // x[selection], but out-of-range positions are clamped (kClip, JAX's default for `get`) or read as
  // `fill_value` (kFill; default NaN for floats, the lowest value for integers, true for bool, as JAX's).
  NamedArray get(IndexMode mode = IndexMode::kClip, const std::optional<at::Scalar>& fill_value = std::nullopt) const;
  NamedArray set(const NamedArray& update, IndexMode mode = IndexMode::kDrop) const;
  NamedArray set(const at::Scalar& update, IndexMode mode = IndexMode::kDrop) const;
  NamedArray add(const NamedArray& update, IndexMode mode = IndexMode::kDrop) const;
  NamedArray add(const at::Scalar& update, IndexMode mode = IndexMode::kDrop) const;
  NamedArray multiply(const NamedArray& update, IndexMode mode = IndexMode::kDrop) const;
  NamedArray multiply(const at::Scalar& update, IndexMode mode = IndexMode::kDrop) const;
  NamedArray mul(const NamedArray& update, IndexMode mode = IndexMode::kDrop) const { return multiply(update, mode); }
  NamedArray mul(const at::Scalar& update, IndexMode mode = IndexMode::kDrop) const { return multiply(update, mode); }
  NamedArray divide(const NamedArray& update, IndexMode mode = IndexMode::kDrop) const;
  NamedArray divide(const at::Scalar& update, IndexMode mode = IndexMode::kDrop) const;
  // x ** (product of the updates at each position), as JAX's power.
  NamedArray power(const NamedArray& update, IndexMode mode = IndexMode::kDrop) const;
  NamedArray power(const at::Scalar& update, IndexMode mode = IndexMode::kDrop) const;
  // `func` (elementwise; it gets and must return a 1-d array of the selected values) applied at each selected
  // position, once per time the position is selected (JAX's apply, numpy's ufunc.at).
  NamedArray apply(const std::function<NamedArray(const NamedArray&)>& func, IndexMode mode = IndexMode::kDrop) const;
  NamedArray min(const NamedArray& update, IndexMode mode = IndexMode::kDrop) const;
  NamedArray min(const at::Scalar& update, IndexMode mode = IndexMode::kDrop) const;
  NamedArray max(const NamedArray& update, IndexMode mode = IndexMode::kDrop) const;
  NamedArray max(const at::Scalar& update, IndexMode mode = IndexMode::kDrop) const;

 private:
  enum class Op { kSet, kAdd, kMultiply, kDivide, kPower, kMin, kMax };
  NamedArray scatter(Op op, const NamedArray& update, IndexMode mode) const;
  NamedArray scalar_update(const at::Scalar& value) const;

  NamedArray array_;
  std::vector<std::pair<AxisSelector, NamedIndex>> index_;
};

std::ostream& operator<<(std::ostream& os, const NamedArray& a);
// numpy-style dtype names: float32, bfloat16, int64, bool, ...
std::string dtype_name(at::ScalarType t);

// Wrap a tensor with axes; each entry may be an Axis (size checked) or a name (size taken from the tensor).
NamedArray named(const at::Tensor& array, const AxisSelection& axes);

// --- broadcasting ------------------------------------------------------------------------------------------

// Haliax's rule for two operands: equal axes, one empty, or one a subset of the other (by name and size);
// the result keeps the larger operand's order. Throws "Cannot broadcast ... no subset relationship".
AxisSpec broadcast_order(const NamedArray& a, const NamedArray& b, bool require_subset = true);
// Broadcast `a` to `axes` (adding missing axes); with ensure_order the result's axes are ordered as `axes`
// (extra axes of `a` go last unless enforce_no_extra_axes, which forbids them).
NamedArray broadcast_to(const NamedArray& a, const AxisSpec& axes, bool ensure_order = true,
                        bool enforce_no_extra_axes = true);
// Make sure `a` has all of `axes` (it may have more): broadcast_to(a, axes, ensure_order, no extra check).
NamedArray broadcast_axis(const NamedArray& a, const AxisSpec& axes);
// Broadcast several arrays to a common set of axes (largest first); returns the arrays and the axes.
std::pair<std::vector<NamedArray>, AxisSpec> broadcast_arrays(const std::vector<NamedArray>& arrays,
                                                              bool require_subset = true, bool ensure_order = true);

// --- elementwise operators ---------------------------------------------------------------------------------

NamedArray operator+(const NamedArray& a, const NamedArray& b);
NamedArray operator-(const NamedArray& a, const NamedArray& b);
NamedArray operator*(const NamedArray& a, const NamedArray& b);
NamedArray operator/(const NamedArray& a, const NamedArray& b);
NamedArray operator+(const NamedArray& a, const at::Scalar& b);
NamedArray operator-(const NamedArray& a, const at::Scalar& b);
NamedArray operator*(const NamedArray& a, const at::Scalar& b);
NamedArray operator/(const NamedArray& a, const at::Scalar& b);
NamedArray operator+(const at::Scalar& a, const NamedArray& b);
NamedArray operator-(const at::Scalar& a, const NamedArray& b);
NamedArray operator*(const at::Scalar& a, const NamedArray& b);
NamedArray operator/(const at::Scalar& a, const NamedArray& b);
NamedArray operator-(const NamedArray& a);
// Comparisons give bool arrays. (== and != are the functions equal()/not_equal(), so that NamedArray keeps
// value semantics in containers and tests.)
NamedArray operator<(const NamedArray& a, const NamedArray& b);
NamedArray operator<=(const NamedArray& a, const NamedArray& b);
NamedArray operator>(const NamedArray& a, const NamedArray& b);
NamedArray operator>=(const NamedArray& a, const NamedArray& b);
NamedArray operator<(const NamedArray& a, const at::Scalar& b);
NamedArray operator<=(const NamedArray& a, const at::Scalar& b);
NamedArray operator>(const NamedArray& a, const at::Scalar& b);
NamedArray operator>=(const NamedArray& a, const at::Scalar& b);
// Logical/bitwise (bool or integer arrays).
NamedArray operator&(const NamedArray& a, const NamedArray& b);
NamedArray operator|(const NamedArray& a, const NamedArray& b);
NamedArray operator^(const NamedArray& a, const NamedArray& b);
NamedArray operator~(const NamedArray& a);

}  // namespace haliax
