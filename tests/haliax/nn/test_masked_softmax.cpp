// The one-pass masked softmax of the attention weights (haliax/nn/attention_cpu.h, MaskedSoftmax in attention.cpp),
// which dot_product_attention_weights takes for f32 and bf16 scores on the CPU: values and gradients against ATen's
// where + softmax in f64 for masks over every kind of axis set (rows that attend to nothing included), with the same
// axes in the same order; the same bits whatever the threads; a Hessian-vector product through its backward; and
// clear errors for rows the mask does not cover.
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>

#include "../graph_testing.h"
#include "../testing.h"
#include "haliax/nn/attention_cpu.h"

using namespace haliax;
using haliax::testing::randn;

namespace {

const nn::Contract kHeadSize("head_size");
const nn::AttendOver kKeyPos{"key_position"};

bool took_kernel(const at::Tensor& t) { return haliax::testing::graph_runs(t, "MaskedSoftmax"); }

const Axis B("batch", 2), H("heads", 3), P("position", 37), D("head_size", 5);
const Axis KP = P.alias("key_position");

struct Case {
  std::string name;
  AxisSpec q_axes, k_axes;
  std::optional<NamedArray> mask;
  std::optional<AxisSpec> bias_axes;
};

at::Tensor bools(at::IntArrayRef sizes, uint64_t seed, double p) {
  return at::rand(sizes, at::make_generator<at::CPUGeneratorImpl>(seed)) < p;
}

std::vector<Case> cases() {
  std::vector<Case> out;
  out.push_back({"causal", {B, H, P, D}, {B, H, KP, D}, nn::causal_mask(P, KP), std::nullopt});
  {
    // Padding per example: a mask over (batch, key_position) only, every query row of an example reading one row.
    at::Tensor m = bools({2, 37}, 1, 0.6);
    m[1].zero_();  // the second example attends to nothing: uniform rows
    out.push_back({"per-example padding", {B, H, P, D}, {B, H, KP, D}, NamedArray(m, {B, KP}), std::nullopt});
  }
  {
    // A mask over the queries alone (no key axis): a row attends everywhere or nowhere.
    at::Tensor m = bools({37}, 2, 0.5);
    out.push_back({"query-only mask", {P, B, H, D}, {B, KP, H, D}, NamedArray(m, {P}), std::nullopt});
  }
  {
    // A random mask given as (key_position, position), with empty rows and one-key rows, and a bias over the keys.
    at::Tensor m = bools({37, 37}, 3, 0.3);
    m.select(1, 3).fill_(false);
    m.select(1, 21).zero_();
    m[7][21] = true;
    out.push_back({"random mask and a bias", {B, H, P, D}, {B, H, KP, D}, NamedArray(m, {KP, P}), AxisSpec{KP}});
  }
  {
    // No batch axis, a mask as large as the weights in its own order (key_position not last), which where() gives
    // its result.
    at::Tensor m = bools({3, 37, 37}, 4, 0.5) | at::eye(37, at::kBool).unsqueeze(0);
    out.push_back({"the mask's order", {P, H, D}, {KP, D}, NamedArray(m, {H, KP, P}), std::nullopt});
  }
  out.push_back({"no mask, 5 keys", {B, H, P, D}, {B, H, KP.resize(5), D}, std::nullopt, std::nullopt});
  return out;
}

std::vector<int64_t> sizes_of(const AxisSpec& axes) {
  std::vector<int64_t> s;
  for (const Axis& a : axes) s.push_back(a.size);
  return s;
}

struct Result {
  NamedArray weights;
  std::vector<at::Tensor> grads;  // q, k (, bias)
};

// The weights and the gradients of <weights, cot> (cot laid out as the weights), operands in dtype.
Result run(const Case& c, at::ScalarType dtype, const at::Tensor& cot_f64) {
  std::vector<at::Tensor> leaves{randn(sizes_of(c.q_axes), 11), randn(sizes_of(c.k_axes), 12)};
  if (c.bias_axes) leaves.push_back(randn(sizes_of(*c.bias_axes), 13));
  for (at::Tensor& t : leaves) t = t.to(dtype).requires_grad_(true);
  nn::AttentionOptions o;
  o.mask = c.mask;
  if (c.bias_axes) o.bias = NamedArray(leaves[2], *c.bias_axes);
  NamedArray w = nn::dot_product_attention_weights(kHeadSize, kKeyPos, NamedArray(leaves[0], c.q_axes),
                                                   NamedArray(leaves[1], c.k_axes), o);
  std::vector<at::Tensor> grads;
  if (cot_f64.defined()) {
    (w.array().to(at::kDouble) * cot_f64).sum().backward();
    for (const at::Tensor& l : leaves) grads.push_back(l.grad().to(at::kDouble));
  }
  return {w, grads};
}

double max_abs(const at::Tensor& t) { return t.numel() ? t.abs().max().item<double>() : 0.0; }

}  // namespace

