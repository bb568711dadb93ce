// haliax::nn where it used to differ from Haliax, and the original's test_nn.py, test_loss.py and
// test_attention.py, ported: one_hot's scalar rules, weighted/masked loss reductions, standardize with `where`,
// jax.nn's remaining activations, ALiBi, prefix-LM and forgetful causal masks. Expected values come from the
// original (reference/gen_port.py); the rest is checked against positional ATen, values and gradients.
#include "haliax/reference.h"
#include "haliax/reference/port_expected.inc"
#include "haliax/testing.h"

namespace haliax {
namespace {

using testing::expect_matches_ref;
using testing::expect_same_value_and_grad;
using testing::randn;
using testing::ref_to_named;
namespace ref = haliax_ref::port;

const Axis C4("c", 4);

TEST(OneHotPorted, PlainIntWrapsNegativesAndRejectsOutOfRange) {
  expect_matches_ref(nn::one_hot(0, C4, at::kDouble), ref::one_hot_int_0);
  expect_matches_ref(nn::one_hot(3, C4, at::kDouble), ref::one_hot_int_3);
  expect_matches_ref(nn::one_hot(-1, C4, at::kDouble), ref::one_hot_int_m1);
  expect_matches_ref(nn::one_hot(-4, C4, at::kDouble), ref::one_hot_int_m4);
  // Haliax asserts (AssertionError, no message); we throw a ValueError that says why.
  EXPECT_EQ(ref::one_hot_int_too_big.type, "AssertionError");
  EXPECT_VALUE_ERROR(nn::one_hot(4, C4), "out of range");
  EXPECT_VALUE_ERROR(nn::one_hot(-5, C4), "out of range");
}

TEST(OneHotPorted, ZeroDimTensorWrapsOnceAndDropsTheRest) {
  auto id = [](int64_t v) { return at::scalar_tensor(v, at::kInt); };
  expect_matches_ref(nn::one_hot(id(2), C4, at::kDouble), ref::one_hot_0d_2);
  expect_matches_ref(nn::one_hot(id(-1), C4, at::kDouble), ref::one_hot_0d_m1);
  expect_matches_ref(nn::one_hot(id(-4), C4, at::kDouble), ref::one_hot_0d_m4);
  expect_matches_ref(nn::one_hot(id(-5), C4, at::kDouble), ref::one_hot_0d_m5);
  expect_matches_ref(nn::one_hot(id(4), C4, at::kDouble), ref::one_hot_0d_4);
  expect_matches_ref(nn::one_hot(id(7), C4, at::kDouble), ref::one_hot_0d_7);
  // A bool id is Haliax's boolean-mask index: true sets every class, false none.
  expect_matches_ref(nn::one_hot(at::scalar_tensor(true, at::kBool), C4, at::kDouble), ref::one_hot_bool_0d);
  EXPECT_EQ(nn::one_hot(at::scalar_tensor(false, at::kBool), C4).array().sum().item<float>(), 0.0f);
  EXPECT_VALUE_ERROR(nn::one_hot(at::scalar_tensor(1.0, at::kDouble), C4), ref::one_hot_float_scalar.message);
  EXPECT_VALUE_ERROR(nn::one_hot(at::tensor({1, 2}, at::kLong), C4), ref::one_hot_vector_array.message);
}

TEST(OneHotPorted, NamedIdsOutOfRangeGiveZeroRows) {
  // A NamedArray of ids (0-d included) is jax.nn.one_hot: negative ids do not wrap.
  expect_matches_ref(nn::one_hot(ref_to_named(ref::one_hot_ids), C4, at::kDouble), ref::one_hot_named);
  expect_matches_ref(nn::one_hot(NamedArray(at::scalar_tensor(-1, at::kLong), {}), C4, at::kDouble),
                     ref::one_hot_0d_named_m1);
  // test_nn.py: a permutation of the classes is a permutation matrix.
  const Axis I("i", 3), C("c", 3);
  NamedArray oh = nn::one_hot(NamedArray(at::tensor({1, 2, 0}, at::kLong), {I}), C);
  EXPECT_EQ(oh.axes(), (AxisSpec{I, C}));
  EXPECT_TRUE(at::equal(oh.array(), at::tensor({0.f, 1.f, 0.f, 0.f, 0.f, 1.f, 1.f, 0.f, 0.f}).reshape({3, 3})));
}

TEST(LossPorted, WhereWeightAndReductionAxisMatchTheOriginal) {
  NamedArray logits = ref_to_named(ref::loss_logits);
  const Axis L("label", 4), P("pos", 3), Bt("batch", 2);
  NamedArray targets = nn::one_hot(ref_to_named(ref::loss_target_ids), L, at::kDouble);
  NamedArray mask = ref_to_named(ref::loss_where), none = ref_to_named(ref::loss_where_none);
  NamedArray w = ref_to_named(ref::loss_weight);
  using nn::LossOptions;
  using nn::Reduction;
  auto ce = [&](const LossOptions& o) { return nn::cross_entropy_loss(logits, L, targets, o); };
  expect_matches_ref(ce(LossOptions()), ref::ce_mean);
  expect_matches_ref(ce(LossOptions().set_reduction(Reduction::kSum)), ref::ce_sum);
  expect_matches_ref(ce(LossOptions().set_reduction(Reduction::kNone)), ref::ce_none);
  expect_matches_ref(ce(LossOptions().set_where(mask)), ref::ce_where_mean);
  expect_matches_ref(ce(LossOptions().set_reduction(Reduction::kNone).set_where(mask)), ref::ce_where_none);
  expect_matches_ref(ce(LossOptions().set_where(mask).set_reduction_axis(P)), ref::ce_where_mean_pos);
  expect_matches_ref(ce(LossOptions().set_where(none)), ref::ce_all_masked_mean);  // 0, not NaN
  expect_matches_ref(ce(LossOptions().set_weight(w)), ref::ce_weight_mean);
  expect_matches_ref(ce(LossOptions().set_reduction(Reduction::kSum).set_weight(w)), ref::ce_weight_sum);
  expect_matches_ref(ce(LossOptions().set_weight(w).set_where(mask).set_reduction_axis(P)),
                     ref::ce_weight_where_mean_pos);
  expect_matches_ref(ce(LossOptions().set_reduction(Reduction::kNone).set_weight(w)), ref::ce_weight_none);
  expect_matches_ref(ce(LossOptions().set_weight(w).set_reduction_axis(AxisSelection())), ref::ce_empty_axis);
  // The positional form agrees with the options form.
  expect_matches_ref(nn::cross_entropy_loss(logits, L, targets, Reduction::kMean, mask, AxisSelection(P)),
                     ref::ce_where_mean_pos);

  NamedArray bl = ref_to_named(ref::bce_logits), bt = ref_to_named(ref::bce_targets);
  expect_matches_ref(nn::binary_cross_entropy_loss(bl, bt, LossOptions()), ref::bce_mean);
  expect_matches_ref(
      nn::binary_cross_entropy_loss(bl, bt, LossOptions().set_reduction(Reduction::kSum).set_where(mask).set_weight(w)),
      ref::bce_weight_where_sum);
  expect_matches_ref(nn::binary_cross_entropy_loss(bl, bt, LossOptions().set_where(mask).set_reduction_axis(Bt)),
                     ref::bce_where_mean_batch);
}

TEST(LossPorted, WeightedReductionsByHand) {
  // test_loss.py: maybe_reduce_loss with weights, mean and sum over Pos.
  const Axis Batch("Batch", 2), Pos("Pos", 3);
  NamedArray arr(at::arange(6, at::kDouble).reshape({2, 3}), {Batch, Pos});
  NamedArray w(at::tensor({1.0, 0.0, 2.0, 0.0, 1.0, 1.0}, at::kDouble).reshape({2, 3}), {Batch, Pos});
  NamedArray mean = nn::reduce_loss(arr, nn::LossOptions().set_reduction_axis(Pos).set_weight(w));
  EXPECT_TRUE(at::allclose(mean.array(), at::tensor({4.0 / 3.0, 9.0 / 2.0}, at::kDouble)));
  NamedArray sum =
      nn::reduce_loss(arr, nn::LossOptions().set_reduction(nn::Reduction::kSum).set_reduction_axis(Pos).set_weight(w));
  EXPECT_TRUE(at::allclose(sum.array(), at::tensor({4.0, 9.0}, at::kDouble)));
}

TEST(LossPorted, MaskedOutNaNStaysOut) {
  // Deliberate difference: Haliax multiplies by the mask, so NaN * 0 would make this NaN.
  const Axis P("pos", 3);
  NamedArray loss(at::tensor({1.0, std::nan(""), 3.0}, at::kDouble), {P});
  NamedArray mask(at::tensor({1, 0, 1}).to(at::kBool), {P});
  EXPECT_DOUBLE_EQ(nn::reduce_loss(loss, nn::LossOptions().set_where(mask)).array().item<double>(), 2.0);
  NamedArray w(at::tensor({1.0, 5.0, 3.0}, at::kDouble), {P});
  EXPECT_DOUBLE_EQ(nn::reduce_loss(loss, nn::LossOptions().set_where(mask).set_weight(w)).array().item<double>(), 2.5);
  NamedArray none = nn::reduce_loss(loss, nn::LossOptions().set_reduction(nn::Reduction::kNone).set_where(mask));
  EXPECT_EQ(none.array()[1].item<double>(), 0.0);
}

TEST(LossPorted, WeightedMeanGradientMatchesATen) {
  const Axis B("b", 3), L("l", 4);
  at::Tensor ids = at::tensor({0, 3, 1}, at::kLong);
  at::Tensor wt = at::tensor({1.0, 0.0, 2.0}, at::kDouble);
  expect_same_value_and_grad(
      {randn({3, 4}, 31)},
      [&](const auto& v) {
        return nn::cross_entropy_loss(NamedArray(v[0], {B, L}), L, nn::one_hot(NamedArray(ids, {B}), L, at::kDouble),
                                      nn::LossOptions().set_weight(NamedArray(wt, {B})))
            .array();
      },
      [&](const auto& v) {
        at::Tensor per = -at::log_softmax(v[0], 1).gather(1, ids.unsqueeze(1)).squeeze(1);
        return (per * wt).sum() / wt.sum();
      });
}

TEST(StandardizePorted, WhereLimitsTheStatistics) {
  NamedArray x = ref_to_named(ref::std_x), mask = ref_to_named(ref::std_where);
  const Axis b("b", 2), c("c", 3);
  expect_matches_ref(nn::standardize(x, c), ref::std_c);
  expect_matches_ref(nn::standardize(x, b, nn::StandardizeOptions().set_where(mask)), ref::std_b_where);
  expect_matches_ref(nn::standardize(x, c, nn::StandardizeOptions().set_where(mask)), ref::std_c_where);
  expect_matches_ref(
      nn::standardize(
          x, c,
          nn::StandardizeOptions().set_mean(haliax::mean(x, c)).set_variance(haliax::var(x, c) + 1.0).set_epsilon(0.1)),
      ref::std_given);
}

TEST(StandardizePorted, GradientMatchesATen) {
  const Axis b("b", 3), c("c", 5);
  expect_same_value_and_grad(
      {randn({3, 5}, 41)},
      [&](const auto& v) {
        return nn::standardize(NamedArray(v[0], {b, c}), c).array();
      },
      [](const auto& v) {
        at::Tensor m = v[0].mean(1, true);
        at::Tensor var = (v[0] * v[0]).mean(1, true) - m * m;
        return (v[0] - m) * at::rsqrt(var.clamp_min(0) + 1e-5);
      });
}

TEST(ActivationsPorted, MatchTheOriginal) {
  NamedArray x = ref_to_named(ref::act_x);
  expect_matches_ref(nn::soft_sign(x), ref::act_soft_sign);
  expect_matches_ref(nn::hard_sigmoid(x), ref::act_hard_sigmoid);
  expect_matches_ref(nn::hard_silu(x), ref::act_hard_silu);
  expect_matches_ref(nn::hard_swish(x), ref::act_hard_swish);
  expect_matches_ref(nn::hard_tanh(x), ref::act_hard_tanh);
  expect_matches_ref(nn::celu(x), ref::act_celu);
  expect_matches_ref(nn::selu(x), ref::act_selu);
  expect_matches_ref(nn::relu_squared(x), ref::act_relu_squared);
  expect_matches_ref(nn::elu(x), ref::act_elu);
  expect_matches_ref(nn::leaky_relu(x), ref::act_leaky_relu);
  expect_matches_ref(nn::relu6(x), ref::act_relu6);
  expect_matches_ref(nn::softplus(x), ref::act_softplus);
  expect_matches_ref(nn::log_sigmoid(x), ref::act_log_sigmoid);
  expect_matches_ref(nn::quick_gelu(x), ref::act_quick_gelu);
  // Without an axis Haliax normalises over everything and returns a bare array; we keep the names.
  NamedArray s = ref_to_named(ref::std_x);
  EXPECT_EQ(nn::softmax(s).axes(), s.axes());
  EXPECT_TRUE(at::allclose(nn::softmax(s).array().reshape({-1}), at::tensor(ref::softmax_all.values, at::kDouble),
                           1e-12, 1e-12));
  EXPECT_TRUE(at::allclose(nn::log_softmax(s).array().reshape({-1}),
                           at::tensor(ref::log_softmax_all.values, at::kDouble), 1e-12, 1e-12));
}

TEST(ActivationsPorted, ReluSquaredKeepsNaNAndInfinities) {
  // test_nn.py's relu_squared cases, f32: NaN stays NaN, +inf squares to inf, -inf to 0.
  const Axis A("A", 5);
  at::Tensor t = at::tensor({std::nanf(""), INFINITY, -INFINITY, -2.0f, 3.0f});
  NamedArray r = nn::relu_squared(NamedArray(t, {A}));
  EXPECT_EQ(r.axes(), AxisSpec{A});
  EXPECT_EQ(r.dtype(), at::kFloat);
  EXPECT_TRUE(std::isnan(r.array()[0].item<float>()));
  EXPECT_EQ(r.array()[1].item<float>(), INFINITY);
  EXPECT_EQ(r.array()[2].item<float>(), 0.0f);
  EXPECT_EQ(r.array()[3].item<float>(), 0.0f);
  EXPECT_EQ(r.array()[4].item<float>(), 9.0f);
}

TEST(ActivationsPorted, GluHalvesTheAxis) {
  // Haliax's glu names its result with the full-size axis and so fails; the values are jax.nn.glu's.
  EXPECT_EQ(ref::glu_named.type, "ValueError");
  NamedArray x = ref_to_named(ref::glu_x);
  NamedArray g = nn::glu(x, "g");
  EXPECT_EQ(g.axes(), (AxisSpec{Axis("b", 2), Axis("g", 2)}));
  at::Tensor expected = at::tensor(ref::glu_raw.values, at::kDouble).reshape({2, 2});
  EXPECT_TRUE(at::allclose(g.array(), expected, 1e-12, 1e-12));
  EXPECT_VALUE_ERROR(nn::glu(NamedArray(at::zeros({3}), {Axis("g", 3)}), "g"), "even size");
  expect_same_value_and_grad(
      {randn({2, 6}, 51)},
      [](const auto& v) {
        return nn::glu(NamedArray(v[0], {Axis("b", 2), Axis("g", 6)}), "g").array();
      },
      [](const auto& v) { return at::glu(v[0], 1); });
}

TEST(AttentionPorted, AlibiBiasAndMasksMatchTheOriginal) {
  // f32, as Haliax's default (the slopes are computed in f64 and rounded once, as there).
  expect_matches_ref(nn::alibi_attention_bias(Axis("heads", 6), Axis("kpos", 5)), ref::alibi_6);
  expect_matches_ref(nn::alibi_attention_bias(Axis("heads", 16), Axis("kpos", 2)), ref::alibi_16);
  expect_matches_ref(nn::alibi_attention_bias(Axis("heads", 4), Axis("kpos", 5), 4.0), ref::alibi_4_bias_max_4);
  const Axis Q("qpos", 4), K("kpos", 5);
  expect_matches_ref(nn::prefix_lm_mask(Q, K, 2), ref::prefix_lm);
  expect_matches_ref(nn::prefix_lm_mask(Q, K, 2, /*q_start=*/1), ref::prefix_lm_start);
  expect_matches_ref(nn::causal_mask(Q, K, /*q_start=*/1), ref::causal_start);
}

TEST(AttentionPorted, AlibiMakesLaterKeysHeavier) {
  // test_attention.py: with the bias the last key outweighs the one before it and its unbiased self.
  const Axis NH("heads", 1), KP("kpos", 20), Hid("hid", 8);
  NamedArray bias = nn::alibi_attention_bias(NH, KP);
  NamedArray q = ones({NH, Hid}), k = ones({KP, NH, Hid});
  NamedArray with = nn::dot_product_attention_weights(nn::Contract(Hid), nn::AttendOver{KP}, q, k,
                                                      nn::AttentionOptions().set_bias(bias));
  NamedArray without = nn::dot_product_attention_weights(nn::Contract(Hid), nn::AttendOver{KP}, q, k);
  expect_matches_ref(astype(with, at::kDouble), ref::alibi_weights, 1e-6);
  at::Tensor w = with.array().reshape({-1}), wo = without.array().reshape({-1});
  EXPECT_GT(w[19].item<float>(), w[18].item<float>());
  EXPECT_GT(w[19].item<float>(), wo[19].item<float>());
  EXPECT_EQ(wo[19].item<float>(), wo[18].item<float>());
}

TEST(AttentionPorted, ForgetfulCausalMaskIsJaxsBitForBit) {
  const Axis K("kpos", 24);
  // f64 draws, as the generator ran JAX with x64 enabled.
  expect_matches_ref(nn::forgetful_causal_mask(K, 0.6, false, random::Key(0), at::kDouble), ref::fcm_fixed);
  expect_matches_ref(nn::forgetful_causal_mask(K, 0.9, true, random::Key(3), at::kDouble), ref::fcm_sampled);
  expect_matches_ref(nn::forgetful_causal_mask(K, 0.0, true, random::Key(0)), ref::fcm_zero);
  expect_matches_ref(nn::forgetful_causal_mask(K, 1.0, true, random::Key(0)), ref::fcm_one);
}

TEST(AttentionPorted, ForgetfulMaskedKeysGetNoWeight) {
  // test_attention.py's fcm case: position 0 is always kept, masked keys get exactly zero weight.
  const Axis KeyPos("KeyPos", 20), QueryPos("QueryPos", 10), Head("Head", 8);
  NamedArray mask = nn::forgetful_causal_mask(KeyPos, 0.6, false, random::Key(0));
  EXPECT_EQ(mask.axes(), AxisSpec{KeyPos});
  EXPECT_TRUE(mask.array()[0].item<bool>());
  NamedArray q = broadcast_axis(astype(arange(QueryPos), at::kFloat), {Head, QueryPos});
  NamedArray k = broadcast_axis(astype(arange(KeyPos), at::kFloat), {Head, KeyPos});
  NamedArray w = nn::dot_product_attention_weights(nn::Contract(Head), nn::AttendOver{KeyPos}, q, k,
                                                   nn::AttentionOptions().set_mask(mask));
  NamedArray kept = astype(mask, at::kFloat);
  EXPECT_EQ(sum(w * (1.0 - kept)).array().item<float>(), 0.0f);
  EXPECT_GT(sum(w * kept).array().item<float>(), 0.0f);
}

TEST(AttentionPorted, AxesMustBePresentAndDistinct) {
  const Axis Pos("Pos", 20), KeyPos("Pos_key", 20), NumHeads("NumHeads", 1), Hid("Hid", 8);
  NamedArray query = ones({NumHeads, KeyPos, Hid}), key = ones({KeyPos, NumHeads, Hid}), value = key;
  EXPECT_VALUE_ERROR(nn::dot_product_attention(nn::Contract(Hid), nn::AttendOver{Pos}, query, key, value), "not found");
  EXPECT_VALUE_ERROR(nn::dot_product_attention(nn::Contract(Hid), nn::AttendOver{KeyPos}, query, key, value),
                     "Axis Pos_key(20) in KPos is also in query. Attended-to axes must be distinct from query axis");
}

TEST(AttentionPorted, MaskToBiasIsTheOppositeOfHaliaxs) {
  // Deliberate difference: Haliax multiplies (mask_value where true); ours is 0 where true (= attend).
  expect_matches_ref(
      astype(nn::mask_to_bias(NamedArray(at::tensor({0, 1}).to(at::kBool), {Axis("kpos", 2)})), at::kDouble),
      ref::mask_to_bias);
}

}  // namespace
}  // namespace haliax

