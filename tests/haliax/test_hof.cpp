// scan, fold, map and vmap (haliax/hof.h): values and gradients against positional ATen loops in f64, gradient
// checkpointing against the plain loop, errors, and values from the original Haliax (reference/gen_hof.py).
#include "haliax/hof.h"

#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "haliax/reference.h"
#include "haliax/reference/hof_expected.inc"
#include "testing.h"

using namespace haliax;
using haliax::testing::expect_matches_ref;
using haliax::testing::expect_same_value_and_grad;
using haliax::testing::randn;
using haliax::testing::ref_to_named;

namespace {
const Axis Y("y", 2), X("x", 4), B("b", 3);

at::Tensor flat_cat(const std::vector<at::Tensor>& parts) {
  std::vector<at::Tensor> flat;
  for (const at::Tensor& t : parts) flat.push_back(t.reshape(-1));
  return at::cat(flat);
}

// carry = carry * x_i + sin(x_i) * w; y_i = carry * x_i. x is (y, x): the scanned axis is not its first.
std::pair<NamedArray, NamedArray> mul_add_step(const NamedArray& c, const NamedArray& xi, const NamedArray& w) {
  NamedArray next = c * xi + haliax::sin(xi) * w;
  return {next, next * xi};
}

// The same loop in positional ATen: t = {init (2), x (2, 4), w (2)}; returns cat(carry, ys as (x, y)).
at::Tensor mul_add_loop(const std::vector<at::Tensor>& t, bool reverse) {
  at::Tensor c = t[0];
  std::vector<at::Tensor> ys(4);
  for (int64_t k = 0; k < 4; ++k) {
    const int64_t i = reverse ? 3 - k : k;
    at::Tensor xi = t[1].select(1, i);
    c = c * xi + at::sin(xi) * t[2];
    ys[static_cast<size_t>(i)] = c * xi;
  }
  return flat_cat({c, at::stack(ys, 0)});
}

at::Tensor named_mul_add_scan(const std::vector<at::Tensor>& t, ScanOptions options) {
  auto [carry, ys] =
      scan(mul_add_step, "x", options)(NamedArray(t[0], {Y}), NamedArray(t[1], {Y, X}), NamedArray(t[2], {Y}));
  EXPECT_EQ(carry.axes(), (AxisSpec{Y}));
  EXPECT_EQ(ys.axes(), (AxisSpec{X, Y}));  // the scanned axis comes first, as in Haliax
  return flat_cat({carry.array(), ys.array()});
}

std::vector<at::Tensor> mul_add_inputs() { return {randn({2}, 1), randn({2, 4}, 2), randn({2}, 3)}; }

ScanOptions reversed() {
  ScanOptions o;
  o.reverse = true;
  return o;
}

ScanOptions checkpointed() {
  ScanOptions o;
  o.gradient_checkpointing = true;
  return o;
}

}  // namespace

TEST(HaliaxHof, ScanMatchesAnATenLoopWithPassThroughArgument) {
  // w has no x axis: every step sees all of it, and its gradient sums over the steps.
  expect_same_value_and_grad(
      mul_add_inputs(), [](const auto& t) { return named_mul_add_scan(t, {}); },
      [](const auto& t) { return mul_add_loop(t, false); });
}

TEST(HaliaxHof, ScanReverseRunsBackwardsAndKeepsOutputsInPlace) {
  expect_same_value_and_grad(
      mul_add_inputs(), [](const auto& t) { return named_mul_add_scan(t, reversed()); },
      [](const auto& t) { return mul_add_loop(t, true); });
  // And the order matters for this step, so a forward loop would not pass.
  std::vector<at::Tensor> in = mul_add_inputs();
  EXPECT_FALSE(at::allclose(mul_add_loop(in, true), mul_add_loop(in, false)));
}

TEST(HaliaxHof, ScanAcceptsAxisObjectsAndNames) {
  std::vector<at::Tensor> in = mul_add_inputs();
  NamedArray init(in[0], {Y}), x(in[1], {Y, X}), w(in[2], {Y});
  auto by_name = scan(mul_add_step, "x")(init, x, w);
  auto by_axis = scan(mul_add_step, X)(init, x, w);
  EXPECT_TRUE(array_equal(by_name.first, by_axis.first));
  EXPECT_TRUE(array_equal(by_name.second, by_axis.second));
}

