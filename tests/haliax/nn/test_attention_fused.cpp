// The fused f32 CPU attention (haliax/nn/attention_cpu.h), which dot_product_attention takes for f32 operands of its
// shape (and bf16 ones, widened, where bf16 GEMMs are widened): values and gradients against the unfused ops in f64,
// the same bits whatever the threads or the batch split, the calls it must leave to the unfused ops, and a
// Hessian-vector product through its backward.
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>

#include "../graph_testing.h"
#include "../testing.h"
#include "haliax/nn/attention_cpu.h"
#include "haliax/nn/gemm_bf16.h"

using namespace haliax;
using haliax::testing::randn;

namespace {

const nn::Contract kHeadSize("head_size");
const nn::AttendOver kKeyPos{"key_position"};

// Whether the autograd graph behind t runs the fused kernel.
bool took_kernel(const at::Tensor& t) { return haliax::testing::graph_runs(t, "FusedAttentionF32"); }

struct Case {
  std::string name;
  std::function<std::vector<NamedArray>(const std::vector<at::Tensor>&)> operands;  // leaves -> q, k, v
  std::vector<at::Tensor> leaves;                                                   // f64
  std::optional<NamedArray> mask;
};

NamedArray leaf(const at::Tensor& t, const AxisSpec& axes) { return NamedArray(t, axes); }

// q, k, v cut from x (batch, position, qkv, heads, head_size), as Gpt2Attention cuts its projection.
std::vector<NamedArray> gpt2_qkv(const at::Tensor& x) {
  const AxisSpec axes{
      {"batch", x.size(0)}, {"position", x.size(1)}, {"qkv", 3}, {"heads", x.size(3)}, {"head_size", x.size(4)}};
  auto parts = unbind(rearrange(NamedArray(x, axes), {"batch", "qkv", "heads", "position", "head_size"}), "qkv");
  return {parts[0], rename(parts[1], {{"position", "key_position"}}), rename(parts[2], {{"position", "key_position"}})};
}

std::vector<Case> cases() {
  std::vector<Case> out;
  const Axis B("batch", 2), H("heads", 3), P("position", 37), D("head_size", 5);
  const Axis KP = P.alias("key_position");
  {
    // GPT-2's: q, k, v cut from one (batch, position, qkv, heads, head_size) projection, causal.
    Case c{"gpt2 qkv, causal", nullptr, {randn({2, 37, 3, 3, 5}, 1)}, nn::causal_mask(P, KP)};
    c.operands = [](const std::vector<at::Tensor>& t) { return gpt2_qkv(t[0]); };
    out.push_back(c);
  }
  {
    // No mask; 40 queries, 70 keys, a value of another width with an axis of its own, axes in mixed orders.
    const Axis Q("position", 40), K("key_position", 70), V("value_size", 3);
    Case c{"cross, no mask",
           nullptr,
           {randn({40, 2, 3, 5}, 2), randn({3, 70, 5, 2}, 3), randn({2, 3, 70, 3}, 4)},
           std::nullopt};
    c.operands = [=](const std::vector<at::Tensor>& t) {
      return std::vector<NamedArray>{leaf(t[0], {Q, B, H, D}), leaf(t[1], {H, K, D, B}), leaf(t[2], {B, V, K, H})};
    };
    out.push_back(c);
  }
  {
    // A random mask given as (key_position, position), with rows that attend to nothing and rows to one key.
    at::Tensor m = at::rand({37, 37}, at::make_generator<at::CPUGeneratorImpl>(5)) < 0.3;
    m.select(1, 3).fill_(false);
    m.select(1, 20).fill_(false);
    m.select(1, 21).zero_();
    m[7][21] = true;
    Case c{"random mask, empty rows",
           nullptr,
           {randn({2, 3, 37, 5}, 6), randn({2, 3, 37, 5}, 7), randn({2, 3, 37, 5}, 8)},
           NamedArray(m, {KP, P})};
    c.operands = [=](const std::vector<at::Tensor>& t) {
      return std::vector<NamedArray>{leaf(t[0], {B, H, P, D}), leaf(t[1], {B, H, KP, D}), leaf(t[2], {B, H, KP, D})};
    };
    out.push_back(c);
  }
  {
    // Multi-query: keys and values without heads, so the query rows are (heads, position); causal.
    Case c{"multi-query, causal",
           nullptr,
           {randn({2, 3, 37, 5}, 9), randn({2, 37, 5}, 10), randn({2, 37, 5}, 11)},
           nn::causal_mask(P, KP)};
    c.operands = [=](const std::vector<at::Tensor>& t) {
      return std::vector<NamedArray>{leaf(t[0], {B, H, P, D}), leaf(t[1], {B, KP, D}), leaf(t[2], {B, KP, D})};
    };
    out.push_back(c);
  }
  {
    // No batch axis, so one problem: query (position, heads, head_size) against keys and values of one head, with a
    // mask as large as the weights in an order of its own (heads, position, key_position), which the unfused where()
    // gives its result.
    at::Tensor m = (at::rand({3, 37, 37}, at::make_generator<at::CPUGeneratorImpl>(15)) < 0.5) |
                   at::eye(37, at::kBool).unsqueeze(0);
    Case c{"no batch, the mask's order",
           nullptr,
           {randn({37, 3, 5}, 16), randn({37, 5}, 17), randn({37, 5}, 18)},
           NamedArray(m, {H, P, KP})};
    c.operands = [=](const std::vector<at::Tensor>& t) {
      return std::vector<NamedArray>{leaf(t[0], {P, H, D}), leaf(t[1], {KP, D}), leaf(t[2], {KP, D})};
    };
    out.push_back(c);
  }
  {
    // Decoding: 5 new positions after 66 cached ones attend causally to all 71.
    const Axis Q("position", 5), K("key_position", 71);
    Case c{"decode offset",
           nullptr,
           {randn({2, 3, 5, 5}, 12), randn({2, 3, 71, 5}, 13), randn({2, 3, 71, 5}, 14)},
           nn::causal_mask(Q, K, /*q_start=*/66)};
    c.operands = [=](const std::vector<at::Tensor>& t) {
      return std::vector<NamedArray>{leaf(t[0], {B, H, Q, D}), leaf(t[1], {B, H, K, D}), leaf(t[2], {B, H, K, D})};
    };
    out.push_back(c);
  }
  return out;
}

nn::AttentionOptions with_mask(const std::optional<NamedArray>& m) {
  nn::AttentionOptions o;
  o.mask = m;
  return o;
}

struct Result {
  NamedArray out;
  std::vector<at::Tensor> grads;
};

// out and the leaves' gradients for the cotangent cot (laid out as out), leaves cast to dtype.
Result run(const Case& c, at::ScalarType dtype, const at::Tensor& cot_f64) {
  std::vector<at::Tensor> leaves;
  for (const at::Tensor& t : c.leaves) leaves.push_back(t.detach().to(dtype, false, true).requires_grad_(true));
  auto qkv = c.operands(leaves);
  NamedArray out = nn::dot_product_attention(kHeadSize, kKeyPos, qkv[0], qkv[1], qkv[2], with_mask(c.mask));
  if (cot_f64.defined()) (out.array() * cot_f64.to(dtype)).sum().backward();
  std::vector<at::Tensor> grads;
  for (const at::Tensor& l : leaves) grads.push_back(l.grad());
  return {out, grads};
}

}  // namespace

