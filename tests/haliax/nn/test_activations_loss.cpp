#include "../testing.h"

using namespace haliax;
using haliax::testing::expect_same_value_and_grad;
using haliax::testing::rand_int;
using haliax::testing::randn;

namespace {
const Axis B("batch", 2), P("pos", 3), V("vocab", 7);
}

TEST(Activations, MatchATen) {
  at::Tensor t = randn({2, 3}, 1) * 2;
  auto check = [&](auto named, auto ref) {
    expect_same_value_and_grad(
        {t},
        [&](const auto& v) {
          return named(NamedArray(v[0], {B, P})).array();
        },
        [&](const auto& v) { return ref(v[0]); });
  };
  check([](const NamedArray& x) { return nn::relu(x); }, [](const at::Tensor& x) { return at::relu(x); });
  check([](const NamedArray& x) { return nn::sigmoid(x); }, [](const at::Tensor& x) { return at::sigmoid(x); });
  check([](const NamedArray& x) { return nn::silu(x); }, [](const at::Tensor& x) { return x * at::sigmoid(x); });
  check([](const NamedArray& x) { return nn::softplus(x); }, [](const at::Tensor& x) { return at::log1p(at::exp(x)); });
  check([](const NamedArray& x) { return nn::log_sigmoid(x); },
        [](const at::Tensor& x) { return -at::log1p(at::exp(-x)); });
  check([](const NamedArray& x) { return nn::elu(x); },
        [](const at::Tensor& x) { return at::where(x > 0, x, at::exp(x) - 1); });
  check([](const NamedArray& x) { return nn::leaky_relu(x, 0.1); },
        [](const at::Tensor& x) { return at::where(x > 0, x, 0.1 * x); });
  check([](const NamedArray& x) { return nn::gelu(x, /*approximate=*/false); },
        [](const at::Tensor& x) { return 0.5 * x * (1 + at::erf(x / std::sqrt(2.0))); });
  check(
      [](const NamedArray& x) { return nn::gelu(x, /*approximate=*/true); },
      [](const at::Tensor& x) { return 0.5 * x * (1 + at::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))); });
  check([](const NamedArray& x) { return nn::quick_gelu(x); },
        [](const at::Tensor& x) { return x * at::sigmoid(1.702 * x); });
}

TEST(Activations, SoftmaxOverOneAndSeveralAxes) {
  at::Tensor t = randn({2, 3, 7}, 2);
  expect_same_value_and_grad(
      {t},
      [](const auto& v) {
        return nn::softmax(NamedArray(v[0], {B, P, V}), "pos").array();
      },
      [](const auto& v) { return at::softmax(v[0], 1); });
  expect_same_value_and_grad(
      {t},
      [](const auto& v) {
        return nn::log_softmax(NamedArray(v[0], {B, P, V}), {"batch", "vocab"}).array();
      },
      [](const auto& v) {
        at::Tensor moved = v[0].permute({1, 0, 2}).reshape({3, 14});
        return at::log_softmax(moved, 1).reshape({3, 2, 7}).permute({1, 0, 2});
      });
  expect_same_value_and_grad(
      {t},
      [](const auto& v) {
        return nn::standardize(NamedArray(v[0], {B, P, V}), "vocab").array();
      },
      [](const auto& v) {
        at::Tensor m = v[0].mean(2, true), var = v[0].var(2, /*unbiased=*/false, true);
        return (v[0] - m) / at::sqrt(var + 1e-5);
      });
}

TEST(Activations, OneHot) {
  at::Tensor ids = rand_int({2, 3}, 7, 3);
  NamedArray oh = nn::one_hot(NamedArray(ids, {B, P}), V);
  EXPECT_EQ(oh.axes(), (AxisSpec{B, P, V}));
  EXPECT_TRUE(at::equal(oh.array(), at::one_hot(ids, 7).to(at::kFloat)));
  EXPECT_TRUE(at::equal(nn::one_hot(3, V).array(), at::one_hot(at::scalar_tensor(3, at::kLong), 7).to(at::kFloat)));
  EXPECT_VALUE_ERROR(nn::one_hot(NamedArray(at::zeros({2}), {B}), V), "one_hot needs integer ids");
}

