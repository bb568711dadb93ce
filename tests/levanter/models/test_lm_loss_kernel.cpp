// The fused loss's CPU row kernel (softmax_xent_rows) against the same formulas in f64 from the same logits: the
// loss and d loss / d logits for f32 and bf16 logits, vocabulary sizes with every tail length of the 16-wide loop,
// z-loss and per-row weights; the same bits whatever the number of threads; a target outside the vocabulary is
// refused by value; a NaN logit makes its row's loss NaN. The head's f32 GEMMs through oneDNN (head_logits,
// head_hidden_grad, HeadGradAccumulator in both of its layouts) against the same products in f64.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "levanter/models/lm_loss_kernel.h"

using levanter::models::kernels::head_gemms_supported;
using levanter::models::kernels::head_hidden_grad;
using levanter::models::kernels::head_logits;
using levanter::models::kernels::HeadGradAccumulator;
using levanter::models::kernels::softmax_xent_rows;
using levanter::models::kernels::softmax_xent_rows_supported;

namespace {

struct Case {
  at::Tensor logits, targets, weights;
};

Case make(int64_t n, int64_t V, at::ScalarType dtype, uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  Case c;
  c.logits = (at::randn({n, V}, g, at::kFloat) * 3.0).to(dtype);
  c.targets = at::randint(V, {n}, g, at::kLong);
  c.weights = at::rand({n}, g, at::kFloat);
  return c;
}

// loss_i = lse_i - x[i, t_i] + z lse_i^2 and g = w_i (1 + 2 z lse_i) softmax_i - w_i onehot(t_i), in f64.
std::pair<at::Tensor, at::Tensor> reference(const Case& c, double z) {
  at::Tensor x = c.logits.to(at::kDouble);
  at::Tensor lse = x.logsumexp(1);
  at::Tensor picked = x.gather(1, c.targets.unsqueeze(1)).squeeze(1);
  at::Tensor loss = lse - picked + z * lse.square();
  at::Tensor w = c.weights.to(at::kDouble).unsqueeze(1);
  at::Tensor g = (x - lse.unsqueeze(1)).exp() * w * (1.0 + 2.0 * z * lse.unsqueeze(1));
  g.scatter_add_(1, c.targets.unsqueeze(1), -w);
  return {loss, g};
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

}  // namespace

TEST(SoftmaxXentRows, MatchesF64FormulasForF32AndBf16) {
  if (!softmax_xent_rows_supported(at::zeros({1, 1}))) GTEST_SKIP() << "no AVX2 + FMA on this CPU";
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (int64_t V : {1, 7, 8, 15, 16, 17, 31, 33, 1000, 50257}) {
      for (double z : {0.0, 1e-2}) {
        SCOPED_TRACE(std::string(at::toString(dtype)) + " V " + std::to_string(V) + " z " + std::to_string(z));
        Case c = make(5, V, dtype, uint64_t(V) * 7 + (z != 0));
        auto [loss_ref, g_ref] = reference(c, z);
        at::Tensor per = at::empty({5}, at::kFloat);
        softmax_xent_rows(c.logits, c.targets, c.weights, z, /*with_grad=*/false, per);
        // Without a gradient the logits are left as they are.
        EXPECT_TRUE(at::equal(c.logits, make(5, V, dtype, uint64_t(V) * 7 + (z != 0)).logits));
        EXPECT_LT(max_abs_diff(per, loss_ref), 2e-5 * (1.0 + loss_ref.abs().max().item<double>()));
        at::Tensor per2 = at::empty({5}, at::kFloat);
        softmax_xent_rows(c.logits, c.targets, c.weights, z, /*with_grad=*/true, per2);
        EXPECT_TRUE(at::equal(per, per2));
        EXPECT_EQ(c.logits.scalar_type(), dtype);
        // f32: rounding of the exponentials and the sum, |g| <= 1; bf16: the f32 value rounded to nearest even, within
        // half a step (at most 2^-8 of |g|; a truncation would be off by up to a whole step) plus the f32 error.
        if (dtype == at::kFloat) {
          EXPECT_LT(max_abs_diff(c.logits, g_ref), 1e-6);
        } else {
          at::Tensor excess = (c.logits.to(at::kDouble) - g_ref).abs() - (std::ldexp(1.0, -8) + 1e-5) * g_ref.abs();
          EXPECT_LE(excess.max().item<double>(), 1e-12);
        }
      }
    }
  }
}

