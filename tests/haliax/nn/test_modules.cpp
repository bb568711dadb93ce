#include "../testing.h"

#include <torch/csrc/autograd/autograd.h>

using namespace haliax;
using haliax::testing::expect_same_value_and_grad;
using haliax::testing::rand_int;
using haliax::testing::randn;

namespace {
const Axis B("batch", 2), P("pos", 3), E("embed", 4), M("mlp", 6), V("vocab", 9), L("layers", 3);

// A small two-linear block, to exercise nesting, Stacked and state dicts.
struct Block {
  nn::LayerNorm ln;
  nn::Linear up, down;
  static Block init(const random::Key& key) {
    auto [k1, k2] = key.split2();
    return Block{nn::LayerNorm::init({E}), nn::Linear::init({E}, {M}, k1), nn::Linear::init({M}, {E}, k2)};
  }
  NamedArray operator()(const NamedArray& x) const { return x + down(nn::relu(up(ln(x)))); }
  void visit(nn::ParamVisitor& v) {
    v("ln", ln);
    v("up", up);
    v("down", down);
  }
};

template <typename M>
M to_double(const M& m) {
  return nn::cast_floating(m, at::kDouble);
}
}  // namespace

TEST(Linear, MatchesATenLinearIncludingMultiAxis) {
  nn::Linear lin = to_double(nn::Linear::init({E}, {M}, random::Key(0)));
  EXPECT_EQ(lin.weight.axes(), (AxisSpec{M, E}));  // out_first, PyTorch's layout
  at::Tensor x = randn({2, 3, 4}, 1);
  expect_same_value_and_grad(
      {x, lin.weight.array(), lin.bias->array()},
      [&](const auto& t) {
        nn::Linear l{lin.In, lin.Out, NamedArray(t[1], lin.weight.axes()), NamedArray(t[2], lin.bias->axes())};
        NamedArray y = l(NamedArray(t[0], {B, P, E}));
        EXPECT_EQ(y.axes(), (AxisSpec{B, P, M}));
        return y.array();
      },
      [](const auto& t) { return at::linear(t[0], t[1], t[2]); });
  // Multi-axis In and Out: (heads, head_size) -> (embed) as in an attention output projection.
  Axis Heads("heads", 2), HeadSize("head_size", 3);
  nn::Linear proj =
      to_double(nn::Linear::init({Heads, HeadSize}, {E}, random::Key(1), nn::LinearOptions().set_use_bias(false)));
  EXPECT_FALSE(proj.bias.has_value());
  at::Tensor h = randn({2, 2, 3}, 2);
  NamedArray y = proj(NamedArray(h, {B, Heads, HeadSize}));
  EXPECT_EQ(y.axes(), (AxisSpec{B, E}));
  EXPECT_TRUE(at::allclose(y.array(), at::linear(h.reshape({2, 6}), proj.weight.array().reshape({4, 6}))));
  // Init scale: truncated normal with std ~ 1/sqrt(|In|).
  nn::Linear big = nn::Linear::init({Axis("in", 400)}, {Axis("out", 500)}, random::Key(2));
  EXPECT_NEAR(haliax::std(big.weight).item(), 0.98658 / std::sqrt(400.0),
              0.0005);  // N(0,1) truncated at 3 has std 0.98658
  nn::Linear in_first = nn::Linear::init({E}, {M}, random::Key(0), nn::LinearOptions().set_out_first(false));
  EXPECT_EQ(in_first.weight.axes(), (AxisSpec{E, M}));
}

TEST(Embedding, EmbedAndUnembed) {
  nn::Embedding emb = to_double(nn::Embedding::init(V, {E}, random::Key(3)));
  at::Tensor ids = rand_int({2, 3}, 9, 4);
  NamedArray x = emb.embed(NamedArray(ids, {B, P}));
  EXPECT_EQ(x.axes(), (AxisSpec{B, P, E}));
  EXPECT_TRUE(at::equal(x.array(), at::embedding(emb.weight.array(), ids)));
  expect_same_value_and_grad(
      {randn({2, 3, 4}, 5), emb.weight.array()},
      [&](const auto& t) {
        nn::Embedding e{V, {E}, NamedArray(t[1], emb.weight.axes())};
        return e.unembed(NamedArray(t[0], {B, P, E})).array();
      },
      [](const auto& t) { return at::matmul(t[0], t[1].t()); });
}

