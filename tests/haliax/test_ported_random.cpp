// The original's tests/test_random.py, ported where our haliax::random has the distribution: shapes and axes,
// bounds, broadcasting of an array parameter, and values against the original's on the same key
// (reference/gen_port.py): bit for bit where JAX's draw is integer or plain uniform arithmetic, to a few ulps
// where it goes through log/tan/erfinv.
#include "haliax/reference.h"
#include "haliax/reference/port_expected.inc"
#include "testing.h"

namespace haliax {
namespace {

using testing::expect_matches_ref;
using testing::ref_to_named;
namespace ref = haliax_ref::port;

const Axis Height("Height", 4), Width("Width", 8), Digit("Digit", 10);
const random::Key k0(0);

TEST(RandomPorted, EmptyShapeAndBounds) {
  EXPECT_EQ(random::uniform(k0, {}).axes(), AxisSpec{});
  NamedArray u = random::uniform(k0, {Height, Width}, at::kDouble, -3.0, 0.5);
  EXPECT_EQ(u.axes(), (AxisSpec{Height, Width}));
  EXPECT_TRUE(all(u >= -3.0).array().item<bool>());
  EXPECT_TRUE(all(u <= 0.5).array().item<bool>());
  expect_matches_ref(u, ref::rand_uniform_bounds, 0.0);
}

TEST(RandomPorted, IntegerAndBernoulliDrawsAreBitExact) {
  expect_matches_ref(random::randint(k0, {Height, Width}, 0, 10), ref::rand_randint_0_10);
  // A scalar p draws in f32 (JAX's default float; the reference ran this one without x64) ...
  expect_matches_ref(random::bernoulli(k0, {Height, Width}, 0.5), ref::rand_bernoulli_half);
  // ... and an f64 p in f64, as JAX with x64 does for its Python float.
  expect_matches_ref(random::bernoulli(k0, {Height, Width}, full({}, 0.5, at::kDouble)), ref::rand_bernoulli_half_x64);
  // p broadcast along Width
  NamedArray p = ref_to_named(ref::rand_bernoulli_p);
  expect_matches_ref(random::bernoulli(k0, {Height, Width}, p), ref::rand_bernoulli_p_width);
  expect_matches_ref(random::rademacher(k0, {Height, Width}), ref::rand_rademacher, 0.0);
}

TEST(RandomPorted, TransformedUniformsMatchToAFewUlps) {
  struct Case {
    const char* name;
    NamedArray (*fn)(const random::Key&, const AxisSpec&, at::ScalarType);
    const testing::RefArray& f64;
    const testing::RefArray& f32;
  };
  const Case cases[] = {
      {"normal", random::normal, ref::rand_normal_f64, ref::rand_normal_f32},
      {"exponential", random::exponential, ref::rand_exponential_f64, ref::rand_exponential_f32},
      {"laplace", random::laplace, ref::rand_laplace_f64, ref::rand_laplace_f32},
      {"logistic", random::logistic, ref::rand_logistic_f64, ref::rand_logistic_f32},
      {"cauchy", random::cauchy, ref::rand_cauchy_f64, ref::rand_cauchy_f32},
      {"gumbel", random::gumbel, ref::rand_gumbel_f64, ref::rand_gumbel_f32},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    NamedArray d = c.fn(k0, {Height, Width}, at::kDouble);
    EXPECT_EQ(d.axes(), (AxisSpec{Height, Width}));
    expect_matches_ref(d, c.f64, 1e-13);
    expect_matches_ref(astype(c.fn(k0, {Height, Width}, at::kFloat), at::kDouble), c.f32, 1e-6);
  }
  expect_matches_ref(random::truncated_normal(k0, {Height, Width}, -1.0, 0.5, at::kDouble), ref::rand_truncated_normal,
                     1e-13);
}

TEST(RandomPorted, PermutationAlongAnAxis) {
  NamedArray data = ref_to_named(ref::rand_perm_data);
  expect_matches_ref(random::permutation(k0, data, Height), ref::rand_perm_height, 0.0);
  expect_matches_ref(random::permutation(k0, data, "Height"), ref::rand_perm_height, 0.0);
  expect_matches_ref(random::permutation(k0, data, Width), ref::rand_perm_width, 0.0);
}

TEST(RandomPorted, CategoricalWhereverTheAxisIs) {
  NamedArray logits = ref_to_named(ref::rand_cat_logits);
  expect_matches_ref(random::categorical(k0, logits, Digit), ref::rand_categorical);
  expect_matches_ref(random::categorical(k0, logits, "Digit"), ref::rand_categorical);
  expect_matches_ref(random::categorical(k0, rearrange(logits, {Digit, Height, Width}), Digit),
                     ref::rand_categorical_digit_first);
}

}  // namespace
}  // namespace haliax