TEST(HaliaxHof, ScanCarriesAndOutputsTuplesAndVectors) {
  // carry: (a, [b0, b1]); inputs: a vector holding a sliced array and a passed-through one; ys: (u, [v]).
  using Carry = std::tuple<NamedArray, std::vector<NamedArray>>;
  auto step = [](const Carry& c, const std::vector<NamedArray>& xs) {
    const auto& [a, bs] = c;
    const NamedArray& xi = xs[0];
    const NamedArray& w = xs[1];
    NamedArray a2 = a + xi * bs[1];
    Carry next{a2, {bs[0] * w, haliax::tanh(bs[1] + xi)}};
    return std::make_pair(next, std::make_pair(a2 * 2.0, std::vector<NamedArray>{haliax::sum(xi * w)}));
  };
  expect_same_value_and_grad(
      {randn({2}, 4), randn({2}, 5), randn({2}, 6), randn({2, 4}, 7), randn({2}, 8)},
      [&](const auto& t) {
        Carry init{NamedArray(t[0], {Y}), {NamedArray(t[1], {Y}), NamedArray(t[2], {Y})}};
        std::vector<NamedArray> xs{NamedArray(t[3], {Y, X}), NamedArray(t[4], {Y})};
        auto [carry, ys] = scan(step, X)(init, xs);
        const auto& [a, bs] = carry;
        EXPECT_EQ(bs.size(), 2u);
        EXPECT_EQ(ys.first.axes(), (AxisSpec{X, Y}));
        EXPECT_EQ(ys.second.size(), 1u);
        EXPECT_EQ(ys.second[0].axes(), (AxisSpec{X}));
        return flat_cat({a.array(), bs[0].array(), bs[1].array(), ys.first.array(), ys.second[0].array()});
      },
      [](const auto& t) {
        at::Tensor a = t[0], b0 = t[1], b1 = t[2];
        std::vector<at::Tensor> us, vs;
        for (int64_t i = 0; i < 4; ++i) {
          at::Tensor xi = t[3].select(1, i);
          at::Tensor a2 = a + xi * b1;
          at::Tensor nb0 = b0 * t[4], nb1 = at::tanh(b1 + xi);
          a = a2;
          b0 = nb0;
          b1 = nb1;
          us.push_back(a2 * 2.0);
          vs.push_back((xi * t[4]).sum());
        }
        return flat_cat({a, b0, b1, at::stack(us, 0), at::stack(vs, 0)});
      });
}

TEST(HaliaxHof, ScanOverAnAxisNoInputHasRunsItsSizeInSteps) {
  // Haliax: with an Axis, the number of steps is known even when nothing is sliced.
  NamedArray init(randn({2}, 9), {Y});
  Axis N("n", 3);
  auto [carry, ys] = scan([](const NamedArray& c) { return std::make_pair(c * 2.0, c); }, N)(init);
  EXPECT_TRUE(at::allclose(carry.array(), init.array() * 8.0));
  EXPECT_EQ(ys.axes(), (AxisSpec{N, Y}));
  EXPECT_TRUE(at::allclose(ys.array(), at::stack({init.array(), init.array() * 2.0, init.array() * 4.0}, 0)));
}

TEST(HaliaxHof, FoldMatchesAnATenLoopForwardAndReversed) {
  for (bool reverse : {false, true}) {
    ScanOptions options;
    options.reverse = reverse;
    expect_same_value_and_grad(
        mul_add_inputs(),
        [&](const auto& t) {
          auto f = [](const NamedArray& c, const NamedArray& xi, const NamedArray& w) {
            return mul_add_step(c, xi, w).first;
          };
          NamedArray carry =
              fold(f, "x", options)(NamedArray(t[0], {Y}), NamedArray(t[1], {Y, X}), NamedArray(t[2], {Y}));
          EXPECT_EQ(carry.axes(), (AxisSpec{Y}));
          return carry.array();
        },
        [&](const auto& t) { return mul_add_loop(t, reverse).slice(0, 0, 2); });
  }
}

