// haliax::random against JAX: expected values below were produced by jax 0.10.2 (threefry2x32,
// jax_threefry_partitionable = True, its default) with key = jax.random.PRNGKey(42).
#include <ATen/Parallel.h>

#include <cstring>

#include "testing.h"

using namespace haliax;
using haliax::random::Key;

namespace {
std::vector<uint32_t> float_bits(const NamedArray& a) {
  at::Tensor t = a.array().contiguous();
  std::vector<uint32_t> out(static_cast<size_t>(t.numel()));
  std::memcpy(out.data(), t.data_ptr<float>(), 4 * out.size());
  return out;
}
template <typename T>
std::vector<T> values(const NamedArray& a) {
  at::Tensor t = a.array().contiguous();
  return std::vector<T>(t.data_ptr<T>(), t.data_ptr<T>() + t.numel());
}
}  // namespace

TEST(Random, ThreefryKnownAnswer) {
  // Random123's known-answer vectors for threefry2x32_20.
  EXPECT_EQ(random::threefry2x32({0, 0}, {0, 0}), (std::array<uint32_t, 2>{0x6b200159u, 0x99ba4efeu}));
  EXPECT_EQ(random::threefry2x32({0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu}),
            (std::array<uint32_t, 2>{0x1cb996fcu, 0xbb002be7u}));
  EXPECT_EQ(random::threefry2x32({0x13198a2eu, 0x03707344u}, {0x243f6a88u, 0x85a308d3u}),
            (std::array<uint32_t, 2>{0xc4923a9cu, 0x483df7a0u}));
}

TEST(Random, SplitAndFoldInMatchJax) {
  Key k(42);
  auto keys = k.split(3);
  EXPECT_EQ(keys[0], Key(1832780943u, 270669613u));
  EXPECT_EQ(keys[1], Key(64467757u, 2916123636u));
  EXPECT_EQ(keys[2], Key(2465931498u, 255383827u));
  EXPECT_EQ(k.fold_in(7), Key(2547012911u, 1371500959u));
  EXPECT_EQ(k.split2().second, keys[1]);
  EXPECT_NE(k.split2().first, k);
}

TEST(Random, BitsUniformBernoulliRandintPermutationMatchJax) {
  Key k(42);
  Axis A("a", 2), Bx("b", 3), F("f", 5);
  EXPECT_EQ(values<int64_t>(random::bits(k, {A, Bx})),
            (std::vector<int64_t>{2098992034, 2919706841, 2646866425, 2409546199, 1935504149, 2516274904}));
  EXPECT_EQ(float_bits(random::uniform(k, {F})),
            (std::vector<uint32_t>{1056585764, 1059981104, 1058915320, 1057988288, 1055308516}));
  EXPECT_EQ(float_bits(random::uniform(k, {F}, at::kFloat, -2.0, 3.0)),
            (std::vector<uint32_t>{1055070388, 1068700152, 1066035692, 1062083008, 1048684148}));
  EXPECT_EQ(values<bool>(random::bernoulli(k, {Axis("n", 10)}, 0.3)),
            (std::vector<bool>{0, 0, 0, 0, 0, 0, 1, 0, 0, 0}));
  EXPECT_EQ(values<int32_t>(random::randint(k, {Axis("n", 8)}, -5, 1000, at::kInt)),
            (std::vector<int32_t>{184, 514, 736, 539, 804, 979, 102, 652}));
  EXPECT_EQ(values<int64_t>(random::permutation(k, Axis("n", 12))),
            (std::vector<int64_t>{7, 4, 2, 5, 3, 6, 10, 11, 8, 9, 0, 1}));
  NamedArray logits(at::log(at::tensor({0.1, 0.2, 0.7, 0.5, 0.25, 0.25}, at::kFloat)).reshape({2, 3}),
                    {Axis("batch", 2), Axis("class", 3)});
  EXPECT_EQ(values<int64_t>(random::categorical(k, logits, "class")), (std::vector<int64_t>{2, 0}));
}

TEST(Random, NormalFamilyMatchesJaxWithinUlps) {
  Key k(42);
  Axis F("f", 5);
  // Same uniform bits as JAX; erfinv differs from XLA's in the last bits.
  at::Tensor jax_normal = at::tensor(
      {-0.02830461598932743, 0.4671318531036377, 0.2957029640674591, 0.15354591608047485, -0.12403281778097153},
      at::kFloat);
  at::Tensor jax_tn = at::tensor(
      {-0.027016498148441315, 0.44438081979751587, 0.2818770706653595, 0.14650805294513702, -0.11836230009794235},
      at::kFloat);
  at::Tensor jax_gumbel =
      at::tensor({0.3340933918952942, 0.952019453048706, 0.7255305647850037, 0.5481715202331543}, at::kFloat);
  EXPECT_TRUE(at::allclose(random::normal(k, {F}).array(), jax_normal, 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(random::truncated_normal(k, {F}, -2.0, 2.0).array(), jax_tn, 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(random::gumbel(k, {Axis("g", 4)}).array(), jax_gumbel, 1e-5, 1e-6));
}

TEST(Random, SameBitsWhateverTheThreadCount) {
  Key k(7);
  AxisSpec big{Axis("x", 300), Axis("y", 1000)};
  int threads = at::get_num_threads();
  at::set_num_threads(1);
  NamedArray a = random::normal(k, big), b = random::randint(k, big, 0, 50257);
  at::set_num_threads(2);
  NamedArray c = random::normal(k, big), d = random::randint(k, big, 0, 50257);
  at::set_num_threads(threads);
  EXPECT_TRUE(at::equal(a.array(), c.array()));
  EXPECT_TRUE(at::equal(b.array(), d.array()));
}

TEST(Random, DistributionsHaveTheRightMoments) {
  Key k(3);
  AxisSpec n{Axis("n", 200000)};
  NamedArray u = random::uniform(k, n);
  EXPECT_NEAR(mean(u).item(), 0.5, 0.005);
  EXPECT_GE(min(u).item(), 0.0);
  EXPECT_LT(max(u).item(), 1.0);
  NamedArray z = random::normal(k.fold_in(1), n, at::kDouble);
  EXPECT_NEAR(mean(z).item(), 0.0, 0.01);
  EXPECT_NEAR(haliax::std(z).item(), 1.0, 0.01);
  NamedArray t = random::truncated_normal(k.fold_in(2), n, -1.0, 1.5);
  EXPECT_GT(min(t).item(), -1.0);
  EXPECT_LT(max(t).item(), 1.5);
  NamedArray r = random::randint(k.fold_in(3), n, 10, 20);
  EXPECT_EQ(min(r).item<int64_t>(), 10);
  EXPECT_EQ(max(r).item<int64_t>(), 19);
  NamedArray p = random::permutation(k, Axis("n", 1000));
  EXPECT_TRUE(at::equal(std::get<0>(p.array().sort()), at::arange(1000, at::kLong)));
  EXPECT_EQ(random::bernoulli(k, n, 0.25).array().sum().item<int64_t>() / 2000, 25);
}

TEST(Random, PermutationOfAnArrayAlongAnAxis) {
  Key k(5);
  NamedArray x(at::arange(12, at::kLong).reshape({3, 4}), {Axis("a", 3), Axis("b", 4)});
  NamedArray p = random::permutation(k, x, "b");
  NamedArray perm = random::permutation(k, Axis("b", 4));
  EXPECT_TRUE(at::equal(p.array(), x.array().index_select(1, perm.array())));
  EXPECT_VALUE_ERROR(random::uniform(k, {Axis("a", 2)}, at::kLong), "uniform only accepts floating point dtypes");
}