TEST(FusedAttention, MatchesTheUnfusedOpsInF64WithTheSameAxes) {
  ASSERT_TRUE(nn::kernels::attention_f32_supported()) << "every machine we run on has AVX2 and FMA";
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    Result shape = run(c, at::kDouble, at::Tensor());
    at::Tensor cot = randn(shape.out.array().sizes(), 99);
    Result ref = run(c, at::kDouble, cot);
    Result got = run(c, at::kFloat, cot);
    EXPECT_TRUE(took_kernel(got.out.array()));
    EXPECT_FALSE(took_kernel(ref.out.array()));
    EXPECT_EQ(got.out.axes(), ref.out.axes());
    EXPECT_EQ(got.out.dtype(), at::kFloat);
    const double out_err = (got.out.array().to(at::kDouble) - ref.out.array()).abs().max().item<double>();
    EXPECT_LT(out_err, 2e-6);
    for (size_t i = 0; i < got.grads.size(); ++i) {
      const double g_err = (got.grads[i].to(at::kDouble) - ref.grads[i]).abs().max().item<double>();
      const double g_max = ref.grads[i].abs().max().item<double>();
      EXPECT_LT(g_err, 1e-5 * std::max(1.0, g_max)) << "gradient of operand " << i;
    }
  }
}

TEST(FusedAttention, SameBitsWhateverTheThreadsOrTheBatchSplit) {
  const int threads = at::get_num_threads();
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    Result shape = run(c, at::kDouble, at::Tensor());
    at::Tensor cot = randn(shape.out.array().sizes(), 7);
    at::set_num_threads(1);
    Result one = run(c, at::kFloat, cot);
    at::set_num_threads(2);
    Result two = run(c, at::kFloat, cot);
    at::set_num_threads(threads);
    EXPECT_TRUE(at::equal(one.out.array(), two.out.array()));
    for (size_t i = 0; i < one.grads.size(); ++i) EXPECT_TRUE(at::equal(one.grads[i], two.grads[i]));
  }
  // Data parallelism computes each half of the batch apart: the same bits as the whole batch.
  const Case c = cases()[0];
  auto whole = gpt2_qkv(c.leaves[0].to(at::kFloat));
  NamedArray all = nn::dot_product_attention(kHeadSize, kKeyPos, whole[0], whole[1], whole[2], with_mask(c.mask));
  for (int64_t half = 0; half < 2; ++half) {
    auto part = gpt2_qkv(c.leaves[0].to(at::kFloat).narrow(0, half, 1));
    NamedArray piece = nn::dot_product_attention(kHeadSize, kKeyPos, part[0], part[1], part[2], with_mask(c.mask));
    EXPECT_TRUE(at::equal(piece.array(), all.array().narrow(0, half, 1)));
  }
}

