// The same named computations across dtypes: results agree with the f64 computation to the dtype's precision,
// and dtypes flow through ops as ATen's promotion rules say.
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <cmath>
#include <iostream>
#include <limits>

#include "haliax/nn/gelu_cpu.h"
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

// GELU (erf) and LayerNorm on bf16 compute in f32 and round once (libtorch 1.13's bf16 CPU kernels are slower and
// round inside): the result is exactly the f32 computation rounded to bf16, and so are the gradients that reach the
// bf16 input and parameters. (GELU with tanh has a kernel of its own, tested below.)
TEST(Dtypes, Bf16GeluAndLayerNormAreTheF32ComputationRoundedOnce) {
  const at::Tensor xt = randn({4, 8, 16}, 5).to(at::kBFloat16), dyt = randn({4, 8, 16}, 6).to(at::kBFloat16);
  for (bool approximate : {false}) {
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

// The one-pass bf16 GELU (tanh) kernel against the formula in f64, for every bf16 value below 1e6 in magnitude (dy 1
// and random dy) and at GPT-2's sizes over two threads: within one bf16 step of the f64 value (Sleef's 3.5-ulp tanhf
// in f32, then one rounding), beyond the f32 formula's own cancellation, which libtorch's has too: 2^-21 |x| for
// the value (very negative x, where 1 + tanh cancels) and 2^-14 |dy| for the gradient (near x = -0.75, where it
// crosses zero). It differs from libtorch's f32 computation
// rounded (1-ulp tanhf) in few places, by one step. A backward that is itself differentiated (Hessian-vector
// products) goes through libtorch's differentiable gelu_backward.
namespace {

// x -> (gelu(x), dy * gelu'(x)) in f64, tanh approximation.
std::pair<at::Tensor, at::Tensor> gelu_tanh_f64(const at::Tensor& x, const at::Tensor& dy) {
  at::Tensor xd = x.to(at::kDouble), k = at::full({}, std::sqrt(2.0 / M_PI), at::kDouble);
  at::Tensor inner = k * (xd + 0.044715 * xd.pow(3));
  at::Tensor t = inner.tanh();
  at::Tensor y = 0.5 * xd * (1 + t);
  at::Tensor dydx = 0.5 * (1 + t) + 0.5 * xd * (1 - t * t) * k * (1 + 3 * 0.044715 * xd * xd);
  return {y, dy.to(at::kDouble) * dydx};
}

// Largest |a - ref| in units of ref's bf16 step (ref rounded to bf16), beyond an absolute allowance; NaN where ref
// is NaN must be NaN in a too.
double bf16_steps(const at::Tensor& a, const at::Tensor& ref, const at::Tensor& abs_allowance) {
  at::Tensor r16 = ref.to(at::kBFloat16).to(at::kDouble);
  at::Tensor nan = r16.isnan();
  if (!at::equal(nan, a.to(at::kDouble).isnan())) return INFINITY;
  at::Tensor step = (r16.abs() * std::ldexp(1.0, -7)).clamp_min(std::ldexp(1.0, -133));  // >= one bf16 step
  at::Tensor excess = ((a.to(at::kDouble) - ref).abs() - abs_allowance).clamp_min(0) / step;
  return excess.masked_fill(nan, 0).max().item<double>();
}

}  // namespace

TEST(Dtypes, Bf16GeluTanhKernelIsWithinOneStepOfTheF64Formula) {
  at::Tensor all = at::arange(0, 65536, at::kInt).to(at::kShort).view(at::kBFloat16);
  all = all.masked_select(all.to(at::kFloat).isfinite() & (all.to(at::kFloat).abs() < 1e6));
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  int64_t differ = 0, grad_differ = 0, total = 0;
  for (uint64_t seed : {0, 13, 9}) {
    SCOPED_TRACE(seed);
    at::Tensor xt = seed == 9 ? (randn({256 * 3072}, 9) * 3.0).to(at::kBFloat16) : all;
    at::Tensor dyt = seed == 0 ? at::ones_like(xt) : randn({xt.numel()}, seed + 1).to(at::kBFloat16);
    NamedArray x(xt.clone().requires_grad_(true), {Axis("n", xt.numel())});
    NamedArray y = nn::gelu(x, true);
    y.array().backward(dyt);
    auto [y64, dx64] = gelu_tanh_f64(xt, dyt);
    EXPECT_LE(bf16_steps(y.array(), y64, xt.to(at::kDouble).abs() * std::ldexp(1.0, -21)), 1.0);
    EXPECT_LE(bf16_steps(x.array().grad(), dx64, dyt.to(at::kDouble).abs() * std::ldexp(1.0, -14)), 1.0);
    at::Tensor x32 = xt.to(at::kFloat).requires_grad_(true);
    at::Tensor y32 = at::gelu(x32, "tanh");
    y32.backward(dyt.to(at::kFloat));
    differ += (y32.detach().to(at::kBFloat16) != y.array()).sum().item<int64_t>();
    grad_differ += (x32.grad().to(at::kBFloat16) != x.array().grad()).sum().item<int64_t>();
    total += xt.numel();
  }
  at::set_num_threads(threads);
  std::cout << "bf16 GELU (tanh) values (gradients) that differ from libtorch's f32 computation rounded: " << differ
            << " (" << grad_differ << ") of " << total << "\n";
  // Rounding to nearest even, as libtorch's cast: a truncating or otherwise wrong rounding would move about half of
  // them. (On this project's machines: 0 values and 8 gradients.)
  EXPECT_LE(differ, total / 10000);
  EXPECT_LE(grad_differ, total / 10000);
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

// The f32 GELU kernel (the same formula, f32 in and out) against the formula in f64 and against libtorch's f32 GELU
// (1-ulp tanhf), on every bf16 value widened, on values spaced 2^-12 apart over [-12, 12] and at GPT-2's sizes, in f32
// ulps beyond the formula's own cancellation where x < 0 (as above: 2^-21 |x| for the value, 2^-14 |dy| for the
// gradient). Measured here: values within 1.3 ulps of f64 (libtorch's 1.2), gradients within 8.7 (libtorch's the same
// 8.7: the f32 formula's rounding); from libtorch's, 2.0 and 5.4.
namespace {

// Largest |a - ref| in units of ref's f32 ulp, beyond an absolute allowance (NaN where ref is NaN must be NaN in a).
double f32_ulps(const at::Tensor& a, const at::Tensor& ref, const at::Tensor& abs_allowance) {
  at::Tensor nan = ref.isnan();
  if (!at::equal(nan, a.to(at::kDouble).isnan())) return INFINITY;
  at::Tensor ulp = (ref.abs() * std::ldexp(1.0, -23)).clamp_min(std::ldexp(1.0, -149));
  at::Tensor excess = ((a.to(at::kDouble) - ref).abs() - abs_allowance).clamp_min(0) / ulp;
  return excess.masked_fill(nan, 0).max().item<double>();
}

}  // namespace

TEST(Dtypes, F32GeluTanhKernelIsWithinFewUlpsOfTheF64FormulaAndOfLibtorch) {
  at::Tensor all = at::arange(0, 65536, at::kInt).to(at::kShort).view(at::kBFloat16).to(at::kFloat);
  all = all.masked_select(all.isfinite() & (all.abs() < 1e6));
  const std::vector<at::Tensor> inputs{all, at::arange(-12.0, 12.0, std::ldexp(1.0, -12), at::kFloat),
                                       (randn({256 * 3072}, 9) * 3.0).to(at::kFloat)};
  for (size_t i = 0; i < inputs.size(); ++i) {
    SCOPED_TRACE(i);
    const at::Tensor& xt = inputs[i];
    const at::Tensor dyt = randn({xt.numel()}, 40 + i).to(at::kFloat);
    NamedArray x(xt.clone().requires_grad_(true), {Axis("n", xt.numel())});
    NamedArray y = nn::gelu(x, true);
    ASSERT_EQ(y.dtype(), at::kFloat);
    y.array().backward(dyt);
    auto [y64, dx64] = gelu_tanh_f64(xt, dyt);
    // The cancellation allowances where x < 0 only: elsewhere the formula is well conditioned.
    const at::Tensor negative = (xt < 0).to(at::kDouble);
    const at::Tensor allow_y = xt.to(at::kDouble).abs() * std::ldexp(1.0, -21) * negative;
    const at::Tensor allow_dx = dyt.to(at::kDouble).abs() * std::ldexp(1.0, -14) * negative;
    const double y_f64 = f32_ulps(y.array(), y64, allow_y), dx_f64 = f32_ulps(x.array().grad(), dx64, allow_dx);
    EXPECT_LE(y_f64, 2.0);
    EXPECT_LE(dx_f64, 12.0);  // libtorch's own: 8.7
    at::Tensor x32 = xt.clone().requires_grad_(true);
    at::Tensor y32 = at::gelu(x32, "tanh");
    y32.backward(dyt);
    const double y_torch = f32_ulps(y32.detach(), y64, allow_y), dx_torch = f32_ulps(x32.grad(), dx64, allow_dx);
    const double y_vs = f32_ulps(y.array(), y32.detach().to(at::kDouble), allow_y);
    const double dx_vs = f32_ulps(x.array().grad(), x32.grad().to(at::kDouble), allow_dx);
    EXPECT_LE(y_vs, 3.0);
    EXPECT_LE(dx_vs, 8.0);
    std::cout << "f32 GELU (tanh), inputs " << i
              << ", largest distance in f32 ulps beyond the allowance: ours from f64 " << y_f64 << " (gradients "
              << dx_f64 << "), libtorch's from f64 " << y_torch << " (" << dx_torch << "), ours from libtorch's "
              << y_vs << " (" << dx_vs << ")\n";
  }
  // Double backward: d/dx of <dL/dx, v>, against libtorch's.
  at::Tensor xt = randn({64}, 11).to(at::kFloat), v = randn({64}, 12).to(at::kFloat);
  NamedArray x(xt.clone().requires_grad_(true), {Axis("n", 64)});
  at::Tensor g = torch::autograd::grad({nn::gelu(x, true).array().sum()}, {x.array()}, {}, true, true)[0];
  at::Tensor hv = torch::autograd::grad({(g * v).sum()}, {x.array()})[0];
  at::Tensor x32 = xt.clone().requires_grad_(true);
  at::Tensor g32 = torch::autograd::grad({at::gelu(x32, "tanh").sum()}, {x32}, {}, true, true)[0];
  at::Tensor hv32 = torch::autograd::grad({(g32 * v).sum()}, {x32})[0];
  EXPECT_TRUE(at::allclose(hv, hv32, 1e-5, 1e-6)) << (hv - hv32).abs().max();
}

// The GELU kernel's 16-lane (AVX-512F) and 8-lane (AVX2) paths give the same bits, values and gradients, in bf16 and
// f32, on every bf16 value and on lengths that leave each path a tail (the element counts 1, 7, 9, 15, 17, 8193).
TEST(Dtypes, GeluTanhKernelGivesTheSameBitsSixteenOrEightLanesAtATime) {
  if (!nn::kernels::gelu_tanh_uses_avx512()) {
    GTEST_SKIP() << "this CPU has no AVX-512F: only the 8-lane path runs here (the other test checks it)";
  }
  at::Tensor all = at::arange(0, 65536, at::kInt).to(at::kShort).view(at::kBFloat16);
  std::vector<at::Tensor> inputs{all, (randn({256 * 3072}, 21) * 3.0).to(at::kBFloat16)};
  for (int64_t n : {1, 7, 9, 15, 17, 8193}) inputs.push_back((randn({n}, 30 + n) * 2.0).to(at::kBFloat16));
  const size_t n_bf16 = inputs.size();
  for (size_t i = 0; i < n_bf16; ++i) inputs.push_back(inputs[i].to(at::kFloat));
  for (const at::Tensor& x : inputs) {
    SCOPED_TRACE(std::to_string(x.numel()) + " " + std::string(c10::toString(x.scalar_type())));
    at::Tensor dy = randn({x.numel()}, 22).to(x.scalar_type());
    at::Tensor y16 = nn::kernels::gelu_tanh(x), dx16 = nn::kernels::gelu_tanh_backward(dy, x);
    nn::kernels::gelu_tanh_force_avx2(true);
    at::Tensor y8 = nn::kernels::gelu_tanh(x), dx8 = nn::kernels::gelu_tanh_backward(dy, x);
    nn::kernels::gelu_tanh_force_avx2(false);
    // Compared as raw bits (NaN payloads included).
    const at::ScalarType raw = x.scalar_type() == at::kFloat ? at::kInt : at::kShort;
    EXPECT_TRUE(at::equal(y16.view(raw), y8.view(raw)));
    EXPECT_TRUE(at::equal(dx16.view(raw), dx8.view(raw)));
  }
}
