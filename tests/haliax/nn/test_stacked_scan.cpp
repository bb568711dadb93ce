// Stacked::scan: per-layer outputs stacked on the layer axis, against a positional ATen loop (values and
// gradients, f64), against Stacked::fold, with gradient checkpointing, and against the original Haliax.
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#include "../testing.h"
#include "haliax/hof.h"
#include "haliax/reference.h"
#include "haliax/reference/hof_expected.inc"

using namespace haliax;
using haliax::testing::expect_matches_ref;
using haliax::testing::expect_same_value_and_grad;
using haliax::testing::randn;
using haliax::testing::ref_to_named;

namespace {
const Axis Y("y", 2), L("layers", 3), E("embed", 4), M("mlp", 6), P("pos", 3);

// next = tanh(c * weight) + c; the layer's output is next * 2 (the block gen_hof.py gives Haliax).
struct TanhBlock {
  NamedArray weight;  // (y)
  std::pair<NamedArray, NamedArray> operator()(const NamedArray& c) const {
    NamedArray next = haliax::tanh(c * weight) + c;
    return {next, next * 2.0};
  }
  void visit(nn::ParamVisitor& v) { v("weight", weight); }
};

// t = {init (2), weights (3, 2)}; returns cat(carry, ys as (layers, y)).
at::Tensor tanh_loop(const std::vector<at::Tensor>& t) {
  at::Tensor c = t[0];
  std::vector<at::Tensor> ys;
  for (int64_t i = 0; i < 3; ++i) {
    c = at::tanh(c * t[1][i]) + c;
    ys.push_back(c * 2.0);
  }
  return at::cat({c, at::stack(ys, 0).reshape(-1)});
}

at::Tensor named_tanh_scan(const std::vector<at::Tensor>& t, bool checkpointing) {
  nn::Stacked<TanhBlock> stack{L, TanhBlock{NamedArray(t[1], {L, Y})}, checkpointing};
  auto [carry, ys] = stack.scan(NamedArray(t[0], {Y}));
  EXPECT_EQ(carry.axes(), (AxisSpec{Y}));
  EXPECT_EQ(ys.axes(), (AxisSpec{L, Y}));
  return at::cat({carry.array(), ys.array().reshape(-1)});
}

// A block with several parameters (norm and two linears), as in test_modules.cpp.
struct MlpBlock {
  nn::LayerNorm ln;
  nn::Linear up, down;
  static MlpBlock init(const random::Key& key) {
    auto [k1, k2] = key.split2();
    return MlpBlock{nn::LayerNorm::init({E}), nn::Linear::init({E}, {M}, k1), nn::Linear::init({M}, {E}, k2)};
  }
  NamedArray operator()(const NamedArray& x) const { return x + down(nn::relu(up(ln(x)))); }
  void visit(nn::ParamVisitor& v) {
    v("ln", ln);
    v("up", up);
    v("down", down);
  }
};
}  // namespace

TEST(StackedScan, MatchesAnATenLoopWithGradients) {
  for (bool checkpointing : {false, true}) {
    expect_same_value_and_grad(
        {randn({2}, 1), randn({3, 2}, 2)}, [&](const auto& t) { return named_tanh_scan(t, checkpointing); }, tanh_loop);
  }
}

TEST(StackedScan, CarryEqualsFoldAndOutputsAreTheLayerInputs) {
  nn::Stacked<MlpBlock> stack = nn::cast_floating(
      nn::Stacked<MlpBlock>::init(L, random::Key(3), [](const random::Key& k) { return MlpBlock::init(k); }),
      at::kDouble);
  NamedArray x(randn({3, 4}, 4), {P, E});
  // y_i = (layer input, layer index as an array): a tuple output, stacked leaf by leaf.
  auto f = [](const MlpBlock& layer, const NamedArray& c, int64_t i) {
    return std::make_pair(layer(c), std::make_tuple(c, full({}, static_cast<double>(i), at::kDouble)));
  };
  auto [carry, ys] = stack.scan(x, f);
  NamedArray folded = stack.fold(x);
  EXPECT_TRUE(at::equal(carry.array(), folded.array()));
  const auto& [inputs, index] = ys;
  EXPECT_EQ(inputs.axes(), (AxisSpec{L, P, E}));
  EXPECT_TRUE(at::equal(index.array(), at::arange(3, at::kDouble)));
  std::vector<MlpBlock> layers = stack.unstacked();
  NamedArray c = x;
  for (int64_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(at::equal(inputs.array()[i], c.array())) << "layer " << i;
    c = layers[static_cast<size_t>(i)](c);
  }
}

TEST(StackedScan, GradientCheckpointingGivesTheSameGradientsAndRecomputes) {
  nn::Stacked<MlpBlock> plain = nn::cast_floating(
      nn::Stacked<MlpBlock>::init(L, random::Key(5), [](const random::Key& k) { return MlpBlock::init(k); }),
      at::kDouble);
  nn::Stacked<MlpBlock> ckpt = plain;
  ckpt.gradient_checkpointing = true;
  auto calls = std::make_shared<int>(0);
  auto f = [calls](const MlpBlock& layer, const NamedArray& c, int64_t) {
    ++*calls;
    NamedArray next = layer(c);
    return std::make_pair(next, haliax::sum(next * next, E));
  };
  auto loss_and_grads = [&](nn::Stacked<MlpBlock> s, const at::Tensor& x_t) {
    nn::requires_grad_(s);
    NamedArray x(x_t.detach().clone().requires_grad_(true), {P, E});
    auto [carry, ys] = s.scan(x, f);
    NamedArray loss = haliax::sum(carry * carry) + haliax::sum(haliax::sin(ys));
    loss.array().backward();
    std::vector<at::Tensor> out{loss.array().detach(), x.array().grad()};
    nn::for_each_parameter(s, [&](const nn::ParamInfo&, NamedArray& p) { out.push_back(p.array().grad()); });
    return out;
  };
  at::Tensor x = randn({3, 4}, 6);
  *calls = 0;
  std::vector<at::Tensor> a = loss_and_grads(plain, x);
  EXPECT_EQ(*calls, 3);
  *calls = 0;
  std::vector<at::Tensor> b = loss_and_grads(ckpt, x);
  EXPECT_EQ(*calls, 6);  // each layer once more in backward
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(a[i].defined() && b[i].defined()) << i;
    EXPECT_TRUE(at::allclose(a[i], b[i], 1e-12, 1e-12)) << "tensor " << i;
  }
}

TEST(StackedScan, MatchesTheOriginalHaliax) {
  namespace ref = haliax_ref::hof;
  nn::Stacked<TanhBlock> stack{L, TanhBlock{ref_to_named(ref::stacked_weight)}, false};
  auto [carry, ys] = stack.scan(ref_to_named(ref::init));
  expect_matches_ref(carry, ref::stacked_carry);
  expect_matches_ref(ys, ref::stacked_ys);
}