TEST(FusedAttention, Bf16OperandsTakeTheKernelWidenedWhereBf16GemmsAreWidened) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    Case c16 = c;  // the operands at bf16's values
    for (at::Tensor& l : c16.leaves) l = l.to(at::kBFloat16).to(at::kDouble);
    Result shape = run(c, at::kDouble, at::Tensor());
    const at::Tensor cot = randn(shape.out.array().sizes(), 99).to(at::kBFloat16).to(at::kDouble);
    const Result wide = run(c16, at::kFloat, cot);
    {
      // The f32 kernel on the operands widened, its output and the gradients rounded once, bit for bit.
      nn::Bf16GemmRouteOverride widened(nn::Bf16Gemm::widened);
      Result got = run(c16, at::kBFloat16, cot);
      EXPECT_TRUE(took_kernel(got.out.array()));
      EXPECT_EQ(got.out.dtype(), at::kBFloat16);
      EXPECT_EQ(got.out.axes(), wide.out.axes());
      EXPECT_TRUE(at::equal(got.out.array(), wide.out.array().to(at::kBFloat16)));
      for (size_t i = 0; i < got.grads.size(); ++i) {
        EXPECT_EQ(got.grads[i].scalar_type(), at::kBFloat16);
        EXPECT_TRUE(at::equal(got.grads[i], wide.grads[i].to(at::kBFloat16))) << "gradient of operand " << i;
      }
      // Scores upcast to f32 (upcast_attn) or kept in bf16 are the same call on this route.
      std::vector<at::Tensor> leaves;
      for (const at::Tensor& t : c16.leaves) leaves.push_back(t.to(at::kBFloat16));
      auto qkv = c.operands(leaves);
      for (at::ScalarType scores : {at::kFloat, at::kBFloat16}) {
        nn::AttentionOptions o = with_mask(c.mask);
        o.attention_dtype = scores;
        NamedArray out = nn::dot_product_attention(kHeadSize, kKeyPos, qkv[0], qkv[1], qkv[2], o);
        EXPECT_TRUE(at::equal(out.array(), got.out.array().detach()));
      }
    }
    // Where bf16 GEMMs are native, the unfused ops (bf16 scores, weights and output).
    nn::Bf16GemmRouteOverride native(nn::Bf16Gemm::native);
    Result got = run(c16, at::kBFloat16, cot);
    EXPECT_FALSE(took_kernel(got.out.array()));
    const double err = (got.out.array().to(at::kDouble) - wide.out.array().to(at::kDouble)).abs().max().item<double>();
    EXPECT_LT(err, 0.05);
  }
}

