// nn::Linear in f32 on the CPU runs its GEMMs through oneDNN's sgemm (LinearCpu in linear.cpp; the forward from 64
// rows): the output and the gradients of x, the weight and the bias against the same layer in f64 (at::addmm), for
// both weight layouts, with and without a bias, x's In axes leading or trailing; a batch of a few rows giving each row
// its bits alone; the bias added to the finished sum, bit for bit; and a Hessian-vector product through its backward.
// In bf16 the same function runs where bf16 GEMMs are widened to f32 (haliax/nn/gemm_bf16.h), checked here under both
// routes whatever this machine's is.
#include <torch/csrc/autograd/autograd.h>

#include "../graph_testing.h"
#include "../testing.h"
#include "haliax/nn/gemm_bf16.h"

using namespace haliax;
using haliax::testing::randn;

namespace {

// Whether the graph behind t runs LinearCpu or LinearBiasCpu.
bool took_kernel(const at::Tensor& t) {
  return haliax::testing::graph_runs(t, "LinearCpu") || haliax::testing::graph_runs(t, "LinearBiasCpu");
}

struct Out {
  at::Tensor y, dx, dw, db;
  bool kernel;
};

// The layer on x (batch, position, embed) or (embed, batch, position) with In = (embed) and Out = (heads, head_size),
// in dtype, and the gradients for the cotangent cot.
Out run(const nn::Linear& l64, const at::Tensor& x64, bool in_leading, at::ScalarType dtype, const at::Tensor& cot) {
  const Axis Batch("batch", 4), Pos("position", 19), Embed("embed", 24);
  nn::Linear l = l64;
  l.weight = NamedArray(l64.weight.array().detach().to(dtype).requires_grad_(true), l64.weight.axes());
  if (l64.bias) l.bias = NamedArray(l64.bias->array().detach().to(dtype).requires_grad_(true), l64.bias->axes());
  at::Tensor x = x64.detach().to(dtype).requires_grad_(true);
  // x64 [4, 19, 48] stands for x [4, 19, 24] made of its even columns: a view whose rows have a stride.
  const at::Tensor xv = x.size(2) == 2 * Embed.size ? x.slice(2, 0, x.size(2), 2) : x;
  NamedArray xn =
      in_leading ? NamedArray(xv.permute({2, 0, 1}), {Embed, Batch, Pos}) : NamedArray(xv, {Batch, Pos, Embed});
  NamedArray y = l(xn).rearrange({"batch", "position", "heads", "head_size"});
  (y.array() * cot.to(dtype)).sum().backward();
  return {y.array().detach(), x.grad(), l.weight.array().grad(), l.bias ? l.bias->array().grad() : at::Tensor(),
          took_kernel(y.array())};
}

double max_err(const at::Tensor& a, const at::Tensor& ref) {
  return (a.to(at::kDouble) - ref).abs().max().item<double>() / std::max(1.0, ref.abs().max().item<double>());
}

// The Hessian-vector product H v of loss over params, v random (seeds seed, seed + 1, ...), in the params' dtype:
// the gradient with its graph, dotted with v, differentiated again.
std::vector<at::Tensor> hessian_vector_product(const at::Tensor& loss, const std::vector<at::Tensor>& params,
                                               uint64_t seed) {
  auto g = torch::autograd::grad({loss}, params, {}, /*retain_graph=*/true, /*create_graph=*/true);
  at::Tensor gv = at::zeros({}, loss.scalar_type());
  for (size_t i = 0; i < g.size(); ++i) gv = gv + (g[i] * randn(g[i].sizes(), seed + i).to(g[i].scalar_type())).sum();
  return torch::autograd::grad({gv}, params);
}

at::Tensor round_trip(const at::Tensor& t) { return t.to(at::kBFloat16).to(at::kDouble); }

// A bf16 result g against its f64 value r: within one bf16 step (2^-7 |r|, at least 1e-5, plus `allowance`) of r's
// nearest bf16 value everywhere, and that value in at least 98% of places.
void expect_within_one_step(const at::Tensor& g, const at::Tensor& r, const at::Tensor& allowance, const char* name) {
  const at::Tensor nearest = round_trip(r);
  at::Tensor step = (r.abs() * (1.0 / 128)).clamp_min(1e-5);
  if (allowance.defined()) step = step + allowance;
  EXPECT_TRUE(((g.to(at::kDouble) - nearest).abs() <= step).all().item<bool>()) << name;
  EXPECT_GE(at::eq(g.to(at::kDouble), nearest).to(at::kDouble).mean().item<double>(), 0.98) << name;
}

}  // namespace

