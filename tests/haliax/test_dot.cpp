#include "testing.h"

using namespace haliax;
using haliax::testing::expect_same_value_and_grad;
using haliax::testing::randn;

namespace {
const Axis B("batch", 2), P("pos", 3), E("embed", 4), H("head", 5), K("key", 6);
}

TEST(Dot, ContractsNamedAxesBatchesSharedKeepsRest) {
  at::Tensor q = randn({2, 3, 5, 6}, 1), k = randn({2, 5, 6, 4}, 2);
  expect_same_value_and_grad(
      {q, k},
      [](const auto& v) {
        // q: (batch, pos, head, key); k: (batch, head, key, embed); contract key, batch over batch and head.
        NamedArray out = dot(NamedArray(v[0], {B, P, H, K}), NamedArray(v[1], {B, H, K, E}), "key");
        EXPECT_EQ(out.axes(), (AxisSpec{B, P, H, E}));  // order of first appearance
        return out.array();
      },
      [](const auto& v) {
        return at::einsum("bphk,bhke->bphe", {v[0], v[1]});
      });
}

TEST(Dot, OutAxesPartialOrder) {
  at::Tensor x = randn({2, 3, 4}, 3), w = randn({4, 5}, 4);
  expect_same_value_and_grad(
      {x, w},
      [](const auto& v) {
        NamedArray out =
            dot(NamedArray(v[0], {B, P, E}), NamedArray(v[1], {E, H}), "embed", AxisSelection{"head", kEllipsis});
        EXPECT_EQ(out.axes(), (AxisSpec{H, B, P}));
        return out.array();
      },
      [](const auto& v) {
        return at::einsum("bpe,eh->hbp", {v[0], v[1]});
      });
}

TEST(Dot, OuterProductAndFullContraction) {
  at::Tensor a = randn({2, 3}, 5), b = randn({4}, 6);
  expect_same_value_and_grad(
      {a, b},
      [](const auto& v) {
        NamedArray out = dot(NamedArray(v[0], {B, P}), NamedArray(v[1], {E}), AxisSelection{});
        EXPECT_EQ(out.axes(), (AxisSpec{B, P, E}));
        return out.array();
      },
      [](const auto& v) {
        return at::einsum("bp,e->bpe", {v[0], v[1]});
      });
  at::Tensor c = randn({3, 2}, 7);
  expect_same_value_and_grad(
      {a, c},
      [](const auto& v) {
        NamedArray out = dot(NamedArray(v[0], {B, P}), NamedArray(v[1], {P, B}), all_axes);
        EXPECT_EQ(out.ndim(), 0);
        return out.array();
      },
      [](const auto& v) { return (v[0] * v[1].t()).sum(); });
  // Contracting every axis by name is the same thing.
  NamedArray x(a, {B, P}), y(c, {P, B});
  EXPECT_TRUE(at::allclose(dot(x, y, {"batch", "pos"}).array(), (a * c.t()).sum()));
}

TEST(Dot, AxisInOnlyOneOperandIsSummed) {
  at::Tensor a = randn({2, 3}, 8), b = randn({3, 4}, 9);
  expect_same_value_and_grad(
      {a, b},
      [](const auto& v) {
        return dot(NamedArray(v[0], {B, P}), NamedArray(v[1], {P, E}), {"pos", "batch"}).array();
      },
      [](const auto& v) {
        return at::einsum("bp,pe->e", {v[0], v[1]});
      });
}

TEST(Dot, ThreeOperands) {
  at::Tensor a = randn({2, 3}, 10), b = randn({3, 4}, 11), c = randn({4, 5}, 12);
  expect_same_value_and_grad(
      {a, b, c},
      [](const auto& v) {
        return dot({NamedArray(v[0], {B, P}), NamedArray(v[1], {P, E}), NamedArray(v[2], {E, H})}, {"pos", "embed"})
            .array();
      },
      [](const auto& v) { return v[0].mm(v[1]).mm(v[2]); });
}

TEST(Dot, Errors) {
  NamedArray a(at::zeros({2, 3}), {B, P}), b(at::zeros({4, 5}), {Axis("pos", 4), H});
  EXPECT_VALUE_ERROR(dot(a, b, "pos"), "Axis pos has multiple sizes: 3 and 4");
  EXPECT_VALUE_ERROR(dot(a, a, "vocab"), "Axis vocab not present in axis spec");
  EXPECT_VALUE_ERROR(dot(std::vector<NamedArray>{}, "pos"), "Must provide at least one array to dot");
}

TEST(Dot, MixedPrecisionPromotes) {
  NamedArray a(at::ones({2, 3}, at::kFloat), {B, P}), b(at::ones({3}, at::kDouble), {P});
  EXPECT_EQ(dot(a, b, "pos").dtype(), at::kDouble);
}
