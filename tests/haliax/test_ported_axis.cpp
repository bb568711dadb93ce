// The original's tests/test_axis.py, ported: eliminate_axes, without_axes, replace_axis and the partial-order
// rearrangement. Haliax's shape-dict forms map to AxisSpec here (an ordered list of named sizes).
#include "testing.h"

namespace haliax {
namespace {

const Axis H("H", 3), W("W", 4), C("C", 5);

TEST(AxisPorted, EliminateAxes) {
  EXPECT_EQ(eliminate_axes({H, W}, {H}), AxisSpec{W});
  EXPECT_EQ(eliminate_axes({H, W}, {W}), AxisSpec{H});
  EXPECT_EQ(eliminate_axes({H, W}, {H, W}), AxisSpec{});
  EXPECT_THROW(eliminate_axes({H, W}, {C}), ValueError);
  EXPECT_THROW(eliminate_axes({H, W}, {H, C}), ValueError);
  // by name
  EXPECT_EQ(eliminate_axes({H, W}, {"H"}), AxisSpec{W});
  EXPECT_EQ(eliminate_axes({H, W}, {"H", "W"}), AxisSpec{});
  // the shape-dict cases
  const AxisSpec HWC{H, W, C}, HW{H, W};
  EXPECT_EQ(eliminate_axes(HWC, AxisSelection(HW)), AxisSpec{C});
  EXPECT_THROW(eliminate_axes(HW, AxisSelection(HWC)), ValueError);
  EXPECT_EQ(eliminate_axes(HW, AxisSelection(HW)), AxisSpec{});
  EXPECT_EQ(eliminate_axes(HWC, {H}), (AxisSpec{W, C}));
  EXPECT_EQ(eliminate_axes(HWC, {W}), (AxisSpec{H, C}));
  EXPECT_EQ(eliminate_axes(HWC, {C}), HW);
  // a size mismatch is an error, in both directions
  const Axis C6("C", 6);
  EXPECT_THROW(eliminate_axes(HWC, {C6}), ValueError);
  EXPECT_THROW(eliminate_axes({C6}, AxisSelection(HWC)), ValueError);
}

TEST(AxisPorted, WithoutAxes) {
  EXPECT_EQ(without_axes({H, W}, {H}), AxisSpec{W});
  EXPECT_EQ(without_axes({H, W}, {W}), AxisSpec{H});
  EXPECT_EQ(without_axes({H, W}, {H, W}), AxisSpec{});
  EXPECT_EQ(without_axes({H, W}, {C}), (AxisSpec{H, W}));
  EXPECT_EQ(without_axes({H, W}, {H, C}), AxisSpec{W});
  EXPECT_EQ(without_axes({H, W}, {"H"}), AxisSpec{W});
  EXPECT_EQ(without_axes({H, W}, {"H", "W"}), AxisSpec{});
  const AxisSpec HWC{H, W, C}, HW{H, W};
  EXPECT_EQ(without_axes(HWC, AxisSelection(HW)), AxisSpec{C});
  EXPECT_EQ(without_axes(HW, AxisSelection(HWC)), AxisSpec{});
  EXPECT_EQ(without_axes(HWC, {C}), HW);
  const Axis C6("C", 6);
  EXPECT_THROW(without_axes(HWC, {C6}), ValueError);
  EXPECT_THROW(without_axes({C6}, AxisSelection(HWC)), ValueError);
}

TEST(AxisPorted, ReplaceAxis) {
  const Axis H2("H2", 6);
  EXPECT_EQ(replace_axis({H, W}, W, {C}), (AxisSpec{H, C}));
  EXPECT_THROW(replace_axis({H, W}, C, {H}), ValueError);      // C is not there
  EXPECT_THROW(replace_axis({H, W}, H2, {C, W}), ValueError);  // H2 is not there
  EXPECT_THROW(replace_axis({H, W}, "H", {W}), ValueError);    // W would appear twice
  EXPECT_EQ(replace_axis({H, W}, "H", {C}), (AxisSpec{C, W}));
  EXPECT_EQ(replace_axis({H, W}, "W", {C, Axis("D", 2)}), (AxisSpec{H, C, Axis("D", 2)}));
  // shape dicts: H -> (H, C) keeps W after them
  EXPECT_EQ(replace_axis({H, W}, "H", {H, C}), (AxisSpec{H, C, W}));
  EXPECT_THROW(replace_axis({H, W}, "H", {H, W, C}), ValueError);
  EXPECT_THROW(replace_axis({H, W}, "C", {H, C}), ValueError);
}

// Haliax's names for the fruit cases, as axes of size 1.
AxisSpec fruit(std::initializer_list<const char*> names) {
  AxisSpec out;
  for (const char* n : names) out.emplace_back(n, 1);
  return out;
}
AxisSelection order(std::initializer_list<const char*> names) {
  std::vector<AxisSelector> out;
  for (const char* n : names) out.emplace_back(n);
  return AxisSelection(out);
}

TEST(AxisPorted, PartialOrders) {
  const AxisSpec candidates = fruit({"banana", "apple", "cherry"});
  EXPECT_EQ(rearrange_for_partial_order(order({"apple", "...", "banana"}), candidates),
            fruit({"apple", "cherry", "banana"}));
  EXPECT_EQ(rearrange_for_partial_order(order({"...", "apple", "banana"}), candidates),
            fruit({"cherry", "apple", "banana"}));
  EXPECT_EQ(rearrange_for_partial_order(order({"apple", "...", "banana", "..."}), candidates),
            fruit({"apple", "banana", "cherry"}));
  EXPECT_EQ(rearrange_for_partial_order(order({"..."}), candidates), candidates);
  EXPECT_THROW(rearrange_for_partial_order(order({"apple", "banana"}), candidates), ValueError);
  EXPECT_EQ(rearrange_for_partial_order(order({"apple", "banana", "..."}), candidates),
            fruit({"apple", "banana", "cherry"}));
  EXPECT_EQ(rearrange_for_partial_order(order({"apple", "...", "banana", "...", "cherry", "..."}),
                                        fruit({"banana", "orange", "cherry", "apple", "grape"})),
            fruit({"apple", "banana", "orange", "cherry", "grape"}));
  EXPECT_EQ(rearrange_for_partial_order(order({"apple", "banana", "cherry"}), candidates),
            fruit({"apple", "banana", "cherry"}));
  EXPECT_EQ(rearrange_for_partial_order(order({"..."}), AxisSpec{}), AxisSpec{});
}

TEST(AxisPorted, PartialOrderErrors) {
  const AxisSpec candidates = fruit({"banana", "apple", "cherry"});
  EXPECT_THROW(rearrange_for_partial_order(order({"qux", "..."}), candidates), ValueError);
  EXPECT_THROW(rearrange_for_partial_order(order({"apple", "apple", "..."}), candidates), ValueError);
  // (Haliax also rejects duplicate candidates; an AxisSpec with a repeated name cannot reach here unchecked.)
  EXPECT_THROW(rearrange_for_partial_order(order({"apple", "banana", "grape", "..."}), candidates), ValueError);
}

}  // namespace
}  // namespace haliax
