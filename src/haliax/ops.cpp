#include "haliax/ops.h"

#include <ATen/ATen.h>
#include <ATen/ScalarOps.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <string>

#include "haliax/error.h"
#include "haliax/ops/contract.h"
#include "haliax/partitioning.h"

namespace haliax {

// --- elementwise: unary ------------------------------------------------------------------------------------

#define HALIAX_UNARY(name, expr) \
  NamedArray name(const NamedArray& a) { return NamedArray(expr(a.array()), a.axes()); }
HALIAX_UNARY(abs, at::abs)
HALIAX_UNARY(exp, at::exp)
HALIAX_UNARY(expm1, at::expm1)
HALIAX_UNARY(log, at::log)
HALIAX_UNARY(log1p, at::log1p)
HALIAX_UNARY(log2, at::log2)
HALIAX_UNARY(log10, at::log10)
HALIAX_UNARY(sqrt, at::sqrt)
HALIAX_UNARY(rsqrt, at::rsqrt)
HALIAX_UNARY(square, at::square)
HALIAX_UNARY(reciprocal, at::reciprocal)
HALIAX_UNARY(sin, at::sin)
HALIAX_UNARY(cos, at::cos)
HALIAX_UNARY(tan, at::tan)
HALIAX_UNARY(tanh, at::tanh)
HALIAX_UNARY(sinh, at::sinh)
HALIAX_UNARY(cosh, at::cosh)
HALIAX_UNARY(arcsin, at::asin)
HALIAX_UNARY(arccos, at::acos)
HALIAX_UNARY(arctan, at::atan)
HALIAX_UNARY(erf, at::erf)
HALIAX_UNARY(sign, at::sign)
HALIAX_UNARY(floor, at::floor)
HALIAX_UNARY(ceil, at::ceil)
HALIAX_UNARY(round, at::round)
HALIAX_UNARY(trunc, at::trunc)
HALIAX_UNARY(negative, at::neg)
HALIAX_UNARY(isnan, at::isnan)
HALIAX_UNARY(isinf, at::isinf)
HALIAX_UNARY(isfinite, at::isfinite)
HALIAX_UNARY(logical_not, at::logical_not)
#undef HALIAX_UNARY

NamedArray clip(const NamedArray& a, std::optional<at::Scalar> lo, std::optional<at::Scalar> hi) {
  c10::optional<at::Scalar> l = lo ? c10::optional<at::Scalar>(*lo) : c10::nullopt;
  c10::optional<at::Scalar> h = hi ? c10::optional<at::Scalar>(*hi) : c10::nullopt;
  return NamedArray(at::clamp(a.array(), l, h), a.axes());
}

NamedArray clip(const NamedArray& a, const NamedArray& lo, const NamedArray& hi) {
  auto [arrays, axes] = broadcast_arrays({a, lo, hi});
  return NamedArray(at::clamp(arrays[0].array(), arrays[1].array(), arrays[2].array()), axes);
}
NamedArray clip(const NamedArray& a, const NamedArray& lo, const at::Scalar& hi) {
  auto [arrays, axes] = broadcast_arrays({a, lo});
  return NamedArray(at::clamp_max(at::clamp(arrays[0].array(), arrays[1].array(), c10::nullopt), hi), axes);
}
NamedArray clip(const NamedArray& a, const at::Scalar& lo, const NamedArray& hi) {
  auto [arrays, axes] = broadcast_arrays({a, hi});
  return NamedArray(at::clamp(at::clamp_min(arrays[0].array(), lo), c10::nullopt, arrays[1].array()), axes);
}

// --- elementwise: binary -----------------------------------------------------------------------------------

#define HALIAX_BINARY(name, fn)                                                                         \
  NamedArray name(const NamedArray& a, const NamedArray& b) {                                           \
    return elementwise_binary(a, b, [](const at::Tensor& x, const at::Tensor& y) { return fn(x, y); }); \
  }
HALIAX_BINARY(add, at::add)
HALIAX_BINARY(subtract, at::sub)
HALIAX_BINARY(multiply, at::mul)
HALIAX_BINARY(divide, at::div)
HALIAX_BINARY(floor_divide, at::floor_divide)
HALIAX_BINARY(mod, at::remainder)
HALIAX_BINARY(power, at::pow)
HALIAX_BINARY(maximum, at::maximum)
HALIAX_BINARY(minimum, at::minimum)
HALIAX_BINARY(arctan2, at::atan2)
HALIAX_BINARY(equal, at::eq)
HALIAX_BINARY(not_equal, at::ne)
HALIAX_BINARY(logical_and, at::logical_and)
HALIAX_BINARY(logical_or, at::logical_or)
HALIAX_BINARY(logical_xor, at::logical_xor)
#undef HALIAX_BINARY

NamedArray power(const NamedArray& a, const at::Scalar& exponent) {
  return NamedArray(at::pow(a.array(), exponent), a.axes());
}
NamedArray equal(const NamedArray& a, const at::Scalar& b) { return NamedArray(at::eq(a.array(), b), a.axes()); }
NamedArray not_equal(const NamedArray& a, const at::Scalar& b) { return NamedArray(at::ne(a.array(), b), a.axes()); }

NamedArray where(const NamedArray& cond, const NamedArray& x, const NamedArray& y) {
  auto [arrays, axes] = broadcast_arrays({cond, x, y});
  return NamedArray(at::where(arrays[0].array(), arrays[1].array(), arrays[2].array()), axes);
}

NamedArray where(const NamedArray& cond, const NamedArray& x, const at::Scalar& y) {
  auto [arrays, axes] = broadcast_arrays({cond, x});
  return NamedArray(at::where(arrays[0].array(), arrays[1].array(), y), axes);
}

NamedArray where(const NamedArray& cond, const at::Scalar& x, const NamedArray& y) {
  auto [arrays, axes] = broadcast_arrays({cond, y});
  return NamedArray(at::where(arrays[0].array(), x, arrays[1].array()), axes);
}

NamedArray isclose(const NamedArray& a, const NamedArray& b, double rtol, double atol) {
  return elementwise_binary(a, b,
                            [&](const at::Tensor& x, const at::Tensor& y) { return at::isclose(x, y, rtol, atol); });
}

bool allclose(const NamedArray& a, const NamedArray& b, double rtol, double atol) {
  return isclose(a, b, rtol, atol).array().all().item<bool>();
}

bool array_equal(const NamedArray& a, const NamedArray& b) {
  return a.axes() == b.axes() && at::equal(a.array(), b.array());
}

// --- reductions ----------------------------------------------------------------------------------------------

namespace {

struct Reduce {
  std::vector<int64_t> dims;
  AxisSpec out_axes;
};

Reduce plan(const NamedArray& a, const AxisSelection& axis) {
  Reduce r;
  for (const AxisSelector& s : axis) {
    auto i = a.axis_index(s);
    if (!i) value_error("axis " + s.str() + " is not in " + to_string(a.axes()));
    r.dims.push_back(static_cast<int64_t>(*i));
  }
  r.out_axes = eliminate_axes(a.axes(), axis);
  return r;
}

AxisSelection everything(const NamedArray& a) { return AxisSelection(a.axes()); }

at::Tensor mask_for(const NamedArray& a, const NamedArray& where) {
  if (where.dtype() != at::kBool) value_error("where must be a bool array, got " + where.str());
  return broadcast_to(where, a.axes()).array();
}

at::Tensor fill_masked(const NamedArray& a, const NamedArray& where, const at::Scalar& identity) {
  return at::where(mask_for(a, where), a.array(),
                   at::native::wrapped_scalar_tensor(identity, a.device()).to(a.dtype()));
}

// max/min with a mask but no `initial`: Haliax checks the mask's axes and the reduced axes, then jnp refuses.
[[noreturn]] void no_identity(const char* op, const NamedArray& a, const AxisSelection& axis, const NamedArray& where) {
  broadcast_to(where, a.axes());
  plan(a, axis);
  value_error(std::string("reduction operation ") + op +
              " does not have an identity, so to use a where mask one has to specify 'initial'");
}

// `a` with its NaNs replaced by `fill`. Replacing before any arithmetic keeps NaN out of the gradient (the
// double-where trick): NaN positions get exactly zero.
at::Tensor without_nan(const NamedArray& a, const at::Scalar& fill) {
  if (!at::isFloatingType(a.dtype())) return a.array();
  return at::where(at::isnan(a.array()), at::native::wrapped_scalar_tensor(fill, a.device()).to(a.dtype()), a.array());
}
NamedArray not_nan(const NamedArray& a) {
  if (!at::isFloatingType(a.dtype())) return NamedArray(at::ones_like(a.array(), at::kBool), a.axes());
  return NamedArray(at::logical_not(at::isnan(a.array())), a.axes());
}
NamedArray not_nan(const NamedArray& a, const NamedArray& where) {
  return NamedArray(at::logical_and(not_nan(a).array(), mask_for(a, where)), a.axes());
}
// NaN where `valid` is false over the whole slice of `axis`, else `r`.
NamedArray nan_if_empty(const NamedArray& r, const NamedArray& valid, const AxisSelection& axis) {
  NamedArray any_valid = any(valid, axis);
  return NamedArray(at::where(any_valid.array(), r.array(),
                              at::native::wrapped_scalar_tensor(at::Scalar(NAN), r.device()).to(r.dtype())),
                    r.axes());
}

at::Tensor count(const NamedArray& a, const NamedArray& where, const Reduce& r) {
  return at::sum(mask_for(a, where), r.dims).to(at::isFloatingType(a.dtype()) ? a.dtype() : at::kFloat);
}

}  // namespace

NamedArray sum(const NamedArray& a) { return sum(a, everything(a)); }
NamedArray sum(const NamedArray& a, const AxisSelection& axis) {
  if (axis.empty()) return a;
  Reduce r = plan(a, axis);
  return NamedArray(at::sum(a.array(), r.dims), r.out_axes);
}
NamedArray sum(const NamedArray& a, const AxisSelection& axis, const NamedArray& where) {
  Reduce r = plan(a, axis);
  at::Tensor x = fill_masked(a, where, 0);
  return NamedArray(r.dims.empty() ? x : at::sum(x, r.dims), r.out_axes);
}

NamedArray prod(const NamedArray& a) { return prod(a, everything(a)); }
NamedArray prod(const NamedArray& a, const AxisSelection& axis) {
  Reduce r = plan(a, axis);
  at::Tensor x = a.array();
  // ATen's prod takes one dim at a time; reduce from the last so positions stay valid.
  std::vector<int64_t> dims = r.dims;
  std::sort(dims.rbegin(), dims.rend());
  for (int64_t d : dims) x = at::prod(x, d);
  return NamedArray(x, r.out_axes);
}
NamedArray prod(const NamedArray& a, const AxisSelection& axis, const NamedArray& where) {
  return prod(NamedArray(fill_masked(a, where, 1), a.axes()), axis);
}

NamedArray mean(const NamedArray& a) { return mean(a, everything(a)); }
NamedArray mean(const NamedArray& a, const AxisSelection& axis) {
  if (axis.empty()) return at::isFloatingType(a.dtype()) ? a : astype(a, at::kFloat);
  Reduce r = plan(a, axis);
  at::Tensor x = at::isFloatingType(a.dtype()) ? a.array() : a.array().to(at::kFloat);
  return NamedArray(at::mean(x, r.dims), r.out_axes);
}
NamedArray mean(const NamedArray& a, const AxisSelection& axis, const NamedArray& where) {
  Reduce r = plan(a, axis);
  NamedArray x = at::isFloatingType(a.dtype()) ? a : astype(a, at::kFloat);
  at::Tensor s = fill_masked(x, where, 0);
  if (!r.dims.empty()) s = at::sum(s, r.dims);
  at::Tensor n = r.dims.empty() ? mask_for(a, where).to(x.dtype()) : count(x, where, r);
  return NamedArray(s / n, r.out_axes);
}

NamedArray max(const NamedArray& a) { return max(a, everything(a)); }
NamedArray max(const NamedArray& a, const AxisSelection& axis) {
  if (axis.empty()) return a;
  Reduce r = plan(a, axis);
  return NamedArray(at::amax(a.array(), r.dims), r.out_axes);
}
NamedArray max(const NamedArray& a, const AxisSelection& axis, const NamedArray& where) {
  no_identity("max", a, axis, where);
}
NamedArray max(const NamedArray& a, const AxisSelection& axis, const NamedArray& where, const at::Scalar& initial) {
  NamedArray r = max(NamedArray(fill_masked(a, where, initial), a.axes()), axis);
  return NamedArray(at::clamp_min(r.array(), initial), r.axes());
}

NamedArray min(const NamedArray& a) { return min(a, everything(a)); }
NamedArray min(const NamedArray& a, const AxisSelection& axis) {
  if (axis.empty()) return a;
  Reduce r = plan(a, axis);
  return NamedArray(at::amin(a.array(), r.dims), r.out_axes);
}
NamedArray min(const NamedArray& a, const AxisSelection& axis, const NamedArray& where) {
  no_identity("min", a, axis, where);
}
NamedArray min(const NamedArray& a, const AxisSelection& axis, const NamedArray& where, const at::Scalar& initial) {
  NamedArray r = min(NamedArray(fill_masked(a, where, initial), a.axes()), axis);
  return NamedArray(at::clamp_max(r.array(), initial), r.axes());
}

NamedArray logsumexp(const NamedArray& a) { return logsumexp(a, everything(a)); }
NamedArray logsumexp(const NamedArray& a, const AxisSelection& axis) {
  if (axis.empty()) return a;
  Reduce r = plan(a, axis);
  return NamedArray(at::logsumexp(a.array(), r.dims), r.out_axes);
}
NamedArray logsumexp(const NamedArray& a, const AxisSelection& axis, const NamedArray& where) {
  return logsumexp(NamedArray(fill_masked(a, where, -std::numeric_limits<double>::infinity()), a.axes()), axis);
}

NamedArray all(const NamedArray& a) { return all(a, everything(a)); }
NamedArray all(const NamedArray& a, const AxisSelection& axis) {
  Reduce r = plan(a, axis);
  at::Tensor x = a.array().to(at::kBool);
  std::vector<int64_t> dims = r.dims;
  std::sort(dims.rbegin(), dims.rend());
  for (int64_t d : dims) x = at::all(x, d);
  return NamedArray(x, r.out_axes);
}
NamedArray all(const NamedArray& a, const AxisSelection& axis, const NamedArray& where) {
  return all(NamedArray(at::where(mask_for(a, where), a.array().to(at::kBool), true), a.axes()), axis);
}

NamedArray any(const NamedArray& a) { return any(a, everything(a)); }
NamedArray any(const NamedArray& a, const AxisSelection& axis) {
  Reduce r = plan(a, axis);
  at::Tensor x = a.array().to(at::kBool);
  std::vector<int64_t> dims = r.dims;
  std::sort(dims.rbegin(), dims.rend());
  for (int64_t d : dims) x = at::any(x, d);
  return NamedArray(x, r.out_axes);
}
NamedArray any(const NamedArray& a, const AxisSelection& axis, const NamedArray& where) {
  return any(NamedArray(at::where(mask_for(a, where), a.array().to(at::kBool), false), a.axes()), axis);
}

NamedArray var(const NamedArray& a, int64_t ddof) { return var(a, everything(a), ddof); }
NamedArray var(const NamedArray& a, const AxisSelection& axis, int64_t ddof) {
  Reduce r = plan(a, axis);
  at::Tensor x = at::isFloatingType(a.dtype()) ? a.array() : a.array().to(at::kFloat);
  if (r.dims.empty()) return NamedArray(ddof < 1 ? at::zeros_like(x) : at::full_like(x, NAN), a.axes());
  at::Tensor v = at::var(x, r.dims, /*correction=*/c10::optional<int64_t>(ddof), /*keepdim=*/false);
  int64_t n = 1;
  for (int64_t d : r.dims) n *= x.size(d);
  if (n - ddof <= 0) v = at::full_like(v, NAN);  // JAX: NaN where no degrees of freedom are left
  return NamedArray(v, r.out_axes);
}
NamedArray var(const NamedArray& a, const AxisSelection& axis, const NamedArray& where, int64_t ddof) {
  NamedArray x = at::isFloatingType(a.dtype()) ? a : astype(a, at::kFloat);
  NamedArray m = mean(x, axis, where);
  NamedArray dev = square(x - m);
  Reduce r = plan(a, axis);
  at::Tensor s = fill_masked(dev, where, 0);
  if (!r.dims.empty()) s = at::sum(s, r.dims);
  at::Tensor n = r.dims.empty() ? mask_for(a, where).to(x.dtype()) : count(x, where, r);
  at::Tensor dof = n - static_cast<double>(ddof);
  return NamedArray(at::where(dof > 0, s / dof, at::full_like(s, NAN)), r.out_axes);
}

NamedArray std(const NamedArray& a, int64_t ddof) { return sqrt(var(a, ddof)); }
NamedArray std(const NamedArray& a, const AxisSelection& axis, int64_t ddof) { return sqrt(var(a, axis, ddof)); }
NamedArray std(const NamedArray& a, const AxisSelection& axis, const NamedArray& where, int64_t ddof) {
  return sqrt(var(a, axis, where, ddof));
}

// --- NaN-ignoring reductions (jnp.nan*) ---------------------------------------------------------------------

NamedArray nansum(const NamedArray& a) { return sum(NamedArray(without_nan(a, 0), a.axes())); }
NamedArray nansum(const NamedArray& a, const AxisSelection& axis) {
  return sum(NamedArray(without_nan(a, 0), a.axes()), axis);
}
NamedArray nansum(const NamedArray& a, const AxisSelection& axis, const NamedArray& where) {
  return sum(NamedArray(without_nan(a, 0), a.axes()), axis, where);
}

NamedArray nanprod(const NamedArray& a) { return prod(NamedArray(without_nan(a, 1), a.axes())); }
NamedArray nanprod(const NamedArray& a, const AxisSelection& axis) {
  return prod(NamedArray(without_nan(a, 1), a.axes()), axis);
}
NamedArray nanprod(const NamedArray& a, const AxisSelection& axis, const NamedArray& where) {
  return prod(NamedArray(without_nan(a, 1), a.axes()), axis, where);
}

// nanmean, nanvar: the masked versions with the NaNs folded into the mask (an all-NaN slice is 0/0 = NaN).
NamedArray nanmean(const NamedArray& a) { return nanmean(a, everything(a)); }
NamedArray nanmean(const NamedArray& a, const AxisSelection& axis) {
  return mean(NamedArray(without_nan(a, 0), a.axes()), axis, not_nan(a));
}
NamedArray nanmean(const NamedArray& a, const AxisSelection& axis, const NamedArray& where) {
  return mean(NamedArray(without_nan(a, 0), a.axes()), axis, not_nan(a, where));
}

NamedArray nanvar(const NamedArray& a, int64_t ddof) { return nanvar(a, everything(a), ddof); }
NamedArray nanvar(const NamedArray& a, const AxisSelection& axis, int64_t ddof) {
  return var(NamedArray(without_nan(a, 0), a.axes()), axis, not_nan(a), ddof);
}
NamedArray nanvar(const NamedArray& a, const AxisSelection& axis, const NamedArray& where, int64_t ddof) {
  return var(NamedArray(without_nan(a, 0), a.axes()), axis, not_nan(a, where), ddof);
}
NamedArray nanstd(const NamedArray& a, int64_t ddof) { return sqrt(nanvar(a, ddof)); }
NamedArray nanstd(const NamedArray& a, const AxisSelection& axis, int64_t ddof) { return sqrt(nanvar(a, axis, ddof)); }
NamedArray nanstd(const NamedArray& a, const AxisSelection& axis, const NamedArray& where, int64_t ddof) {
  return sqrt(nanvar(a, axis, where, ddof));
}

// nanmax, nanmin: NaN becomes the identity (-inf/+inf), then an all-NaN slice is set back to NaN.
NamedArray nanmax(const NamedArray& a) { return nanmax(a, everything(a)); }
NamedArray nanmax(const NamedArray& a, const AxisSelection& axis) {
  if (!at::isFloatingType(a.dtype())) return max(a, axis);
  NamedArray r = max(NamedArray(without_nan(a, -INFINITY), a.axes()), axis);
  return nan_if_empty(r, not_nan(a), axis);
}
NamedArray nanmax(const NamedArray& a, const AxisSelection& axis, const NamedArray& where) {
  no_identity("max", a, axis, where);
}
NamedArray nanmax(const NamedArray& a, const AxisSelection& axis, const NamedArray& where, const at::Scalar& initial) {
  if (!at::isFloatingType(a.dtype())) return max(a, axis, where, initial);
  NamedArray r = max(NamedArray(without_nan(a, -INFINITY), a.axes()), axis, where, initial);
  return nan_if_empty(r, not_nan(a), axis);  // all NaN, whatever the mask (as jnp)
}

NamedArray nanmin(const NamedArray& a) { return nanmin(a, everything(a)); }
NamedArray nanmin(const NamedArray& a, const AxisSelection& axis) {
  if (!at::isFloatingType(a.dtype())) return min(a, axis);
  NamedArray r = min(NamedArray(without_nan(a, INFINITY), a.axes()), axis);
  return nan_if_empty(r, not_nan(a), axis);
}
NamedArray nanmin(const NamedArray& a, const AxisSelection& axis, const NamedArray& where) {
  no_identity("min", a, axis, where);
}
NamedArray nanmin(const NamedArray& a, const AxisSelection& axis, const NamedArray& where, const at::Scalar& initial) {
  if (!at::isFloatingType(a.dtype())) return min(a, axis, where, initial);
  NamedArray r = min(NamedArray(without_nan(a, INFINITY), a.axes()), axis, where, initial);
  return nan_if_empty(r, not_nan(a), axis);  // all NaN, whatever the mask (as jnp)
}

NamedArray argmax(const NamedArray& a) { return NamedArray(at::argmax(a.array()), {}); }
NamedArray argmax(const NamedArray& a, const AxisSelector& axis) {
  Reduce r = plan(a, AxisSelection(axis));
  return NamedArray(at::argmax(a.array(), r.dims[0]), r.out_axes);
}
NamedArray argmin(const NamedArray& a) { return NamedArray(at::argmin(a.array()), {}); }
NamedArray argmin(const NamedArray& a, const AxisSelector& axis) {
  Reduce r = plan(a, AxisSelection(axis));
  return NamedArray(at::argmin(a.array(), r.dims[0]), r.out_axes);
}

namespace {

// JAX keeps the input's dtype in scans (ATen widens integers to int64); bool counts as the default int.
at::ScalarType scan_dtype(const NamedArray& a, std::optional<at::ScalarType> dtype) {
  if (dtype) return *dtype;
  return a.dtype() == at::kBool ? at::kLong : a.dtype();
}

// The index of the max (or min) ignoring NaNs; -1 for an all-NaN slice, as JAX.
NamedArray nan_arg(const NamedArray& a, std::optional<AxisSelector> axis, bool is_max) {
  if (!at::isFloatingType(a.dtype())) {
    if (axis) return is_max ? argmax(a, *axis) : argmin(a, *axis);
    return is_max ? argmax(a) : argmin(a);
  }
  NamedArray clean(without_nan(a, is_max ? -INFINITY : INFINITY), a.axes());
  NamedArray idx =
      axis ? (is_max ? argmax(clean, *axis) : argmin(clean, *axis)) : (is_max ? argmax(clean) : argmin(clean));
  NamedArray valid = axis ? any(not_nan(a), AxisSelection(*axis)) : any(not_nan(a));
  return NamedArray(at::where(valid.array(), idx.array(), at::full_like(idx.array(), -1)), idx.axes());
}

}  // namespace

NamedArray nanargmax(const NamedArray& a) { return nan_arg(a, std::nullopt, true); }
NamedArray nanargmax(const NamedArray& a, const AxisSelector& axis) { return nan_arg(a, axis, true); }
NamedArray nanargmin(const NamedArray& a) { return nan_arg(a, std::nullopt, false); }
NamedArray nanargmin(const NamedArray& a, const AxisSelector& axis) { return nan_arg(a, axis, false); }

NamedArray cumsum(const NamedArray& a, const AxisSelector& axis, std::optional<at::ScalarType> dtype) {
  return NamedArray(at::cumsum(a.array(), plan(a, AxisSelection(axis)).dims[0], scan_dtype(a, dtype)), a.axes());
}
NamedArray cumprod(const NamedArray& a, const AxisSelector& axis, std::optional<at::ScalarType> dtype) {
  return NamedArray(at::cumprod(a.array(), plan(a, AxisSelection(axis)).dims[0], scan_dtype(a, dtype)), a.axes());
}
NamedArray nancumsum(const NamedArray& a, const AxisSelector& axis, std::optional<at::ScalarType> dtype) {
  return cumsum(NamedArray(without_nan(a, 0), a.axes()), axis, dtype);
}
NamedArray nancumprod(const NamedArray& a, const AxisSelector& axis, std::optional<at::ScalarType> dtype) {
  return cumprod(NamedArray(without_nan(a, 1), a.axes()), axis, dtype);
}
NamedArray sort(const NamedArray& a, const AxisSelector& axis) {
  return NamedArray(std::get<0>(at::sort(a.array(), c10::optional<bool>(true), plan(a, AxisSelection(axis)).dims[0])),
                    a.axes());
}
NamedArray argsort(const NamedArray& a, const AxisSelector& axis) {
  return NamedArray(std::get<1>(at::sort(a.array(), c10::optional<bool>(true), plan(a, AxisSelection(axis)).dims[0])),
                    a.axes());
}

// --- contraction -------------------------------------------------------------------------------------------

namespace detail {

void ensure_no_mismatched_axes(const std::vector<NamedArray>& arrays) {
  std::map<std::string, int64_t> known;
  for (const NamedArray& a : arrays) {
    for (const Axis& ax : a.axes()) {
      auto [it, inserted] = known.emplace(ax.name, ax.size);
      if (!inserted && it->second != ax.size) {
        value_error("Axis " + ax.name + " has multiple sizes: " + std::to_string(it->second) + " and " +
                    std::to_string(ax.size));
      }
    }
  }
}

}  // namespace detail

namespace {

std::vector<int64_t> positions(const NamedArray& a, const AxisSpec& axes) {
  std::vector<int64_t> out;
  for (const Axis& ax : axes) out.push_back(static_cast<int64_t>(*index_of(a.axes(), ax.name)));
  return out;
}

// Sum out the axes of `a` that are neither kept nor shared with the other operand.
NamedArray presum(const NamedArray& a, const AxisSpec& other, const AxisSpec& output) {
  AxisSpec lonely;
  for (const Axis& ax : a.axes()) {
    if (!index_of(output, ax.name) && !index_of(other, ax.name)) lonely.push_back(ax);
  }
  return lonely.empty() ? a : sum(a, AxisSelection(lonely));
}

// Two operands: one GEMM (or batched GEMM) over [batch, left, contracted] x [batch, contracted, right].
at::Tensor contract_pair(const NamedArray& a_in, const NamedArray& b_in, const AxisSpec& output, AxisSpec& natural) {
  NamedArray a = presum(a_in, b_in.axes(), output);
  NamedArray b = presum(b_in, a_in.axes(), output);
  AxisSpec batch, left, right, contracted;
  for (const Axis& ax : a.axes()) {
    bool in_b = index_of(b.axes(), ax.name).has_value();
    bool out = index_of(output, ax.name).has_value();
    if (in_b && out)
      batch.push_back(ax);
    else if (in_b)
      contracted.push_back(ax);
    else
      left.push_back(ax);
  }
  for (const Axis& ax : b.axes()) {
    if (!index_of(a.axes(), ax.name)) right.push_back(ax);
  }
  auto cat = [](std::initializer_list<const AxisSpec*> parts) {
    AxisSpec out;
    for (const AxisSpec* p : parts) out.insert(out.end(), p->begin(), p->end());
    return out;
  };
  at::ScalarType dtype = at::result_type(a.array(), b.array());
  at::Tensor ta = a.array().to(dtype).permute(positions(a, cat({&batch, &left, &contracted})));
  at::Tensor tb = b.array().to(dtype).permute(positions(b, cat({&batch, &contracted, &right})));
  int64_t nb = axis_size(batch), nl = axis_size(left), nc = axis_size(contracted), nr = axis_size(right);
  at::Tensor out;
  if (batch.empty()) {
    out = at::mm(ta.reshape({nl, nc}), tb.reshape({nc, nr}));
  } else {
    out = at::bmm(ta.reshape({nb, nl, nc}), tb.reshape({nb, nc, nr}));
  }
  natural = cat({&batch, &left, &right});
  std::vector<int64_t> sizes;
  for (const Axis& ax : natural) sizes.push_back(ax.size);
  return out.reshape(sizes);
}

std::string einsum_letters(size_t i) {
  static const char* letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  if (i >= 52) value_error("Too many distinct axes in one contraction (at most 52)");
  return std::string(1, letters[i]);
}

}  // namespace

NamedArray detail::contract(const std::vector<NamedArray>& arrays, const AxisSpec& output) {
  if (arrays.size() == 1) {
    NamedArray r = presum(arrays[0], {}, output);
    return rearrange(r, AxisSelection(output));
  }
  if (arrays.size() == 2) {
    AxisSpec natural;
    at::Tensor t = contract_pair(arrays[0], arrays[1], output, natural);
    if (natural == output) return NamedArray(t, output);
    std::vector<int64_t> perm;
    for (const Axis& ax : output) perm.push_back(static_cast<int64_t>(*index_of(natural, ax.name)));
    return NamedArray(t.permute(perm), output);
  }
  // Three or more operands: let ATen's einsum pick the contraction order.
  std::map<std::string, std::string> letter;
  std::string spec;
  std::vector<at::Tensor> tensors;
  at::ScalarType dtype = arrays[0].dtype();
  for (const NamedArray& a : arrays) dtype = c10::promoteTypes(dtype, a.dtype());
  for (size_t k = 0; k < arrays.size(); ++k) {
    if (k) spec += ",";
    for (const Axis& ax : arrays[k].axes()) {
      auto it = letter.find(ax.name);
      if (it == letter.end()) it = letter.emplace(ax.name, einsum_letters(letter.size())).first;
      spec += it->second;
    }
    tensors.push_back(arrays[k].array().to(dtype));
  }
  spec += "->";
  for (const Axis& ax : output) spec += letter.at(ax.name);
  return NamedArray(at::einsum(spec, tensors), output);
}

namespace {

NamedArray dot_impl(const std::vector<NamedArray>& arrays, const std::optional<AxisSelection>& axis,
                    const std::optional<AxisSelection>& out_axes) {
  if (arrays.empty()) value_error("Must provide at least one array to dot");
  bool sum_result = false;
  std::vector<NamedArray> ops = arrays;
  std::optional<AxisSelection> sel = axis;
  if (TensorParallelScope::current()) {
    // Tensor parallelism (partitioning.h): an operand may hold a split axis whole where another holds its piece, and
    // the selection may name the whole axis. Select by name; prepare_contraction cuts what is whole and says whether
    // the result is a partial sum.
    std::vector<std::string> names;
    if (axis) {
      for (const AxisSelector& a : *axis) names.push_back(a.name());
      sel = AxisSelection(names);
    }
    AxisSpec out_names;
    for (const NamedArray& a : arrays) {
      for (const Axis& ax : a.axes()) {
        const bool contracted = !axis || std::find(names.begin(), names.end(), ax.name) != names.end();
        if (!contracted && !index_of(out_names, ax.name)) out_names.push_back(ax);
      }
    }
    ops = prepare_contraction(arrays, out_names, &sum_result);
  }
  detail::ensure_no_mismatched_axes(ops);
  AxisSpec all;
  for (const NamedArray& a : ops) all = union_axes(all, a.axes());
  AxisSpec output = sel ? eliminate_axes(all, *sel) : AxisSpec{};
  if (out_axes) output = rearrange_for_partial_order(*out_axes, output);
  NamedArray out = detail::contract(ops, output);
  return sum_result ? sum_partial_results(out) : out;
}

}  // namespace

NamedArray dot(const NamedArray& a, const NamedArray& b, const AxisSelection& axis) {
  return dot_impl({a, b}, axis, std::nullopt);
}
NamedArray dot(const NamedArray& a, const NamedArray& b, const AxisSelection& axis, const AxisSelection& out_axes) {
  return dot_impl({a, b}, axis, out_axes);
}
NamedArray dot(const std::vector<NamedArray>& arrays, const AxisSelection& axis) {
  return dot_impl(arrays, axis, std::nullopt);
}
NamedArray dot(const std::vector<NamedArray>& arrays, const AxisSelection& axis, const AxisSelection& out_axes) {
  return dot_impl(arrays, axis, out_axes);
}
NamedArray dot(const NamedArray& a, const NamedArray& b, AllAxes) {
  return dot_impl({a, b}, std::nullopt, std::nullopt);
}
NamedArray dot(const std::vector<NamedArray>& arrays, AllAxes) { return dot_impl(arrays, std::nullopt, std::nullopt); }

}  // namespace haliax
