// The original's tests/core_test.py, the parts that are neither indexing nor ops/reductions (covered elsewhere):
// rearrange by a sequence with "..." (several, or unused), arange with start and step, rename, broadcast_to,
// unflatten_axis, stack and concatenate that first line operands up by name. Checked against positional ATen.
#include "testing.h"

namespace haliax {
namespace {

using testing::randn;

const Axis H("H", 2), W("W", 3), D("D", 4), C("C", 5);

NamedArray hwdc() { return NamedArray(randn({2, 3, 4, 5}, 71), {H, W, D, C}); }

TEST(CorePorted, RearrangeBySequence) {
  NamedArray x = hwdc();
  const at::Tensor cwdh = x.array().permute({3, 1, 2, 0});
  EXPECT_TRUE(at::equal(rearrange(x, {C, W, D, H}).array(), cwdh));
  EXPECT_EQ(rearrange(x, {C, W, D, H}).axes(), (AxisSpec{C, W, D, H}));
  EXPECT_TRUE(at::equal(rearrange(x, {"C", "W", "D", "H"}).array(), cwdh));
  EXPECT_TRUE(at::equal(rearrange(x, {"C", W, "D", H}).array(), cwdh));
  EXPECT_TRUE(at::equal(rearrange(x, {C, "...", D}).array(), x.array().permute({3, 0, 1, 2})));
  EXPECT_THROW(rearrange(x, {C, W, W, H}), ValueError);
  EXPECT_THROW(rearrange(x, {C, Axis("X", 6), D, H}), ValueError);
  EXPECT_THROW(rearrange(x, {C, W, D}), ValueError);
  EXPECT_EQ(rearrange(x, {C, "...", "..."}).axes(), (AxisSpec{C, H, W, D}));
  EXPECT_EQ(rearrange(x, {"...", C, "...", W}).axes(), (AxisSpec{H, D, C, W}));
  EXPECT_EQ(rearrange(x, {"...", H, "...", D}).axes(), (AxisSpec{H, W, C, D}));
  EXPECT_EQ(rearrange(x, {D, "...", H, "..."}).axes(), (AxisSpec{D, H, W, C}));
}

TEST(CorePorted, RearrangeWithAnUnusedEllipsis) {
  NamedArray x(randn({2, 3, 4}, 72), {H, W, D});
  EXPECT_TRUE(at::equal(rearrange(x, {H, W, D, "..."}).array(), x.array()));
  EXPECT_TRUE(at::equal(rearrange(x, {H, "...", W, D}).array(), x.array()));
  NamedArray r = rearrange(x, {D, "...", W, H});
  EXPECT_EQ(r.axes(), (AxisSpec{D, W, H}));
  EXPECT_TRUE(at::equal(r.array(), x.array().permute({2, 1, 0})));
}

TEST(CorePorted, Arange) {
  const Axis A("H", 10);
  EXPECT_TRUE(at::equal(arange(A).array(), at::arange(10, at::kLong)));
  EXPECT_EQ(arange(A).axes(), AxisSpec{A});
  EXPECT_TRUE(at::equal(arange(A, 0, 2).array(), at::arange(0, 20, 2, at::kLong)));
  EXPECT_TRUE(at::equal(arange(A, 2, 2).array(), at::arange(2, 22, 2, at::kLong)));
}

TEST(CorePorted, Rename) {
  NamedArray x(randn({2, 3, 4}, 73), {H, W, D});
  const Axis H2("H2", 2), W2("W2", 3), D2("D2", 4);
  NamedArray r = rename(x, {{"H", "H2"}, {"W", "W2"}, {"D", "D2"}});
  EXPECT_EQ(r.axes(), (AxisSpec{H2, W2, D2}));
  EXPECT_TRUE(at::equal(r.array(), x.array()));
  EXPECT_EQ(rename(x, {{"H", H2}, {"W", "W2"}}).axes(), (AxisSpec{H2, W2, D}));
  EXPECT_EQ(rename(x, {{H, H2}, {"W", "W2"}}).axes(), (AxisSpec{H2, W2, D}));
}

TEST(CorePorted, BroadcastTo) {
  NamedArray x(randn({2, 3, 4}, 74), {H, W, D});
  EXPECT_TRUE(at::equal(broadcast_to(x, {H, W, D}).array(), x.array()));
  const Axis ZZ("ZZ", 5);
  NamedArray b = broadcast_to(x, {H, W, D, ZZ});
  EXPECT_EQ(b.axes(), (AxisSpec{H, W, D, ZZ}));
  EXPECT_TRUE(at::equal(b.array(), x.array().unsqueeze(-1).expand({2, 3, 4, 5})));
}

TEST(CorePorted, UnflattenAxis) {
  NamedArray x(randn({2, 3, 4}, 75), {H, W, D});
  NamedArray hw = flatten_axes(x, {H, W}, "Z");
  EXPECT_TRUE(at::equal(unflatten_axis(hw, "Z", {H, W}).array(), x.array()));
  EXPECT_EQ(unflatten_axis(hw, "Z", {H, W}).axes(), (AxisSpec{H, W, D}));
  // a different order is a different array
  EXPECT_EQ(unflatten_axis(hw, "Z", {W, H}).axes(), (AxisSpec{W, H, D}));
  EXPECT_FALSE(at::equal(unflatten_axis(hw, "Z", {W, H}).array(), x.array().transpose(0, 1)));
  // non-adjacent axes: flattened where the first one was
  NamedArray hd = flatten_axes(x, {H, D}, "Z");
  EXPECT_EQ(unflatten_axis(hd, "Z", {H, D}).axes(), (AxisSpec{H, D, W}));
  EXPECT_TRUE(at::equal(unflatten_axis(hd, "Z", {H, D}).array(), x.array().permute({0, 2, 1})));
}

TEST(CorePorted, StackAndConcatenateLineUpOperandsByName) {
  const Axis Hh("H", 4), Ww("W", 3);
  NamedArray a(randn({4, 3}, 76), {Hh, Ww}), b(randn({4, 3}, 77), {Hh, Ww}), c(randn({3, 4}, 78), {Ww, Hh});
  EXPECT_TRUE(at::equal(stack("B", {a, b}).array(), at::stack({a.array(), b.array()}, 0)));
  NamedArray s = stack("B", {a, c});
  EXPECT_EQ(s.axes(), (AxisSpec{Axis("B", 2), Hh, Ww}));
  EXPECT_TRUE(at::equal(s.array(), at::stack({a.array(), c.array().t()}, 0)));

  const Axis H3("H", 3);
  NamedArray n2(randn({3, 3}, 79), {H3, Ww}), n3(randn({3, 3}, 80), {Ww, H3});
  NamedArray cat = concatenate("H", {a, n2});
  EXPECT_EQ(cat.axes(), (AxisSpec{Axis("H", 7), Ww}));
  EXPECT_TRUE(at::equal(cat.array(), at::cat({a.array(), n2.array()}, 0)));
  EXPECT_TRUE(at::equal(concatenate("H", {a, n3}).array(), at::cat({a.array(), n3.array().t()}, 0)));
  // along the second axis
  NamedArray wa = rearrange(a, {Ww, Hh}), wb = rearrange(n2, {Ww, H3});
  NamedArray cat2 = concatenate("H", {wa, wb});
  EXPECT_EQ(cat2.axes(), (AxisSpec{Ww, Axis("H", 7)}));
  EXPECT_TRUE(at::equal(cat2.array(), at::cat({wa.array(), wb.array()}, 1)));
}

}  // namespace
}  // namespace haliax