// EmbedGradient::kRows: the looked-up rows as a sparse gradient, each row once. Alone it is kDense's gradient as a
// sparse tensor; with a dense gradient of the same table in the same backward (a tied head) the sum is kDense's, bit
// for bit (in f32 and bf16, ids repeated); under create_graph it is dense and differentiable (a Hessian-vector
// product equals kDense's, its own rows sparse again).
TEST(Embedding, RowGradientsAreTheDenseGradientsRowsAndTiedSumsAreTheSameBits) {
  const Axis Vb("vocab", 50), Eb("embed", 8);
  const at::Tensor ids = at::tensor({3, 7, 3, 49, 0, 7, 3, 12, 12, 3, 5, 3}, at::kLong).reshape({3, 4});
  const NamedArray id(ids, {Axis("batch", 3), Axis("pos", 4)});
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dt));
    const at::Tensor table = randn({50, 8}, 11).to(dt);
    const at::Tensor r = randn({3, 4, 8}, 12).to(dt), s = randn({3, 4, 50}, 13).to(dt);
    // loss = sum(embed(ids) * r) (+ sum(unembed(h) * s), h = the embedding itself: the table twice)
    auto grad = [&](nn::EmbedGradient how, bool tied) {
      nn::Embedding e{Vb, {Eb}, NamedArray(table.clone().requires_grad_(true), {Vb, Eb})};
      NamedArray x = e.embed(id, how);
      at::Tensor loss = (x.array().to(at::kFloat) * r.to(at::kFloat)).sum();
      if (tied) loss = loss + (e.unembed(x).array().to(at::kFloat) * s.to(at::kFloat)).sum();
      EXPECT_TRUE(at::equal(x.array(), at::embedding(table, ids)));
      loss.backward();
      return e.weight.array().grad();
    };
    const at::Tensor dense = grad(nn::EmbedGradient::kDense, false), rows = grad(nn::EmbedGradient::kRows, false);
    ASSERT_TRUE(rows.is_sparse());
    EXPECT_TRUE(at::equal(rows._indices(), at::tensor({0, 3, 5, 7, 12, 49}, at::kLong).unsqueeze(0)));  // each once
    EXPECT_TRUE(at::equal(rows.to_dense(), dense));
    const at::Tensor tied_dense = grad(nn::EmbedGradient::kDense, true),
                     tied_rows = grad(nn::EmbedGradient::kRows, true);
    ASSERT_FALSE(tied_rows.is_sparse());
    EXPECT_TRUE(at::equal(tied_rows, tied_dense));
  }
  // A Vocab that is not the table's (another size) is refused as take() refuses it.
  nn::Embedding wrong{Axis("vocab", 49), {Eb}, NamedArray(randn({50, 8}, 17), {Vb, Eb})};
  EXPECT_ANY_THROW(wrong.embed(id, nn::EmbedGradient::kRows));
  // Second order: d/dw (grad(loss) . v) with loss = sum(embed(ids)^2 * r).
  const at::Tensor table = randn({50, 8}, 14).to(at::kDouble), r = randn({3, 4, 8}, 15).to(at::kDouble);
  const at::Tensor v = randn({50, 8}, 16).to(at::kDouble);
  auto hvp = [&](nn::EmbedGradient how) {
    nn::Embedding e{Vb, {Eb}, NamedArray(table.clone().requires_grad_(true), {Vb, Eb})};
    at::Tensor loss = (e.embed(id, how).array().square() * r).sum();
    at::Tensor g = torch::autograd::grad({loss}, {e.weight.array()}, {}, true, /*create_graph=*/true)[0];
    EXPECT_FALSE(g.is_sparse());
    at::Tensor h = torch::autograd::grad({(g * v).sum()}, {e.weight.array()})[0];
    return h.is_sparse() ? h.to_dense() : h;  // the second pass is a first-order one: rows again
  };
  EXPECT_TRUE(at::equal(hvp(nn::EmbedGradient::kRows), hvp(nn::EmbedGradient::kDense)));
}

TEST(Normalization, LayerNormFastAndGeneralPathsMatchATen) {
  nn::LayerNorm ln = to_double(nn::LayerNorm::init({E}));
  ln.weight = NamedArray(randn({4}, 6), {E});
  ln.bias = NamedArray(randn({4}, 7), {E});
  at::Tensor x = randn({2, 3, 4}, 8);
  auto ref = [](const auto& t) { return at::layer_norm(t[0], {4}, t[1], t[2], 1e-5); };
  // Trailing axis: the fused kernel.
  expect_same_value_and_grad(
      {x, ln.weight->array(), ln.bias->array()},
      [&](const auto& t) {
        nn::LayerNorm l{{E}, NamedArray(t[1], {E}), NamedArray(t[2], {E}), 1e-5};
        return l(NamedArray(t[0], {B, P, E})).array();
      },
      ref);
  // Axis not last: the composed path, same numbers.
  expect_same_value_and_grad(
      {x, ln.weight->array(), ln.bias->array()},
      [&](const auto& t) {
        nn::LayerNorm l{{E}, NamedArray(t[1], {E}), NamedArray(t[2], {E}), 1e-5};
        NamedArray xe = rearrange(NamedArray(t[0], {B, P, E}), {E, B, P});
        return rearrange(l(xe), {B, P, E}).array();
      },
      ref);
}