TEST(MaskedSoftmax, MatchesWhereAndSoftmaxInF64WithTheSameAxes) {
  ASSERT_TRUE(nn::kernels::attention_f32_supported()) << "every machine we run on has AVX2 and FMA";
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    const at::Tensor cot = randn(run(c, at::kDouble, at::Tensor()).weights.array().sizes(), 99);
    const Result ref = run(c, at::kDouble, cot);
    EXPECT_FALSE(took_kernel(ref.weights.array()));
    // f32: to rounding. bf16: the operands and the scores are bf16 (rounded by 2^-9 of themselves, scores of a few
    // units), which moves weights by up to about 1e-2 (the kernel's own rounding is checked in the next test).
    for (auto [dtype, w_tol, g_tol] : {std::tuple{at::kFloat, 1e-6, 1e-5}, std::tuple{at::kBFloat16, 2e-2, 3e-2}}) {
      SCOPED_TRACE(c10::toString(dtype));
      const Result got = run(c, dtype, cot);
      EXPECT_TRUE(took_kernel(got.weights.array()));
      EXPECT_EQ(got.weights.axes(), ref.weights.axes());
      EXPECT_EQ(got.weights.dtype(), dtype);
      EXPECT_LT(max_abs(got.weights.array().to(at::kDouble) - ref.weights.array()), w_tol);
      for (size_t i = 0; i < got.grads.size(); ++i) {
        EXPECT_LT(max_abs(got.grads[i] - ref.grads[i]), g_tol * std::max(1.0, max_abs(ref.grads[i])))
            << "gradient of operand " << i;
      }
    }
  }
}

// The kernel alone on bf16 scores: each weight is the f64 softmax of the same bf16 scores rounded once (within a
// bf16 step), and each gradient the f64 formula on the same bf16 weights and cotangent rounded once (beyond the
// formula's cancellation in dy - sum(dy p), 2^-20 of the terms).
TEST(MaskedSoftmax, Bf16KernelRoundsTheF64ValuesOnce) {
  const int64_t R = 300, K = 45;
  const at::Tensor x = (randn({R, K}, 41) * 4.0).to(at::kBFloat16);
  at::Tensor mask = bools({R, K}, 42, 0.7);
  mask[5].zero_();
  nn::kernels::MaskRows m{mask, at::arange(R, at::kLong) * K, 1};
  const at::Tensor p = nn::kernels::masked_softmax_forward(x, m);
  const at::Tensor x64 = at::where(mask, x.to(at::kDouble), -1e9);
  const at::Tensor p64 = at::softmax(x64, -1);
  auto steps = [](const at::Tensor& got, const at::Tensor& ref, const at::Tensor& allowance) {
    const at::Tensor step = (ref.abs() * std::ldexp(1.0, -8)).clamp_min(std::ldexp(1.0, -133));
    return (((got.to(at::kDouble) - ref).abs() - allowance).clamp_min(0) / step).max().item<double>();
  };
  EXPECT_LE(steps(p, p64, at::zeros({}, at::kDouble)), 1.0);
  EXPECT_TRUE(at::equal(p[5], at::full({K}, 1.0 / K).to(at::kBFloat16)));
  const at::Tensor dy = randn({R, K}, 43).to(at::kBFloat16);
  const at::Tensor dx = nn::kernels::masked_softmax_backward(dy, p, m);
  const at::Tensor pd = at::where(mask, p.to(at::kDouble), 0.0), dyd = dy.to(at::kDouble);
  const at::Tensor dot = (pd * dyd).sum(-1, true);
  const at::Tensor dx64 = at::where(mask, pd * (dyd - dot), 0.0);
  EXPECT_LE(steps(dx, dx64, pd * (dyd.abs() + dot.abs()) * std::ldexp(1.0, -20)), 1.0);
  // Masked keys get +0, as where() gives them (bits compared: not -0).
  EXPECT_TRUE(
      at::equal(dx.masked_select(~mask).view(at::kShort), at::zeros({(~mask).sum().item<int64_t>()}, at::kShort)));
}

// Infinite logits, against ATen's where + softmax: a row whose attended logits are all -inf (a -inf bias) spreads
// over its masked keys (where()'s -1e9 is then the largest logit); without masked keys it is NaN, as ATen's.
TEST(MaskedSoftmax, InfiniteLogitsGiveWhereAndSoftmaxsWeights) {
  const float inf = INFINITY;
  const at::Tensor x = at::tensor({-inf, -inf, 0.f, 1.f, -inf, 2.f, -inf, -inf, -inf, -inf, 3.f, -inf}).view({3, 4});
  const at::Tensor mask = at::tensor({1, 1, 0, 0, 1, 0, 1, 1, 1, 1, 1, 1}, at::kInt).view({3, 4}).to(at::kBool);
  nn::kernels::MaskRows m{mask.contiguous(), at::arange(3, at::kLong) * 4, 1};
  const at::Tensor got = nn::kernels::masked_softmax_forward(x, m);
  const at::Tensor ref = at::softmax(at::where(mask, x.to(at::kDouble), -1e9), -1).to(at::kFloat);
  EXPECT_TRUE(at::allclose(got.slice(0, 0, 2), ref.slice(0, 0, 2), 1e-6, 1e-7)) << got << ref;
  EXPECT_TRUE(at::equal(got[0], at::tensor({0.f, 0.f, 0.5f, 0.5f})));
  EXPECT_TRUE(at::allclose(got[2], ref[2]));  // one attended finite logit: one-hot
}

