// Einops-style rearrange. Expected axes and element positions were produced by Haliax (marin-haliax) on
// the same input: x = arange(8*4*6*3) with axes (B=8, H=4, W=6, C=3); each case checks the result's axes and
// two elements of its flattened storage order.
#include "testing.h"

using namespace haliax;
using haliax::testing::expect_same_value_and_grad;
using haliax::testing::randn;

namespace {
const Axis B("B", 8), H("H", 4), W("W", 6), C("C", 3);

NamedArray x_arange() { return NamedArray(at::arange(8 * 4 * 6 * 3, at::kLong).reshape({8, 4, 6, 3}), {B, H, W, C}); }

void expect_case(const NamedArray& y, const AxisSpec& axes, int64_t at7, int64_t at100) {
  EXPECT_EQ(y.axes(), axes);
  at::Tensor flat = y.array().contiguous().reshape({-1});
  EXPECT_EQ(flat[7].item<int64_t>(), at7);
  EXPECT_EQ(flat[100].item<int64_t>(), at100);
}
}  // namespace

TEST(Rearrange, MatchesHaliaxOnGoldenCases) {
  NamedArray x = x_arange();
  expect_case(rearrange(x, "B H W C -> C B H W"), {C, B, H, W}, 21, 300);
  expect_case(rearrange(x, "B H W C -> B (E: H W C)"), {B, Axis("E", 72)}, 7, 100);
  expect_case(rearrange(x, "{ B (H: h1 H) (W: w1 W) C } -> (B: B h1 w1) (E: H W C) ...", {{"H", 2}, {"W", 3}}),
              {Axis("B", 32), Axis("E", 18)}, 7, 100);
  expect_case(rearrange(x, "b h w c -> b (q: h w) c"), {B, Axis("q", 24), C}, 7, 100);
  expect_case(rearrange(x, "{C W} -> ... C W"), {B, H, C, W}, 4, 103);
  expect_case(rearrange(x, "B (h w) W C -> B h w W C", {{"h", 2}}), {B, Axis("h", 2), Axis("w", 2), W, C}, 7, 100);
  expect_case(rearrange(x, "... C -> C ..."), {C, B, H, W}, 21, 300);
}

TEST(Rearrange, IssueExampleSplitsAGroupedAxis) {
  // "b (h w) c -> b h w c": the lhs binds by position, the group splits the middle axis.
  NamedArray x(at::arange(8 * 24 * 3, at::kLong).reshape({8, 24, 3}), {B, Axis("bhw", 24), C});
  NamedArray y = rearrange(x, "b (h w) c -> b h w c", {{"h", 4}});
  EXPECT_EQ(y.axes(), (AxisSpec{B, Axis("h", 4), Axis("w", 6), C}));
  EXPECT_TRUE(at::equal(y.array(), x.array().reshape({8, 4, 6, 3})));
}

TEST(Rearrange, GradientMatchesReshapePermute) {
  at::Tensor t = randn({8, 4, 6, 3}, 1);
  expect_same_value_and_grad(
      {t},
      [](const auto& v) {
        return rearrange(NamedArray(v[0], {B, H, W, C}), "{ B (H: h1 H) (W: w1 W) C } -> (B: B h1 w1) (E: H W C) ...",
                         {{"H", 2}, {"W", 3}})
            .array();
      },
      [](const auto& v) {
        // (B, h1, H, w1, W, C) -> (B, h1, w1, H, W, C) -> (B*h1*w1, H*W*C)
        return v[0].reshape({8, 2, 2, 2, 3, 3}).permute({0, 1, 3, 2, 4, 5}).reshape({32, 18});
      });
}