TEST(Loss, CrossEntropyDenseAndSparseMatchATen) {
  at::Tensor logits = randn({2, 3, 7}, 4), ids = rand_int({2, 3}, 7, 5);
  // Sparse (integer) targets, mean over everything.
  expect_same_value_and_grad(
      {logits},
      [&](const auto& v) {
        return nn::cross_entropy_loss(NamedArray(v[0], {B, P, V}), "vocab", NamedArray(ids, {B, P})).array();
      },
      [&](const auto& v) {
        return at::cross_entropy_loss(v[0].reshape({6, 7}), ids.reshape({6}));
      });
  // One-hot targets give the same, summed.
  expect_same_value_and_grad(
      {logits},
      [&](const auto& v) {
        NamedArray t = nn::one_hot(NamedArray(ids, {B, P}), V, at::kDouble);
        return nn::cross_entropy_loss(NamedArray(v[0], {B, P, V}), "vocab", t, nn::Reduction::kSum).array();
      },
      [&](const auto& v) {
        return at::cross_entropy_loss(v[0].reshape({6, 7}), ids.reshape({6}), {}, at::Reduction::Sum);
      });
  // A mask and a reduction over one axis only.
  at::Tensor mask = at::tensor({1, 1, 0, 1, 0, 1}).to(at::kBool).reshape({2, 3});
  expect_same_value_and_grad(
      {logits},
      [&](const auto& v) {
        return nn::cross_entropy_loss(NamedArray(v[0], {B, P, V}), "vocab", NamedArray(ids, {B, P}),
                                      nn::Reduction::kMean, NamedArray(mask, {B, P}), AxisSelection("pos"))
            .array();
      },
      [&](const auto& v) {
        at::Tensor per =
            at::cross_entropy_loss(v[0].reshape({6, 7}), ids.reshape({6}), {}, at::Reduction::None).reshape({2, 3});
        return at::where(mask, per, at::zeros_like(per)).sum(1) / mask.sum(1).to(at::kDouble);
      });
  NamedArray none = nn::cross_entropy_loss(NamedArray(logits, {B, P, V}), "vocab", NamedArray(ids, {B, P}),
                                           nn::Reduction::kNone, NamedArray(mask, {B, P}));
  EXPECT_EQ(none.axes(), (AxisSpec{B, P}));
  EXPECT_EQ(none.array()[0][2].item<double>(), 0.0);
  EXPECT_VALUE_ERROR(
      nn::cross_entropy_loss(NamedArray(logits, {B, P, V}), "vocab", NamedArray(at::zeros({2, 3}), {B, P})),
      "targets must have the vocab axis");
}

TEST(Loss, BinaryCrossEntropy) {
  at::Tensor logits = randn({2, 3}, 6), targets = (randn({2, 3}, 7) > 0).to(at::kDouble);
  expect_same_value_and_grad(
      {logits},
      [&](const auto& v) {
        return nn::binary_cross_entropy_loss(NamedArray(v[0], {B, P}), NamedArray(targets, {B, P})).array();
      },
      [&](const auto& v) { return at::binary_cross_entropy_with_logits(v[0], targets); });
}

TEST(Mse, TheBlogsBroadcastingBugAndItsAbsence) {
  // Positional: predictions (32,) and targets (32, 1) silently broadcast to (32, 32): a wrong loss, no error.
  at::Tensor pred = randn({32}, 8), target = randn({32, 1}, 9);
  at::Tensor right = (pred - target.squeeze(1)).square().mean();
  at::Tensor wrong = (pred - target).square().mean();
  EXPECT_EQ((pred - target).sizes(), (at::IntArrayRef{32, 32}));
  EXPECT_GT((wrong - right).abs().item<double>(), 1e-3);
  // Named: the same data with names computes the right loss...
  Axis Batch("batch", 32), One("one", 1);
  auto mse = [](const NamedArray& p, const NamedArray& t) { return mean(square(p - t)); };
  NamedArray p(pred, {Batch}), t(target, {Batch, One});
  EXPECT_TRUE(at::allclose(mse(p, t).array(), right));
  // ...and two arrays whose batch axes are not the same axis cannot be combined at all.
  NamedArray other(target.squeeze(1), {Axis("example", 32)});
  EXPECT_VALUE_ERROR(mse(p, other), "no subset relationship");
}