TEST(LinearF32, OneDnnGemmsMatchTheLayerInF64) {
  const Axis Embed("embed", 24), Heads("heads", 3), HeadSize("head_size", 10);
  const at::Tensor contiguous = randn({4, 19, 24}, 1);  // 76 rows: oneDNN's forward too (64 rows or more)
  const at::Tensor strided = randn({4, 19, 48}, 5);     // x as every other column of a wider tensor
  const at::Tensor cot = randn({4, 19, 3, 10}, 2);
  for (bool out_first : {true, false}) {
    for (bool bias : {true, false}) {
      for (int layout = 0; layout < 3; ++layout) {
        const bool in_leading = layout == 1;
        const at::Tensor& x = layout == 2 ? strided : contiguous;
        SCOPED_TRACE(std::string(out_first ? "out_first" : "in_first") + (bias ? ", bias" : ", no bias") +
                     (layout == 1   ? ", In leading"
                      : layout == 2 ? ", strided rows"
                                    : ""));
        nn::Linear l =
            nn::Linear::init({Embed}, {Heads, HeadSize}, random::Key(3),
                             nn::LinearOptions().set_out_first(out_first).set_use_bias(bias).set_dtype(at::kDouble));
        if (bias) l.bias = NamedArray(randn({3, 10}, 4), l.bias->axes());
        const Out ref = run(l, x, in_leading, at::kDouble, cot);
        const Out got = run(l, x, in_leading, at::kFloat, cot);
        EXPECT_FALSE(ref.kernel);
        EXPECT_TRUE(got.kernel);
        EXPECT_LT(max_err(got.y, ref.y), 1e-6);
        EXPECT_LT(max_err(got.dx, ref.dx), 1e-6);
        EXPECT_LT(max_err(got.dw, ref.dw), 1e-6);
        EXPECT_EQ(got.dw.sizes(), ref.dw.sizes());
        if (bias) {
          EXPECT_LT(max_err(got.db, ref.db), 1e-6);
        }
      }
    }
  }
}

TEST(LinearF32, HessianVectorProductThroughTheBackwardMatchesF64) {
  // Sophia-H differentiates the gradient again: the backward then computes with at::mm, which autograd can
  // differentiate.
  const Axis Batch("batch", 5), Embed("embed", 8), Mlp("mlp", 6);
  auto hvp = [&](at::ScalarType dtype) {
    nn::Linear a = nn::Linear::init({Embed}, {Mlp}, random::Key(5), nn::LinearOptions().set_dtype(dtype));
    nn::Linear b =
        nn::Linear::init({Mlp}, {Embed}, random::Key(6), nn::LinearOptions().set_dtype(dtype).set_out_first(false));
    std::vector<at::Tensor> params{a.weight.array(), a.bias->array(), b.weight.array(), b.bias->array()};
    for (at::Tensor& p : params) p = p.detach().requires_grad_(true);
    a.weight = NamedArray(params[0], a.weight.axes());
    a.bias = NamedArray(params[1], a.bias->axes());
    b.weight = NamedArray(params[2], b.weight.axes());
    b.bias = NamedArray(params[3], b.bias->axes());
    NamedArray x(randn({5, 8}, 7).to(dtype), {Batch, Embed});
    at::Tensor y = b(nn::gelu(a(x), true)).array();
    return std::make_pair(took_kernel(y), hessian_vector_product((y * y).sum(), params, 20));
  };
  auto [fused, h32] = hvp(at::kFloat);
  auto [unfused, h64] = hvp(at::kDouble);
  EXPECT_TRUE(fused);
  EXPECT_FALSE(unfused);
  for (size_t i = 0; i < h32.size(); ++i) EXPECT_LT(max_err(h32[i], h64[i]), 1e-5) << "parameter " << i;
}

