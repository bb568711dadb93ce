// The same named computations across dtypes: results agree with the f64 computation to the dtype's precision,
// and dtypes flow through ops as ATen's promotion rules say.
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <limits>

#include "testing.h"

using namespace haliax;
using haliax::testing::randn;

namespace {
const Axis B("batch", 4), P("pos", 8), E("embed", 16), M("mlp", 12);

double tolerance(at::ScalarType t) {
  switch (t) {
    case at::kDouble:
      return 1e-12;
    case at::kFloat:
      return 1e-5;
    default:
      return 3e-2;  // bf16 / f16: 8 / 11 bits of mantissa
  }
}
}  // namespace

TEST(Dtypes, FloatingComputationsAgreeWithDoubleToTheirPrecision) {
  at::Tensor xt = randn({4, 8, 16}, 1), wt = randn({12, 16}, 2) * 0.25;
  auto compute = [&](at::ScalarType t) {
    NamedArray x = astype(NamedArray(xt, {B, P, E}), t), w = astype(NamedArray(wt, {M, E}), t);
    NamedArray h = nn::gelu(dot(x, w, E)) + 1.0;
    NamedArray s = nn::softmax(h, M) * exp(-square(h) * 0.1);
    return std::make_pair(s, mean(s, {P, M}));
  };
  auto [ref, ref_mean] = compute(at::kDouble);
  for (at::ScalarType t : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(dtype_name(t));
    auto [s, m] = compute(t);
    EXPECT_EQ(s.dtype(), t);
    EXPECT_EQ(m.dtype(), t);
    EXPECT_TRUE(at::allclose(s.array().to(at::kDouble), ref.array(), tolerance(t), tolerance(t)));
    EXPECT_TRUE(at::allclose(m.array().to(at::kDouble), ref_mean.array(), tolerance(t), tolerance(t)));
  }
  // f16 on CPU: storage, arithmetic and reductions (libtorch 1.13's CPU kernels stop there: no f16 GEMM or
  // transcendental functions; compute in f32 and store f16).
  NamedArray xh = astype(NamedArray(xt, {B, P, E}), at::kHalf);
  NamedArray sh = sum(xh * 0.5 + xh, E);
  EXPECT_EQ(sh.dtype(), at::kHalf);
  EXPECT_TRUE(at::allclose(sh.array().to(at::kDouble), (xt * 1.5).sum(2), 3e-2, 5e-2));
  EXPECT_TRUE(at::allclose(astype(nn::gelu(astype(xh, at::kFloat)), at::kHalf).array().to(at::kDouble),
                           at::gelu(xt, "tanh"), 3e-2, 3e-2));
}

TEST(Dtypes, IntegerAndBoolArrays) {
  NamedArray ids(at::arange(32, at::kLong).reshape({4, 8}), {B, P});
  EXPECT_EQ((ids * 2 + 1).dtype(), at::kLong);
  EXPECT_EQ(sum(ids, P).dtype(), at::kLong);
  EXPECT_EQ(sum(ids, P).array()[1].item<int64_t>(), 8 * 8 + 28);
  EXPECT_EQ(mean(ids).dtype(), at::kFloat);  // integer means are floating, as in numpy
  EXPECT_EQ((ids / 2).dtype(), at::kFloat);  // true division
  EXPECT_TRUE(at::equal(floor_divide(ids, NamedArray(at::full({4}, 3, at::kLong), {B})).array(),
                        at::floor_divide(ids.array(), 3)));
  NamedArray i32 = astype(ids, at::kInt);
  EXPECT_EQ((i32 + ids).dtype(), at::kLong);
  NamedArray even = equal(mod(ids, NamedArray(at::scalar_tensor(2, at::kLong), {})), 0);
  EXPECT_EQ(even.dtype(), at::kBool);
  EXPECT_EQ(sum(astype(even, at::kLong)).item<int64_t>(), 16);
  EXPECT_TRUE(all(logical_or(even, logical_not(even))).item<bool>());
  EXPECT_FALSE(any(logical_and(even, logical_not(even))).item<bool>());
  // A where mask on max/min needs `initial` (Haliax raises without it).
  EXPECT_EQ(max(ids, P, even, std::numeric_limits<int64_t>::min()).array()[0].item<int64_t>(), 6);
  EXPECT_EQ(
      min(astype(ids, at::kInt), P, logical_not(even), std::numeric_limits<int32_t>::max()).array()[0].item<int32_t>(),
      1);
  EXPECT_TRUE(at::equal(where(even, ids, NamedArray(at::zeros({}, at::kLong), {})).array(),
                        at::where(even.array(), ids.array(), at::zeros({}, at::kLong))));
}