TEST(SoftmaxXentRows, SameBitsWithOneOrTwoThreads) {
  if (!softmax_xent_rows_supported(at::zeros({1, 1}))) GTEST_SKIP() << "no AVX2 + FMA on this CPU";
  const int threads = at::get_num_threads();
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    Case a = make(9, 5003, dtype, 11), b = make(9, 5003, dtype, 11);
    at::Tensor pa = at::empty({9}, at::kFloat), pb = at::empty({9}, at::kFloat);
    at::set_num_threads(1);
    softmax_xent_rows(a.logits, a.targets, a.weights, 1e-3, true, pa);
    at::set_num_threads(2);
    softmax_xent_rows(b.logits, b.targets, b.weights, 1e-3, true, pb);
    EXPECT_TRUE(at::equal(pa, pb));
    EXPECT_TRUE(at::equal(a.logits, b.logits));
  }
  at::set_num_threads(threads);
}

TEST(SoftmaxXentRows, RefusesATargetOutsideTheVocabulary) {
  if (!softmax_xent_rows_supported(at::zeros({1, 1}))) GTEST_SKIP() << "no AVX2 + FMA on this CPU";
  Case c = make(3, 10, at::kFloat, 1);
  c.targets[1] = 10;
  at::Tensor per = at::empty({3}, at::kFloat);
  EXPECT_THAT([&] { softmax_xent_rows(c.logits, c.targets, c.weights, 0.0, true, per); },
              ::testing::ThrowsMessage<std::invalid_argument>(
                  ::testing::HasSubstr("token id 10 outside the vocabulary [0, 10)")));
  c.targets[1] = -1;
  EXPECT_THROW(softmax_xent_rows(c.logits, c.targets, c.weights, 0.0, true, per), std::invalid_argument);
}

TEST(SoftmaxXentRows, ANanLogitMakesItsRowNan) {
  if (!softmax_xent_rows_supported(at::zeros({1, 1}))) GTEST_SKIP() << "no AVX2 + FMA on this CPU";
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (int64_t j : {0, 3, 17, 20}) {  // in the 16-wide loop and in the tail, before and after the row's max
      for (bool with_grad : {false, true}) {
        Case c = make(2, 21, dtype, 2);
        c.logits[0][j] = std::nan("");
        at::Tensor per = at::empty({2}, at::kFloat);
        softmax_xent_rows(c.logits, c.targets, c.weights, 0.0, with_grad, per);
        EXPECT_TRUE(std::isnan(per[0].item<float>())) << j;
        EXPECT_FALSE(std::isnan(per[1].item<float>())) << j;
        if (with_grad) {  // the NaN row's gradient is NaN throughout, the other row's finite
          EXPECT_TRUE(c.logits[0].isnan().all().item<bool>()) << j;
          EXPECT_TRUE(c.logits[1].isfinite().all().item<bool>()) << j;
        }
      }
    }
  }
}

TEST(SoftmaxXentRows, SupportsContiguousF32AndBf16OnCpuOnly) {
  EXPECT_FALSE(softmax_xent_rows_supported(at::zeros({2, 3}, at::kDouble)));
  EXPECT_FALSE(softmax_xent_rows_supported(at::zeros({3, 2}).t()));
  EXPECT_FALSE(softmax_xent_rows_supported(at::zeros({6})));
}