TEST(FusedAttention, LeavesToTheUnfusedOpsWhatTheKernelDoesNotCover) {
  const Axis B("batch", 2), P("position", 9), D("head_size", 4);
  const Axis KP = P.alias("key_position");
  NamedArray q(randn({2, 9, 4}, 1).to(at::kFloat), {B, P, D});
  NamedArray k(randn({2, 9, 4}, 2).to(at::kFloat), {B, KP, D});
  NamedArray v(randn({2, 9, 4}, 3).to(at::kFloat), {B, KP, D});
  q.array().requires_grad_(true);
  auto unfused = [&](const nn::AttentionOptions& o, const NamedArray& qq, const NamedArray& kk, const NamedArray& vv) {
    return dot(nn::dot_product_attention_weights(kHeadSize, kKeyPos, qq, kk, o), vv, AxisSelection("key_position"));
  };
  std::vector<std::pair<std::string, nn::AttentionOptions>> options;
  options.emplace_back("bias", nn::AttentionOptions().set_bias(NamedArray(randn({9}, 4).to(at::kFloat), {KP})));
  options.emplace_back("dropout", nn::AttentionOptions().set_dropout(0.25, random::Key(3)));
  options.emplace_back("bf16 scores", nn::AttentionOptions().set_attention_dtype(at::kBFloat16));
  // A mask over the batch (padding per example) is not one (query, key) mask.
  options.emplace_back("per-example mask",
                       nn::AttentionOptions().set_mask(broadcast_axis(nn::prefix_mask(KP, 5), {B, KP})));
  for (const auto& [name, o] : options) {
    SCOPED_TRACE(name);
    NamedArray got = nn::dot_product_attention(kHeadSize, kKeyPos, q, k, v, o);
    EXPECT_FALSE(took_kernel(got.array()));
    EXPECT_TRUE(at::equal(got.array(), unfused(o, q, k, v).array()));
  }
  // bf16 operands stay on the unfused ops too where bf16 GEMMs are native.
  nn::Bf16GemmRouteOverride native(nn::Bf16Gemm::native);
  NamedArray qb = astype(q, at::kBFloat16), kb = astype(k, at::kBFloat16), vb = astype(v, at::kBFloat16);
  NamedArray got = nn::dot_product_attention(kHeadSize, kKeyPos, qb, kb, vb, {});
  EXPECT_FALSE(took_kernel(got.array()));
  EXPECT_TRUE(at::equal(got.array(), unfused({}, qb, kb, vb).array()));
}

TEST(FusedAttention, HessianVectorProductThroughTheBackwardMatchesF64) {
  // Sophia-H differentiates the gradient again: the fused backward then computes in differentiable ATen ops.
  const Case c = cases()[2];  // the random mask with empty rows
  auto hvp = [&](at::ScalarType dtype) {
    std::vector<at::Tensor> leaves;
    for (const at::Tensor& t : c.leaves) leaves.push_back(t.detach().to(dtype, false, true).requires_grad_(true));
    auto qkv = c.operands(leaves);
    NamedArray out = nn::dot_product_attention(kHeadSize, kKeyPos, qkv[0], qkv[1], qkv[2], with_mask(c.mask));
    at::Tensor loss = (out.array() * out.array()).sum() * 0.5;
    auto g = torch::autograd::grad({loss}, leaves, {}, /*retain_graph=*/true, /*create_graph=*/true);
    at::Tensor gv = at::zeros({}, dtype);
    for (size_t i = 0; i < g.size(); ++i) gv = gv + (g[i] * randn(g[i].sizes(), 50 + i).to(dtype)).sum();
    auto h = torch::autograd::grad({gv}, leaves);
    return std::make_pair(took_kernel(out.array()), h);
  };
  auto [fused, h32] = hvp(at::kFloat);
  auto [unfused, h64] = hvp(at::kDouble);
  EXPECT_TRUE(fused);
  EXPECT_FALSE(unfused);
  for (size_t i = 0; i < h32.size(); ++i) {
    const double err = (h32[i].to(at::kDouble) - h64[i]).abs().max().item<double>();
    EXPECT_LT(err, 1e-4 * std::max(1.0, h64[i].abs().max().item<double>())) << "operand " << i;
  }
}