TEST(Normalization, RmsNorm) {
  at::Tensor x = randn({2, 3, 4}, 9), w = randn({4}, 10);
  expect_same_value_and_grad(
      {x, w},
      [](const auto& t) {
        nn::RmsNorm n{{E}, NamedArray(t[1], {E}), std::nullopt, 1e-6};
        return n(NamedArray(t[0], {B, P, E})).array();
      },
      [](const auto& t) { return t[0] * at::rsqrt(t[0].square().mean(-1, true) + 1e-6) * t[1]; });
}

TEST(Dropout, KeyedDeterministicScaledAndOffAtInference) {
  nn::Dropout drop{0.25};
  NamedArray x = ones({Axis("n", 100000)}, at::kDouble);
  NamedArray a = drop(x, random::Key(1)), b = drop(x, random::Key(1)), c = drop(x, random::Key(2));
  EXPECT_TRUE(array_equal(a, b));
  EXPECT_FALSE(array_equal(a, c));
  double kept = (a.array() > 0).sum().item<double>() / 100000.0;
  EXPECT_NEAR(kept, 0.75, 0.01);
  EXPECT_NEAR(a.array().max().item<double>(), 1.0 / 0.75, 1e-12);
  EXPECT_TRUE(array_equal(drop(x, std::nullopt, /*inference=*/true), x));
  EXPECT_TRUE(array_equal(nn::Dropout{0.0}(x, std::nullopt), x));
  EXPECT_VALUE_ERROR(drop(x, std::nullopt), "Dropout needs a random key");
  // A broadcast axis shares one mask along it.
  nn::Dropout shared{0.5, {P}};
  NamedArray y = shared(ones({B, P, E}), random::Key(3));
  EXPECT_TRUE(at::equal(y.array().select(1, 0), y.array().select(1, 2)));
}

TEST(MLP, LayersAndAxisNames) {
  nn::MLP mlp = nn::MLP::init({E}, {Axis("out", 2)}, 5, 2, random::Key(4));
  ASSERT_EQ(mlp.layers.size(), 3u);
  EXPECT_EQ(mlp.layers[0].Out, (AxisSpec{Axis("mlp", 5)}));
  EXPECT_EQ(mlp.layers[1].Out, (AxisSpec{Axis("mlp2", 5)}));
  EXPECT_EQ(mlp.layers[2].In, (AxisSpec{Axis("mlp2", 5)}));
  NamedArray x(randn({2, 4}, 11).to(at::kFloat), {B, E});
  NamedArray y = mlp(x);
  EXPECT_EQ(y.axes(), (AxisSpec{B, Axis("out", 2)}));
  NamedArray manual = mlp.layers[2](nn::relu(mlp.layers[1](nn::relu(mlp.layers[0](x)))));
  EXPECT_TRUE(array_equal(y, manual));
  auto params = nn::named_parameters(mlp);
  EXPECT_EQ(params[0].first.path, "layers.0.weight");
  EXPECT_EQ(params.back().first.path, "layers.2.bias");
}

TEST(Stacked, FoldMatchesAManualLoopWithGradients) {
  nn::Stacked<Block> stack =
      nn::Stacked<Block>::init(L, random::Key(5), [](const random::Key& k) { return Block::init(k); });
  stack = to_double(stack);
  EXPECT_EQ(stack.stacked.up.weight.axes(), (AxisSpec{L, M, E}));
  // Layer i was initialised with key.split(L)[i].
  Block third = Block::init(random::Key(5).split(3)[2]);
  EXPECT_TRUE(at::allclose(stack.stacked.up.weight.array()[2], third.up.weight.array().to(at::kDouble)));
  at::Tensor x = randn({2, 3, 4}, 12);
  std::vector<at::Tensor> inputs{x};
  for (auto& [info, p] : nn::named_parameters(stack)) inputs.push_back(p.array());
  auto rebuild = [&](const std::vector<at::Tensor>& t) {
    nn::Stacked<Block> s = stack;
    size_t k = 1;
    nn::for_each_parameter(s, [&](const nn::ParamInfo&, NamedArray& p) { p = NamedArray(t[k++], p.axes()); });
    return s;
  };
  expect_same_value_and_grad(
      inputs,
      [&](const auto& t) {
        return rebuild(t).fold(NamedArray(t[0], {B, P, E})).array();
      },
      [&](const auto& t) {
        // Positional reference: index each stacked parameter per layer.
        at::Tensor h = t[0];
        for (int64_t i = 0; i < 3; ++i) {
          at::Tensor n = at::layer_norm(h, {4}, t[1][i], t[2][i], 1e-5);
          at::Tensor u = at::relu(at::linear(n, t[3][i], t[4][i]));
          h = h + at::linear(u, t[5][i], t[6][i]);
        }
        return h;
      });
}

