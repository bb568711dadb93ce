// The original's tests/test_dot.py, ported: dot over one, several or no axes, by Axis or by name, with out_axes
// partial orders, against positional at::einsum (values and gradients) and the original's values
// (reference/gen_port.py).
#include "haliax/reference.h"
#include "haliax/reference/port_expected.inc"
#include "testing.h"

namespace haliax {
namespace {

using testing::expect_matches_ref;
using testing::expect_same_value_and_grad;
using testing::randn;
using testing::ref_to_named;
namespace ref = haliax_ref::port;

const Axis Height("Height", 2), Width("Width", 3), Depth("Depth", 4);

TEST(DotPorted, ContractionsByAxisAndByName) {
  NamedArray m1(randn({2, 3, 4}, 61), {Height, Width, Depth}), m2(randn({4, 3, 2}, 62), {Depth, Width, Height});
  auto ref_ein = [&](const char* s) { return at::einsum(s, {m1.array(), m2.array()}); };
  auto same = [](const NamedArray& got, const AxisSpec& axes, const at::Tensor& expected) {
    EXPECT_EQ(got.axes(), axes);
    EXPECT_TRUE(at::allclose(got.array(), expected, 1e-12, 1e-12));
  };
  same(dot(m1, m2, Height), {Width, Depth}, ref_ein("ijk,kji->jk"));
  same(dot(m1, m2, {Height, Width}), {Depth}, ref_ein("ijk,kji->k"));
  same(dot(m1, m2, {Height, Width, Depth}), {}, ref_ein("ijk,kji->"));
  same(dot(m1, m2, "Height"), {Width, Depth}, ref_ein("ijk,kji->jk"));
  same(dot(m1, m2, {"Height", "Width"}), {Depth}, ref_ein("ijk,kji->k"));
  same(dot(m1, m2, {"Height", "Width", "Depth"}), {}, ref_ein("ijk,kji->"));
}

TEST(DotPorted, DifferentSizedAxesAreAnError) {
  NamedArray m1 = ones({Height, Width, Depth}), m2 = ones({Depth, Width, Height.resize(4)});
  EXPECT_VALUE_ERROR(dot(m1, m2, "Height"), ref::dot_size_mismatch.message);
}

TEST(DotPorted, OutAxesMatchTheOriginal) {
  NamedArray m1 = ref_to_named(ref::dot_m1), m2 = ref_to_named(ref::dot_m2);
  auto with_out = [&](const AxisSelection& contract, std::initializer_list<AxisSelector> out) {
    return dot({m1, m2}, contract, AxisSelection(std::vector<AxisSelector>(out)));
  };
  expect_matches_ref(with_out(Height, {Width, "..."}), ref::dot_h_w_first);
  expect_matches_ref(with_out(Height, {Depth, "..."}), ref::dot_h_d_first);
  expect_matches_ref(with_out(AxisSelection(), {Depth, Height, "..."}), ref::dot_none_d_h_first);
  expect_matches_ref(with_out(AxisSelection(), {"...", Depth, Height}), ref::dot_none_d_h_last);
  expect_matches_ref(with_out(AxisSelection(), {"...", Depth, "..."}), ref::dot_none_d_mid);
  expect_matches_ref(with_out(AxisSelection(), {"...", Depth, Height, "..."}), ref::dot_none_d_h_mid);
  expect_matches_ref(dot(m1, m2, {Height, Width, Depth}), ref::dot_all);
  expect_matches_ref(dot(m1, m2, all_axes), ref::dot_all);  // Haliax: axis=None
}

TEST(DotPorted, OutAxesGradientMatchesATen) {
  expect_same_value_and_grad(
      {randn({2, 3, 4}, 63), randn({4, 3, 2}, 64)},
      [](const auto& v) {
        return dot({NamedArray(v[0], {Height, Width, Depth}), NamedArray(v[1], {Depth, Width, Height})}, Height,
                   AxisSelection({Depth, "..."}))
            .array();
      },
      [](const auto& v) {
        return at::einsum("ijk,kji->kj", {v[0], v[1]});
      });
}

}  // namespace
}  // namespace haliax