TEST(HaliaxHof, MapStacksEachSliceResultFirst) {
  // Two arguments (Haliax's map takes one tree): x is sliced, w passes through.
  for (bool reverse : {false, true}) {
    ScanOptions options;
    options.reverse = reverse;
    expect_same_value_and_grad(
        {randn({2, 4}, 10), randn({2}, 11)},
        [&](const auto& t) {
          auto f = [](const NamedArray& xi, const NamedArray& w) { return haliax::exp(xi) * w + haliax::sum(xi); };
          NamedArray out = map(f, "x", options)(NamedArray(t[0], {Y, X}), NamedArray(t[1], {Y}));
          EXPECT_EQ(out.axes(), (AxisSpec{X, Y}));
          return out.array();
        },
        [](const auto& t) {
          std::vector<at::Tensor> out;
          for (int64_t i = 0; i < 4; ++i) {
            at::Tensor xi = t[0].select(1, i);
            out.push_back(at::exp(xi) * t[1] + xi.sum());
          }
          return at::stack(out, 0);
        });
  }
}

TEST(HaliaxHof, VmapSeesArgumentsWithoutTheAxisAndPutsItFirst) {
  expect_same_value_and_grad(
      {randn({3, 2, 4}, 12), randn({2}, 13)},
      [](const auto& t) {
        auto f = [](const NamedArray& u, const NamedArray& w) {
          EXPECT_EQ(u.axes(), (AxisSpec{B, Y}));
          return haliax::sum(haliax::tanh(u) * w, Y);
        };
        NamedArray out = vmap(f, "x")(NamedArray(t[0], {B, Y, X}), NamedArray(t[1], {Y}));
        EXPECT_EQ(out.axes(), (AxisSpec{X, B}));
        return out.array();
      },
      [](const auto& t) {
        return (at::tanh(t[0]) * t[1].view({1, 2, 1})).sum(1).t();
      });
}

TEST(HaliaxHof, VmapOverSeveralAxesNestsWithTheFirstOutermost) {
  auto f = [](const NamedArray& u, const NamedArray& w) {
    EXPECT_EQ(u.axes(), (AxisSpec{Y}));
    return haliax::sum(haliax::tanh(u) * w);
  };
  auto aten = [](const std::vector<at::Tensor>& t) { return (at::tanh(t[0]) * t[1].view({1, 2, 1})).sum(1); };
  expect_same_value_and_grad(
      {randn({3, 2, 4}, 14), randn({2}, 15)},
      [&](const auto& t) {
        NamedArray out = vmap(f, {X, B})(NamedArray(t[0], {B, Y, X}), NamedArray(t[1], {Y}));
        EXPECT_EQ(out.axes(), (AxisSpec{X, B}));
        return out.array();
      },
      [&](const auto& t) { return aten(t).t(); });
  expect_same_value_and_grad(
      {randn({3, 2, 4}, 14), randn({2}, 15)},
      [&](const auto& t) {
        NamedArray out = vmap(f, {"b", "x"})(NamedArray(t[0], {B, Y, X}), NamedArray(t[1], {Y}));
        EXPECT_EQ(out.axes(), (AxisSpec{B, X}));
        return out.array();
      },
      aten);
  // No axes: f itself.
  NamedArray u(randn({2}, 16), {Y});
  EXPECT_TRUE(array_equal(vmap(f, AxisSelection())(u, u), f(u, u)));
}

TEST(HaliaxHof, VmapReturnsTreesWithTheAxisFirstOnEveryLeaf) {
  NamedArray xb(randn({3, 2, 4}, 23), {B, Y, X});
  auto f = [](const NamedArray& u) { return std::make_pair(u * 2.0, std::vector<NamedArray>{haliax::sum(u)}); };
  auto [doubled, sums] = vmap(f, X)(xb);
  EXPECT_EQ(doubled.axes(), (AxisSpec{X, B, Y}));
  EXPECT_TRUE(at::allclose(doubled.array(), xb.array().permute({2, 0, 1}) * 2.0));
  ASSERT_EQ(sums.size(), 1u);
  EXPECT_EQ(sums[0].axes(), (AxisSpec{X}));
  EXPECT_TRUE(at::allclose(sums[0].array(), xb.array().sum(at::IntArrayRef{0, 1})));
}

