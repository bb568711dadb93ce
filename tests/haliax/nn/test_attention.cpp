// The attention example of Haliax's introduction: one function, written without mentioning batch or heads,
// serves batched multi-head attention, multi-query attention and attention over 2-D image patches.
#include "../testing.h"

using namespace haliax;
using haliax::testing::expect_same_value_and_grad;
using haliax::testing::randn;

namespace {
const Axis Batch("batch", 2), Head("head", 3), Pos("position", 5), Key("key", 4);
const Axis KPos = Pos.alias("key_position");

nn::AttentionOptions masked(const NamedArray& mask) {
  nn::AttentionOptions o;
  o.mask = mask;
  return o;
}

// The two axes of the library's attention have distinct types: a swapped or stringly-typed call does not compile.
static_assert(!std::is_convertible_v<nn::AttendOver, nn::Contract>);
static_assert(!std::is_convertible_v<nn::Contract, nn::AttendOver>);
static_assert(!std::is_convertible_v<const char*, nn::Contract>);
static_assert(!std::is_convertible_v<Axis, nn::AttendOver>);

NamedArray attention_scores(const Axis& Key, const AxisSelection& KPos, const NamedArray& query, const NamedArray& key,
                            const std::optional<NamedArray>& mask) {
  NamedArray scores = dot(query, key, Key) / std::sqrt(static_cast<double>(Key.size));
  if (mask) scores = scores - 1e9 * (1.0 - astype(*mask, scores.dtype()));
  return nn::softmax(scores, KPos);
}

NamedArray attention(const Axis& Key, const AxisSelection& KPos, const NamedArray& query, const NamedArray& key,
                     const NamedArray& value, const std::optional<NamedArray>& mask) {
  NamedArray scores = attention_scores(Key, KPos, query, key, mask);
  return dot(scores, value, KPos);
}

at::Tensor ref_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
  // q (b, h, p, d), k/v (b, h, kp, d), mask (p, kp)
  at::Tensor s = at::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(q.size(-1)));
  s = s - 1e9 * (1.0 - mask.to(s.scalar_type()));
  return at::matmul(at::softmax(s, -1), v);
}
}  // namespace

TEST(Attention, BatchedMultiHead) {
  random::Key key(0);
  auto ks = key.split(3);
  NamedArray causal = broadcast_axis(arange(Pos), {Pos, KPos}) >= arange(KPos);
  NamedArray q = astype(random::normal(ks[0], {Batch, Head, Pos, Key}), at::kDouble);
  NamedArray k = astype(random::normal(ks[1], {Batch, Head, KPos, Key}), at::kDouble);
  NamedArray v = astype(random::normal(ks[2], {Batch, Head, KPos, Key}), at::kDouble);
  NamedArray answers = attention(Key, KPos, q, k, v, causal);
  EXPECT_EQ(answers.axes(), (AxisSpec{Batch, Head, Pos, Key}));
  expect_same_value_and_grad(
      {q.array(), k.array(), v.array()},
      [&](const auto& t) {
        return attention(Key, KPos, NamedArray(t[0], q.axes()), NamedArray(t[1], k.axes()), NamedArray(t[2], v.axes()),
                         causal)
            .array();
      },
      [&](const auto& t) { return ref_attention(t[0], t[1], t[2], causal.array()); });
  // The library version agrees with the hand-written one.
  NamedArray lib = nn::dot_product_attention(nn::Contract(Key), nn::AttendOver(KPos), q, k, v, masked(causal));
  EXPECT_EQ(lib.axes(), answers.axes());
  EXPECT_TRUE(at::allclose(lib.array(), answers.array(), 1e-10, 1e-10));
  EXPECT_TRUE(at::equal(nn::causal_mask(Pos, KPos).array(), causal.array()));
}

TEST(Attention, MultiQueryKeysWithoutHeads) {
  random::Key key(1);
  auto ks = key.split(3);
  NamedArray q = astype(random::normal(ks[0], {Batch, Head, Pos, Key}), at::kDouble);
  NamedArray k = astype(random::normal(ks[1], {Batch, KPos, Key}), at::kDouble);
  NamedArray v = astype(random::normal(ks[2], {Batch, KPos, Key}), at::kDouble);
  NamedArray causal = nn::causal_mask(Pos, KPos);
  NamedArray answers = attention(Key, KPos, q, k, v, causal);
  EXPECT_EQ(answers.axes(), (AxisSpec{Batch, Head, Pos, Key}));
  at::Tensor ref = ref_attention(q.array(), k.array().unsqueeze(1).expand({2, 3, 5, 4}),
                                 v.array().unsqueeze(1).expand({2, 3, 5, 4}), causal.array());
  EXPECT_TRUE(at::allclose(answers.array(), ref, 1e-10, 1e-10));
}