TEST(Rearrange, ParseErrorsPointAtThePosition) {
  NamedArray x = x_arange();
  EXPECT_VALUE_ERROR(rearrange(x, "B H W C -> B H W"), "Not all intermediate axes are used");
  EXPECT_VALUE_ERROR(rearrange(x, "B H W -> B H W"), "Not all axes are bound, use ... to skip missing axes");
  EXPECT_VALUE_ERROR(rearrange(x, "B (h w) W C -> B h w W C"), "Sizes for this split axis are ambiguous");
  EXPECT_VALUE_ERROR(rearrange(x, "B H W C -> B (H W) C"), "All rhs axes must have a name");
  EXPECT_VALUE_ERROR(rearrange(x, "B H W C -> B H W Q"), "Axis Q is not bound on the lhs");
  EXPECT_VALUE_ERROR(rearrange(x, "B H W C -< C"), "Expected >");
  EXPECT_VALUE_ERROR(rearrange(x, "B H W C => C"), "Identifier expected");
  EXPECT_VALUE_ERROR(rearrange(x, "{B H} -> {B H"), "Expected }");
  EXPECT_VALUE_ERROR(rearrange(x, "{Z} -> Z"), "Could not resolve axis Z");
  try {
    rearrange(x, "B H W C -> B (H W) C");
  } catch (const ValueError& e) {
    // The caret line sits under the offending group.
    EXPECT_THAT(std::string(e.what()), ::testing::HasSubstr("Error while parsing:\n    B H W C -> B (H W) C\n"
                                                            "                 ^^^^^"));
  }
}

TEST(Einsum, MatchesHaliaxOnGoldenCases) {
  // a = arange(24) as (H=2, W=3, D=4); b = arange(24) as (D=4, W=3, H=2). Expected from Haliax.
  Axis Hh("H", 2), Ww("W", 3), D("D", 4);
  NamedArray a(at::arange(24, at::kDouble).reshape({2, 3, 4}), {Hh, Ww, D});
  NamedArray b(at::arange(24, at::kDouble).reshape({4, 3, 2}), {D, Ww, Hh});
  auto first3 = [](const NamedArray& r) {
    at::Tensor f = r.array().contiguous().reshape({-1});
    return std::vector<double>{f[0].item<double>(), f[1].item<double>(), f[2].item<double>()};
  };
  for (const char* eq : {"h w d, d w h -> h w", "{H W D} -> H W", "{D} -> ", "-> H W"}) {
    SCOPED_TRACE(eq);
    NamedArray r = einsum(eq, {a, b});
    EXPECT_EQ(r.axes(), (AxisSpec{Hh, Ww}));
    EXPECT_EQ(first3(r), (std::vector<double>{84, 272, 524}));
  }
  NamedArray r = einsum("{x y} -> y", {a, b}, {{"x", Hh}, {"y", Ww}});
  EXPECT_EQ(r.axes(), (AxisSpec{D, Ww}));
  EXPECT_EQ(first3(r), (std::vector<double>{12, 56, 132}));
  NamedArray r2 = einsum("-> W ...", {a, b});
  EXPECT_EQ(r2.axes(), (AxisSpec{Ww, Hh, D}));
  EXPECT_EQ(first3(r2), (std::vector<double>{0, 6, 24}));
  // With "..." on the rhs of an unordered einsum, Haliax keeps every axis.
  EXPECT_EQ(einsum("{H} -> ...", {a, b}).axes(), (AxisSpec{Hh, Ww, D}));
}

TEST(Einsum, GradientMatchesATen) {
  Axis Hh("H", 2), Ww("W", 3), D("D", 4);
  at::Tensor a = randn({2, 3, 4}, 2), b = randn({4, 3, 2}, 3);
  expect_same_value_and_grad(
      {a, b},
      [&](const auto& v) {
        return einsum("{D} -> W H", {NamedArray(v[0], {Hh, Ww, D}), NamedArray(v[1], {D, Ww, Hh})}).array();
      },
      [](const auto& v) {
        return at::einsum("hwd,dwh->wh", {v[0], v[1]});
      });
}

TEST(Einsum, Errors) {
  Axis Hh("H", 2), Ww("W", 3);
  NamedArray a(at::zeros({2, 3}), {Hh, Ww});
  EXPECT_VALUE_ERROR(einsum("h w, w h, h -> h", {a, a}), "Number of lhses (3) does not match number of arrays (2)");
  EXPECT_VALUE_ERROR(einsum("-> Q", {a}), "Axis Q not found in any of the input arrays");
  EXPECT_VALUE_ERROR(einsum("{H} -> W", {a}, {{"z", Hh}}), "Axis alias z not used in the einsum");
  EXPECT_VALUE_ERROR(einsum("h w -> q", {a}), "does not occur on the left hand side");
}