TEST(HaliaxHof, VmapOverAnAbsentAxisBroadcastsTheResult) {
  NamedArray w(randn({2}, 17), {Y});
  Axis Z("z", 2);
  NamedArray out = vmap([](const NamedArray& v) { return v * 2.0; }, Z)(w);
  EXPECT_EQ(out.axes(), (AxisSpec{Z, Y}));
  EXPECT_TRUE(at::allclose(out.array(), (w.array() * 2.0).expand({2, 2})));
}

// --- gradient checkpointing ------------------------------------------------------------------------------------

TEST(HaliaxHofCheckpointing, ScanGradientsEqualThePlainScanAndStepsAreRecomputed) {
  auto calls = std::make_shared<int>(0);
  // y_i is the step's input carry: an output that is also an input of the checkpointed step.
  auto step = [calls](const NamedArray& c, const NamedArray& xi, const NamedArray& w) {
    ++*calls;
    return std::make_pair(haliax::tanh(c * xi) + w, c);
  };
  auto run = [&](const std::vector<at::Tensor>& t, ScanOptions options) {
    auto [carry, ys] = scan(step, "x", options)(NamedArray(t[0], {Y}), NamedArray(t[1], {Y, X}), NamedArray(t[2], {Y}));
    return flat_cat({carry.array(), ys.array()});
  };
  for (bool reverse : {false, true}) {
    ScanOptions on = checkpointed(), off;
    on.reverse = off.reverse = reverse;
    expect_same_value_and_grad(
        mul_add_inputs(), [&](const auto& t) { return run(t, on); }, [&](const auto& t) { return run(t, off); }, 1e-12);
  }
  // With checkpointing each of the 4 steps runs again in backward; without, only once.
  std::vector<at::Tensor> in = mul_add_inputs();
  for (at::Tensor& t : in) t.requires_grad_(true);
  *calls = 0;
  run(in, checkpointed()).sum().backward();
  EXPECT_EQ(*calls, 8);
  *calls = 0;
  run(in, {}).sum().backward();
  EXPECT_EQ(*calls, 4);
  {
    nn::NoCheckpointing guard;  // for code that differentiates twice
    *calls = 0;
    run(in, checkpointed()).sum().backward();
    EXPECT_EQ(*calls, 4);
  }
}

TEST(HaliaxHofCheckpointing, FoldAndMapGradientsEqualThePlainOnes) {
  auto fold_run = [](const std::vector<at::Tensor>& t, ScanOptions options) {
    auto f = [](const NamedArray& c, const NamedArray& xi, const NamedArray& w) {
      return mul_add_step(c, xi, w).first;
    };
    return fold(f, X, options)(NamedArray(t[0], {Y}), NamedArray(t[1], {Y, X}), NamedArray(t[2], {Y})).array();
  };
  expect_same_value_and_grad(
      mul_add_inputs(), [&](const auto& t) { return fold_run(t, checkpointed()); },
      [&](const auto& t) { return fold_run(t, {}); }, 1e-12);
  auto map_run = [](const std::vector<at::Tensor>& t, ScanOptions options) {
    auto f = [](const NamedArray& xi, const NamedArray& w) { return haliax::sin(xi * w) * xi; };
    return map(f, X, options)(NamedArray(t[1], {Y, X}), NamedArray(t[2], {Y})).array();
  };
  expect_same_value_and_grad(
      mul_add_inputs(), [&](const auto& t) { return map_run(t, checkpointed()); },
      [&](const auto& t) { return map_run(t, {}); }, 1e-12);
}

// --- errors ----------------------------------------------------------------------------------------------------

namespace {
namespace ref = haliax_ref::hof;

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ValueError& e) {
    return e.what();
  }
  return "(no ValueError)";
}

std::pair<NamedArray, NamedArray> keep(const NamedArray& c, const NamedArray&, const NamedArray&) { return {c, c}; }
}  // namespace

