#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "haliax/axis.h"
#include "haliax/error.h"
#include "testing.h"

using namespace haliax;

TEST(Axis, EqualityUsesNameAndSize) {
  Axis a("embed", 4);
  EXPECT_EQ(a, Axis("embed", 4));
  EXPECT_NE(a, Axis("embed", 5));
  EXPECT_NE(a, Axis("hidden", 4));
  EXPECT_EQ(a.alias("hidden"), Axis("hidden", 4));
  EXPECT_EQ(a.resize(7), Axis("embed", 7));
  EXPECT_EQ(to_string(a), "Axis(name='embed', size=4)");
}

TEST(Axis, SpecAlgebra) {
  Axis B("batch", 2), P("pos", 3), E("embed", 4);
  AxisSpec s{B, P, E};
  EXPECT_EQ(to_string(s), "{'batch': 2, 'pos': 3, 'embed': 4}");
  EXPECT_EQ(*index_of(s, "pos"), 1u);
  EXPECT_FALSE(index_of(s, "vocab"));
  EXPECT_EQ(resolve_axis(s, "embed"), E);
  EXPECT_EQ(axis_size(s), 24);
  EXPECT_EQ(eliminate_axes(s, {"pos"}), (AxisSpec{B, E}));
  EXPECT_EQ(without_axes(s, {"vocab", B}), (AxisSpec{P, E}));
  EXPECT_EQ(union_axes({B, P}, {P, E}), s);
  EXPECT_EQ(intersect_axes(s, {E, B}), (AxisSpec{B, E}));
  EXPECT_EQ(replace_axis(s, P, {Axis("h", 1), Axis("w", 3)}), (AxisSpec{B, Axis("h", 1), Axis("w", 3), E}));
}

TEST(Axis, SpecErrors) {
  Axis B("batch", 2), E("embed", 4);
  EXPECT_VALUE_ERROR(resolve_axis({B}, "embed"), "Axis embed not found in {'batch': 2}");
  EXPECT_VALUE_ERROR(resolve_axis({B}, Axis("batch", 3)), "Found axis with same name but different size");
  EXPECT_VALUE_ERROR(eliminate_axes({B}, {"embed"}), "Axis embed not present in axis spec {'batch': 2}");
  EXPECT_VALUE_ERROR(union_axes({B}, {Axis("batch", 5)}), "Axis batch present in both specs with different sizes");
  EXPECT_VALUE_ERROR(concat_axes({B}, {B}), "Axis batch specified twice");
  EXPECT_VALUE_ERROR(check_unique({B, E, B}), "Axes must be unique");
  EXPECT_VALUE_ERROR(Axis("x", -1), "negative size");
}

TEST(Axis, PartialOrderFollowsHaliax) {
  Axis a("a", 1), b("b", 2), c("c", 3), d("d", 4), e("e", 5), f("f", 6);
  AxisSpec axes{a, b, c, d, e, f};
  // Expected orders checked against Haliax's rearrange_for_partial_order.
  EXPECT_EQ(rearrange_for_partial_order({"e", "f", "a", kEllipsis, "c"}, axes), (AxisSpec{e, f, a, b, d, c}));
  EXPECT_EQ(rearrange_for_partial_order({kEllipsis, "a"}, axes), (AxisSpec{b, c, d, e, f, a}));
  EXPECT_EQ(rearrange_for_partial_order({"f", kEllipsis}, axes), (AxisSpec{f, a, b, c, d, e}));
  EXPECT_EQ(rearrange_for_partial_order({kEllipsis, "c", kEllipsis, "a"}, axes), (AxisSpec{b, c, d, e, f, a}));
  EXPECT_EQ(rearrange_for_partial_order({"a", kEllipsis, "c", kEllipsis, "e"}, axes), (AxisSpec{a, b, c, d, f, e}));
  EXPECT_EQ(rearrange_for_partial_order({"f", "e", "d", "c", "b", "a"}, axes), (AxisSpec{f, e, d, c, b, a}));
  EXPECT_VALUE_ERROR(rearrange_for_partial_order({"a", "b"}, axes), "Partial order must be a permutation of the axes");
  EXPECT_VALUE_ERROR(rearrange_for_partial_order({"a", kEllipsis, "a"}, axes), "must not contain duplicate");
  EXPECT_VALUE_ERROR(rearrange_for_partial_order({"z", kEllipsis}, axes), "not present in output: z");
}