TEST(Attention, KeysOverImagePatches) {
  // Keys and values over a (height, width) grid; attention over both axes at once.
  Axis Height("height", 2), Width("width", 3);
  random::Key key(2);
  auto ks = key.split(3);
  NamedArray q = astype(random::normal(ks[0], {Batch, Head, Pos, Key}), at::kDouble);
  NamedArray k = astype(random::normal(ks[1], {Batch, Head, Height, Width, Key}), at::kDouble);
  NamedArray v = astype(random::normal(ks[2], {Batch, Head, Height, Width, Key}), at::kDouble);
  NamedArray answers = attention(Key, {Height, Width}, q, k, v, std::nullopt);
  EXPECT_EQ(answers.axes(), (AxisSpec{Batch, Head, Pos, Key}));
  at::Tensor flat_k = k.array().reshape({2, 3, 6, 4}), flat_v = v.array().reshape({2, 3, 6, 4});
  at::Tensor ref = ref_attention(q.array(), flat_k, flat_v, at::ones({5, 6}, at::kBool));
  EXPECT_TRUE(at::allclose(answers.array(), ref, 1e-10, 1e-10));
}

TEST(Attention, LibraryFunctionsAndMasks) {
  NamedArray q(randn({2, 5, 4}, 1), {Batch, Pos, Key});
  NamedArray k(randn({2, 5, 4}, 2), {Batch, KPos, Key});
  EXPECT_VALUE_ERROR(nn::dot_product_attention(nn::Contract(Key), nn::AttendOver(Pos), q,
                                               rename(k, {{"key_position", "position"}}), k),
                     "in KPos is also in query");
  NamedArray w = nn::dot_product_attention_weights(nn::Contract(Key), nn::AttendOver(KPos), q, k,
                                                   masked(nn::causal_mask(Pos, KPos)));
  EXPECT_TRUE(at::allclose(sum(w, KPos).array(), at::ones({2, 5}, at::kDouble)));
  EXPECT_EQ(w.array()[0][0][1].item<double>(), 0.0);
  NamedArray win = nn::sliding_window_mask(Pos, KPos, 2);
  EXPECT_TRUE(win.array()[3][2].item<bool>());
  EXPECT_FALSE(win.array()[3][1].item<bool>());
  EXPECT_FALSE(win.array()[1][2].item<bool>());
  auto both = nn::combine_masks_and(nn::causal_mask(Pos, KPos), nn::prefix_mask(KPos, 3));
  EXPECT_FALSE(both->array()[4][3].item<bool>());
  EXPECT_TRUE(both->array()[4][2].item<bool>());
  auto either = nn::combine_masks_or(std::nullopt, nn::prefix_mask(KPos, 3));
  EXPECT_EQ(either->axes(), (AxisSpec{KPos}));
  NamedArray bias = nn::mask_to_bias(nn::prefix_mask(KPos, 3));
  EXPECT_EQ(bias.array()[0].item<float>(), 0.0f);
  EXPECT_EQ(bias.array()[4].item<float>(), -1e9f);
}

TEST(Attention, DropoutOnTheWeightsNeedsAKey) {
  NamedArray q(randn({2, 5, 4}, 1), {Batch, Pos, Key});
  NamedArray k(randn({2, 5, 4}, 2), {Batch, KPos, Key});
  nn::AttentionOptions o = masked(nn::causal_mask(Pos, KPos));
  NamedArray plain = nn::dot_product_attention_weights(nn::Contract(Key), nn::AttendOver(KPos), q, k, o);
  o.dropout = 0.5;  // without a key: inference, no dropout
  EXPECT_TRUE(at::equal(nn::dot_product_attention_weights(nn::Contract(Key), nn::AttendOver(KPos), q, k, o).array(),
                        plain.array()));
  o.key = random::Key(7);
  NamedArray dropped = nn::dot_product_attention_weights(nn::Contract(Key), nn::AttendOver(KPos), q, k, o);
  // Every weight is either dropped or scaled by 1 / (1 - p), with the same mask as nn::Dropout under that key.
  NamedArray expected = nn::Dropout{0.5}(plain, random::Key(7));
  EXPECT_TRUE(at::equal(dropped.array(), expected.array()));
  at::Tensor kept = plain.array() != 0;
  at::Tensor zeroed = (dropped.array() == 0) & kept;
  EXPECT_GT(zeroed.sum().item<int64_t>(), 0);
  EXPECT_LT(zeroed.sum().item<int64_t>(), kept.sum().item<int64_t>());
}