TEST(MaskedSoftmax, RowsThatAttendToNothingAreUniformAndPassNoGradient) {
  at::Tensor m = at::ones({37}, at::kBool);
  m[4] = false;
  const Case c{"", {B, H, P, D}, {B, H, KP, D}, NamedArray(m, {P}), std::nullopt};
  const at::Tensor cot = randn({2, 3, 37, 37}, 5);
  const Result got = run(c, at::kFloat, cot);
  EXPECT_TRUE(took_kernel(got.weights.array()));
  ASSERT_EQ(got.weights.axes(), (AxisSpec{B, H, P, KP}));
  EXPECT_TRUE(at::equal(got.weights.array().select(2, 4), at::full({2, 3, 37}, 1.0f / 37)));
  // The row's logits were replaced, so q's row gets no gradient through it: the gradient of q's row 4 is exactly
  // zero.
  EXPECT_TRUE(at::equal(got.grads[0].select(2, 4), at::zeros({2, 3, 5}, at::kDouble)));
}

TEST(MaskedSoftmax, SameBitsWhateverTheThreads) {
  const int threads = at::get_num_threads();
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    const at::Tensor cot = randn(run(c, at::kDouble, at::Tensor()).weights.array().sizes(), 7);
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      at::set_num_threads(1);
      const Result one = run(c, dtype, cot);
      at::set_num_threads(2);
      const Result two = run(c, dtype, cot);
      at::set_num_threads(threads);
      EXPECT_TRUE(at::equal(one.weights.array(), two.weights.array()));
      for (size_t i = 0; i < one.grads.size(); ++i) EXPECT_TRUE(at::equal(one.grads[i], two.grads[i]));
    }
  }
}

TEST(MaskedSoftmax, HessianVectorProductThroughTheBackwardMatchesF64) {
  const Case c = cases()[3];  // the random mask with empty rows, and a bias
  auto hvp = [&](at::ScalarType dtype) {
    std::vector<at::Tensor> leaves{randn({2, 3, 37, 5}, 21), randn({2, 3, 37, 5}, 22), randn({37}, 23)};
    for (at::Tensor& t : leaves) t = t.to(dtype).requires_grad_(true);
    nn::AttentionOptions o;
    o.mask = c.mask;
    o.bias = NamedArray(leaves[2], {KP});
    NamedArray w = nn::dot_product_attention_weights(kHeadSize, kKeyPos, NamedArray(leaves[0], c.q_axes),
                                                     NamedArray(leaves[1], c.k_axes), o);
    at::Tensor loss = (w.array() * w.array() * randn(w.array().sizes(), 24).to(dtype)).sum();
    auto g = torch::autograd::grad({loss}, leaves, {}, /*retain_graph=*/true, /*create_graph=*/true);
    at::Tensor gv = at::zeros({}, dtype);
    for (size_t i = 0; i < g.size(); ++i) gv = gv + (g[i] * randn(g[i].sizes(), 30 + i).to(dtype)).sum();
    return std::make_pair(took_kernel(w.array()), torch::autograd::grad({gv}, leaves));
  };
  auto [fused, h32] = hvp(at::kFloat);
  auto [unfused, h64] = hvp(at::kDouble);
  EXPECT_TRUE(fused);
  EXPECT_FALSE(unfused);
  for (size_t i = 0; i < h32.size(); ++i) {
    EXPECT_LT(max_abs(h32[i].to(at::kDouble) - h64[i]), 1e-4 * std::max(1.0, max_abs(h64[i]))) << "operand " << i;
  }
}

TEST(MaskedSoftmax, RowOffsetsOutsideTheMaskAreRefused) {
  nn::kernels::MaskRows m;
  m.mask = at::ones({4, 6}, at::kBool);
  m.row_offsets = at::tensor({0, 6, 12, 18, 19}, at::kLong);  // the last row would read past the mask's end
  const at::Tensor x = at::zeros({5, 6}, at::kFloat);
  EXPECT_THROW(
      {
        try {
          nn::kernels::masked_softmax_forward(x, m);
        } catch (const std::invalid_argument& e) {
          EXPECT_NE(std::string(e.what()).find("row offset"), std::string::npos) << e.what();
          throw;
        }
      },
      std::invalid_argument);
  m.row_offsets = at::tensor({0, 6, 12, 18, 18}, at::kLong);
  EXPECT_TRUE(at::allclose(nn::kernels::masked_softmax_forward(x, m), at::full({5, 6}, 1.0f / 6)));
}
