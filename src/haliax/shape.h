// Construction and shape ops by axis name: Haliax's tile, repeat, tril/triu, pad, roll, top_k, and the
// arange over several axes (haliax/__init__.py, ops.py, core.py, specialized_fns.py).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "haliax/named_array.h"

namespace haliax {

// --- creation ----------------------------------------------------------------------------------------------

// Haliax's arange((X, Y), start=, step=, dtype=): start + step * i over the flattened axes, reshaped. Without
// `dtype`: float64 if start or step is a floating number, else int64 (JAX with x64).
NamedArray arange(const AxisSpec& axes, const at::Scalar& start = 0, const at::Scalar& step = 1,
                  std::optional<at::ScalarType> dtype = std::nullopt);

// --- repetition --------------------------------------------------------------------------------------------

// tile(a, {{"pos", 2}, {"new", 3}}): an existing axis grows `reps` times (whole copies one after another);
// an axis the array lacks is added in front with size `reps` (an Axis key's size is ignored, as in Haliax).
NamedArray tile(const NamedArray& a, const std::vector<std::pair<AxisSelector, int64_t>>& reps);
// Each element repeated `repeats` times along `axis` (jnp.repeat); the axis keeps its name.
NamedArray repeat(const NamedArray& a, int64_t repeats, const AxisSelector& axis);

// --- triangles ---------------------------------------------------------------------------------------------

// Lower/upper triangle over (axis1, axis2), keeping diagonals up to/from `k`. As in Haliax the result's axes are
// rearranged to (..., axis1, axis2).
NamedArray tril(const NamedArray& a, const AxisSelector& axis1, const AxisSelector& axis2, int64_t k = 0);
NamedArray triu(const NamedArray& a, const AxisSelector& axis1, const AxisSelector& axis2, int64_t k = 0);

// --- padding -----------------------------------------------------------------------------------------------

// (before, after) per axis; axes the array lacks are ignored, as in Haliax.
using PadWidths = std::vector<std::pair<AxisSelector, std::pair<int64_t, int64_t>>>;
// numpy's pad modes: edge repeats the border value, reflect mirrors without it, symmetric with it, wrap is
// periodic.
enum class PadMode { constant, edge, reflect, symmetric, wrap };
// pad(x, {{"pos", {1, 2}}}, value): constant padding. Padded axes keep their names and grow.
NamedArray pad(const NamedArray& a, const PadWidths& pad_width, const at::Scalar& constant_value = 0);
// Other modes. Differs from Haliax, whose pad always forwards constant_values to jnp.pad and so raises for
// every mode but constant; here they work as numpy's.
NamedArray pad(const NamedArray& a, const PadWidths& pad_width, PadMode mode);
// Left-pad `axis` to `new_axis`'s size with `value`; the axis becomes `new_axis`.
NamedArray pad_left(const NamedArray& a, const Axis& axis, const Axis& new_axis, const at::Scalar& value = 0);

// --- reordering --------------------------------------------------------------------------------------------

// Roll elements along each of `axis` (np.roll): one shift for all, or one per axis (a length-1 list is
// broadcast against the other, as numpy does).
NamedArray roll(const NamedArray& a, int64_t shift, const AxisSelection& axis);
NamedArray roll(const NamedArray& a, const std::vector<int64_t>& shift, const AxisSelection& axis);
// A 0-d integer array as the shift (read on the host: not traced, unlike JAX).
NamedArray roll(const NamedArray& a, const NamedArray& shift, const AxisSelection& axis);
// Reverse the order along each of `axis` (jnp.flip; Haliax has no wrapper for it).
NamedArray flip(const NamedArray& a, const AxisSelection& axis);

// The k largest along `axis`, in descending order, and their indices (int64; JAX gives int32). The axis is
// replaced by `new_axis` (a name gets size k) or, without one, resized to k. Ties keep the lower index first.
std::pair<NamedArray, NamedArray> top_k(const NamedArray& a, const AxisSelector& axis, int64_t k,
                                        const std::optional<AxisSelector>& new_axis = std::nullopt);

}  // namespace haliax
