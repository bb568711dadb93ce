// Operations haliax already had, against values the original Python Haliax computed on the same inputs
// (tests/haliax/reference/gen_basics.py). Also checks the reference plumbing itself: a wrong axis order or
// value is reported.
#include <gtest/gtest-spi.h>

#include "haliax/reference.h"
#include "haliax/reference/basics_expected.inc"

namespace haliax {
namespace {

using testing::expect_matches_ref;
using testing::ref_to_named;
namespace ref = haliax_ref::basics;

TEST(HaliaxReference, BasicsMatchTheOriginal) {
  NamedArray x = ref_to_named(ref::x);
  EXPECT_EQ(x.dtype(), at::kDouble);
  expect_matches_ref(x, ref::x);
  expect_matches_ref(cumsum(x, "c"), ref::cumsum_c);
  expect_matches_ref(x > 0, ref::positive);
  expect_matches_ref(argmax(x, "c"), ref::argmax_c);
  expect_matches_ref(sum(x), ref::sum_all);
  expect_matches_ref(sum(x, "b"), ref::sum_b);
}

TEST(HaliaxReference, MismatchesAreReported) {
  NamedArray x = ref_to_named(ref::x);
  EXPECT_NONFATAL_FAILURE(expect_matches_ref(x + 1e-6, ref::x), "6 of 6 values differ");
  EXPECT_FATAL_FAILURE(expect_matches_ref(rearrange(ref_to_named(ref::x), {"c", "b"}), ref::x), "axes differ");
  EXPECT_NONFATAL_FAILURE(expect_matches_ref((x > 0).astype(at::kDouble), ref::positive), "dtype kind");
}

}  // namespace
}  // namespace haliax