TEST(LinearF32, ABatchOfFewRowsGivesEachRowItsBitsAlone) {
  // Decoding runs a few rows a step where a lone prompt would run one: under 64 rows the forward stays at::mm's, which
  // keeps each of up to 14 rows the same whatever the others (oneDNN's would not).
  const Axis Embed("embed", 48), Mlp("mlp", 80);
  const at::Tensor x = randn({14, 48}, 8).to(at::kFloat);
  for (bool out_first : {false, true}) {
    for (bool bias : {false, true}) {
      SCOPED_TRACE(std::string(out_first ? "out_first" : "in_first") + (bias ? ", bias" : ""));
      nn::Linear l = nn::Linear::init({Embed}, {Mlp}, random::Key(9),
                                      nn::LinearOptions().set_out_first(out_first).set_use_bias(bias));
      l.weight.array().requires_grad_(true);
      if (bias) l.bias = NamedArray(randn({80}, 10).to(at::kFloat), l.bias->axes());
      for (int64_t rows : {2, 3, 7, 14}) {
        const at::Tensor few = l(NamedArray(x.narrow(0, 0, rows), {Axis("batch", rows), Embed})).array();
        EXPECT_TRUE(took_kernel(few));
        for (int64_t r = 0; r < rows; ++r) {
          const at::Tensor alone = l(NamedArray(x.narrow(0, r, 1), {Axis("batch", 1), Embed})).array();
          EXPECT_TRUE(at::equal(alone[0], few[r])) << "row " << r << " of " << rows;
        }
      }
    }
  }
}

// bf16: where bf16 GEMMs are widened to f32 the layer takes LinearCpu, whose products are f32 sums of the exact
// products, rounded once (the f32 layer's bits rounded); elsewhere at::addmm (oneDNN's bf16 kernels). Both against f64
// on the same bf16 inputs, to bf16's rounding of each result (2^-8 relative, with room for the f32 sums), and the
// widened route's results against a reference that rounds f64 sums: within one bf16 step everywhere, the same value
// almost everywhere.
TEST(LinearBf16, BothRoutesMatchTheLayerInF64OnTheSameBf16Inputs) {
  const Axis Embed("embed", 24), Heads("heads", 3), HeadSize("head_size", 10);
  const at::Tensor contiguous = randn({4, 19, 24}, 11), strided = randn({4, 19, 48}, 15);
  const at::Tensor cot = randn({4, 19, 3, 10}, 12).to(at::kBFloat16).to(at::kDouble);
  for (nn::Bf16Gemm route : {nn::Bf16Gemm::widened, nn::Bf16Gemm::native}) {
    nn::Bf16GemmRouteOverride scope(route);
    for (bool out_first : {true, false}) {
      for (bool bias : {true, false}) {
        for (int layout = 0; layout < 3; ++layout) {
          SCOPED_TRACE(std::string(nn::bf16_gemm_route_name(route)) + (out_first ? ", out_first" : ", in_first") +
                       (bias ? ", bias" : ", no bias") +
                       (layout == 1   ? ", In leading"
                        : layout == 2 ? ", strided"
                                      : ""));
          nn::Linear l =
              nn::Linear::init({Embed}, {Heads, HeadSize}, random::Key(13),
                               nn::LinearOptions().set_out_first(out_first).set_use_bias(bias).set_dtype(at::kDouble));
          // The f64 layer on the bf16 values: both sides multiply the same numbers.
          l.weight = NamedArray(round_trip(l.weight.array()), l.weight.axes());
          if (bias) l.bias = NamedArray(round_trip(randn({3, 10}, 14)), l.bias->axes());
          const at::Tensor x = round_trip(layout == 2 ? strided : contiguous);
          const Out ref = run(l, x, layout == 1, at::kDouble, cot);
          const Out got = run(l, x, layout == 1, at::kBFloat16, cot);
          EXPECT_FALSE(ref.kernel);
          EXPECT_EQ(got.kernel, route == nn::Bf16Gemm::widened);
          EXPECT_LT(max_err(got.y, ref.y), 1.0 / 128);
          EXPECT_LT(max_err(got.dx, ref.dx), 1.0 / 128);
          EXPECT_LT(max_err(got.dw, ref.dw), 1.0 / 128);
          EXPECT_EQ(got.dw.sizes(), ref.dw.sizes());
          if (bias) {
            EXPECT_LT(max_err(got.db, ref.db), 1.0 / 128);
          }
          if (route == nn::Bf16Gemm::widened) {
            // One rounding of a sum that f32 holds to 2^-24 relative: the nearest bf16 value, or (where the sum lies
            // within f32's error of a tie) its neighbour.
            expect_within_one_step(got.y, ref.y, at::Tensor(), "y");
            expect_within_one_step(got.dx, ref.dx, at::Tensor(), "dx");
            expect_within_one_step(got.dw, ref.dw, at::Tensor(), "dw");
            // Bit for bit the f32 layer on the same (widened) values, each result rounded once.
            const Out f32 = run(l, x, layout == 1, at::kFloat, cot);
            EXPECT_TRUE(f32.kernel);
            EXPECT_TRUE(at::equal(got.y, f32.y.to(at::kBFloat16)));
            EXPECT_TRUE(at::equal(got.dx, f32.dx.to(at::kBFloat16)));
            EXPECT_TRUE(at::equal(got.dw, f32.dw.to(at::kBFloat16)));
            if (bias) {
              EXPECT_TRUE(at::equal(got.db, f32.db.to(at::kBFloat16)));
            }
          }
        }
      }
    }
  }
}