TEST(Dtypes, GradientsFlowInBf16) {
  NamedArray w(randn({16, 12}, 3).to(at::kBFloat16).requires_grad_(true), {E, M});
  NamedArray x(randn({4, 16}, 4).to(at::kBFloat16), {B, E});
  NamedArray loss = sum(square(dot(x, w, E)));
  loss.array().backward();
  ASSERT_TRUE(w.grad().defined());
  EXPECT_EQ(w.grad().dtype(), at::kBFloat16);
  at::Tensor ref = 2 * at::matmul(x.array().to(at::kDouble).t(),
                                  at::matmul(x.array().to(at::kDouble), w.array().detach().to(at::kDouble)));
  EXPECT_TRUE(at::allclose(w.grad().array().to(at::kDouble), ref, 5e-2, 5e-1));
}

// GELU and LayerNorm on bf16 compute in f32 and round once (libtorch 1.13's bf16 CPU kernels are slower and round
// inside): the result is exactly the f32 computation rounded to bf16, and so are the gradients that reach the bf16
// input and parameters.
TEST(Dtypes, Bf16GeluAndLayerNormAreTheF32ComputationRoundedOnce) {
  const at::Tensor xt = randn({4, 8, 16}, 5).to(at::kBFloat16), dyt = randn({4, 8, 16}, 6).to(at::kBFloat16);
  for (bool approximate : {true, false}) {
    SCOPED_TRACE(approximate ? "tanh" : "erf");
    NamedArray x(xt.clone().requires_grad_(true), {B, P, E});
    NamedArray y = nn::gelu(x, approximate);
    ASSERT_EQ(y.dtype(), at::kBFloat16);
    at::Tensor x32 = xt.to(at::kFloat).requires_grad_(true);
    at::Tensor y32 = at::gelu(x32, approximate ? "tanh" : "none");
    EXPECT_TRUE(at::equal(y.array(), y32.to(at::kBFloat16)));
    y.array().backward(dyt);
    y32.backward(dyt.to(at::kFloat));
    EXPECT_TRUE(at::equal(x.array().grad(), x32.grad().to(at::kBFloat16)));
  }
  nn::LayerNormOptions o;
  o.dtype = at::kBFloat16;
  nn::LayerNorm ln = nn::LayerNorm::init(AxisSpec{E}, o);
  ln.weight = NamedArray((randn({16}, 7) + 1).to(at::kBFloat16).requires_grad_(true), {E});
  ln.bias = NamedArray(randn({16}, 8).to(at::kBFloat16).requires_grad_(true), {E});
  NamedArray x(xt.clone().requires_grad_(true), {B, P, E});
  NamedArray y = ln(x);
  ASSERT_EQ(y.dtype(), at::kBFloat16);
  at::Tensor x32 = xt.to(at::kFloat).requires_grad_(true);
  at::Tensor w32 = ln.weight->array().detach().to(at::kFloat).requires_grad_(true);
  at::Tensor b32 = ln.bias->array().detach().to(at::kFloat).requires_grad_(true);
  at::Tensor y32 = at::layer_norm(x32, {16}, w32, b32, ln.eps);
  EXPECT_TRUE(at::equal(y.array(), y32.to(at::kBFloat16)));
  y.array().backward(dyt);
  y32.backward(dyt.to(at::kFloat));
  EXPECT_TRUE(at::equal(x.array().grad(), x32.grad().to(at::kBFloat16)));
  EXPECT_TRUE(at::equal(ln.weight->array().grad(), w32.grad().to(at::kBFloat16)));
  EXPECT_TRUE(at::equal(ln.bias->array().grad(), b32.grad().to(at::kBFloat16)));
}