TEST(StateDict, PathsUnstackingRoundTripAndErrors) {
  struct Model {
    nn::Embedding wte;
    nn::Stacked<Block> h;
    void visit(nn::ParamVisitor& v) {
      v("wte", wte);
      v("h", h);
    }
  };
  auto make = [](uint64_t seed) {
    random::Key k(seed);
    return Model{nn::Embedding::init(V, {E}, k.fold_in(0)),
                 nn::Stacked<Block>::init(L, k.fold_in(1), [](const random::Key& kk) { return Block::init(kk); })};
  };
  Model m = make(6);
  nn::StateDict sd = nn::to_state_dict(m);
  std::vector<std::string> keys;
  for (auto& [k, t] : sd) keys.push_back(k);
  ASSERT_EQ(keys.size(), 1u + 3u * 6u);
  EXPECT_EQ(keys[0], "wte.weight");
  EXPECT_EQ(keys[1], "h.0.ln.weight");
  EXPECT_EQ(keys[6], "h.0.down.bias");
  EXPECT_EQ(keys[7], "h.1.ln.weight");
  EXPECT_EQ(sd[1].second.sizes(), (at::IntArrayRef{4}));
  EXPECT_EQ(nn::parameter_count(m), 9 * 4 + 3 * (4 + 4 + 24 + 6 + 24 + 4));
  // Load into a differently initialised model: every parameter becomes equal.
  Model other = make(7);
  nn::from_state_dict(other, sd);
  auto pa = nn::named_parameters(m), pb = nn::named_parameters(other);
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(array_equal(pa[i].second, pb[i].second)) << pa[i].first.path;
  // Errors name the key.
  nn::StateDict missing(sd.begin() + 1, sd.end());
  EXPECT_VALUE_ERROR(nn::from_state_dict(other, missing), "State dict is missing key 'wte.weight'");
  nn::StateDict extra = sd;
  extra.emplace_back("h.3.ln.weight", at::zeros({4}));
  EXPECT_VALUE_ERROR(nn::from_state_dict(other, extra), "unexpected key 'h.3.ln.weight'");
  nn::StateDict wrong = sd;
  wrong[0].second = at::zeros({9, 5});
  EXPECT_VALUE_ERROR(nn::from_state_dict(other, wrong), "'wte.weight' has shape (9, 5) but the model expects (9, 4)");
}

TEST(Stacked, GradientCheckpointingGivesIdenticalValuesAndGradients) {
  nn::Stacked<Block> plain =
      nn::Stacked<Block>::init(L, random::Key(8), [](const random::Key& k) { return Block::init(k); });
  plain = to_double(plain);
  nn::Stacked<Block> ckpt = plain;
  ckpt.gradient_checkpointing = true;
  at::Tensor x = randn({2, 3, 4}, 13);
  std::vector<at::Tensor> inputs{x};
  for (auto& [info, p] : nn::named_parameters(plain)) inputs.push_back(p.array());
  auto run = [&](const nn::Stacked<Block>& proto) {
    return [&proto](const std::vector<at::Tensor>& t) {
      nn::Stacked<Block> s = proto;
      size_t k = 1;
      nn::for_each_parameter(s, [&](const nn::ParamInfo&, NamedArray& p) { p = NamedArray(t[k++], p.axes()); });
      // A layer function that captures by value (it is called again during backward).
      double scale = 0.5;
      return s
          .fold(NamedArray(t[0], {B, P, E}),
                [scale](const Block& b, const NamedArray& h, int64_t i) { return b(h) * (scale + double(i)); })
          .array();
    };
  };
  // Bit-identical: the recomputation runs exactly the same kernels on the same inputs.
  expect_same_value_and_grad(inputs, run(ckpt), run(plain), /*tol=*/0.0);
}