namespace haliax {
namespace {

TEST(ModulesPorted, MlpAxesAtEveryDepth) {
  // test_nn.py's test_mlp: multi-axis inputs, leftover input axes kept, and a named width alternating M / M2.
  const Axis H("H", 10), C("C", 12), W("W", 14), E("E", 16), M("M", 18);
  NamedArray x = random::uniform(random::Key(0), {H, C, W});
  for (int depth = 0; depth <= 5; ++depth) {
    SCOPED_TRACE(depth);
    EXPECT_EQ(nn::MLP::init({H, C, W}, {E}, 8, depth, random::Key(0))(x).axes(), AxisSpec{E});
    EXPECT_EQ(nn::MLP::init({H, W}, {E}, 8, depth, random::Key(0))(x).axes(), (AxisSpec{C, E}));
    nn::MLP mlp = nn::MLP::init({H, W}, {E}, M, depth, random::Key(0));
    EXPECT_EQ(mlp(x).axes(), (AxisSpec{C, E}));
    if (depth == 0) continue;
    const Axis M2 = M.alias("M2");
    EXPECT_EQ(mlp.layers[0].Out, AxisSpec{M});
    EXPECT_EQ(mlp.layers.back().In, AxisSpec{depth % 2 == 0 ? M2 : M});
    for (int i = 1; i < depth; ++i) {
      EXPECT_EQ(mlp.layers[static_cast<size_t>(i)].In, AxisSpec{i % 2 == 0 ? M2 : M});
      EXPECT_EQ(mlp.layers[static_cast<size_t>(i)].Out, AxisSpec{i % 2 == 0 ? M : M2});
    }
  }
}

TEST(ModulesPorted, NormsKeepTheInputDtypeWithF32Params) {
  // test_nn.py's mixed-precision case: f32 parameters, bf16 input, bf16 output.
  const Axis H("H", 10);
  NamedArray x = random::uniform(random::Key(0), {H}, at::kBFloat16);
  NamedArray ln = nn::LayerNorm::init({H}, nn::LayerNormOptions().set_dtype(at::kFloat))(x);
  EXPECT_EQ(ln.axes(), AxisSpec{H});
  EXPECT_EQ(ln.dtype(), at::kBFloat16);
  NamedArray rms = nn::RmsNorm::init({H}, nn::RmsNormOptions().set_dtype(at::kFloat))(x);
  EXPECT_EQ(rms.axes(), AxisSpec{H});
  EXPECT_EQ(rms.dtype(), at::kBFloat16);
}

}  // namespace
}  // namespace haliax
