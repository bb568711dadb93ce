// The stacked layers' gradients computed in place (haliax/nn/layer_grads.h): the f32 Linear layer writes a layer's
// weight gradient straight into the buffer that the layers' unbind returns as the stacked gradient. The same bits as
// unbind + stack in every case, including the ones where a place must not be reused (a weight used twice, a second
// backward over the same graph, accumulation over microbatches, a backward differentiated again).
#include <torch/csrc/autograd/autograd.h>

#include "../testing.h"
#include "haliax/nn/gemm_bf16.h"
#include "haliax/nn/layer_grads.h"

using namespace haliax;
using haliax::testing::randn;

namespace {

const Axis L("layers", 3), E("embed", 24), H("heads", 2), D("head_size", 40), Pos("position", 70);

// Two Linear layers (embed -> (heads, head_size) with a bias -> embed) per stacked layer, with the stacked weights
// given; `unbind` takes each stacked weight's per-layer views. Uses the first projection twice when `twice`.
NamedArray run_layers(const std::vector<at::Tensor>& stacked, const NamedArray& x, bool twice,
                      const std::function<std::vector<at::Tensor>(const at::Tensor&)>& unbind) {
  std::vector<std::vector<at::Tensor>> views;
  for (const at::Tensor& s : stacked) views.push_back(unbind(s));
  NamedArray h = x;
  for (int64_t l = 0; l < L.size; ++l) {
    const size_t i = static_cast<size_t>(l);
    nn::Linear up{{E}, {H, D}, NamedArray(views[0][i], {E, H, D}), NamedArray(views[1][i], {H, D})};
    nn::Linear down{{H, D}, {E}, NamedArray(views[2][i], {E, H, D}), std::nullopt};  // out-first: (embed, heads, ..)
    NamedArray u = up(h);
    if (twice) u = u + up(h * 0.5);
    h = h + down(u * u) * 0.1;
  }
  return h;
}

std::vector<at::Tensor> params(at::ScalarType dtype = at::kFloat) {
  std::vector<at::Tensor> p{randn({3, 24, 2, 40}, 1) * 0.2, randn({3, 2, 40}, 2) * 0.1, randn({3, 24, 2, 40}, 3) * 0.2};
  for (at::Tensor& t : p) t = t.to(dtype).requires_grad_(true);
  return p;
}

auto plain = [](const at::Tensor& s) { return at::unbind(s, 0); };
auto in_place = [](const at::Tensor& s) { return nn::unbind_layers(s); };

std::vector<at::Tensor> grads_of(const std::vector<at::Tensor>& p) {
  std::vector<at::Tensor> g;
  for (const at::Tensor& t : p) g.push_back(t.grad().clone());
  return g;
}

void expect_same_bits(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i], b[i])) << "parameter " << i;
}

}  // namespace

TEST(LayerGrads, TheLinearWeightsGradientsAreComputedInTheStackedBufferWithUnbindAndStacksBits) {
  const NamedArray x(randn({70, 24}, 9).to(at::kFloat), {Pos, E});
  for (bool twice : {false, true}) {
    SCOPED_TRACE(twice ? "a weight used twice" : "each weight once");
    auto ref = params(), got = params();
    (run_layers(ref, x, twice, plain).array() * randn({70, 24}, 10)).sum().backward();
    // Where layer 1's gradient of the first weight arrives, seen by a hook on its view.
    std::vector<at::Tensor> views = nn::unbind_layers(got[0]);
    const void* arrived = nullptr;
    views[1].register_hook([&](const at::Tensor& g) { arrived = g.data_ptr(); });
    auto unbind_hooked = [&](const at::Tensor& s) { return s.is_same(got[0]) ? views : nn::unbind_layers(s); };
    (run_layers(got, x, twice, unbind_hooked).array() * randn({70, 24}, 10)).sum().backward();
    expect_same_bits(grads_of(got), grads_of(ref));
    const auto* base = static_cast<const char*>(got[0].grad().data_ptr());
    const int64_t layer_bytes = 24 * 2 * 40 * 4;
    if (twice) {
      // Two products gave gradients of the weight: one took the place, the other its own tensor, and their sum
      // (a new tensor) was copied into the buffer.
      EXPECT_NE(arrived, base + layer_bytes);
    } else {
      EXPECT_EQ(arrived, base + layer_bytes) << "layer 1's weight gradient was copied, not computed in place";
    }
  }
}

