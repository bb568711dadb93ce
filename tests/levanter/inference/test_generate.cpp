// Generation: decoding with the key/value cache gives the hidden states of the full forward pass; greedy
// generation equals recomputing the whole sequence for every token; rows of a batch with prompts of different
// lengths get what they would alone; sampling is a function of the seed, and top-k / top-p / temperature cut as
// defined. (tests/interop/ checks greedy continuations against transformers' generate.)
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "levanter/inference/generate.h"
#include "levanter/models/gpt2/gpt2.h"

using haliax::Axis;
using haliax::NamedArray;
using levanter::inference::choose_token;
using levanter::inference::generate;
using levanter::inference::GenerateOptions;

namespace {

std::unique_ptr<levanter::models::LmHeadModel> tiny_model(bool mistral = false) {
  levanter::models::Gpt2Config c;
  c.seq_len = 40;
  c.hidden_dim = 32;
  c.num_layers = 3;
  c.num_heads = 4;
  c.scale_attn_by_inverse_layer_idx = mistral;
  c.upcast_attn = mistral;
  auto m = c.build(Axis("vocab", 97), haliax::random::Key(5));
  // Larger weights than Levanter's init, so that logits separate and greedy choices are not near-ties.
  haliax::nn::for_each_parameter(*m, [](const haliax::nn::ParamInfo& info, NamedArray& p) {
    p = p + haliax::random::normal(haliax::random::Key(std::hash<std::string>{}(info.path) % 1009), p.axes()) * 0.3;
  });
  return m;
}

// Greedy by recomputing the whole sequence for each new token (no cache).
std::vector<int64_t> naive_greedy(const levanter::models::LmHeadModel& m, std::vector<int64_t> ids, int64_t n) {
  at::NoGradGuard ng;
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t T = static_cast<int64_t>(ids.size());
    NamedArray x(at::tensor(ids, at::kLong).reshape({1, T}), {Axis("batch", 1), Axis("position", T)});
    at::Tensor logits = m.logits(x).array()[0][T - 1];
    out.push_back(logits.argmax().item<int64_t>());
    ids.push_back(out.back());
  }
  return out;
}

}  // namespace

TEST(Generate, DecodingWithTheCacheGivesTheFullForwardPass) {
  for (bool mistral : {false, true}) {
    auto m = tiny_model(mistral);
    at::NoGradGuard ng;
    NamedArray ids = haliax::random::randint(haliax::random::Key(1), {Axis("batch", 2), Axis("position", 13)}, 0, 97);
    at::Tensor full = m->activations(ids).array();
    auto cache = m->start_decode(2, 20);
    std::vector<at::Tensor> parts;
    for (auto [start, n] : {std::pair<int64_t, int64_t>{0, 6}, {6, 1}, {7, 4}, {11, 2}}) {
      NamedArray chunk(ids.array().narrow(1, start, n), {Axis("batch", 2), Axis("position", n)});
      parts.push_back(m->decode(chunk, *cache).array());
    }
    EXPECT_EQ(cache->length, 13);
    at::Tensor stepwise = at::cat(parts, 1);
    EXPECT_TRUE(at::allclose(stepwise, full, 1e-5, 1e-5))
        << "mistral " << mistral << ": max difference " << (stepwise - full).abs().max().item<double>();
  }
}

TEST(Generate, GreedyEqualsRecomputingAndBatchRowsEqualTheirRunsAlone) {
  auto m = tiny_model();
  GenerateOptions o;
  o.temperature = 0;
  o.max_new_tokens = 9;
  const std::vector<std::vector<int64_t>> prompts{{3, 14, 15, 92}, {65, 35}, {8, 9, 79, 32, 38, 46, 26}};
  auto batch = generate(*m, prompts, o, haliax::random::Key(0));
  ASSERT_EQ(batch.size(), 3u);
  for (size_t r = 0; r < prompts.size(); ++r) {
    EXPECT_EQ(batch[r], naive_greedy(*m, prompts[r], 9)) << "row " << r;
    EXPECT_EQ(generate(*m, {prompts[r]}, o, haliax::random::Key(0))[0], batch[r]) << "row " << r;
  }
  // EOS stops a row, and is part of its output.
  o.eos_id = batch[0][2];
  auto stopped = generate(*m, {prompts[0]}, o, haliax::random::Key(0))[0];
  EXPECT_EQ(stopped, std::vector<int64_t>(batch[0].begin(), batch[0].begin() + 3));
}

TEST(Generate, SamplingIsAFunctionOfTheSeed) {
  auto m = tiny_model();
  GenerateOptions o;
  o.max_new_tokens = 12;
  o.temperature = 1.5;
  const std::vector<std::vector<int64_t>> prompts{{1, 2, 3}, {4, 5}};
  std::vector<int64_t> streamed;
  auto a = generate(*m, prompts, o, haliax::random::Key(42), [&](size_t row, int64_t t) {
    if (row == 1) streamed.push_back(t);
  });
  EXPECT_EQ(streamed, a[1]);
  EXPECT_EQ(generate(*m, prompts, o, haliax::random::Key(42)), a);
  EXPECT_NE(generate(*m, prompts, o, haliax::random::Key(43)), a);
  // top_k = 1 leaves only the most likely token: greedy, whatever the temperature and the seed.
  o.top_k = 1;
  GenerateOptions greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = 12;
  EXPECT_EQ(generate(*m, prompts, o, haliax::random::Key(7)), generate(*m, prompts, greedy, haliax::random::Key(0)));
  // Too long for the model's positions: said with the numbers.
  o.max_new_tokens = 40;
  try {
    generate(*m, prompts, o, haliax::random::Key(0));
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("plus 40 new tokens exceeds the model's 40 positions"));
  }
}

TEST(Generate, ChoiceFollowsTheDistributionAndItsCuts) {
  // p = (0.5, 0.3, 0.2, 0): a grid of 1000 uniform draws lands 500 / 300 / 200 times.
  at::Tensor logits = at::log(at::tensor({0.5, 0.3, 0.2, 1e-30}, at::kFloat));
  GenerateOptions o;
  std::vector<int> counts(4, 0);
  for (int i = 0; i < 1000; ++i) counts[choose_token(logits, o, (i + 0.5) / 1000)]++;
  EXPECT_EQ(counts, (std::vector<int>{500, 300, 200, 0}));
  // top_p 0.7: {0, 1} (0.5 + 0.3 >= 0.7), renormalised to 5/8 and 3/8.
  o.top_p = 0.7;
  counts.assign(4, 0);
  for (int i = 0; i < 800; ++i) counts[choose_token(logits, o, (i + 0.5) / 800)]++;
  EXPECT_EQ(counts, (std::vector<int>{500, 300, 0, 0}));
  // top_k 1 and temperature 0 take the maximum.
  o.top_p = 1.0;
  o.top_k = 1;
  EXPECT_EQ(choose_token(logits, o, 0.999), 0);
  o.top_k = 0;
  o.temperature = 0;
  EXPECT_EQ(choose_token(at::tensor({1.0f, 3.0f, 3.0f}), o, 0.5), 1);  // ties: the lowest id
}