TEST(HaliaxHofErrors, MismatchedSlicedSizesUseHaliaxsMessage) {
  NamedArray init = ref_to_named(ref::init), x = ref_to_named(ref::x);
  NamedArray w = ref_to_named(ref::w);
  NamedArray x5 = zeros({Y, X.resize(5)}, at::kDouble);
  EXPECT_EQ(error_of([&] { scan(keep, "x")(init, x, x5); }), ref::scan_mismatch.message);
  auto keep_tuple = [](const NamedArray& c, const NamedArray&, const std::tuple<NamedArray, NamedArray>&) {
    return std::make_pair(c, c);
  };
  EXPECT_EQ(error_of([&] { scan(keep_tuple, "x")(init, w, std::make_tuple(x, x5)); }),
            ref::scan_mismatch_nested.message);
  auto keep_carry = [](const NamedArray& c, const NamedArray&, const NamedArray&) { return c; };
  EXPECT_EQ(error_of([&] { fold(keep_carry, "x")(init, x, x5); }), ref::fold_mismatch.message);
  auto first = [](const std::tuple<NamedArray, NamedArray>& u) { return std::get<0>(u); };
  EXPECT_EQ(error_of([&] { map(first, "x")(std::make_tuple(x, x5)); }), ref::map_mismatch.message);
  // JAX's vmap message names positions and flat indices; ours names the axis. The first line is the same.
  std::string vmap_msg = error_of([&] { vmap([](const NamedArray& u, const NamedArray&) { return u; }, "x")(x, x5); });
  const std::string& expected = ref::vmap_mismatch.message;
  EXPECT_EQ(vmap_msg.substr(0, vmap_msg.find('\n')), expected.substr(0, expected.find('\n')));
  EXPECT_THAT(vmap_msg, ::testing::HasSubstr("one axis had size 5: axis x of argument args[1]"));
}

TEST(HaliaxHofErrors, AxisMissingFromEveryInput) {
  NamedArray init = ref_to_named(ref::init), w = ref_to_named(ref::w);
  auto id = [](const NamedArray& v) { return v; };
  EXPECT_EQ(error_of([&] { vmap(id, "x")(w); }), ref::vmap_missing.message);
  // Haliax's scan fails with an AttributeError here; ours says what is wrong.
  EXPECT_VALUE_ERROR(scan([](const NamedArray& c, const NamedArray& v) { return std::make_pair(c, v); }, "x")(init, w),
                     "scan: no input has the axis x, so the number of steps is unknown");
  EXPECT_VALUE_ERROR(fold([](const NamedArray& c, const NamedArray&) { return c; }, "x")(init, w),
                     "fold: no input has the axis x");
  EXPECT_VALUE_ERROR(map(id, "x")(w), "map: no input has the axis x");
}

TEST(HaliaxHofErrors, AnAxisOfAnotherSizeIsAnError) {
  // Haliax's vmap raises "Found axis with same name but different size: x(3) vs x(4)"; its scan would pass x
  // through unsliced, which here is an error too.
  NamedArray init = ref_to_named(ref::init), x = ref_to_named(ref::x);
  EXPECT_THAT(ref::vmap_axis_size.message, ::testing::HasSubstr("Found axis with same name but different size"));
  EXPECT_VALUE_ERROR(vmap([](const NamedArray& u) { return u; }, X.resize(3))(x),
                     "Found axis with same name but different size");
  EXPECT_VALUE_ERROR(
      scan([](const NamedArray& c, const NamedArray& u) { return std::make_pair(c, u); }, X.resize(3))(init, x),
      "Found axis with same name but different size");
}

TEST(HaliaxHofErrors, TheCarryMustKeepItsAxesAndDtype) {
  NamedArray init(randn({2}, 18), {Y}), xb(randn({3, 2, 4}, 19), {B, Y, X});
  auto grow = [](const NamedArray& c, const NamedArray& u) { return c + u; };  // (y) + (b, y) -> (b, y)
  EXPECT_VALUE_ERROR(fold(grow, X)(init, xb),
                     "fold: at step 0, carry array 0 went from float64{'y': 2} to float64{'b': 3, 'y': 2}");
  NamedArray init32 = init.astype(at::kFloat);
  auto add = [](const NamedArray& c, const NamedArray& u) { return std::make_pair(c + u, u); };
  EXPECT_VALUE_ERROR(scan(add, X)(init32, NamedArray(randn({2, 4}, 20), {Y, X})),
                     "carry array 0 went from float32{'y': 2} to float64{'y': 2}");
  using Carry = std::vector<NamedArray>;
  auto extend = [](const Carry& c, const NamedArray& u) {
    Carry next = c;
    next.push_back(u);
    return next;
  };
  EXPECT_VALUE_ERROR(fold(extend, X)(Carry{init}, NamedArray(randn({2, 4}, 21), {Y, X})),
                     "the carry went from 1 arrays to 2");
}

