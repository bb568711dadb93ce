#include "testing.h"

using namespace haliax;
using haliax::testing::expect_same_value_and_grad;
using haliax::testing::randn;

namespace {
const Axis B("batch", 2), P("pos", 3), E("embed", 4);

// Positive test data for log/sqrt-like functions.
at::Tensor positive(uint64_t seed) { return randn({2, 3}, seed).abs() + 0.5; }
}  // namespace

TEST(Ops, UnaryMathMatchesATen) {
  using UFn = NamedArray (*)(const NamedArray&);
  using TFn = at::Tensor (*)(const at::Tensor&);
  struct Case {
    const char* name;
    UFn named;
    TFn ref;
    bool positive_only;
  };
  const Case cases[] = {
      {"abs", haliax::abs, at::abs, false},
      {"exp", haliax::exp, at::exp, false},
      {"expm1", haliax::expm1, at::expm1, false},
      {"log", haliax::log, at::log, true},
      {"log1p", haliax::log1p, at::log1p, true},
      {"log2", haliax::log2, at::log2, true},
      {"log10", haliax::log10, at::log10, true},
      {"sqrt", haliax::sqrt, at::sqrt, true},
      {"rsqrt", haliax::rsqrt, at::rsqrt, true},
      {"square", haliax::square, at::square, false},
      {"reciprocal", haliax::reciprocal, at::reciprocal, true},
      {"sin", haliax::sin, at::sin, false},
      {"cos", haliax::cos, at::cos, false},
      {"tan", haliax::tan, at::tan, false},
      {"tanh", haliax::tanh, at::tanh, false},
      {"sinh", haliax::sinh, at::sinh, false},
      {"cosh", haliax::cosh, at::cosh, false},
      {"arctan", haliax::arctan, at::atan, false},
      {"erf", haliax::erf, at::erf, false},
      {"negative", haliax::negative, at::neg, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    at::Tensor t = c.positive_only ? positive(1) : randn({2, 3}, 1);
    expect_same_value_and_grad(
        {t},
        [&](const auto& v) {
          return c.named(NamedArray(v[0], {B, P})).array();
        },
        [&](const auto& v) { return c.ref(v[0]); });
  }
  at::Tensor small = randn({2, 3}, 2).clamp(-0.9, 0.9);
  expect_same_value_and_grad(
      {small},
      [](const auto& v) {
        return arcsin(NamedArray(v[0], {B, P})).array();
      },
      [](const auto& v) { return at::asin(v[0]); });
  expect_same_value_and_grad(
      {small},
      [](const auto& v) {
        return arccos(NamedArray(v[0], {B, P})).array();
      },
      [](const auto& v) { return at::acos(v[0]); });
  NamedArray x(randn({2, 3}, 3) * 3, {B, P});
  EXPECT_TRUE(at::equal(floor(x).array(), at::floor(x.array())));
  EXPECT_TRUE(at::equal(ceil(x).array(), at::ceil(x.array())));
  EXPECT_TRUE(at::equal(round(x).array(), at::round(x.array())));
  EXPECT_TRUE(at::equal(trunc(x).array(), at::trunc(x.array())));
  EXPECT_TRUE(at::equal(sign(x).array(), at::sign(x.array())));
  EXPECT_TRUE(at::equal(isnan(log(x)).array(), at::isnan(at::log(x.array()))));
  EXPECT_TRUE(at::equal(isfinite(x / 0.0).array(), at::isfinite(x.array() / 0.0)));
}

TEST(Ops, ClipWhereAndBinaryFunctions) {
  at::Tensor t = randn({2, 3}, 4), u = randn({3}, 5);
  expect_same_value_and_grad(
      {t},
      [](const auto& v) {
        return clip(NamedArray(v[0], {B, P}), -0.5, 0.7).array();
      },
      [](const auto& v) { return at::clamp(v[0], -0.5, 0.7); });
  expect_same_value_and_grad(
      {t, u},
      [](const auto& v) {
        NamedArray x(v[0], {B, P}), y(v[1], {P});
        return (maximum(x, y) + minimum(x, y) * power(abs(y) + 1.0, 1.5) + where(x > y, x, y) +
                where(y > 0.0, x, 0.25) + arctan2(x, y) + mod(x, abs(y) + 1.0) - power(abs(x) + 1.0, abs(y)))
            .array();
      },
      [](const auto& v) {
        at::Tensor x = v[0], y = v[1];
        return at::maximum(x, y) + at::minimum(x, y) * at::pow(y.abs() + 1.0, 1.5) + at::where(x > y, x, y) +
               at::where(y > 0, x, at::full_like(x, 0.25)) + at::atan2(x, y) + at::remainder(x, y.abs() + 1.0) -
               at::pow(x.abs() + 1.0, y.abs());
      });
  NamedArray x(t, {B, P});
  EXPECT_TRUE(allclose(x, x + 1e-9));
  EXPECT_FALSE(allclose(x, x + 1e-3));
  EXPECT_TRUE(array_equal(x, x));
  EXPECT_FALSE(array_equal(x, rearrange(x, {P, B})));
}

TEST(Ops, ReductionsOverOneSeveralAndAllAxes) {
  at::Tensor t = randn({2, 3, 4}, 6);
  auto x = [](const std::vector<at::Tensor>& v) { return NamedArray(v[0], {B, P, E}); };
  expect_same_value_and_grad(
      {t}, [&](const auto& v) { return sum(x(v), "pos").array(); }, [](const auto& v) { return v[0].sum(1); });
  expect_same_value_and_grad(
      {t},
      [&](const auto& v) {
        return sum(x(v), {"batch", E}).array();
      },
      [](const auto& v) {
        return v[0].sum(at::IntArrayRef{0, 2});
      });
  expect_same_value_and_grad(
      {t}, [&](const auto& v) { return sum(x(v)).array(); }, [](const auto& v) { return v[0].sum(); });
  expect_same_value_and_grad(
      {t},
      [&](const auto& v) {
        return mean(x(v), {"pos", "embed"}).array();
      },
      [](const auto& v) {
        return v[0].mean(at::IntArrayRef{1, 2});
      });
  expect_same_value_and_grad(
      {t}, [&](const auto& v) { return max(x(v), "embed").array(); }, [](const auto& v) { return v[0].amax(2); });
  expect_same_value_and_grad(
      {t},
      [&](const auto& v) {
        return min(x(v), {"batch", "pos"}).array();
      },
      [](const auto& v) {
        return v[0].amin({0, 1});
      });
  expect_same_value_and_grad(
      {t},
      [&](const auto& v) {
        return prod(x(v), {"batch", "embed"}).array();
      },
      [](const auto& v) { return v[0].prod(2).prod(0); });
  expect_same_value_and_grad(
      {t}, [&](const auto& v) { return var(x(v), "embed").array(); },
      [](const auto& v) { return v[0].var(2, /*unbiased=*/false); });
  expect_same_value_and_grad(
      {t},
      [&](const auto& v) {
        return haliax::std(x(v), {"pos", "embed"}, 1).array();
      },
      [](const auto& v) {
        return v[0].std(at::IntArrayRef{1, 2}, /*unbiased=*/true);
      });
  expect_same_value_and_grad(
      {t}, [&](const auto& v) { return logsumexp(x(v), "pos").array(); },
      [](const auto& v) { return at::logsumexp(v[0], 1); });
  NamedArray a = x({t});
  EXPECT_TRUE(at::equal(argmax(a, "embed").array(), t.argmax(2)));
  EXPECT_TRUE(at::equal(argmin(a, "batch").array(), t.argmin(0)));
  EXPECT_TRUE(at::equal(argmax(a).array(), t.argmax()));
  EXPECT_EQ(sum(a, "pos").axes(), (AxisSpec{B, E}));
  EXPECT_EQ(sum(a, AxisSelection{}).axes(), a.axes());  // reducing over no axes is the identity
  EXPECT_TRUE(all(a > -100.0).item<bool>());
  EXPECT_TRUE(at::equal(any(a > 1.0, "pos").array(), (t > 1.0).any(1)));
  EXPECT_TRUE(at::allclose(cumsum(a, "pos").array(), t.cumsum(1)));
  EXPECT_TRUE(at::allclose(cumprod(a, "pos").array(), t.cumprod(1)));
  EXPECT_TRUE(at::equal(sort(a, "embed").array(), std::get<0>(t.sort(2))));
  EXPECT_TRUE(at::equal(argsort(a, "embed").array(), std::get<1>(t.sort(2))));
  EXPECT_VALUE_ERROR(sum(a, "vocab"), "axis vocab is not in {'batch': 2, 'pos': 3, 'embed': 4}");
}

TEST(Ops, ReductionsWithWhereMask) {
  at::Tensor t = randn({2, 3, 4}, 7);
  at::Tensor m = randn({3, 4}, 8) > 0;  // (pos, embed), broadcast over batch
  m[0][0] = true;
  auto run = [&](auto named, auto ref) {
    expect_same_value_and_grad(
        {t},
        [&](const auto& v) {
          return named(NamedArray(v[0], {B, P, E}), NamedArray(m, {P, E})).array();
        },
        [&](const auto& v) {
          return ref(v[0], m.unsqueeze(0).expand({2, 3, 4}));
        });
  };
  run(
      [](const NamedArray& x, const NamedArray& w) {
        return sum(x, {"pos", "embed"}, w);
      },
      [](const at::Tensor& x, const at::Tensor& w) {
        return at::where(w, x, at::zeros_like(x)).sum(at::IntArrayRef{1, 2});
      });
  run(
      [](const NamedArray& x, const NamedArray& w) {
        return mean(x, {"pos", "embed"}, w);
      },
      [](const at::Tensor& x, const at::Tensor& w) {
        return at::where(w, x, at::zeros_like(x)).sum(at::IntArrayRef{1, 2}) /
               w.sum(at::IntArrayRef{1, 2}).to(at::kDouble);
      });
  // max has no identity: a mask needs `initial` (without it, Haliax's ValueError: test_nan_reductions.cpp).
  run([](const NamedArray& x, const NamedArray& w) { return max(x, "embed", w, -1.0); },
      [](const at::Tensor& x, const at::Tensor& w) {
        return at::where(w, x, at::full_like(x, -INFINITY)).amax(2).clamp_min(-1.0);
      });
  run(
      [](const NamedArray& x, const NamedArray& w) {
        return min(x, {"batch", "pos"}, w, 0.0);
      },
      [](const at::Tensor& x, const at::Tensor& w) {
        return at::where(w, x, at::full_like(x, INFINITY)).amin({0, 1}).clamp_max(0.0);
      });
  run(
      [](const NamedArray& x, const NamedArray& w) {
        return var(x, {"pos", "embed"}, w);
      },
      [](const at::Tensor& x, const at::Tensor& w) {
        at::Tensor n = w.sum(at::IntArrayRef{1, 2}).to(at::kDouble);
        at::Tensor mu = at::where(w, x, at::zeros_like(x)).sum(at::IntArrayRef{1, 2}) / n;
        at::Tensor d = (x - mu.view({2, 1, 1})).square();
        return at::where(w, d, at::zeros_like(d)).sum(at::IntArrayRef{1, 2}) / n;
      });
  run(
      [](const NamedArray& x, const NamedArray& w) {
        return logsumexp(x, {"pos", "embed"}, w);
      },
      [](const at::Tensor& x, const at::Tensor& w) {
        return at::logsumexp(at::where(w, x, at::full_like(x, -INFINITY)).reshape({2, 12}), 1);
      });
  NamedArray x(t, {B, P, E});
  EXPECT_VALUE_ERROR(sum(x, "pos", NamedArray(at::ones({3}), {P})), "where must be a bool array");
}
