// NaN-ignoring reductions, reductions with a `where` mask that have no identity (max/min), any/all and var's
// degrees of freedom: values and gradients against positional ATen in f64 (data with NaNs, but no all-NaN slice,
// since an all-NaN result cannot be compared with allclose), and every form against the original Haliax
// (tests/haliax/reference/gen_reductions.py), including all-NaN slices and JAX's gradients.
#include <cmath>

#include "haliax/reference.h"
#include "haliax/reference/reductions_expected.inc"
#include "testing.h"

namespace haliax {
namespace {

using testing::expect_matches_ref;
using testing::expect_same_value_and_grad;
using testing::randn;
using testing::ref_to_named;
namespace ref = haliax_ref::reductions;

const Axis B("batch", 2), P("pos", 3), E("embed", 4);

// (batch, pos, embed) normal data with a few NaNs, none of them filling a slice along any one axis.
at::Tensor with_nans(uint64_t seed) {
  at::Tensor t = randn({2, 3, 4}, seed);
  t[0][0][1] = NAN;
  t[1][2][3] = NAN;
  t[1][0][0] = NAN;
  return t;
}
// (pos, embed) mask that keeps two non-NaN elements of every (batch, pos) row of with_nans, so no slice compared
// with ATen is empty and no std is 0 (whose sqrt has an infinite derivative).
at::Tensor mask() {
  at::Tensor m = randn({3, 4}, 99) > 0;
  for (int64_t p = 0; p < 3; ++p) {
    m[p][2] = true;
    m[p][p == 2 ? 1 : 3] = true;
  }
  return m;
}

at::Tensor aten_nanvar(const at::Tensor& x, const at::Tensor& valid, at::IntArrayRef dims, int64_t ddof) {
  at::Tensor xc = at::where(valid, x, at::zeros_like(x));
  at::Tensor n = valid.sum(dims, /*keepdim=*/true).to(at::kDouble);
  at::Tensor mu = xc.sum(dims, true) / n;
  at::Tensor d = at::where(valid, xc - mu, at::zeros_like(x)).square();
  return d.sum(dims) / (valid.sum(dims).to(at::kDouble) - static_cast<double>(ddof));
}

TEST(NanReductions, MatchATenWithoutMask) {
  auto x = [](const std::vector<at::Tensor>& v) { return NamedArray(v[0], {B, P, E}); };
  auto nan_to = [](const at::Tensor& t, double fill) { return at::where(at::isnan(t), at::full_like(t, fill), t); };
  const at::Tensor t = with_nans(1);
  expect_same_value_and_grad(
      {t}, [&](const auto& v) { return nansum(x(v), "pos").array(); },
      [](const auto& v) { return at::nansum(v[0], {1}); });
  expect_same_value_and_grad(
      {t}, [&](const auto& v) { return nansum(x(v)).array(); }, [](const auto& v) { return at::nansum(v[0]); });
  expect_same_value_and_grad(
      {t},
      [&](const auto& v) {
        return nanmean(x(v), {"batch", E}).array();
      },
      [](const auto& v) {
        return at::nanmean(v[0], {0, 2});
      });
  expect_same_value_and_grad(
      {t}, [&](const auto& v) { return nanmean(x(v)).array(); }, [](const auto& v) { return at::nanmean(v[0]); });
  expect_same_value_and_grad(
      {t}, [&](const auto& v) { return nanprod(x(v), "embed").array(); },
      [&](const auto& v) { return nan_to(v[0], 1).prod(2); });
  expect_same_value_and_grad(
      {t},
      [&](const auto& v) {
        return nanmax(x(v), {"pos", "embed"}).array();
      },
      [&](const auto& v) {
        return nan_to(v[0], -INFINITY).amax({1, 2});
      });
  expect_same_value_and_grad(
      {t}, [&](const auto& v) { return nanmin(x(v), "batch").array(); },
      [&](const auto& v) { return nan_to(v[0], INFINITY).amin(0); });
  expect_same_value_and_grad(
      {t}, [&](const auto& v) { return nanvar(x(v), "embed").array(); },
      [](const auto& v) { return aten_nanvar(v[0], at::logical_not(at::isnan(v[0])), {2}, 0); });
  expect_same_value_and_grad(
      {t},
      [&](const auto& v) {
        return nanstd(x(v), {"batch", "pos"}, 1).array();
      },
      [](const auto& v) {
        return aten_nanvar(v[0], at::logical_not(at::isnan(v[0])), {0, 1}, 1).sqrt();
      });
  expect_same_value_and_grad(
      {t}, [&](const auto& v) { return nanvar(x(v)).array(); },
      [](const auto& v) {
        return aten_nanvar(v[0], at::logical_not(at::isnan(v[0])), {0, 1, 2}, 0);
      });
  expect_same_value_and_grad(
      {t}, [&](const auto& v) { return nancumsum(x(v), "embed").array(); },
      [&](const auto& v) { return nan_to(v[0], 0).cumsum(2); });
  expect_same_value_and_grad(
      {t}, [&](const auto& v) { return nancumprod(x(v), "pos").array(); },
      [&](const auto& v) { return nan_to(v[0], 1).cumprod(1); });
  NamedArray a(t, {B, P, E});
  EXPECT_TRUE(at::equal(nanargmax(a, "embed").array(), nan_to(t, -INFINITY).argmax(2)));
  EXPECT_TRUE(at::equal(nanargmin(a, "pos").array(), nan_to(t, INFINITY).argmin(1)));
  EXPECT_TRUE(at::equal(nanargmax(a).array(), nan_to(t, -INFINITY).argmax()));
  EXPECT_EQ(nanmax(a, "pos").axes(), (AxisSpec{B, E}));
  // Integer arrays have no NaN: the plain reductions.
  NamedArray ints(at::arange(6, at::kLong).reshape({2, 3}), {B, P});
  EXPECT_TRUE(array_equal(nansum(ints, "pos"), sum(ints, "pos")));
  EXPECT_TRUE(array_equal(nanmax(ints, "pos"), max(ints, "pos")));
  EXPECT_TRUE(array_equal(nanargmin(ints, "pos"), argmin(ints, "pos")));
}

TEST(NanReductions, MatchATenWithMask) {
  const at::Tensor t = with_nans(2), m = mask();
  const at::Tensor wm = m.unsqueeze(0).expand({2, 3, 4});
  int case_number = 0;
  auto run = [&](auto named, auto aten) {
    SCOPED_TRACE("case " + std::to_string(case_number++));
    expect_same_value_and_grad(
        {t},
        [&](const auto& v) {
          return named(NamedArray(v[0], {B, P, E}), NamedArray(m, {P, E})).array();
        },
        [&](const auto& v) { return aten(v[0], wm); });
  };
  run([](const NamedArray& x, const NamedArray& w) { return nansum(x, "embed", w); },
      [](const at::Tensor& x, const at::Tensor& w) { return at::nansum(at::where(w, x, at::zeros_like(x)), {2}); });
  run(
      [](const NamedArray& x, const NamedArray& w) {
        return nanmean(x, {"pos", "embed"}, w);
      },
      [](const at::Tensor& x, const at::Tensor& w) {
        at::Tensor valid = at::logical_and(w, at::logical_not(at::isnan(x)));
        return at::where(valid, x, at::zeros_like(x)).sum({1, 2}) / valid.sum({1, 2}).to(at::kDouble);
      });
  run([](const NamedArray& x, const NamedArray& w) { return nanprod(x, "pos", w); },
      [](const at::Tensor& x, const at::Tensor& w) {
        at::Tensor valid = at::logical_and(w, at::logical_not(at::isnan(x)));
        return at::where(valid, x, at::ones_like(x)).prod(1);
      });
  run(
      [](const NamedArray& x, const NamedArray& w) {
        return nanvar(x, {"batch", "embed"}, w, 1);
      },
      [](const at::Tensor& x, const at::Tensor& w) {
        return aten_nanvar(x, at::logical_and(w, at::logical_not(at::isnan(x))), {0, 2}, 1);
      });
  run([](const NamedArray& x, const NamedArray& w) { return nanstd(x, "embed", w); },
      [](const at::Tensor& x, const at::Tensor& w) {
        return aten_nanvar(x, at::logical_and(w, at::logical_not(at::isnan(x))), {2}, 0).sqrt();
      });
  run([](const NamedArray& x, const NamedArray& w) { return nanmax(x, "embed", w, -0.25); },
      [](const at::Tensor& x, const at::Tensor& w) {
        at::Tensor valid = at::logical_and(w, at::logical_not(at::isnan(x)));
        return at::where(valid, x, at::full_like(x, -INFINITY)).amax(2).clamp_min(-0.25);
      });
  run(
      [](const NamedArray& x, const NamedArray& w) {
        return nanmin(x, {"batch", "pos"}, w, 0.5);
      },
      [](const at::Tensor& x, const at::Tensor& w) {
        at::Tensor valid = at::logical_and(w, at::logical_not(at::isnan(x)));
        return at::where(valid, x, at::full_like(x, INFINITY)).amin({0, 1}).clamp_max(0.5);
      });
}

TEST(NanReductions, NanPositionsGetZeroGradient) {
  at::Tensor t = with_nans(3).requires_grad_(true);
  NamedArray x(t, {B, P, E});
  (sum(nanstd(x, "embed")) + sum(nanmax(x, "pos")) + nanmean(x) + sum(nanprod(x, "batch"))).array().backward();
  at::Tensor g = t.grad();
  EXPECT_FALSE(at::isnan(g).any().item<bool>());
  EXPECT_EQ(g[0][0][1].item<double>(), 0.0);
  EXPECT_EQ(g[1][2][3].item<double>(), 0.0);
  EXPECT_EQ(g[1][0][0].item<double>(), 0.0);
}

TEST(NanReductions, MatchTheOriginal) {
  NamedArray x = ref_to_named(ref::x), w = ref_to_named(ref::w);
  using Fn = NamedArray (*)(const NamedArray&, const AxisSelection&);
  using FnAll = NamedArray (*)(const NamedArray&);
  using FnWhere = NamedArray (*)(const NamedArray&, const AxisSelection&, const NamedArray&);
  struct Case {
    const char* name;
    FnAll all;
    Fn axis;
    FnWhere where;  // null for nanmax/nanmin, which need `initial`
    const testing::RefArray *r_all, *r_d, *r_bd, *r_c, *r_d_where, *r_all_where;
  };
  const Case cases[] = {
      {"nansum", nansum, nansum, nansum, &ref::nansum_all, &ref::nansum_d, &ref::nansum_bd, &ref::nansum_c_names,
       &ref::nansum_d_where, &ref::nansum_all_where},
      {"nanmean", nanmean, nanmean, nanmean, &ref::nanmean_all, &ref::nanmean_d, &ref::nanmean_bd,
       &ref::nanmean_c_names, &ref::nanmean_d_where, &ref::nanmean_all_where},
      {"nanprod", nanprod, nanprod, nanprod, &ref::nanprod_all, &ref::nanprod_d, &ref::nanprod_bd,
       &ref::nanprod_c_names, &ref::nanprod_d_where, &ref::nanprod_all_where},
      {"nanmax", nanmax, nanmax, nullptr, &ref::nanmax_all, &ref::nanmax_d, &ref::nanmax_bd, &ref::nanmax_c_names,
       nullptr, nullptr},
      {"nanmin", nanmin, nanmin, nullptr, &ref::nanmin_all, &ref::nanmin_d, &ref::nanmin_bd, &ref::nanmin_c_names,
       nullptr, nullptr},
  };
  const AxisSelection everything(x.axes());
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    expect_matches_ref(c.all(x), *c.r_all);
    expect_matches_ref(c.axis(x, "d"), *c.r_d);
    expect_matches_ref(c.axis(x, {"b", "d"}), *c.r_bd);
    expect_matches_ref(c.axis(x, AxisSelection(std::vector<std::string>{"c"})), *c.r_c);
    if (c.where) {
      expect_matches_ref(c.where(x, "d", w), *c.r_d_where);
      expect_matches_ref(c.where(x, everything, w), *c.r_all_where);
    }
  }
  // var/std take ddof, so no function-pointer table.
  expect_matches_ref(nanvar(x), ref::nanvar_all);
  expect_matches_ref(nanvar(x, "d"), ref::nanvar_d);
  expect_matches_ref(nanvar(x, {"b", "d"}), ref::nanvar_bd);
  expect_matches_ref(nanvar(x, "c"), ref::nanvar_c_names);
  expect_matches_ref(nanvar(x, "d", w), ref::nanvar_d_where);
  expect_matches_ref(nanvar(x, everything, w), ref::nanvar_all_where);
  expect_matches_ref(nanstd(x), ref::nanstd_all);
  expect_matches_ref(nanstd(x, "d"), ref::nanstd_d);
  expect_matches_ref(nanstd(x, {"b", "d"}), ref::nanstd_bd);
  expect_matches_ref(nanstd(x, "c"), ref::nanstd_c_names);
  expect_matches_ref(nanstd(x, "d", w), ref::nanstd_d_where);
  expect_matches_ref(nanstd(x, everything, w), ref::nanstd_all_where);
  expect_matches_ref(nanvar(x, "d", 1), ref::nanvar_d_ddof1);
  expect_matches_ref(nanstd(x, "c", 1), ref::nanstd_c_ddof1);
  expect_matches_ref(nanargmax(x, "d"), ref::nanargmax_d);  // -1 for the all-NaN slice
  expect_matches_ref(nanargmin(x, "c"), ref::nanargmin_c);
  expect_matches_ref(nanargmax(x), ref::nanargmax_all);
  expect_matches_ref(nancumsum(x, "c"), ref::nancumsum_c);
  expect_matches_ref(nancumprod(x, "d"), ref::nancumprod_d);
}

TEST(NanReductions, GradientsMatchTheOriginal) {
  const testing::RefArray& rx = ref::x;
  auto grad_of = [&](const std::function<NamedArray(const NamedArray&)>& f) {
    NamedArray x0 = ref_to_named(rx);
    at::Tensor leaf = x0.array().clone().requires_grad_(true);
    sum(f(NamedArray(leaf, x0.axes()))).array().backward();
    return NamedArray(leaf.grad(), x0.axes());
  };
  expect_matches_ref(grad_of([](const NamedArray& a) { return nansum(a, "d"); }), ref::grad_nansum_d);
  expect_matches_ref(grad_of([](const NamedArray& a) { return nanmean(a, "c"); }), ref::grad_nanmean_c);
  expect_matches_ref(grad_of([](const NamedArray& a) { return nanvar(a, {"b", "d"}); }), ref::grad_nanvar_bd);
  expect_matches_ref(grad_of([](const NamedArray& a) { return nanmax(a, "d"); }), ref::grad_nanmax_d);
  expect_matches_ref(grad_of([](const NamedArray& a) { return nanmin(a); }), ref::grad_nanmin_all);
  expect_matches_ref(grad_of([](const NamedArray& a) { return nanprod(a, "c"); }), ref::grad_nanprod_c);
}

TEST(MaskedReductions, MaxMinWithWhereNeedInitialAsInTheOriginal) {
  NamedArray y = ref_to_named(ref::y);
  NamedArray yw = y > 2.0;
  // Always, not only when a slice is fully masked (here no row is).
  EXPECT_VALUE_ERROR(max(y, "c", yw), ref::max_where.message);
  EXPECT_VALUE_ERROR(min(y, y.axes(), yw), ref::min_where.message);
  EXPECT_VALUE_ERROR(nanmax(y, "c", yw), ref::nanmax_where.message);
  EXPECT_VALUE_ERROR(nanmin(y, "b", y > -1.0), ref::nanmin_where.message);
  EXPECT_EQ(ref::max_where.type, "ValueError");
  // As in Haliax, a wrong axis is reported before the missing identity.
  EXPECT_VALUE_ERROR(max(y, "zz", yw), "axis zz is not in");
  // `initial` as jnp.max has it: max(initial, max over the unmasked).
  expect_matches_ref(max(y, "c", yw, 3.5), ref::jnp_max_where_initial);
  expect_matches_ref(min(y, "b", yw, 4.5), ref::jnp_min_where_initial);
  expect_same_value_and_grad(
      {randn({2, 3}, 5)},
      [&](const auto& v) {
        return max(NamedArray(v[0], {B, P}), "pos", NamedArray(v[0] > 0, {B, P}), -0.5).array();
      },
      [](const auto& v) { return at::where(v[0] > 0, v[0], at::full_like(v[0], -INFINITY)).amax(1).clamp_min(-0.5); });
}

TEST(MaskedReductions, AnyAllMeanVarMatchTheOriginal) {
  NamedArray y = ref_to_named(ref::y);
  NamedArray yw = y > 2.0;
  expect_matches_ref(any(y > 3.0, "c"), ref::any_c);
  expect_matches_ref(all(y > 0.0, "c"), ref::all_c);
  expect_matches_ref(all(y > 3.0, "c", yw), ref::all_c_where);
  expect_matches_ref(any(y > 4.0, y.axes(), y < 4.0), ref::any_all_where);
  expect_matches_ref(all(y > 100.0, "c", y > 100.0), ref::all_empty_where);
  expect_matches_ref(mean(y, "c", y > 2.5), ref::mean_all_masked);
  expect_matches_ref(var(y, "b", 2), ref::var_ddof_too_big);
  expect_matches_ref(var(y, "c", yw, 1), ref::var_where_ddof1);
}

}  // namespace
}  // namespace haliax