TEST(LayerGrads, ASecondBackwardOverTheGraphAndMicrobatchesAccumulateAsUnbindAndStack) {
  const NamedArray x(randn({70, 24}, 11).to(at::kFloat), {Pos, E});
  const at::Tensor cot = randn({70, 24}, 12);
  auto ref = params(), got = params();
  for (auto [p, unbind] : {std::pair{&ref, std::function<std::vector<at::Tensor>(const at::Tensor&)>(plain)},
                           std::pair{&got, std::function<std::vector<at::Tensor>(const at::Tensor&)>(in_place)}}) {
    at::Tensor out = run_layers(*p, x, false, unbind).array();
    out.backward(cot, /*retain_graph=*/true);
    out.backward(cot * 0.25);  // the first backward's gradient (now .grad) must not be written over
    (run_layers(*p, x * 0.5, false, unbind).array() * cot).sum().backward();  // a second microbatch
  }
  expect_same_bits(grads_of(got), grads_of(ref));
}

// grad() that stops at the layers' views, over a retained graph, then a whole backward over the same graph: the
// first call's results (places in the first pass's buffer) are not written over by the second pass.
TEST(LayerGrads, AGradThatStopsAtTheLayersKeepsItsResultsThroughALaterBackward) {
  const NamedArray x(randn({70, 24}, 16).to(at::kFloat), {Pos, E});
  const at::Tensor cot = randn({70, 24}, 17);
  auto got = params(), ref = params();
  std::vector<at::Tensor> views = nn::unbind_layers(got[0]);
  auto with_views = [&](const at::Tensor& s) { return s.is_same(got[0]) ? views : nn::unbind_layers(s); };
  at::Tensor out = run_layers(got, x, false, with_views).array();
  std::vector<at::Tensor> first = torch::autograd::grad({out}, views, {cot}, /*retain_graph=*/true);
  std::vector<at::Tensor> kept;
  for (const at::Tensor& g : first) kept.push_back(g.clone());
  out.backward(cot * 0.5);
  for (size_t l = 0; l < first.size(); ++l) EXPECT_TRUE(at::equal(first[l], kept[l])) << "layer " << l;
  // And the whole backward's gradient is unbind + stack's.
  (run_layers(ref, x, false, plain).array()).backward(cot * 0.5);
  expect_same_bits(grads_of(got), grads_of(ref));
}

TEST(LayerGrads, ABackwardDifferentiatedAgainStacksAsUnbind) {
  const NamedArray x(randn({70, 24}, 13).to(at::kFloat), {Pos, E});
  auto hvp = [&](const std::function<std::vector<at::Tensor>(const at::Tensor&)>& unbind) {
    auto p = params();
    at::Tensor loss = (run_layers(p, x, false, unbind).array().pow(2)).sum();
    auto g = torch::autograd::grad({loss}, p, {}, /*retain_graph=*/true, /*create_graph=*/true);
    at::Tensor gv = at::zeros({});
    for (size_t i = 0; i < g.size(); ++i) gv = gv + (g[i] * randn(g[i].sizes(), 20 + i).to(at::kFloat)).sum();
    return torch::autograd::grad({gv}, p);
  };
  expect_same_bits(hvp(in_place), hvp(plain));
}

TEST(LayerGrads, OtherDtypesAndAParameterWithoutGradientKeepUnbind) {
  // bf16: where bf16 GEMMs are widened (haliax/nn/gemm_bf16.h) the Linear layer writes into the place as in f32;
  // elsewhere (at::addmm) the buffer is filled by copies. The same bits as stack either way.
  const NamedArray x(randn({70, 24}, 14).to(at::kBFloat16), {Pos, E});
  for (nn::Bf16Gemm route : {nn::Bf16Gemm::widened, nn::Bf16Gemm::native}) {
    SCOPED_TRACE(nn::bf16_gemm_route_name(route));
    nn::Bf16GemmRouteOverride scope(route);
    auto ref = params(at::kBFloat16), got = params(at::kBFloat16);
    (run_layers(ref, x, false, plain).array().to(at::kFloat).sum()).backward();
    std::vector<at::Tensor> views = nn::unbind_layers(got[2]);
    const void* arrived = nullptr;
    views[1].register_hook([&](const at::Tensor& g) { arrived = g.data_ptr(); });
    auto unbind_hooked = [&](const at::Tensor& s) { return s.is_same(got[2]) ? views : nn::unbind_layers(s); };
    (run_layers(got, x, false, unbind_hooked).array().to(at::kFloat).sum()).backward();
    expect_same_bits(grads_of(got), grads_of(ref));
    const auto* base = static_cast<const char*>(got[2].grad().data_ptr());
    EXPECT_EQ(arrived == base + 24 * 2 * 40 * 2, route == nn::Bf16Gemm::widened);
  }
  // A stacked tensor that needs no gradient gets plain views (no autograd node).
  at::Tensor frozen = randn({3, 4}, 15).to(at::kFloat);
  for (const at::Tensor& v : nn::unbind_layers(frozen)) EXPECT_FALSE(v.grad_fn());
}
