// eval::score_tokens against an independent computation: the full logits of the model cast to f64, log_softmax
// with plain ATen ops, ranks by counting and top-k by sorting.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "levanter/eval/token_probs.h"
#include "levanter/models/gpt2/gpt2.h"

using haliax::Axis;
using haliax::NamedArray;
using levanter::eval::score_tokens;

namespace {

std::unique_ptr<levanter::models::LmHeadModel> tiny_gpt2() {
  levanter::models::Gpt2Config c;
  c.seq_len = 32;
  c.hidden_dim = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  auto m = c.build(Axis("vocab", 97), haliax::random::Key(7));
  // Larger weights than the init, so that probabilities spread over several orders of magnitude.
  haliax::nn::for_each_parameter(*m, [](const haliax::nn::ParamInfo& info, NamedArray& p) {
    p = p + haliax::random::normal(haliax::random::Key(std::hash<std::string>{}(info.path) % 1009), p.axes()) * 0.3;
  });
  return m;
}

struct Reference {
  std::vector<double> logp;  // of the target at j = 1..n-1
  std::vector<int64_t> rank;
  std::vector<std::vector<int64_t>> top;
  double min_gap = INFINITY;  // the smallest distance between the target's logit and any other (tie safety)
};

Reference reference(const levanter::models::LmHeadModel& m32, const std::vector<int64_t>& doc, int64_t k) {
  at::NoGradGuard ng;
  auto m = levanter::models::cast_floating(m32, at::kDouble);
  const auto n = static_cast<int64_t>(doc.size());
  NamedArray x(at::tensor(doc, at::kLong).reshape({1, n}), {Axis("batch", 1), Axis("position", n)});
  NamedArray act = m->activations(x);  // (batch, position, embed)
  at::Tensor h = act.array()[0];
  at::Tensor W = m->lm_head().array();       // (vocab, embed)
  at::Tensor logits = at::matmul(h, W.t());  // (position, vocab), f64
  at::Tensor logp = logits - logits.exp().sum(1, true).log();
  Reference r;
  for (int64_t j = 1; j < n; ++j) {
    at::Tensor row = logits[j - 1];
    const double t = row[doc[j]].item<double>();
    r.logp.push_back(logp[j - 1][doc[j]].item<double>());
    r.rank.push_back(1 + (row > t).sum().item<int64_t>());
    at::Tensor others = (row - t).abs();
    others[doc[j]] = INFINITY;
    r.min_gap = std::min(r.min_gap, others.min().item<double>());
    std::vector<int64_t> order(static_cast<size_t>(row.size(0)));
    std::iota(order.begin(), order.end(), 0);
    const double* v = row.contiguous().data_ptr<double>();
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return v[a] > v[b]; });
    r.top.emplace_back(order.begin(), order.begin() + k);
  }
  return r;
}

}  // namespace

TEST(TokenProbs, MatchesFullLogSoftmaxInF64WithExactRanksAndTopK) {
  auto m = tiny_gpt2();
  const std::vector<std::vector<int64_t>> docs{{3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43},
                                               {5, 5},
                                               {96, 0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14,
                                                15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30}};
  const int64_t k = 5;
  auto scores = score_tokens(*m, docs, k);
  ASSERT_EQ(scores.size(), docs.size());
  for (size_t d = 0; d < docs.size(); ++d) {
    Reference r = reference(*m, docs[d], k);
    ASSERT_GT(r.min_gap, 1e-6) << "near-tie: ranks would not be well defined in f32";
    const auto& s = scores[d];
    ASSERT_EQ(s.p.size(), docs[d].size() - 1);
    ASSERT_EQ(s.rank.size(), docs[d].size() - 1);
    ASSERT_EQ(s.top.size(), docs[d].size() - 1);
    double nll = 0;
    for (size_t j = 0; j < s.p.size(); ++j) {
      EXPECT_NEAR(std::log(s.p[j]), r.logp[j], 2e-5) << "doc " << d << " position " << j + 1;
      EXPECT_EQ(s.rank[j], r.rank[j]) << "doc " << d << " position " << j + 1;
      ASSERT_EQ(s.top[j].size(), static_cast<size_t>(k));
      for (int64_t i = 0; i < k; ++i) {
        EXPECT_EQ(s.top[j][i].first, r.top[j][i]) << "doc " << d << " position " << j + 1 << " alternative " << i;
        if (i > 0) {
          EXPECT_GE(s.top[j][i - 1].second, s.top[j][i].second);
        }
      }
      // The target's probability appears among the alternatives exactly when its rank is within k.
      if (r.rank[j] <= k) {
        EXPECT_FLOAT_EQ(s.top[j][r.rank[j] - 1].second, s.p[j]);
      }
      nll -= r.logp[j];
    }
    EXPECT_NEAR(s.loss, nll / static_cast<double>(s.p.size()), 1e-5) << "doc " << d;
  }
  // The probabilities are not all alike (the check above would be weak otherwise).
  auto [lo, hi] = std::minmax_element(scores[0].p.begin(), scores[0].p.end());
  EXPECT_LT(*lo, 0.01f);
  EXPECT_GT(*hi / *lo, 100.0f);
}

TEST(TokenProbs, Bf16ComputeStaysCloseAndSoftmaxIsF32) {
  auto m = tiny_gpt2();
  const std::vector<std::vector<int64_t>> docs{{3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43}};
  auto f32 = score_tokens(*m, docs, 3);
  auto bf16 = score_tokens(*m, docs, 3, at::kBFloat16);
  ASSERT_EQ(bf16[0].p.size(), f32[0].p.size());
  float total = 0;
  for (size_t j = 0; j < f32[0].p.size(); ++j) {
    EXPECT_NEAR(bf16[0].p[j], f32[0].p[j], 0.05f + 0.1f * f32[0].p[j]) << j;
    // Probabilities of a softmax in f32: alternatives sum to at most 1 and are not bf16-rounded.
    for (auto& [id, p] : bf16[0].top[j]) total += p;
  }
  EXPECT_NEAR(bf16[0].loss, f32[0].loss, 0.1);
  EXPECT_GT(total, 0);
}

TEST(TokenProbs, RefusesDocumentsTooShortOrLongAndClampsK) {
  auto m = tiny_gpt2();
  EXPECT_THROW(score_tokens(*m, {{1}}, 5), std::invalid_argument);
  EXPECT_THROW(score_tokens(*m, {std::vector<int64_t>(33, 1)}, 5), std::invalid_argument);
  auto s = score_tokens(*m, {{1, 2, 3}}, 1000);
  ASSERT_EQ(s[0].top[0].size(), 97u);
  float sum = 0;
  for (auto& [id, p] : s[0].top[0]) sum += p;
  EXPECT_NEAR(sum, 1.0f, 1e-5);
}