TEST(HeadGemms, MatchTheProductsInF64InBothLayoutsOfTheHeadGradient) {
  struct Shape {
    int64_t n, E, V;
    std::vector<int64_t> blocks;  // rows per block, summing to n
    bool transposed;              // the accumulator's layout these shapes choose (HeadGradAccumulator)
  };
  const std::vector<Shape> shapes = {{37, 128, 301, {37}, true},
                                     {37, 300, 301, {16, 21}, false},
                                     {1100, 200, 257, {1024, 76}, true},
                                     {300, 200, 257, {200, 100}, false}};
  for (const Shape& sh : shapes) {
    SCOPED_TRACE("n " + std::to_string(sh.n) + " E " + std::to_string(sh.E) + " V " + std::to_string(sh.V));
    at::Generator gen = at::detail::createCPUGenerator(7);
    at::Tensor h = at::randn({sh.n, sh.E}, gen, at::kFloat), w = at::randn({sh.V, sh.E}, gen, at::kFloat);
    at::Tensor g = at::randn({sh.n, sh.V}, gen, at::kFloat);
    ASSERT_TRUE(head_gemms_supported(h, w));
    const at::Tensor h64 = h.to(at::kDouble), w64 = w.to(at::kDouble), g64 = g.to(at::kDouble);
    // f32 products of E (or n) terms of size ~1: errors of a few 1e-6 per term at most.
    const double tol = 1e-5 * static_cast<double>(std::max(sh.E, sh.n));

    at::Tensor logits = at::empty({sh.n, sh.V});
    head_logits(h, w, logits);
    EXPECT_LT(max_abs_diff(logits, at::mm(h64, w64.t())), tol);
    at::Tensor again = at::empty({sh.n, sh.V});
    head_logits(h, w, again);
    EXPECT_TRUE(at::equal(logits, again)) << "not deterministic";

    // The hidden gradient written into rows of a wider tensor, block by block, as the fused loss does.
    at::Tensor dh = at::full({sh.n, sh.E + 5}, 7.0f).narrow(1, 0, sh.E);  // rows of a wider tensor
    at::Tensor acc_in = at::zeros({sh.V, sh.E}, at::kDouble);
    HeadGradAccumulator acc(sh.V, sh.E, sh.blocks.front(), w.options());
    int64_t i0 = 0;
    for (int64_t b : sh.blocks) {
      head_hidden_grad(g.narrow(0, i0, b).contiguous(), w, dh.narrow(0, i0, b));
      acc.add(g.narrow(0, i0, b).contiguous(), h.narrow(0, i0, b).contiguous());
      i0 += b;
    }
    EXPECT_LT(max_abs_diff(dh, at::mm(g64, w64)), tol);
    at::Tensor d_head = acc.result();
    EXPECT_TRUE(d_head.is_contiguous());
    EXPECT_EQ(d_head.sizes(), w.sizes());
    EXPECT_LT(max_abs_diff(d_head, at::mm(g64.t(), h64)), tol);
    EXPECT_EQ(acc.transposed(), sh.transposed);
  }
  // No block added: zeros of the head's shape.
  EXPECT_TRUE(at::equal(HeadGradAccumulator(5, 3, 4, at::TensorOptions()).result(), at::zeros({5, 3})));
}

TEST(HeadGemms, TakeContiguousF32CpuRowsOnly) {
  const at::Tensor h = at::zeros({4, 3}), w = at::zeros({5, 3});
  EXPECT_TRUE(head_gemms_supported(h, w));
  EXPECT_FALSE(head_gemms_supported(h.to(at::kDouble), w.to(at::kDouble)));
  EXPECT_FALSE(head_gemms_supported(h.to(at::kBFloat16), w.to(at::kBFloat16)));
  EXPECT_FALSE(head_gemms_supported(at::zeros({3, 4}).t(), w));
  EXPECT_FALSE(head_gemms_supported(h, at::zeros({5, 4})));  // embed differs
  EXPECT_THROW(head_logits(h, w, at::empty({4, 4})), c10::Error);
}
