// Creation, shape manipulation and indexing of NamedArrays (Haliax's core.py and __init__.py).
#pragma once

#include <c10/core/TensorOptions.h>

#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "haliax/named_array.h"
#include "haliax/ops/rearrange.h"

namespace haliax {

// --- creation ----------------------------------------------------------------------------------------------

NamedArray zeros(const AxisSpec& axes, at::TensorOptions options = at::kFloat);
NamedArray ones(const AxisSpec& axes, at::TensorOptions options = at::kFloat);
NamedArray full(const AxisSpec& axes, const at::Scalar& value, at::TensorOptions options = at::kFloat);
// The same axes (and device), in `dtype` if given (Haliax's `dtype` argument), else in a's dtype.
NamedArray zeros_like(const NamedArray& a, std::optional<at::ScalarType> dtype = std::nullopt);
NamedArray ones_like(const NamedArray& a, std::optional<at::ScalarType> dtype = std::nullopt);
NamedArray full_like(const NamedArray& a, const at::Scalar& value, std::optional<at::ScalarType> dtype = std::nullopt);
// start, start + step, ... along `axis` (int64 unless `dtype` says otherwise).
NamedArray arange(const Axis& axis, int64_t start = 0, int64_t step = 1, at::ScalarType dtype = at::kLong);
NamedArray linspace(const Axis& axis, double start, double stop, at::ScalarType dtype = at::kFloat);

// --- dtype and names ---------------------------------------------------------------------------------------

NamedArray astype(const NamedArray& a, at::ScalarType dtype);
// Rename axes: {{"pos", "key_position"}, {Embed, Hidden}}. A target Axis must have the same size.
NamedArray rename(const NamedArray& a, const std::vector<std::pair<AxisSelector, AxisSelector>>& renames);

// --- reshaping (rearrange: haliax/ops/rearrange.h) -------------------------------------------------------

// Merge `old_axes` into one axis (inserted at the first old axis's position); sizes must multiply out.
NamedArray flatten_axes(const NamedArray& a, const AxisSelection& old_axes, const AxisSelector& new_axis);
// Split `axis` into `new_axes` (whose sizes multiply to its size), in place.
NamedArray unflatten_axis(const NamedArray& a, const AxisSelector& axis, const AxisSpec& new_axes);
// All axes into one.
NamedArray flatten(const NamedArray& a, const AxisSelector& new_axis);

// --- splitting and joining ---------------------------------------------------------------------------------

// Split `axis` into consecutive pieces, one per new axis (sizes must sum to the axis size).
std::vector<NamedArray> split(const NamedArray& a, const AxisSelector& axis, const AxisSpec& new_axes);
// Join along an existing axis; arrays are rearranged to the first one's order. A string `axis` takes the
// summed size; an Axis must match it.
NamedArray concatenate(const AxisSelector& axis, const std::vector<NamedArray>& arrays);
// Join along a new leading axis (a string axis takes the number of arrays as its size).
NamedArray stack(const AxisSelector& axis, const std::vector<NamedArray>& arrays);
// One array per position along `axis`, which is removed. One ATen op (its backward is a single stack).
std::vector<NamedArray> unbind(const NamedArray& a, const AxisSelector& axis);

// --- indexing ----------------------------------------------------------------------------------------------

// `length` elements of `axis` from `start`, keeping the axis (resized) or replacing it with `new_axis`.
NamedArray slice(const NamedArray& a, const AxisSelector& axis, int64_t start, int64_t length);
NamedArray slice(const NamedArray& a, const AxisSelector& axis, int64_t start, const Axis& new_axis);
// Runtime start: a 0-d integer array (negative counts from the end, then clamped to stay in bounds, like
// jax.lax.dynamic_slice). Differs from Haliax: an int start out of bounds raises rather than clamps.
NamedArray slice(const NamedArray& a, const AxisSelector& axis, const NamedArray& start, int64_t length);
// Select one position (the axis disappears) or gather by an integer NamedArray, whose axes replace `axis`
// (axes shared between the index and the array are batched over, as in Haliax).
NamedArray take(const NamedArray& a, const AxisSelector& axis, int64_t index);
NamedArray take(const NamedArray& a, const AxisSelector& axis, const NamedArray& index);

// A start offset for updated_slice: an integer, or an integer array (0-d, or with axes of `a` to give each
// row its own start).
using SliceStart = std::variant<int64_t, NamedArray>;
// `a` with the block starting at `start` (per axis; unnamed axes start at 0) replaced by `update`, whose axes
// must be axes of `a` (sizes may be smaller; an axis the update lacks is written whole, broadcast; a 0-d
// update writes one element of a 1-d array). Negative starts count from the end, then starts are clamped so
// the block fits, as jax's dynamic_update_slice (an int start that overflows an axis the update has is an error, as in
// Haliax). Starts with axes are mapped over those axes (Haliax vmaps), which moves them to the front of the result, the
// last-seen outermost. Functional: returns a new array, differentiable in both `a` and `update`. Differs from Haliax:
// the update is cast to a's dtype (JAX requires equal dtypes).
NamedArray updated_slice(const NamedArray& a, const std::vector<std::pair<AxisSelector, SliceStart>>& start,
                         const NamedArray& update);

// Selection by name with integers, Slices, integer NamedArrays and DSlices (what operator[] calls), with
// numpy's placement of advanced-index axes as Haliax computes it. With a DSlice, positions past either end
// read 0 (JAX's fill mode, as Haliax). Differs from Haliax: without a DSlice, out-of-range index-array
// positions raise (ATen's IndexError) where JAX clamps; use x.at(...).get() for JAX's clamping.
NamedArray index(const NamedArray& a, const std::vector<std::pair<AxisSelector, NamedIndex>>& index);

}  // namespace haliax