// The one-pass bf16 GELU (tanh) kernel gives the bits of the f32 computation rounded once at GPT-2's sizes too (many
// 8-wide blocks over two threads, values from -8 to 8 and beyond tanh's saturation) and for every finite bf16 value,
// and within one bf16 step of it in a tail shorter than a vector (libtorch computes its own tail with scalar
// std::tanh). The bits are those of Debian's libtorch 1.13 build, whose compiler fused two multiply-adds of the
// backward formula (gelu_cpu.cpp does the same). A backward that is itself differentiated (Hessian-vector products)
// goes through libtorch's differentiable gelu_backward.
TEST(Dtypes, Bf16GeluTanhKernelMatchesTheF32ComputationAtScale) {
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  for (int64_t n : {int64_t(256) * 3072, int64_t(1000003)}) {
    SCOPED_TRACE(n);
    at::Tensor xt = (randn({n}, 9) * 3.0).to(at::kBFloat16), dyt = randn({n}, 10).to(at::kBFloat16);
    xt[0] = 12.0;
    xt[1] = -12.0;
    NamedArray x(xt.clone().requires_grad_(true), {Axis("n", n)});
    NamedArray y = nn::gelu(x, true);
    at::Tensor x32 = xt.to(at::kFloat).requires_grad_(true);
    at::Tensor y32 = at::gelu(x32, "tanh");
    y.array().backward(dyt);
    y32.backward(dyt.to(at::kFloat));
    at::Tensor ref_y = y32.detach().to(at::kBFloat16), ref_dx = x32.grad().to(at::kBFloat16);
    const int64_t whole = n - n % 16;
    EXPECT_TRUE(at::equal(y.array().narrow(0, 0, whole), ref_y.narrow(0, 0, whole)));
    EXPECT_TRUE(at::equal(x.array().grad().narrow(0, 0, whole), ref_dx.narrow(0, 0, whole)));
    EXPECT_TRUE(at::allclose(y.array().to(at::kFloat), ref_y.to(at::kFloat), 1.0 / 128, 1e-6));
    EXPECT_TRUE(at::allclose(x.array().grad().to(at::kFloat), ref_dx.to(at::kFloat), 1.0 / 128, 1e-6));
  }
  at::set_num_threads(threads);
  // Every finite bf16 value, with dy 1 and random dy.
  {
    at::Tensor all = at::arange(0, 65536, at::kInt).to(at::kShort).view(at::kBFloat16);
    all = all.masked_select(all.to(at::kFloat).isfinite());
    for (uint64_t seed : {0, 13}) {
      at::Tensor dyt = seed == 0 ? at::ones_like(all) : randn({all.numel()}, seed).to(at::kBFloat16);
      NamedArray x(all.clone().requires_grad_(true), {Axis("n", all.numel())});
      NamedArray y = nn::gelu(x, true);
      at::Tensor x32 = all.to(at::kFloat).requires_grad_(true);
      at::Tensor y32 = at::gelu(x32, "tanh");
      y.array().backward(dyt);
      y32.backward(dyt.to(at::kFloat));
      const int64_t whole = all.numel() - all.numel() % 16;
      // Bit patterns, NaN where the reference has NaN (huge |x|: x^3 overflows; NaN payloads are not compared, as
      // libtorch's own scalar and vector conversions to bf16 give different ones).
      auto same = [&](const at::Tensor& a, const at::Tensor& b) {
        at::Tensor an = a.narrow(0, 0, whole), bn = b.narrow(0, 0, whole);
        return at::equal(an.isnan(), bn.isnan()) && at::equal(an.masked_fill(an.isnan(), 0).view(at::kShort),
                                                              bn.masked_fill(bn.isnan(), 0).view(at::kShort));
      };
      EXPECT_TRUE(same(y.array(), y32.detach().to(at::kBFloat16)));
      EXPECT_TRUE(same(x.array().grad(), x32.grad().to(at::kBFloat16)));
    }
  }
  // Double backward: d/dx of <dL/dx, v>, against the same in f32.
  at::Tensor xt = randn({64}, 11).to(at::kBFloat16), v = randn({64}, 12).to(at::kBFloat16);
  NamedArray x(xt.clone().requires_grad_(true), {Axis("n", 64)});
  at::Tensor y = nn::gelu(x, true).array().to(at::kFloat).sum();
  at::Tensor g = torch::autograd::grad({y}, {x.array()}, {}, /*retain_graph=*/true, /*create_graph=*/true)[0];
  at::Tensor hv = torch::autograd::grad({(g.to(at::kFloat) * v.to(at::kFloat)).sum()}, {x.array()})[0];
  at::Tensor x32 = xt.to(at::kFloat).requires_grad_(true);
  at::Tensor g32 = torch::autograd::grad({at::gelu(x32, "tanh").sum()}, {x32}, {}, true, true)[0];
  at::Tensor hv32 = torch::autograd::grad({(g32 * v.to(at::kFloat)).sum()}, {x32})[0];
  EXPECT_TRUE(at::allclose(hv.to(at::kFloat), hv32, 2e-2, 2e-2)) << (hv.to(at::kFloat) - hv32).abs().max();
}