TEST(HaliaxHofErrors, AnAxisWithoutPositions) {
  Axis Z("z", 0);
  NamedArray init(randn({2}, 22), {Y}), empty(at::zeros({0, 2}, at::kDouble), {Z, Y});
  auto step = [](const NamedArray& c, const NamedArray& u) { return std::make_pair(c + u, u); };
  EXPECT_VALUE_ERROR(scan(step, "z")(init, empty), "scan over Axis(name='z', size=0), which has no positions");
  // fold has no outputs to stack: it returns the initial carry, as jax.lax.scan does.
  EXPECT_TRUE(
      array_equal(fold([](const NamedArray& c, const NamedArray& u) { return c + u; }, "z")(init, empty), init));
}

// --- against the original Haliax -------------------------------------------------------------------------------

TEST(HaliaxHofReference, ScanCumulativeSumAndProduct) {
  NamedArray init = ref_to_named(ref::init), x = ref_to_named(ref::x);
  NamedArray w = ref_to_named(ref::w);
  auto cumsum_step = [](const NamedArray& c, const NamedArray& xi) {
    NamedArray next = c + xi;
    return std::make_pair(next, next);
  };
  auto [carry, ys] = scan(cumsum_step, X)(init, x);
  expect_matches_ref(carry, ref::cumsum_carry);
  expect_matches_ref(ys, ref::cumsum_ys);
  auto [rcarry, rys] = scan(cumsum_step, "x", reversed())(init, x);
  expect_matches_ref(rcarry, ref::cumsum_rev_carry);
  expect_matches_ref(rys, ref::cumsum_rev_ys);
  auto cumprod_step = [](const NamedArray& c, const NamedArray& xi, const NamedArray& wi) {
    NamedArray next = c * xi + wi;
    return std::make_pair(next, std::make_tuple(next, haliax::sum(next * wi)));
  };
  auto [pcarry, pys] = scan(cumprod_step, "x")(init, x, w);
  expect_matches_ref(pcarry, ref::cumprod_carry);
  expect_matches_ref(std::get<0>(pys), ref::cumprod_ys);
  expect_matches_ref(std::get<1>(pys), ref::cumprod_dots);
}

TEST(HaliaxHofReference, FoldMapAndVmap) {
  NamedArray init = ref_to_named(ref::init), x = ref_to_named(ref::x);
  NamedArray w = ref_to_named(ref::w), xb = ref_to_named(ref::xb);
  expect_matches_ref(fold([&](const NamedArray& c, const NamedArray& xi) { return c + xi * w; }, X)(init, x),
                     ref::fold_sum);
  expect_matches_ref(
      fold([](const NamedArray& c, const NamedArray& xi) { return c * 0.5 + xi; }, "x", reversed())(init, x),
      ref::fold_rev);
  expect_matches_ref(fold([](const NamedArray& c) { return c * 2.0 + 1.0; }, Axis("n", 3))(init), ref::fold_steps);
  expect_matches_ref(map([](const NamedArray& u) { return u * u + 1.0; }, X)(x), ref::map_sq);
  expect_matches_ref(map([](const NamedArray& u) { return haliax::sum(u); }, "x", reversed())(x), ref::map_rev);
  expect_matches_ref(vmap([](const NamedArray& u, const NamedArray& v) { return u * v + 1.0; }, "x")(x, w),
                     ref::vmap_one);
  auto sum_y = [](const NamedArray& u) { return haliax::sum(u, "y"); };
  expect_matches_ref(vmap(sum_y, {X, B})(xb), ref::vmap_xb);
  expect_matches_ref(vmap(sum_y, {B, X})(xb), ref::vmap_bx);
  expect_matches_ref(vmap([](const NamedArray& v) { return v * 2.0; }, Axis("z", 2))(w), ref::vmap_unmapped);
}
