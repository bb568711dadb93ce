// Elementwise math, reductions and contractions over named axes.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "haliax/core.h"
#include "haliax/named_array.h"

namespace haliax {

// --- elementwise: unary ------------------------------------------------------------------------------------

NamedArray abs(const NamedArray& a);
NamedArray exp(const NamedArray& a);
NamedArray expm1(const NamedArray& a);
NamedArray log(const NamedArray& a);
NamedArray log1p(const NamedArray& a);
NamedArray log2(const NamedArray& a);
NamedArray log10(const NamedArray& a);
NamedArray sqrt(const NamedArray& a);
NamedArray rsqrt(const NamedArray& a);
NamedArray square(const NamedArray& a);
NamedArray reciprocal(const NamedArray& a);
NamedArray sin(const NamedArray& a);
NamedArray cos(const NamedArray& a);
NamedArray tan(const NamedArray& a);
NamedArray tanh(const NamedArray& a);
NamedArray sinh(const NamedArray& a);
NamedArray cosh(const NamedArray& a);
NamedArray arcsin(const NamedArray& a);
NamedArray arccos(const NamedArray& a);
NamedArray arctan(const NamedArray& a);
NamedArray erf(const NamedArray& a);
NamedArray sign(const NamedArray& a);
NamedArray floor(const NamedArray& a);
NamedArray ceil(const NamedArray& a);
NamedArray round(const NamedArray& a);
NamedArray trunc(const NamedArray& a);
NamedArray negative(const NamedArray& a);
NamedArray isnan(const NamedArray& a);
NamedArray isinf(const NamedArray& a);
NamedArray isfinite(const NamedArray& a);
NamedArray logical_not(const NamedArray& a);
// Clamp into [lo, hi]; either scalar bound may be absent. Named bounds broadcast with `a` as in Haliax (all three
// together: each must be a subset of the largest), so a bound may carry axes `a` lacks.
NamedArray clip(const NamedArray& a, std::optional<at::Scalar> lo, std::optional<at::Scalar> hi);
NamedArray clip(const NamedArray& a, const NamedArray& lo, const NamedArray& hi);
NamedArray clip(const NamedArray& a, const NamedArray& lo, const at::Scalar& hi);
NamedArray clip(const NamedArray& a, const at::Scalar& lo, const NamedArray& hi);

// --- elementwise: binary (broadcast by name) ---------------------------------------------------------------

NamedArray add(const NamedArray& a, const NamedArray& b);
NamedArray subtract(const NamedArray& a, const NamedArray& b);
NamedArray multiply(const NamedArray& a, const NamedArray& b);
NamedArray divide(const NamedArray& a, const NamedArray& b);
NamedArray floor_divide(const NamedArray& a, const NamedArray& b);
NamedArray mod(const NamedArray& a, const NamedArray& b);
NamedArray power(const NamedArray& a, const NamedArray& b);
NamedArray power(const NamedArray& a, const at::Scalar& exponent);
NamedArray maximum(const NamedArray& a, const NamedArray& b);
NamedArray minimum(const NamedArray& a, const NamedArray& b);
NamedArray arctan2(const NamedArray& a, const NamedArray& b);
NamedArray equal(const NamedArray& a, const NamedArray& b);
NamedArray not_equal(const NamedArray& a, const NamedArray& b);
NamedArray equal(const NamedArray& a, const at::Scalar& b);
NamedArray not_equal(const NamedArray& a, const at::Scalar& b);
NamedArray logical_and(const NamedArray& a, const NamedArray& b);
NamedArray logical_or(const NamedArray& a, const NamedArray& b);
NamedArray logical_xor(const NamedArray& a, const NamedArray& b);
// cond ? x : y, all three broadcast by name (any may be a subset of the others).
NamedArray where(const NamedArray& cond, const NamedArray& x, const NamedArray& y);
NamedArray where(const NamedArray& cond, const NamedArray& x, const at::Scalar& y);
NamedArray where(const NamedArray& cond, const at::Scalar& x, const NamedArray& y);
// Elementwise isclose / allclose with numpy's defaults.
NamedArray isclose(const NamedArray& a, const NamedArray& b, double rtol = 1e-5, double atol = 1e-8);
bool allclose(const NamedArray& a, const NamedArray& b, double rtol = 1e-5, double atol = 1e-8);
// True if both have the same axes (same order) and equal elements.
bool array_equal(const NamedArray& a, const NamedArray& b);

// --- reductions ----------------------------------------------------------------------------------------------
// Over all axes (0-d result), one axis, or several. `where` (bool, broadcast to the input's axes) masks out
// elements: they count as the reduction's identity (sum 0, prod 1, ...) and are not counted in mean/var/std.
// max and min have no identity: as in Haliax (jnp.max), a `where` mask alone always throws "reduction operation
// max does not have an identity, so to use a where mask one has to specify 'initial'". The overloads with
// `initial` (which Haliax's wrappers do not expose; jnp's `initial`) give max(initial, max over unmasked).

#define HALIAX_DECLARE_REDUCTION(name)                             \
  NamedArray name(const NamedArray& a);                            \
  NamedArray name(const NamedArray& a, const AxisSelection& axis); \
  NamedArray name(const NamedArray& a, const AxisSelection& axis, const NamedArray& where);
HALIAX_DECLARE_REDUCTION(sum)
HALIAX_DECLARE_REDUCTION(mean)
HALIAX_DECLARE_REDUCTION(max)
HALIAX_DECLARE_REDUCTION(min)
HALIAX_DECLARE_REDUCTION(prod)
HALIAX_DECLARE_REDUCTION(logsumexp)
HALIAX_DECLARE_REDUCTION(all)
HALIAX_DECLARE_REDUCTION(any)
// NaN-ignoring versions (jnp.nan*): NaNs count as the identity and are not counted; an all-NaN slice gives NaN
// for nanmean/nanmax/nanmin/nanvar/nanstd, 0 for nansum and 1 for nanprod. NaN positions get zero gradient.
HALIAX_DECLARE_REDUCTION(nansum)
HALIAX_DECLARE_REDUCTION(nanmean)
HALIAX_DECLARE_REDUCTION(nanmax)
HALIAX_DECLARE_REDUCTION(nanmin)
HALIAX_DECLARE_REDUCTION(nanprod)
#undef HALIAX_DECLARE_REDUCTION
NamedArray max(const NamedArray& a, const AxisSelection& axis, const NamedArray& where, const at::Scalar& initial);
NamedArray min(const NamedArray& a, const AxisSelection& axis, const NamedArray& where, const at::Scalar& initial);
NamedArray nanmax(const NamedArray& a, const AxisSelection& axis, const NamedArray& where, const at::Scalar& initial);
NamedArray nanmin(const NamedArray& a, const AxisSelection& axis, const NamedArray& where, const at::Scalar& initial);
// Variance and standard deviation; ddof = 0 as in numpy/JAX. Where fewer than ddof + 1 elements count, NaN.
NamedArray var(const NamedArray& a, int64_t ddof = 0);
NamedArray var(const NamedArray& a, const AxisSelection& axis, int64_t ddof = 0);
NamedArray var(const NamedArray& a, const AxisSelection& axis, const NamedArray& where, int64_t ddof = 0);
NamedArray std(const NamedArray& a, int64_t ddof = 0);
NamedArray std(const NamedArray& a, const AxisSelection& axis, int64_t ddof = 0);
NamedArray std(const NamedArray& a, const AxisSelection& axis, const NamedArray& where, int64_t ddof = 0);
NamedArray nanvar(const NamedArray& a, int64_t ddof = 0);
NamedArray nanvar(const NamedArray& a, const AxisSelection& axis, int64_t ddof = 0);
NamedArray nanvar(const NamedArray& a, const AxisSelection& axis, const NamedArray& where, int64_t ddof = 0);
NamedArray nanstd(const NamedArray& a, int64_t ddof = 0);
NamedArray nanstd(const NamedArray& a, const AxisSelection& axis, int64_t ddof = 0);
NamedArray nanstd(const NamedArray& a, const AxisSelection& axis, const NamedArray& where, int64_t ddof = 0);
// Index of the max/min along one axis (int64), or over the flattened array.
NamedArray argmax(const NamedArray& a);
NamedArray argmax(const NamedArray& a, const AxisSelector& axis);
NamedArray argmin(const NamedArray& a);
NamedArray argmin(const NamedArray& a, const AxisSelector& axis);
// The same ignoring NaNs; -1 where the slice is all NaN (JAX's rule; numpy raises).
NamedArray nanargmax(const NamedArray& a);
NamedArray nanargmax(const NamedArray& a, const AxisSelector& axis);
NamedArray nanargmin(const NamedArray& a);
NamedArray nanargmin(const NamedArray& a, const AxisSelector& axis);
// Scans along one axis (the axis is kept). The result dtype is `dtype`, else the input's (as JAX: int32 stays
// int32, where ATen would widen to int64), with bool counted as int64. nancumsum/nancumprod treat NaN as 0/1.
NamedArray cumsum(const NamedArray& a, const AxisSelector& axis, std::optional<at::ScalarType> dtype = std::nullopt);
NamedArray cumprod(const NamedArray& a, const AxisSelector& axis, std::optional<at::ScalarType> dtype = std::nullopt);
NamedArray nancumsum(const NamedArray& a, const AxisSelector& axis, std::optional<at::ScalarType> dtype = std::nullopt);
NamedArray nancumprod(const NamedArray& a, const AxisSelector& axis,
                      std::optional<at::ScalarType> dtype = std::nullopt);
// Ascending along one axis. Always stable (Haliax's argsort has stable=False by default, which only permits
// any order of ties); no descending option, as in Haliax (flip the result: shape.h).
NamedArray sort(const NamedArray& a, const AxisSelector& axis);
NamedArray argsort(const NamedArray& a, const AxisSelector& axis);

// --- contraction -------------------------------------------------------------------------------------------

// Contract all axes of all operands (a 0-d result): dot({a, b}, haliax::all_axes).
struct AllAxes {};
inline constexpr AllAxes all_axes{};

// Contract `axis` (one or several names); axes in several operands that are not contracted are batched; the
// rest are kept. Output axes are in order of first appearance, or as `out_axes` (which may hold "...").
// An empty `axis` is an outer product. Throws "Axis x has multiple sizes: a and b" for inconsistent operands.
// `out_axes` may be a braced list: dot(x, w, Embed, {Hidden, "..."}). (No std::optional overload: it would make
// a single name or Axis as out_axes ambiguous.)
NamedArray dot(const NamedArray& a, const NamedArray& b, const AxisSelection& axis);
NamedArray dot(const NamedArray& a, const NamedArray& b, const AxisSelection& axis, const AxisSelection& out_axes);
NamedArray dot(const std::vector<NamedArray>& arrays, const AxisSelection& axis);
NamedArray dot(const std::vector<NamedArray>& arrays, const AxisSelection& axis, const AxisSelection& out_axes);

NamedArray dot(const NamedArray& a, const NamedArray& b, AllAxes);
NamedArray dot(const std::vector<NamedArray>& arrays, AllAxes);

// Haliax's named einsum:
//   "{H W D} -> H W"      unordered: names on the lhs not on the rhs are contracted, the rest kept;
//   "{D} -> "             contract D, keep everything else;
//   "-> H W"              keep only H and W;
//   "h w d, d w h -> h w" positional, one lhs per operand.
// `aliases` map names in the equation to axes or names of the arrays: einsum("{x y} -> y", {a, b}, {{"x", H}}).
NamedArray einsum(const std::string& equation, const std::vector<NamedArray>& arrays, const Bindings& aliases = {});

// Apply an ATen binary function with Haliax broadcasting: the hook for wrapping ops haliax does not cover.
template <typename F>
NamedArray elementwise_binary(const NamedArray& a, const NamedArray& b, F&& f) {
  if (a.axes() == b.axes()) return NamedArray(f(a.array(), b.array()), a.axes());
  AxisSpec axes = broadcast_order(a, b);
  return NamedArray(f(broadcast_to(a, axes).array(), broadcast_to(b, axes).array()), axes);
}

}  // namespace haliax
