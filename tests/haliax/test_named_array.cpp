#include "testing.h"

using namespace haliax;
using haliax::testing::expect_same_value_and_grad;
using haliax::testing::randn;

namespace {
const Axis B("batch", 2), P("pos", 3), E("embed", 4);
}

TEST(NamedArray, ConstructionChecksShapeAndNames) {
  NamedArray x(at::zeros({2, 3}), {B, P});
  EXPECT_EQ(x.ndim(), 2);
  EXPECT_EQ(x.numel(), 6);
  EXPECT_EQ(x.axis_size("pos"), 3);
  EXPECT_EQ(x.shape().at("batch"), 2);
  EXPECT_EQ(x.resolve_axis("batch"), B);
  EXPECT_TRUE(x.has_axis({"batch", P}));
  EXPECT_FALSE(x.has_axis({"batch", "embed"}));
  EXPECT_EQ(*x.axis_index("pos"), 1u);
  EXPECT_EQ(x.dtype(), at::kFloat);
  EXPECT_EQ(x.device().type(), at::kCPU);
  EXPECT_EQ(x.str(), "NamedArray(dtype=float32, axes={'batch': 2, 'pos': 3})");
  EXPECT_VALUE_ERROR(NamedArray(at::zeros({2, 4}), {B, P}),
                     "Shape of underlying array (2, 4) does not match shape of axes {'batch': 2, 'pos': 3}");
  EXPECT_VALUE_ERROR(NamedArray(at::zeros({2, 2}), {B, B}), "Axes must be unique");
  EXPECT_VALUE_ERROR(x.axis_size("embed"), "Axis embed not found");
  EXPECT_VALUE_ERROR(x.scalar(), "Expected scalar, got 2-dimensional array");
}

TEST(NamedArray, NamedTakesSizesFromTensor) {
  NamedArray x = named(at::ones({2, 5}), {"batch", "vocab"});
  EXPECT_EQ(x.axes(), (AxisSpec{B, Axis("vocab", 5)}));
  EXPECT_VALUE_ERROR(named(at::ones({2, 5}), {B, Axis("vocab", 4)}), "Shape mismatch");
  EXPECT_VALUE_ERROR(named(at::ones({2, 5}), {"batch"}), "Shape mismatch");
  NamedArray s(at::scalar_tensor(3.5, at::kDouble), {});
  EXPECT_DOUBLE_EQ(s.item(), 3.5);
}

TEST(NamedArray, BinaryOpsBroadcastByName) {
  // x: (batch, pos, embed); y: (embed, batch) is a subset in another order.
  at::Tensor xt = randn({2, 3, 4}, 1), yt = randn({4, 2}, 2);
  auto named_fn = [](const std::vector<at::Tensor>& t) {
    NamedArray x(t[0], {B, P, E}), y(t[1], {E, B});
    NamedArray out = (x + y) * y - x / (y * y + 1.0) + 2.0 * x - 1.0;
    EXPECT_EQ(out.axes(), (AxisSpec{B, P, E}));
    return out.array();
  };
  auto ref_fn = [](const std::vector<at::Tensor>& t) {
    at::Tensor y = t[1].t().unsqueeze(1);  // (batch, 1, embed)
    return (t[0] + y) * y - t[0] / (y * y + 1.0) + 2.0 * t[0] - 1.0;
  };
  expect_same_value_and_grad({xt, yt}, named_fn, ref_fn);
}

TEST(NamedArray, ScalarsAndZeroDimArraysBroadcastFreely) {
  NamedArray x(randn({2, 3}, 3), {B, P});
  NamedArray s(at::scalar_tensor(2.0, at::kDouble), {});
  EXPECT_TRUE(at::allclose((x * s).array(), x.array() * 2.0));
  EXPECT_TRUE(at::allclose((s - x).array(), 2.0 - x.array()));
  EXPECT_TRUE(at::allclose((1.0 / x).array(), 1.0 / x.array()));
  EXPECT_TRUE(at::allclose((-x).array(), -x.array()));
  // A float32 array times a C++ double stays float32, as with Python numbers.
  NamedArray f(at::ones({2}, at::kFloat), {B});
  EXPECT_EQ((f * 3.0).dtype(), at::kFloat);
  EXPECT_EQ((3.0 / f).dtype(), at::kFloat);
}

TEST(NamedArray, NoSubsetRelationshipIsHaliaxsError) {
  NamedArray x(at::zeros({2, 3}), {B, P});
  NamedArray y(at::zeros({2, 4}), {B, E});
  EXPECT_VALUE_ERROR(x + y,
                     "Cannot broadcast NamedArray(dtype=float32, axes={'batch': 2, 'pos': 3}) and "
                     "NamedArray(dtype=float32, axes={'batch': 2, 'embed': 4}): no subset relationship");
  // Same name, different size: not a subset either.
  NamedArray z(at::zeros({5}), {Axis("pos", 5)});
  EXPECT_VALUE_ERROR(x * z, "no subset relationship");
  // broadcast_axis adds the axes explicitly, after which the op is fine.
  NamedArray ok = broadcast_axis(x, {E}) + broadcast_axis(y, {P});
  EXPECT_EQ(ok.ndim(), 3);
}

TEST(NamedArray, ComparisonsAndLogic) {
  at::Tensor xt = randn({2, 3}, 4), yt = randn({3}, 5);
  NamedArray x(xt, {B, P}), y(yt, {P});
  EXPECT_TRUE(at::equal((x < y).array(), xt < yt));
  EXPECT_TRUE(at::equal((x >= y).array(), xt >= yt));
  EXPECT_TRUE(at::equal((x > 0.5).array(), xt > 0.5));
  EXPECT_TRUE(at::equal(((x > 0.0) & (y < 0.0)).array(), (xt > 0) & (yt < 0)));
  EXPECT_TRUE(at::equal(((x > 0.0) | (y < 0.0)).array(), (xt > 0) | (yt < 0)));
  EXPECT_TRUE(at::equal((~(x > 0.0)).array(), ~(xt > 0)));
  EXPECT_TRUE(at::equal(equal(x, y).array(), xt == yt));
  EXPECT_TRUE(at::equal(not_equal(x, 0.0).array(), xt != 0));
}

TEST(NamedArray, BroadcastToOrdersAndChecks) {
  NamedArray y(randn({4, 2}, 6), {E, B});
  NamedArray z = broadcast_to(y, {B, P, E});
  EXPECT_EQ(z.axes(), (AxisSpec{B, P, E}));
  EXPECT_TRUE(at::equal(z.array(), y.array().t().unsqueeze(1).expand({2, 3, 4})));
  EXPECT_VALUE_ERROR(broadcast_to(y, {B, P}), "extra axes present ['embed']");
  EXPECT_VALUE_ERROR(broadcast_to(y, {B.resize(5), E}), "Axis batch has different sizes");
  auto [arrays, axes] = broadcast_arrays({NamedArray(at::zeros({3}), {P}), y}, /*require_subset=*/false);
  EXPECT_EQ(axes, (AxisSpec{P, E, B}));
  EXPECT_EQ(arrays[1].axes(), axes);
}

TEST(NamedArray, GradAccessor) {
  NamedArray w(at::ones({3}, at::kDouble).requires_grad_(true), {P});
  sum(w * w).array().backward();
  ASSERT_TRUE(w.grad().defined());
  EXPECT_TRUE(at::allclose(w.grad().array(), at::full({3}, 2.0, at::kDouble)));
  EXPECT_EQ(w.grad().axes(), w.axes());
}