TEST(LinearBf16, TheWidenedRoutesHessianVectorProductMatchesF64) {
  const Axis Batch("batch", 70), Embed("embed", 8), Mlp("mlp", 6);
  nn::Bf16GemmRouteOverride scope(nn::Bf16Gemm::widened);
  auto hvp = [&](at::ScalarType dtype) {
    nn::Linear a = nn::Linear::init({Embed}, {Mlp}, random::Key(15), nn::LinearOptions().set_dtype(at::kDouble));
    std::vector<at::Tensor> params{a.weight.array().to(at::kBFloat16).to(dtype), a.bias->array().to(dtype)};
    for (at::Tensor& p : params) p = p.detach().requires_grad_(true);
    a.weight = NamedArray(params[0], a.weight.axes());
    a.bias = NamedArray(params[1], a.bias->axes());
    NamedArray x(randn({70, 8}, 16).to(at::kBFloat16).to(dtype), {Batch, Embed});
    at::Tensor y = a(x).array();
    return std::make_pair(took_kernel(y), hessian_vector_product((y * y).sum(), params, 30));
  };
  auto [fused, h16] = hvp(at::kBFloat16);
  auto [unfused, h64] = hvp(at::kDouble);
  EXPECT_TRUE(fused);
  EXPECT_FALSE(unfused);
  for (size_t i = 0; i < h16.size(); ++i) EXPECT_LT(max_err(h16[i], h64[i]), 0.05) << "parameter " << i;
}

