// Construction and shape ops (haliax/shape.h, and the scans/sorts/clip of ops.h): values and gradients against
// positional ATen in f64, and each semantic against the original Haliax (tests/haliax/reference/gen_shape.py).
#include "haliax/reference.h"
#include "haliax/reference/shape_expected.inc"
#include "haliax/shape.h"
#include "testing.h"

namespace haliax {
namespace {

using testing::expect_matches_ref;
using testing::expect_same_value_and_grad;
using testing::randn;
using testing::ref_to_named;
namespace ref = haliax_ref::shape;

const Axis B("batch", 2), P("pos", 3), E("embed", 4);

TEST(ShapeOps, TileRepeatMatchATen) {
  expect_same_value_and_grad(
      {randn({2, 3}, 1)},
      [](const auto& v) {
        return tile(NamedArray(v[0], {B, P}), {{"pos", 2}, {"new", 3}}).array();
      },
      [](const auto& v) {
        return v[0].tile({3, 1, 2});
      });
  expect_same_value_and_grad(
      {randn({2, 3}, 2)},
      [](const auto& v) {
        return repeat(NamedArray(v[0], {B, P}), 3, B).array();
      },
      [](const auto& v) { return v[0].repeat_interleave(3, 0); });
  NamedArray x(randn({2, 3}, 1), {B, P});
  EXPECT_EQ(tile(x, {{"pos", 2}, {Axis("new", 99), 3}}).axes(), (AxisSpec{{"new", 3}, B, P.resize(6)}));
  EXPECT_EQ(repeat(x, 2, "pos").axes(), (AxisSpec{B, P.resize(6)}));
  EXPECT_VALUE_ERROR(repeat(x, 2, "embed"), "Axis embed not found in array");
}

TEST(ShapeOps, TileRepeatMatchTheOriginal) {
  NamedArray x = ref_to_named(ref::x);
  expect_matches_ref(tile(x, {{Axis("c", 3), 2}, {"n", 3}}), ref::tile_c2_new3);
  expect_matches_ref(tile(x, {{"b", 3}}), ref::tile_b3);
  expect_matches_ref(repeat(x, 2, "c"), ref::repeat_c2);
}

TEST(ShapeOps, TrilTriuMatchATen) {
  // Axes given in the other order are moved last in that order, then the triangle is taken.
  expect_same_value_and_grad(
      {randn({3, 2, 4}, 3)},
      [](const auto& v) {
        return tril(NamedArray(v[0], {P, B, E}), E, P, 1).array();
      },
      [](const auto& v) {
        return at::tril(v[0].permute({1, 2, 0}), 1);
      });
  expect_same_value_and_grad(
      {randn({2, 3, 4}, 4)},
      [](const auto& v) {
        return triu(NamedArray(v[0], {B, P, E}), "pos", "embed", -1).array();
      },
      [](const auto& v) { return at::triu(v[0], -1); });
  NamedArray x(randn({3, 2, 4}, 3), {P, B, E});
  EXPECT_EQ(tril(x, E, P).axes(), (AxisSpec{B, E, P}));
}

TEST(ShapeOps, TrilTriuMatchTheOriginal) {
  NamedArray m = ref_to_named(ref::m);
  expect_matches_ref(tril(m, "r", "k"), ref::tril_r_k);
  expect_matches_ref(tril(m, "k", "r", 1), ref::tril_k_r_1);
  expect_matches_ref(triu(m, "r", "k", -1), ref::triu_r_k_m1);
  expect_matches_ref(triu(m, "b", "k"), ref::triu_b_k);
  EXPECT_VALUE_ERROR(tril(m, "r", "d"), ref::tril_missing.message);
}

TEST(ShapeOps, CreationWithDtypeAndArangeMatchTheOriginal) {
  NamedArray x = ref_to_named(ref::x);
  expect_matches_ref(zeros_like(x, at::kInt), ref::zeros_like_int);
  expect_matches_ref(ones_like(x, at::kBool), ref::ones_like_bool);
  expect_matches_ref(full_like(x, 7.9, at::kLong), ref::full_like_int);
  expect_matches_ref(full_like(x, 7.25), ref::full_like_keep);
  EXPECT_EQ(zeros_like(x, at::kInt).dtype(), at::kInt);
  const Axis b("b", 2), c("c", 3);
  NamedArray ai = arange({b, c}, 1, 2);
  EXPECT_EQ(ai.dtype(), at::kLong);
  expect_matches_ref(ai, ref::arange_bc_int);
  NamedArray af = arange({b, c}, 0.5, 0.25);
  EXPECT_EQ(af.dtype(), at::kDouble);
  expect_matches_ref(af, ref::arange_bc_float);
  expect_matches_ref(arange(AxisSpec{c}, 1, 0.5), ref::arange_c_halfstep);
  NamedArray ad = arange(AxisSpec{c}, 2, 3, at::kDouble);
  EXPECT_EQ(ad.dtype(), at::kDouble);
  expect_matches_ref(ad, ref::arange_c_dtype);
  EXPECT_EQ(arange(AxisSpec{c}, 2, 3, at::kFloat).dtype(), at::kFloat);
}

TEST(ShapeOps, PadMatchesATen) {
  expect_same_value_and_grad(
      {randn({2, 3}, 5)},
      [](const auto& v) {
        return pad(NamedArray(v[0], {B, P}), {{"pos", {1, 2}}, {B, {0, 1}}}, -1.5).array();
      },
      [](const auto& v) {
        return at::constant_pad_nd(v[0], {1, 2, 0, 1}, -1.5);
      });
  // Non-constant modes against ATen's own (reflect/replicate/circular pad the last dim of a 2-d+ input).
  const std::pair<PadMode, const char*> modes[] = {
      {PadMode::reflect, "reflect"}, {PadMode::edge, "replicate"}, {PadMode::wrap, "circular"}};
  for (const auto& [mode, aten_mode] : modes) {
    SCOPED_TRACE(aten_mode);
    expect_same_value_and_grad(
        {randn({2, 4}, 6)},
        [mode = mode](const auto& v) {
          return pad(NamedArray(v[0], {B, E}), {{E, {2, 3}}}, mode).array();
        },
        [aten_mode = aten_mode](const auto& v) {
          return at::pad(v[0].unsqueeze(0), {2, 3}, aten_mode).squeeze(0);
        });
  }
  expect_same_value_and_grad(
      {randn({2, 3}, 7)},
      [](const auto& v) {
        return pad_left(NamedArray(v[0], {B, P}), P, Axis("pos", 5), 0.5).array();
      },
      [](const auto& v) {
        return at::constant_pad_nd(v[0], {2, 0}, 0.5);
      });
  NamedArray x(randn({2, 3}, 5), {B, P});
  EXPECT_EQ(pad(x, {{"pos", {1, 2}}}).axes(), (AxisSpec{B, P.resize(6)}));
  EXPECT_EQ(pad_left(x, P, Axis("len", 4)).axes(), (AxisSpec{B, Axis("len", 4)}));
  EXPECT_VALUE_ERROR(pad(NamedArray(at::zeros({2, 0}), {B, Axis("none", 0)}), {{"none", {1, 1}}}, PadMode::edge),
                     "can't extend empty axis none");
  EXPECT_VALUE_ERROR(pad_left(x, E, Axis("embed", 5)), "Axis embed(4) not found in array. Available axes:");
}

TEST(ShapeOps, PadMatchesTheOriginal) {
  NamedArray x = ref_to_named(ref::x);
  expect_matches_ref(pad(x, {{Axis("c", 3), {1, 2}}}, -1.0), ref::pad_c_1_2);
  expect_matches_ref(pad(x, {{"b", {0, 1}}, {"c", {2, 0}}}), ref::pad_b_c);
  expect_matches_ref(pad(x, {{"d", {1, 1}}, {"c", {0, 1}}}), ref::pad_ignores_missing);
  EXPECT_VALUE_ERROR(pad(x, {{"c", {-1, 0}}}), ref::pad_negative.message);
  // Haliax raises for every non-constant mode (ref::pad_reflect_in_haliax); ours follow jnp.pad.
  EXPECT_EQ(ref::pad_reflect_in_haliax.type, "ValueError");
  const PadWidths w = {{"b", {1, 0}}, {"c", {4, 5}}};
  expect_matches_ref(pad(x, w, PadMode::edge), ref::jnp_pad_edge);
  expect_matches_ref(pad(x, w, PadMode::reflect), ref::jnp_pad_reflect);
  expect_matches_ref(pad(x, w, PadMode::symmetric), ref::jnp_pad_symmetric);
  expect_matches_ref(pad(x, w, PadMode::wrap), ref::jnp_pad_wrap);
  expect_matches_ref(pad_left(x, Axis("c", 3), Axis("c", 5), 9.0), ref::pad_left_c5);
  EXPECT_VALUE_ERROR(pad_left(x, Axis("c", 3), Axis("c", 2)), ref::pad_left_shrink.message);
}

TEST(ShapeOps, RollAndFlipMatchATen) {
  expect_same_value_and_grad(
      {randn({2, 3, 4}, 8)},
      [](const auto& v) {
        return roll(NamedArray(v[0], {B, P, E}), std::vector<int64_t>{1, -2}, {E, "pos"}).array();
      },
      [](const auto& v) {
        return at::roll(v[0], {1, -2}, {2, 1});
      });
  expect_same_value_and_grad(
      {randn({2, 3, 4}, 9)},
      [](const auto& v) {
        return roll(NamedArray(v[0], {B, P, E}), 5, {B, E}).array();
      },
      [](const auto& v) {
        return at::roll(v[0], {5, 5}, {0, 2});
      });
  expect_same_value_and_grad(
      {randn({2, 3, 4}, 10)},
      [](const auto& v) {
        return flip(NamedArray(v[0], {B, P, E}), {E, B}).array();
      },
      [](const auto& v) {
        return at::flip(v[0], {2, 0});
      });
  NamedArray x(randn({2, 3}, 1), {B, P});
  EXPECT_VALUE_ERROR(roll(x, std::vector<int64_t>{1, 2, 3}, {B, P}), "roll: 3 shifts for 2 axes");
  EXPECT_VALUE_ERROR(roll(x, NamedArray(at::ones({2}, at::kLong), {B}), "pos"), "shift must be a scalar");
  EXPECT_VALUE_ERROR(flip(x, "embed"), "axis embed not found in");
  EXPECT_TRUE(array_equal(flip(x, AxisSelection{}), x));
}

TEST(ShapeOps, RollAndFlipMatchTheOriginal) {
  NamedArray x = ref_to_named(ref::x);
  expect_matches_ref(roll(x, 1, "c"), ref::roll_c1);
  expect_matches_ref(roll(x, std::vector<int64_t>{1, 2}, {"b", "c"}), ref::roll_b1_c2);
  expect_matches_ref(roll(x, -1, {"b", "c"}), ref::roll_both_m1);
  expect_matches_ref(roll(x, NamedArray(at::scalar_tensor(2, at::kLong), {}), "c"), ref::roll_named_shift);
  // Haliax's message ends with the array's repr, which differs from ours; the start is the same.
  EXPECT_VALUE_ERROR(roll(x, 1, "d"), "axis d not found in ");
  EXPECT_THAT(ref::roll_missing.message, ::testing::StartsWith("axis d not found in "));
  expect_matches_ref(flip(x, "c"), ref::jnp_flip_c);
  expect_matches_ref(flip(x, {"b", "c"}), ref::jnp_flip_bc);
}

TEST(ShapeOps, TopKSortArgsortMatchATen) {
  expect_same_value_and_grad(
      {randn({2, 5, 3}, 11)},
      [](const auto& v) {
        return top_k(NamedArray(v[0], {B, Axis("n", 5), P}), "n", 2).first.array();
      },
      [](const auto& v) { return std::get<0>(at::topk(v[0], 2, 1)); });
  NamedArray x(randn({2, 5, 3}, 11), {B, Axis("n", 5), P});
  auto [values, indices] = top_k(x, "n", 3, AxisSelector("top"));
  EXPECT_EQ(values.axes(), (AxisSpec{B, Axis("top", 3), P}));
  EXPECT_TRUE(at::equal(indices.array(), std::get<1>(at::topk(x.array(), 3, 1))));
  EXPECT_EQ(top_k(x, "n", 2).first.axes(), (AxisSpec{B, Axis("n", 2), P}));
  // Along every axis: the indices pick the values back out (take batches over the other axes).
  for (const Axis& axis : x.axes()) {
    SCOPED_TRACE(axis.name);
    auto [vals, idx] = top_k(x, axis, 2, AxisSelector("top"));
    EXPECT_TRUE(array_equal(rearrange(take(x, axis, idx), vals.axes()), vals));
    const int64_t dim = static_cast<int64_t>(*x.axis_index(axis));
    at::Tensor expected = std::get<0>(at::sort(x.array(), dim, /*descending=*/true)).narrow(dim, 0, 2);
    EXPECT_TRUE(at::equal(vals.array(), expected));
  }
  EXPECT_VALUE_ERROR(top_k(x, "n", 3, AxisSelector(Axis("top", 4))), "top_k: new axis top=4 must have size k=3");
  EXPECT_VALUE_ERROR(top_k(x, "n", 3, AxisSelector("pos")), "Axes must be unique");
  expect_same_value_and_grad(
      {randn({2, 5}, 12)},
      [](const auto& v) {
        return sort(NamedArray(v[0], {B, Axis("n", 5)}), "n").array();
      },
      [](const auto& v) { return std::get<0>(at::sort(v[0], 1)); });
}

TEST(ShapeOps, TopKSortArgsortMatchTheOriginal) {
  NamedArray t = ref_to_named(ref::t);
  auto [v, i] = top_k(t, "k", 2);
  expect_matches_ref(v, ref::top_k_values);
  expect_matches_ref(i, ref::top_k_indices);  // ties: lower index first
  auto [v3, i3] = top_k(t, "k", 3, AxisSelector("top"));
  expect_matches_ref(v3, ref::top_k_new_values);
  expect_matches_ref(i3, ref::top_k_new_indices);
  EXPECT_VALUE_ERROR(top_k(t, "k", 5), ref::top_k_too_many.message);
  EXPECT_VALUE_ERROR(top_k(t, "d", 1), "Axis d not found in ");
  EXPECT_THAT(ref::top_k_missing.message, ::testing::StartsWith("Axis d not found in "));
  expect_matches_ref(sort(t, "k"), ref::sort_k);
  expect_matches_ref(argsort(t, "k"), ref::argsort_k_stable);
}

TEST(ShapeOps, ScansKeepDtypeAndMatchATen) {
  expect_same_value_and_grad(
      {randn({2, 3}, 13)},
      [](const auto& v) {
        return cumprod(NamedArray(v[0], {B, P}), "pos").array();
      },
      [](const auto& v) { return at::cumprod(v[0], 1); });
  expect_same_value_and_grad(
      {randn({2, 3}, 14)},
      [](const auto& v) {
        return cumsum(NamedArray(v[0], {B, P}), B, at::kDouble).array();
      },
      [](const auto& v) { return at::cumsum(v[0], 0); });
  NamedArray ints = ref_to_named(ref::ints).astype(at::kInt);
  EXPECT_EQ(cumsum(ints, "c").dtype(), at::kInt);
  EXPECT_EQ(cumprod(ints, "c").dtype(), at::kInt);
  EXPECT_EQ(cumsum(ints > 2, "c").dtype(), at::kLong);
  expect_matches_ref(cumsum(ints, "c"), ref::cumsum_int);
  expect_matches_ref(cumprod(ints, "c"), ref::cumprod_int);
  expect_matches_ref(cumsum(ref_to_named(ref::x) > 0, "c"), ref::cumsum_bool);
  expect_matches_ref(cumsum(ints, "b", at::kDouble), ref::cumsum_float_dtype);
}

TEST(ShapeOps, ClipBroadcastsAllThreeOperands) {
  // x has only batch, lo only pos: neither is a subset of the other, but both are of hi.
  expect_same_value_and_grad(
      {randn({2}, 15), randn({3}, 16) - 0.5, randn({2, 3}, 17) + 0.5},
      [](const auto& v) {
        return clip(NamedArray(v[0], {B}), NamedArray(v[1], {P}), NamedArray(v[2], {B, P})).array();
      },
      [](const auto& v) {
        return at::clamp(v[0].unsqueeze(1).expand({2, 3}), v[1].expand({2, 3}), v[2]);
      });
  expect_same_value_and_grad(
      {randn({2, 3}, 18), randn({3}, 19)},
      [](const auto& v) {
        return clip(NamedArray(v[0], {B, P}), NamedArray(v[1], {P}), 0.3).array();
      },
      [](const auto& v) { return at::clamp(v[0], v[1], at::scalar_tensor(0.3, at::kDouble)); });
  expect_same_value_and_grad(
      {randn({2, 3}, 20), randn({2}, 21)},
      [](const auto& v) {
        return clip(NamedArray(v[0], {B, P}), -0.3, NamedArray(v[1], {B})).array();
      },
      [](const auto& v) { return at::clamp(v[0], at::scalar_tensor(-0.3, at::kDouble), v[1].unsqueeze(1)); });
  // Bounds on different axis pairs of x, neither a subset of the other.
  expect_same_value_and_grad(
      {randn({2, 3, 4}, 24), randn({2, 3}, 25) - 0.5, randn({3, 4}, 26) + 0.5},
      [](const auto& v) {
        return clip(NamedArray(v[0], {B, P, E}), NamedArray(v[1], {B, P}), NamedArray(v[2], {P, E})).array();
      },
      [](const auto& v) { return at::clamp(v[0], v[1].unsqueeze(2), v[2].unsqueeze(0)); });
  NamedArray x = ref_to_named(ref::x), lo = ref_to_named(ref::lo);
  expect_matches_ref(clip(x, lo, 2.0), ref::clip_lo_named);
  expect_matches_ref(clip(ref_to_named(ref::xb), lo, ref_to_named(ref::hi)), ref::clip_three_way);
  expect_matches_ref(clip(x, std::nullopt, 0.5), ref::clip_upper_only);
  EXPECT_VALUE_ERROR(clip(x, NamedArray(at::zeros({2}, at::kDouble), {Axis("d", 2)}), 3.0), "no subset relationship");
  EXPECT_THAT(ref::clip_no_subset.message, ::testing::HasSubstr("no subset relationship"));
}

TEST(ShapeOps, DotTakesABracedOutAxesList) {
  const Axis H("hidden", 5);
  NamedArray x(randn({2, 3, 4}, 22), {B, P, E}), w(randn({4, 5}, 23), {E, H});
  NamedArray out = dot(x, w, E, {H, "..."});
  EXPECT_EQ(out.axes(), (AxisSpec{H, B, P}));
  EXPECT_TRUE(at::allclose(out.array(), at::einsum("bpe,eh->hbp", {x.array(), w.array()})));
  EXPECT_EQ(dot(x, w, E, "...").axes(), (AxisSpec{B, P, H}));
  EXPECT_EQ(dot({x, w}, {E}, {"pos", "..."}).axes(), (AxisSpec{P, B, H}));
}

}  // namespace
}  // namespace haliax