// A widened bf16 layer whose output would exceed 2^24 f32 elements (a large vocabulary's head as an nn::Linear) takes
// the blocked widened product instead of widening it whole: every result within one bf16 step of the f64 layer on the
// same bf16 values beyond f32's summing error (2^-16 of the sum of the terms' magnitudes: dW sums 4100 products), the
// nearest value almost everywhere.
TEST(LinearBf16, ALayerTooLargeToWidenWholeTakesTheBlockedProduct) {
  nn::Bf16GemmRouteOverride scope(nn::Bf16Gemm::widened);
  const Axis Rows("rows", 4100), Embed("embed", 64), Vocab("vocab", 4100);  // 4100 x 4100 > 2^24
  const at::Tensor x64 = round_trip(randn({4100, 64}, 41)), w64 = round_trip(randn({4100, 64}, 42) * 0.1);
  const at::Tensor b64 = round_trip(randn({4100}, 43)), cot = round_trip(randn({4100, 4100}, 44));
  auto run_layer = [&](at::ScalarType dtype, bool magnitudes) {
    auto in = [&](const at::Tensor& t) { return (magnitudes ? t.abs() : t).detach().to(dtype).requires_grad_(true); };
    nn::Linear l = nn::Linear::init({Embed}, {Vocab}, random::Key(1), nn::LinearOptions().set_out_first(true));
    l.weight = NamedArray(in(w64), {Vocab, Embed});
    l.bias = NamedArray(in(b64), {Vocab});
    NamedArray x(in(x64), {Rows, Embed});
    NamedArray y = l(x);
    (y.array() * (magnitudes ? cot.abs() : cot).to(dtype)).sum().backward();
    return Out{y.array().detach(), x.array().grad(), l.weight.array().grad(), l.bias->array().grad(),
               took_kernel(y.array())};
  };
  // The f64 layer, the same on the magnitudes (each result's sum of |terms|), and the bf16 layer.
  const Out ref = run_layer(at::kDouble, false), mag = run_layer(at::kDouble, true);
  const Out got = run_layer(at::kBFloat16, false);
  EXPECT_TRUE(got.kernel);
  for (const auto& [g, r, m, name] :
       {std::tuple{got.y, ref.y, mag.y, "y"}, std::tuple{got.dx, ref.dx, mag.dx, "dx"},
        std::tuple{got.dw, ref.dw, mag.dw, "dw"}, std::tuple{got.db, ref.db, mag.db, "db"}}) {
    ASSERT_EQ(g.scalar_type(), at::kBFloat16) << name;
    expect_within_one_step(g, r, m * std::ldexp(1.0, -16), name);
  }
}

// The bias is added to the finished product: each output is fl(sum + b) for the same sum the layer computes without a
// bias, bit for bit, also where K is long enough for oneDNN to sum it in blocks (a GEMM started from the broadcast
// bias, as addmm is, sums the bias in with the first block: other bits in some places).
TEST(LinearF32, TheBiasIsAddedToTheFinishedSum) {
  const Axis Batch("batch", 96), Embed("embed", 1536), Out("out", 83);  // 83: the rounding pass's scalar tail too
  const at::Tensor x = randn({96, 1536}, 11).to(at::kFloat).requires_grad_(true);
  for (bool out_first : {true, false}) {
    SCOPED_TRACE(out_first ? "out_first" : "in_first");
    nn::Linear l = nn::Linear::init({Embed}, {Out}, random::Key(12),
                                    nn::LinearOptions().set_out_first(out_first).set_use_bias(true));
    l.bias = NamedArray(randn({83}, 13).to(at::kFloat), l.bias->axes());
    nn::Linear no_bias = l;
    no_bias.bias.reset();
    const NamedArray xn(x, {Batch, Embed});
    const at::Tensor with = l(xn).array(), without = no_bias(xn).array();
    EXPECT_TRUE(took_kernel(with));
    EXPECT_TRUE(took_kernel(without));
    EXPECT_TRUE(at::equal(with, without + l.bias->array()));
    // Widened bf16: the f32 layer on the same bf16 values, rounded once (the bias within the rounding pass).
    nn::Bf16GemmRouteOverride widened(nn::Bf16Gemm::widened);
    nn::Linear l16 = l;
    l16.weight = NamedArray(l.weight.array().to(at::kBFloat16).requires_grad_(true), l.weight.axes());
    l16.bias = NamedArray(l.bias->array().to(at::kBFloat16), l.bias->axes());
    nn::Linear l32 = l16;
    l32.weight = NamedArray(l16.weight.array().detach().to(at::kFloat), l.weight.axes());
    l32.bias = NamedArray(l16.bias->array().to(at::kFloat), l.bias->axes());
    const at::Tensor x16 = x.detach().to(at::kBFloat16);
    const at::Tensor y16 = l16(NamedArray(x16, {Batch, Embed})).array();
    EXPECT_TRUE(took_kernel(y16));
    EXPECT_TRUE(at::equal(y16, l32(NamedArray(x16.to(at::kFloat), {Batch, Embed})).array().to(at::kBFloat16)));
  }
}
