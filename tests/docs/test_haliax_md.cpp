// The code of docs/haliax.md, as tests. Every block between `// [doc:name]` and `// [/doc:name]` appears
// verbatim (dedented) as a ```cpp block of the tutorial (test_docs_sync.cpp enforces it both ways); the checks
// after each block compare its results with the same computation written in positional ATen, with fixed
// tolerances (float32 inputs, 1e-5 unless stated), and check axis names and the quoted error messages.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "docs/haliax_md_quotes.h"
#include "haliax/testing.h"  // EXPECT_VALUE_ERROR

// clang-format off
// [doc:setup]
#include "haliax/haliax.h"

namespace hax = haliax;

const hax::Axis Batch{"batch", 2};
const hax::Axis Pos{"position", 5};
const hax::Axis Embed{"embed", 4};
const hax::Axis KPos = Pos.alias("key_position");  // same size, another name
// [/doc:setup]
// clang-format on

namespace {

constexpr double kTol = 1e-5;

bool all_close(const at::Tensor& a, const at::Tensor& b, double tol = kTol) {
  return a.sizes() == b.sizes() && at::allclose(a, b, tol, tol);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const hax::ValueError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(HaliaxDoc, AxesAndNamedArrayFromTensor) {
  // clang-format off
  // [doc:named_array]
  at::Tensor t = at::arange(10, at::kFloat).reshape({2, 5});
  hax::NamedArray x(t, {Batch, Pos});                        // sizes are checked against t's shape
  hax::NamedArray y = hax::named(t, {"batch", "position"});  // sizes are taken from t
  int64_t n = x.axis_size("position");                       // 5
  at::Tensor same = x.array();                               // the tensor itself, not a copy
  // [/doc:named_array]
  // clang-format on
  EXPECT_EQ(x.axes(), (hax::AxisSpec{Batch, Pos}));
  EXPECT_EQ(y.axes(), x.axes());
  EXPECT_EQ(n, 5);
  EXPECT_TRUE(same.is_same(t));
  EXPECT_EQ(x.str(), "NamedArray(dtype=float32, axes={'batch': 2, 'position': 5})");
  EXPECT_EQ(KPos, (hax::Axis{"key_position", 5}));
  EXPECT_NE(KPos, Pos);
  EXPECT_EQ(error_of([&] { (void)hax::NamedArray(t, {Pos, Batch}); }), haliax_md::kShapeMismatch);
}

TEST(HaliaxDoc, ElementwiseOpsBroadcastByName) {
  // clang-format off
  // [doc:broadcasting]
  hax::NamedArray x = hax::random::normal(hax::random::Key(0), {Batch, Pos, Embed});
  hax::NamedArray bias = hax::random::normal(hax::random::Key(1), {Embed});
  hax::NamedArray scale = hax::random::normal(hax::random::Key(2), {Embed, Batch});  // any order
  hax::NamedArray y = hax::tanh(x * scale + bias) - 1.0;  // {batch, position, embed}
  // [/doc:broadcasting]
  // clang-format on
  EXPECT_EQ(y.axes(), (hax::AxisSpec{Batch, Pos, Embed}));
  at::Tensor s = scale.array().t().unsqueeze(1);  // (batch, 1, embed)
  EXPECT_TRUE(all_close(y.array(), at::tanh(x.array() * s + bias.array()) - 1.0));
}

TEST(HaliaxDoc, NoSubsetRelationshipIsAnError) {
  // clang-format off
  // [doc:no_subset]
  hax::NamedArray a = hax::zeros({Batch, Pos});
  hax::NamedArray b = hax::ones({Batch, Embed});
  std::string message;
  try {
    hax::NamedArray bad = a + b;  // neither {batch, position} nor {batch, embed} contains the other
  } catch (const hax::ValueError& e) {
    message = e.what();
  }
  // Say what you mean instead: add the missing axis explicitly.
  hax::NamedArray c = hax::broadcast_axis(a, {Embed}) + b;  // {embed, batch, position}
  // [/doc:no_subset]
  // clang-format on
  EXPECT_EQ(message, haliax_md::kNoSubset);
  EXPECT_EQ(c.axes(), (hax::AxisSpec{Embed, Batch, Pos}));
  EXPECT_TRUE(at::equal(c.array(), at::ones({4, 2, 5})));
}

TEST(HaliaxDoc, ReductionsByAxis) {
  // clang-format off
  // [doc:reductions]
  hax::NamedArray x = hax::random::normal(hax::random::Key(0), {Batch, Pos, Embed});
  hax::NamedArray per_token = hax::sum(x, Embed);            // {batch, position}
  hax::NamedArray per_example = hax::mean(x, {Pos, Embed});  // {batch}
  double peak = hax::max(x).item();                          // over everything: a 0-d array
  hax::NamedArray best = hax::argmax(x, Embed);              // {batch, position}, int64
  // Reduce only where a mask is true: the mean over the first three positions.
  hax::NamedArray valid = hax::arange(Pos) < 3;              // {position}, bool
  hax::NamedArray prefix_mean = hax::mean(x, Pos, valid);    // {batch, embed}
  // [/doc:reductions]
  // clang-format on
  const at::Tensor& t = x.array();
  EXPECT_EQ(per_token.axes(), (hax::AxisSpec{Batch, Pos}));
  EXPECT_TRUE(all_close(per_token.array(), t.sum(2)));
  EXPECT_EQ(per_example.axes(), (hax::AxisSpec{Batch}));
  EXPECT_TRUE(all_close(per_example.array(), t.mean({1, 2})));
  EXPECT_DOUBLE_EQ(peak, t.max().item<double>());
  EXPECT_EQ(best.axes(), (hax::AxisSpec{Batch, Pos}));
  EXPECT_EQ(best.dtype(), at::kLong);
  EXPECT_TRUE(at::equal(best.array(), t.argmax(2)));
  EXPECT_EQ(valid.dtype(), at::kBool);
  EXPECT_EQ(prefix_mean.axes(), (hax::AxisSpec{Batch, Embed}));
  EXPECT_TRUE(all_close(prefix_mean.array(), t.narrow(1, 0, 3).mean(1)));
}

TEST(HaliaxDoc, DotContractsNamedAxes) {
  // clang-format off
  // [doc:dot]
  const hax::Axis Hidden{"hidden", 6};
  hax::NamedArray x = hax::random::normal(hax::random::Key(0), {Batch, Pos, Embed});
  hax::NamedArray w = hax::random::normal(hax::random::Key(1), {Hidden, Embed});
  hax::NamedArray h = hax::dot(x, w, Embed);                          // {batch, position, hidden}
  hax::NamedArray sim = hax::dot(x, x.rename({{Pos, KPos}}), Embed);  // {batch, position, key_position}
  hax::NamedArray hidden_first = hax::dot(x, w, Embed, hax::AxisSelection{Hidden, "..."});
  hax::NamedArray sum_sq = hax::dot(x, x, hax::all_axes);             // 0-d: the sum of squares
  // [/doc:dot]
  // clang-format on
  const at::Tensor& t = x.array();
  EXPECT_EQ(h.axes(), (hax::AxisSpec{Batch, Pos, Hidden}));
  EXPECT_TRUE(all_close(h.array(), at::matmul(t, w.array().t())));
  EXPECT_EQ(sim.axes(), (hax::AxisSpec{Batch, Pos, KPos}));
  EXPECT_TRUE(all_close(sim.array(), at::bmm(t, t.transpose(1, 2))));
  EXPECT_EQ(hidden_first.axes(), (hax::AxisSpec{Hidden, Batch, Pos}));
  EXPECT_TRUE(all_close(hidden_first.array(), at::matmul(t, w.array().t()).permute({2, 0, 1})));
  EXPECT_EQ(sum_sq.ndim(), 0);
  EXPECT_NEAR(sum_sq.item(), (t * t).sum().item<double>(), kTol);
}

TEST(HaliaxDoc, RearrangeRenameFlattenUnflatten) {
  // clang-format off
  // [doc:rearrange]
  hax::NamedArray x = hax::random::normal(hax::random::Key(0), {Batch, Pos, Embed});
  hax::NamedArray t = hax::rearrange(x, {Embed, "..."});                 // {embed, batch, position}
  hax::NamedArray r = hax::rename(x, {{Pos, KPos}});                     // {batch, key_position, embed}
  hax::NamedArray tokens = hax::flatten_axes(x, {Batch, Pos}, "token");  // {token: 10, embed}
  const hax::Axis Heads{"heads", 2}, HeadSize{"head_size", 2};
  hax::NamedArray heads = hax::unflatten_axis(x, Embed, {Heads, HeadSize});  // {batch, position, heads, head_size}
  hax::NamedArray e = hax::rearrange(x, "b p (h d) -> b h p d", {{"h", 2}});  // {batch, h, position, d}
  // [/doc:rearrange]
  // clang-format on
  hax::NamedArray merged = hax::flatten_axes(heads, {Heads, HeadSize}, Embed);
  const at::Tensor& a = x.array();
  EXPECT_EQ(t.axes(), (hax::AxisSpec{Embed, Batch, Pos}));
  EXPECT_TRUE(at::equal(t.array(), a.permute({2, 0, 1})));
  EXPECT_EQ(r.axes(), (hax::AxisSpec{Batch, KPos, Embed}));
  EXPECT_TRUE(r.array().is_same(a));
  EXPECT_EQ(tokens.axes(), (hax::AxisSpec{hax::Axis{"token", 10}, Embed}));
  EXPECT_TRUE(at::equal(tokens.array(), a.reshape({10, 4})));
  EXPECT_EQ(heads.axes(), (hax::AxisSpec{Batch, Pos, Heads, HeadSize}));
  EXPECT_TRUE(at::equal(heads.array(), a.reshape({2, 5, 2, 2})));
  EXPECT_TRUE(hax::array_equal(merged, x));
  EXPECT_EQ(e.axes(), (hax::AxisSpec{Batch, hax::Axis{"h", 2}, Pos, hax::Axis{"d", 2}}));
  EXPECT_TRUE(at::equal(e.array(), a.reshape({2, 5, 2, 2}).permute({0, 2, 1, 3})));
}

TEST(HaliaxDoc, IndexingSliceTakeSelection) {
  // clang-format off
  // [doc:indexing]
  hax::NamedArray x = hax::random::normal(hax::random::Key(0), {Batch, Pos, Embed});
  hax::NamedArray first = x[{{"batch", 0}}];                              // {position, embed}
  hax::NamedArray middle = hax::slice(x, Pos, 1, 3);                      // {batch, position: 3, embed}
  hax::NamedArray last_two = x[{{Pos, hax::Slice(-2, std::nullopt)}}];    // {batch, position: 2, embed}
  hax::NamedArray one = x[{{"batch", 1}, {"position", 4}, {"embed", 0}}];  // 0-d
  const hax::Axis Pick{"pick", 3};
  hax::NamedArray ids(at::tensor({3, 0, 3}, at::kLong), {Pick});
  hax::NamedArray picked = hax::take(x, Embed, ids);  // {batch, position, pick}
  hax::NamedArray same = x[{{"embed", ids}}];         // the same, as a selection
  // [/doc:indexing]
  // clang-format on
  const at::Tensor& a = x.array();
  EXPECT_EQ(first.axes(), (hax::AxisSpec{Pos, Embed}));
  EXPECT_TRUE(at::equal(first.array(), a[0]));
  EXPECT_EQ(middle.axes(), (hax::AxisSpec{Batch, Pos.resize(3), Embed}));
  EXPECT_TRUE(at::equal(middle.array(), a.narrow(1, 1, 3)));
  EXPECT_EQ(last_two.axes(), (hax::AxisSpec{Batch, Pos.resize(2), Embed}));
  EXPECT_TRUE(at::equal(last_two.array(), a.narrow(1, 3, 2)));
  EXPECT_EQ(one.ndim(), 0);
  EXPECT_EQ(one.item<float>(), a[1][4][0].item<float>());
  EXPECT_EQ(picked.axes(), (hax::AxisSpec{Batch, Pos, Pick}));
  EXPECT_TRUE(at::equal(picked.array(), a.index_select(2, at::tensor({3, 0, 3}, at::kLong))));
  EXPECT_TRUE(hax::array_equal(same, picked));
}

TEST(HaliaxDoc, FunctionalUpdatesAndDynamicSlices) {
  // clang-format off
  // [doc:updates]
  hax::NamedArray x = hax::zeros({Batch, Pos});
  hax::NamedArray y = x.at({{"batch", 0}, {"position", hax::Slice(1, 3)}}).set(1.0);  // x itself is unchanged
  const hax::Axis Hit{"hit", 3};
  hax::NamedArray hits(at::tensor({4, 0, 4}, at::kLong), {Hit});
  hax::NamedArray counts = x.at({{"position", hits}}).add(1.0);  // repeats add up: position 4 gets 2
  hax::NamedArray window = y[{{"position", hax::ds(3, 4)}}];      // {batch, position: 4}; past the end reads 0
  auto [best, where_best] = hax::top_k(counts, Pos, 2);          // {batch, position: 2}, values and indices
  // [/doc:updates]
  // clang-format on
  EXPECT_TRUE(hax::array_equal(x, hax::zeros({Batch, Pos})));
  at::Tensor ref_y = at::zeros({2, 5});
  ref_y[0].narrow(0, 1, 2).fill_(1.0);
  EXPECT_TRUE(at::equal(y.array(), ref_y));
  at::Tensor ref_counts = at::zeros({2, 5});
  ref_counts.select(1, 0).fill_(1.0);
  ref_counts.select(1, 4).fill_(2.0);
  EXPECT_TRUE(at::equal(counts.array(), ref_counts));
  EXPECT_EQ(window.axes(), (hax::AxisSpec{Batch, Pos.resize(4)}));
  at::Tensor ref_window = at::zeros({2, 4});
  ref_window.narrow(1, 0, 2).copy_(ref_y.narrow(1, 3, 2));
  EXPECT_TRUE(at::equal(window.array(), ref_window));
  EXPECT_EQ(best.axes(), (hax::AxisSpec{Batch, Pos.resize(2)}));
  EXPECT_TRUE(at::equal(best.array(), at::tensor({2.0f, 1.0f, 2.0f, 1.0f}).reshape({2, 2})));
  EXPECT_TRUE(at::equal(where_best.array(), at::tensor({4, 0, 4, 0}, at::kLong).reshape({2, 2})));
}

TEST(HaliaxDoc, ExplicitRandomKeys) {
  // clang-format off
  // [doc:random]
  hax::random::Key key(42);  // jax.random.PRNGKey(42)
  auto [init_key, data_key] = key.split2();
  std::vector<hax::random::Key> layer_keys = init_key.split(3);  // one per layer
  hax::random::Key step_key = data_key.fold_in(7);                // e.g. from the step number
  hax::NamedArray noise = hax::random::normal(step_key, {Batch, Embed});
  hax::NamedArray again = hax::random::normal(step_key, {Batch, Embed});  // the same numbers
  hax::NamedArray u = hax::random::uniform(layer_keys[0], {Pos}, at::kFloat, -1.0, 1.0);
  hax::NamedArray coin = hax::random::bernoulli(layer_keys[1], {Batch, Pos}, 0.5);  // bool
  hax::NamedArray ids = hax::random::randint(layer_keys[2], {Batch, Pos}, 0, 100);  // int64
  // [/doc:random]
  // clang-format on
  // The keys are JAX's (jax 0.10, threefry, partitionable): jax.random.split(PRNGKey(42), 3).
  EXPECT_EQ(init_key, hax::random::Key(1832780943u, 270669613u));
  EXPECT_EQ(data_key, hax::random::Key(64467757u, 2916123636u));
  EXPECT_EQ(key.fold_in(7), hax::random::Key(2547012911u, 1371500959u));
  EXPECT_EQ(step_key, data_key.split(8)[7]);  // fold_in(i) == split(n)[i]
  EXPECT_EQ(layer_keys.size(), 3u);
  EXPECT_NE(layer_keys[0], layer_keys[1]);
  EXPECT_EQ(noise.axes(), (hax::AxisSpec{Batch, Embed}));
  EXPECT_TRUE(hax::array_equal(noise, again));
  EXPECT_FALSE(hax::array_equal(noise, hax::random::normal(data_key.fold_in(8), {Batch, Embed})));
  EXPECT_EQ(u.dtype(), at::kFloat);
  EXPECT_GE(u.array().min().item<double>(), -1.0);
  EXPECT_LT(u.array().max().item<double>(), 1.0);
  EXPECT_EQ(coin.dtype(), at::kBool);
  EXPECT_EQ(coin.axes(), (hax::AxisSpec{Batch, Pos}));
  EXPECT_EQ(ids.dtype(), at::kLong);
  EXPECT_GE(ids.array().min().item<int64_t>(), 0);
  EXPECT_LT(ids.array().max().item<int64_t>(), 100);
  // And normal() is a standard normal.
  hax::NamedArray many = hax::random::normal(step_key, {hax::Axis{"n", 200000}});
  EXPECT_NEAR(hax::mean(many).item(), 0.0, 0.01);
  EXPECT_NEAR(hax::std(many).item(), 1.0, 0.01);
}

TEST(HaliaxDoc, SoftmaxAndCrossEntropy) {
  // clang-format off
  // [doc:nn_functions]
  const hax::Axis Vocab{"vocab", 7};
  hax::NamedArray logits = hax::random::normal(hax::random::Key(0), {Batch, Pos, Vocab});
  hax::NamedArray probs = hax::nn::softmax(logits, Vocab);  // sums to 1 over vocab
  hax::NamedArray targets = hax::random::randint(hax::random::Key(1), {Batch, Pos}, 0, Vocab.size);
  hax::NamedArray loss = hax::nn::cross_entropy_loss(logits, Vocab, targets);  // 0-d: the mean
  hax::NamedArray per_token =  // {batch, position}
      hax::nn::cross_entropy_loss(logits, Vocab, targets, hax::nn::Reduction::kNone);
  hax::NamedArray soft = hax::nn::cross_entropy_loss(logits, Vocab, hax::nn::one_hot(targets, Vocab));
  hax::NamedArray masked =  // only the first four positions count
      hax::nn::cross_entropy_loss(logits, Vocab, targets, hax::nn::Reduction::kMean, hax::arange(Pos) < 4);
  // [/doc:nn_functions]
  // clang-format on
  const at::Tensor& l = logits.array();
  const at::Tensor& y = targets.array();
  EXPECT_EQ(probs.axes(), logits.axes());
  EXPECT_TRUE(all_close(probs.array(), at::softmax(l, 2)));
  EXPECT_TRUE(all_close(hax::sum(probs, Vocab).array(), at::ones({2, 5})));
  EXPECT_EQ(loss.ndim(), 0);
  EXPECT_NEAR(loss.item(), at::cross_entropy_loss(l.reshape({10, 7}), y.reshape({10})).item<double>(), kTol);
  EXPECT_EQ(per_token.axes(), (hax::AxisSpec{Batch, Pos}));
  at::Tensor ref_tokens = at::cross_entropy_loss(l.permute({0, 2, 1}), y, {}, at::Reduction::None);
  EXPECT_TRUE(all_close(per_token.array(), ref_tokens));
  EXPECT_NEAR(soft.item(), loss.item(), kTol);
  EXPECT_NEAR(masked.item(), ref_tokens.narrow(1, 0, 4).mean().item<double>(), kTol);
}

namespace {

// clang-format off
// [doc:module]
struct TinyMlp {
  hax::nn::LayerNorm ln;
  hax::nn::Linear up, down;

  static TinyMlp init(const hax::Axis& Embed, const hax::Axis& Hidden, const hax::random::Key& key) {
    auto [k_up, k_down] = key.split2();
    return TinyMlp{hax::nn::LayerNorm::init({Embed}), hax::nn::Linear::init({Embed}, {Hidden}, k_up),
                   hax::nn::Linear::init({Hidden}, {Embed}, k_down)};
  }

  // x: {..., embed} -> {..., embed}, with a residual connection
  hax::NamedArray operator()(const hax::NamedArray& x) const { return x + down(hax::nn::gelu(up(ln(x)))); }

  void visit(hax::nn::ParamVisitor& v) {
    v("ln", ln);
    v("up", up);
    v("down", down);
  }
};
// [/doc:module]
// clang-format on

// TinyMlp in positional ATen, from its parameters as plain tensors: (ln_w, ln_b, up_w, up_b, down_w, down_b).
at::Tensor tiny_mlp_ref(const at::Tensor& x, const std::vector<at::Tensor>& p) {
  at::Tensor n = at::layer_norm(x, {x.size(-1)}, p[0], p[1], 1e-5);
  return x + at::linear(at::gelu(at::linear(n, p[2], p[3]), "tanh"), p[4], p[5]);
}

std::vector<at::Tensor> tensors_of(TinyMlp& m) {
  std::vector<at::Tensor> out;
  for (auto& [info, p] : hax::nn::named_parameters(m)) out.push_back(p.array().detach().clone());
  return out;
}

}  // namespace

TEST(HaliaxDoc, ModulesLinearEmbeddingLayerNormMlp) {
  // clang-format off
  // [doc:modules]
  const hax::Axis Vocab{"vocab", 7}, Hidden{"hidden", 16};
  std::vector<hax::random::Key> keys = hax::random::Key(0).split(2);
  hax::nn::Embedding wte = hax::nn::Embedding::init(Vocab, {Embed}, keys[0]);
  TinyMlp mlp = TinyMlp::init(Embed, Hidden, keys[1]);
  hax::NamedArray tokens = hax::random::randint(hax::random::Key(1), {Batch, Pos}, 0, Vocab.size);
  hax::NamedArray h = wte(tokens);                // {batch, position, embed}
  hax::NamedArray logits = wte.unembed(mlp(h));  // {batch, position, vocab}: a tied LM head
  // Autograd is libtorch's: make the parameters leaves, compute a loss, call backward().
  hax::nn::requires_grad_(mlp);
  hax::NamedArray loss = hax::nn::cross_entropy_loss(wte.unembed(mlp(h)), Vocab, tokens);
  loss.array().backward();
  hax::NamedArray grad = mlp.up.weight.grad();  // {hidden, embed}, like the weight
  // [/doc:modules]
  // clang-format on
  EXPECT_EQ(mlp.up.weight.axes(), (hax::AxisSpec{Hidden, Embed}));  // (Out, In): PyTorch's layout
  EXPECT_EQ(mlp.up.bias->axes(), (hax::AxisSpec{Hidden}));
  EXPECT_EQ(wte.weight.axes(), (hax::AxisSpec{Vocab, Embed}));
  at::Tensor emb = wte.weight.array();
  EXPECT_EQ(h.axes(), (hax::AxisSpec{Batch, Pos, Embed}));
  EXPECT_TRUE(at::equal(h.array(), at::embedding(emb, tokens.array())));
  // The same network in ATen, with its own leaves for the gradient.
  std::vector<at::Tensor> p = tensors_of(mlp);
  for (at::Tensor& t : p) t.requires_grad_(true);
  at::Tensor ref_logits = at::matmul(tiny_mlp_ref(h.array(), p), emb.t());
  EXPECT_EQ(logits.axes(), (hax::AxisSpec{Batch, Pos, Vocab}));
  EXPECT_TRUE(all_close(logits.array(), ref_logits.detach()));
  at::Tensor ref_loss = at::cross_entropy_loss(ref_logits.reshape({10, 7}), tokens.array().reshape({10}));
  EXPECT_NEAR(loss.item(), ref_loss.item<double>(), kTol);
  ref_loss.backward();
  EXPECT_EQ(grad.axes(), (hax::AxisSpec{Hidden, Embed}));
  EXPECT_TRUE(all_close(grad.array(), p[2].grad()));
  // Haliax's init: Linear weights are truncated normals scaled by 1/sqrt(|In|), biases zero, LayerNorm 1 and 0.
  EXPECT_LE(mlp.up.weight.array().abs().max().item<double>(), 3.0 / std::sqrt(4.0));
  EXPECT_TRUE(at::equal(mlp.up.bias->array(), at::zeros({16})));
  EXPECT_TRUE(at::equal(mlp.ln.weight->array(), at::ones({4})));
  // The built-in nn::MLP mentioned in the text: depth hidden layers of the given width.
  hax::nn::MLP ff = hax::nn::MLP::init({Embed}, {Embed}, 16, 2, hax::random::Key(2));
  hax::NamedArray f = ff(h);
  EXPECT_EQ(f.axes(), h.axes());
  EXPECT_TRUE(hax::array_equal(f, ff.layers[2](hax::nn::relu(ff.layers[1](hax::nn::relu(ff.layers[0](h)))))));
}

TEST(HaliaxDoc, ParameterVisitorAndStateDict) {
  // clang-format off
  // [doc:visitor]
  const hax::Axis Hidden{"hidden", 16};
  TinyMlp mlp = TinyMlp::init(Embed, Hidden, hax::random::Key(0));
  std::ostringstream listing;
  for (const auto& [info, param] : hax::nn::named_parameters(mlp)) {
    listing << info.path << " " << param.axes() << "\n";
  }
  int64_t count = hax::nn::parameter_count(mlp);       // 156
  hax::nn::StateDict sd = hax::nn::to_state_dict(mlp);  // [(path, at::Tensor)]: checkpoints, HF export
  TinyMlp other = TinyMlp::init(Embed, Hidden, hax::random::Key(1));
  hax::nn::from_state_dict(other, sd);  // strict: a missing, extra or misshapen key is an error
  // [/doc:visitor]
  // clang-format on
  EXPECT_EQ(listing.str(), haliax_md::kParameterListing);
  EXPECT_EQ(count, 4 + 4 + 16 * 4 + 16 + 4 * 16 + 4);
  ASSERT_EQ(sd.size(), 6u);
  EXPECT_EQ(sd[2].first, "up.weight");
  EXPECT_TRUE(sd[2].second.is_same(mlp.up.weight.array()));
  auto pa = hax::nn::named_parameters(mlp), pb = hax::nn::named_parameters(other);
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(hax::array_equal(pa[i].second, pb[i].second)) << pa[i].first.path;
  hax::nn::StateDict partial(sd.begin() + 1, sd.end());
  EXPECT_VALUE_ERROR(hax::nn::from_state_dict(other, partial), "State dict is missing key 'ln.weight'");
}

TEST(HaliaxDoc, StackedLayersWithFold) {
  // clang-format off
  // [doc:stacked]
  const hax::Axis Layers{"layers", 3}, Hidden{"hidden", 16};
  auto blocks = hax::nn::Stacked<TinyMlp>::init(Layers, hax::random::Key(0), [&](const hax::random::Key& k) {
    return TinyMlp::init(Embed, Hidden, k);  // layer i gets Key(0).split(3)[i]
  });
  // blocks.stacked.up.weight is {layers, hidden, embed}
  hax::NamedArray x = hax::random::normal(hax::random::Key(1), {Batch, Pos, Embed});
  hax::NamedArray y = blocks.fold(x);  // layer 2(layer 1(layer 0(x)))
  hax::NamedArray z = blocks.fold(x, [](const TinyMlp& layer, const hax::NamedArray& h, int64_t i) {
    return layer(h) * 0.5;
  });
  hax::nn::StateDict sd = hax::nn::to_state_dict(blocks);  // per layer: "0.ln.weight", ..., "2.down.bias"
  // [/doc:stacked]
  // clang-format on
  EXPECT_EQ(blocks.stacked.up.weight.axes(), (hax::AxisSpec{Layers, Hidden, Embed}));
  at::Tensor ref_y = x.array(), ref_z = x.array();
  for (int64_t i = 0; i < 3; ++i) {
    TinyMlp layer = TinyMlp::init(Embed, Hidden, hax::random::Key(0).split(3)[i]);
    std::vector<at::Tensor> p = tensors_of(layer);
    EXPECT_TRUE(at::equal(blocks.stacked.down.weight.array()[i], p[4]));
    ref_y = tiny_mlp_ref(ref_y, p);
    ref_z = tiny_mlp_ref(ref_z, p) * 0.5;
  }
  EXPECT_EQ(y.axes(), x.axes());
  EXPECT_TRUE(all_close(y.array(), ref_y));
  EXPECT_TRUE(all_close(z.array(), ref_z));
  ASSERT_EQ(sd.size(), 18u);
  EXPECT_EQ(sd[0].first, "0.ln.weight");
  EXPECT_EQ(sd[6].first, "1.ln.weight");
  EXPECT_EQ(sd[17].first, "2.down.bias");
  EXPECT_TRUE(at::equal(sd[8].second, blocks.stacked.up.weight.array()[1]));
}

TEST(HaliaxDoc, ScanAndVmap) {
  // clang-format off
  // [doc:hof]
  hax::NamedArray x = hax::random::normal(hax::random::Key(0), {Batch, Pos, Embed});
  // A running sum over positions: the carry is {batch, embed}; each step's output gets `position` back, first.
  auto step = [](const hax::NamedArray& total, const hax::NamedArray& x_p) {
    hax::NamedArray next = total + x_p;
    return std::make_pair(next, next);
  };
  auto [total, running] = hax::scan(step, Pos)(hax::zeros({Batch, Embed}), x);  // running: {position, batch, embed}
  hax::NamedArray norms =  // f sees one row {position, embed} at a time; the result is {batch}
      hax::vmap([](const hax::NamedArray& row) { return hax::sqrt(hax::sum(row * row)); }, Batch)(x);
  // [/doc:hof]
  // clang-format on
  const at::Tensor& t = x.array();
  EXPECT_EQ(running.axes(), (hax::AxisSpec{Pos, Batch, Embed}));
  EXPECT_TRUE(all_close(running.array(), t.cumsum(1).permute({1, 0, 2})));
  EXPECT_EQ(total.axes(), (hax::AxisSpec{Batch, Embed}));
  EXPECT_TRUE(all_close(total.array(), t.sum(1)));
  EXPECT_EQ(norms.axes(), (hax::AxisSpec{Batch}));
  EXPECT_TRUE(all_close(norms.array(), t.pow(2).sum({1, 2}).sqrt()));
}

// Found while writing the tutorial: a Stacked module at the top level (no path prefix) used to produce state-dict
// keys such as ".0ln.weight". It must give "0.ln.weight", and load back from those keys.
TEST(HaliaxDoc, TopLevelStackedStateDictRoundTrips) {
  const hax::Axis Layers{"layers", 2}, Hidden{"hidden", 3};
  auto make = [&](uint64_t seed) {
    return hax::nn::Stacked<TinyMlp>::init(Layers, hax::random::Key(seed),
                                           [&](const hax::random::Key& k) { return TinyMlp::init(Embed, Hidden, k); });
  };
  auto a = make(0), b = make(1);
  hax::nn::StateDict sd = hax::nn::to_state_dict(a);
  std::vector<std::string> keys;
  for (const auto& [k, t] : sd) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"0.ln.weight", "0.ln.bias", "0.up.weight", "0.up.bias", "0.down.weight",
                                            "0.down.bias", "1.ln.weight", "1.ln.bias", "1.up.weight", "1.up.bias",
                                            "1.down.weight", "1.down.bias"}));
  hax::nn::from_state_dict(b, sd);
  EXPECT_TRUE(hax::array_equal(a.stacked.up.weight, b.stacked.up.weight));
  EXPECT_TRUE(hax::array_equal(*a.stacked.down.bias, *b.stacked.down.bias));
  // Under a prefix the keys were and stay "h.0.ln.weight".
  hax::nn::ParamInfo info{"h.ln.weight", hax::nn::ParamKind::kNormWeight, Layers, "h"};
  EXPECT_EQ(info.layer_path(1), "h.1.ln.weight");
}

namespace {

// clang-format off
// [doc:attention]
const hax::Axis Head{"head", 3};
const hax::Axis Key{"key", 4};  // the size of each query/key vector

hax::NamedArray attention_scores(const hax::Axis& Key, const hax::AxisSelection& KPos, const hax::NamedArray& query,
                                 const hax::NamedArray& key, const std::optional<hax::NamedArray>& mask) {
  // how similar is each query to each key
  hax::NamedArray scores = hax::dot(query, key, Key) / std::sqrt(static_cast<double>(Key.size));
  if (mask) scores = scores - 1e9 * (1.0 - hax::astype(*mask, scores.dtype()));
  // convert to probabilities over the attended-to positions
  return hax::nn::softmax(scores, KPos);
}

hax::NamedArray attention(const hax::Axis& Key, const hax::AxisSelection& KPos, const hax::NamedArray& query,
                          const hax::NamedArray& key, const hax::NamedArray& value,
                          const std::optional<hax::NamedArray>& mask) {
  hax::NamedArray scores = attention_scores(Key, KPos, query, key, mask);
  return hax::dot(scores, value, KPos);
}
// [/doc:attention]
// clang-format on

// Positional reference: q (b, h, p, d), k and v (b, h, kp, d), mask (p, kp).
at::Tensor ref_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
  at::Tensor s = at::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(q.size(-1)));
  s = s - 1e9 * (1.0 - mask.to(s.scalar_type()));
  return at::matmul(at::softmax(s, -1), v);
}

}  // namespace

TEST(HaliaxDoc, AttentionOneFunctionForEveryLayout) {
  // clang-format off
  // [doc:attention_usage]
  std::vector<hax::random::Key> ks = hax::random::Key(0).split(7);
  hax::NamedArray q = hax::random::normal(ks[0], {Batch, Head, Pos, Key});
  // Causal mask, {key_position, position}: a query at p sees the keys at positions <= p.
  hax::NamedArray causal = hax::arange(Pos).broadcast_axis({KPos}) >= hax::arange(KPos);
  // 1. Batched multi-head self-attention.
  hax::NamedArray k = hax::random::normal(ks[1], {Batch, Head, KPos, Key});
  hax::NamedArray v = hax::random::normal(ks[2], {Batch, Head, KPos, Key});
  hax::NamedArray out = attention(Key, KPos, q, k, v, causal);  // {batch, head, position, key}
  // 2. Multi-query: keys and values have no head axis; every head shares them.
  hax::NamedArray k_mq = hax::random::normal(ks[3], {Batch, KPos, Key});
  hax::NamedArray v_mq = hax::random::normal(ks[4], {Batch, KPos, Key});
  hax::NamedArray out_mq = attention(Key, KPos, q, k_mq, v_mq, causal);  // {batch, head, position, key}
  // 3. Keys over a 2-D grid of image patches: attend over both axes at once, no mask.
  const hax::Axis Height{"height", 2}, Width{"width", 3};
  hax::NamedArray k_img = hax::random::normal(ks[5], {Batch, Head, Height, Width, Key});
  hax::NamedArray v_img = hax::random::normal(ks[6], {Batch, Head, Height, Width, Key});
  hax::NamedArray out_img = attention(Key, {Height, Width}, q, k_img, v_img, std::nullopt);
  // [/doc:attention_usage]
  // clang-format on
  EXPECT_EQ(causal.axes(), (hax::AxisSpec{KPos, Pos}));
  EXPECT_TRUE(at::equal(causal.array(), at::ones({5, 5}, at::kBool).tril().t()));
  at::Tensor mask = causal.array().t();  // (position, key_position) for the reference
  // 1.
  EXPECT_EQ(out.axes(), (hax::AxisSpec{Batch, Head, Pos, Key}));
  EXPECT_TRUE(all_close(out.array(), ref_attention(q.array(), k.array(), v.array(), mask)));
  EXPECT_TRUE(all_close(out.array().select(2, 0), v.array().select(2, 0)));  // position 0 sees only itself
  hax::nn::AttentionOptions lib_options;
  lib_options.mask = causal;
  hax::NamedArray lib = hax::nn::dot_product_attention(hax::nn::Contract(Key), hax::nn::AttendOver(KPos), q, k, v,
                                                       lib_options);  // the library's version
  EXPECT_EQ(lib.axes(), out.axes());
  EXPECT_TRUE(all_close(lib.array(), out.array()));
  // 2.
  EXPECT_EQ(out_mq.axes(), (hax::AxisSpec{Batch, Head, Pos, Key}));
  at::Tensor k_rep = k_mq.array().unsqueeze(1).expand({2, 3, 5, 4}),
             v_rep = v_mq.array().unsqueeze(1).expand({2, 3, 5, 4});
  EXPECT_TRUE(all_close(out_mq.array(), ref_attention(q.array(), k_rep, v_rep, mask)));
  // 3.
  EXPECT_EQ(out_img.axes(), (hax::AxisSpec{Batch, Head, Pos, Key}));
  at::Tensor ref_img = ref_attention(q.array(), k_img.array().reshape({2, 3, 6, 4}),
                                     v_img.array().reshape({2, 3, 6, 4}), at::ones({5, 6}, at::kBool));
  EXPECT_TRUE(all_close(out_img.array(), ref_img));
}

namespace {

// clang-format off
// [doc:mse]
// Positional: right only if pred and target have exactly the same shape.
at::Tensor mse_positional(const at::Tensor& pred, const at::Tensor& target) {
  return ((pred - target) * (pred - target)).mean();
}

// Named: the same line, but the subtraction lines the axes up by name.
hax::NamedArray mse(const hax::NamedArray& pred, const hax::NamedArray& target) {
  return hax::mean((pred - target) * (pred - target));
}
// [/doc:mse]
// clang-format on

}  // namespace

TEST(HaliaxDoc, MseBroadcastingBugAndItsAbsenceWithNames) {
  // clang-format off
  // [doc:mse_usage]
  at::Tensor pred = at::tensor({1.0, 3.0});                    // (batch)
  at::Tensor target = at::tensor({2.0, 3.0}).reshape({2, 1});  // (batch, 1), e.g. from a model head
  double wrong = mse_positional(pred, target).item<double>();  // (2,1) - (2) is (2,2): 1.5
  const hax::Axis Out{"out", 1};
  double right = mse(hax::NamedArray(pred, {Batch}), hax::NamedArray(target, {Batch, Out})).item();  // 0.5
  // [/doc:mse_usage]
  // clang-format on
  EXPECT_DOUBLE_EQ(wrong, 1.5);
  EXPECT_DOUBLE_EQ(right, 0.5);
  EXPECT_DOUBLE_EQ(right, mse_positional(pred, target.reshape({2})).item<double>());
  // And when the axes really do not match, the named version refuses instead of guessing.
  EXPECT_VALUE_ERROR(mse(hax::NamedArray(pred, {Batch}), hax::NamedArray(target, {Pos.resize(2), Out})),
                     "no subset relationship");
}

TEST(HaliaxDoc, PartitioningByName) {
  // clang-format off
  // [doc:partitioning]
  hax::Mesh mesh({{"replica", 1}, {"data", 2}, {"model", 1}});  // rank r at row-major coordinates
  hax::AxisMapping params{{"embed", "data"}};
  hax::NamedArray w = hax::zeros({hax::Axis("embed", 768), hax::Axis("mlp", 3072)});
  auto name = hax::physical_axis_name("embed", params);               // "data"
  int64_t pieces = hax::physical_axis_size("embed", params, mesh);    // 2 (1 when unmapped)
  auto spec = hax::pspec_for(w.axes(), params, mesh, "c_fc.weight");  // {"data", nullopt}
  hax::NamedArray piece = hax::shard(w, params, mesh, /*rank=*/1);    // {embed: 384, mlp: 3072}: block 1, a copy
  // [/doc:partitioning]
  // clang-format on
  EXPECT_EQ(name, "data");
  EXPECT_EQ(pieces, 2);
  ASSERT_EQ(spec.size(), 2u);
  EXPECT_EQ(spec[0], "data");
  EXPECT_FALSE(spec[1]);
  EXPECT_EQ(piece.axes(), (hax::AxisSpec{hax::Axis("embed", 384), hax::Axis("mlp", 3072)}));
  EXPECT_EQ(physical_axis_size("mlp", params, mesh), 1);
}

TEST(HaliaxDoc, CreatingInPieces) {
  const hax::Axis Embed("embed", 768), Mlp("mlp", 3072);
  const hax::random::Key key(3);
  const hax::nn::Linear whole = hax::nn::Linear::init({Embed}, {Mlp}, key);
  const hax::Mesh mesh({{"data", 2}});
  for (int64_t rank = 0; rank < 2; ++rank) {
    // clang-format off
    // [doc:create_in_pieces]
    hax::CreatePieces pieces;
    pieces.split = {{"embed", {2, rank}}};  // axis -> (pieces, this process's block)
    hax::nn::Linear fc = [&] {
      hax::CreatePiecesScope scope(pieces);
      return hax::nn::Linear::init({Embed}, {Mlp}, key);  // weight {mlp: 3072, embed: 384}: block `rank` of embed
    }();
    hax::nn::Linear shapes = [&] {
      hax::EvalShapeScope shapes_only;
      return hax::nn::Linear::init({Embed}, {Mlp}, key);  // on ATen's meta device: shapes, dtypes, no data
    }();
    // [/doc:create_in_pieces]
    // clang-format on
    const hax::NamedArray expected = hax::shard(whole.weight, {{"embed", "data"}}, mesh, rank);
    EXPECT_EQ(fc.weight.axes(), (hax::AxisSpec{Mlp, hax::Axis("embed", 384)}));
    EXPECT_TRUE(at::equal(fc.weight.array(), expected.array()));
    EXPECT_TRUE(at::equal(fc.bias->array(), whole.bias->array()));  // {mlp}: whole
    EXPECT_TRUE(shapes.weight.array().is_meta());
    EXPECT_EQ(shapes.weight.axes(), whole.weight.axes());
  }
}

TEST(HaliaxDoc, TensorParallelism) {
  const hax::Axis Batch("batch", 4), Embed("embed", 8), Mlp("mlp", 16);
  const auto keys = hax::random::Key(0).split(3);
  const hax::nn::Linear up_whole = hax::nn::Linear::init({Embed}, {Mlp}, keys[0]);
  const hax::nn::Linear down_whole = hax::nn::Linear::init({Mlp}, {Embed}, keys[1]);
  const hax::NamedArray x_whole = hax::random::normal(keys[2], {Batch, Embed});
  hax::NamedArray x_ref = x_whole.detach();
  x_ref.array().requires_grad_(true);
  hax::NamedArray y_ref = down_whole(hax::nn::gelu(up_whole(x_ref)));
  y_ref.array().sum().backward();
  haliax::testing::SumOfTwoThreads sum;
  hax::NamedArray ys[2];
  at::Tensor x_grads[2];
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      // Process `rank` of 2 holds half of the hidden units.
      const hax::Mesh mesh({{"model", 2}});
      const hax::AxisMapping mapping{{"mlp", "model"}};
      hax::nn::Linear up = up_whole, down = down_whole;
      up.weight = hax::shard(up_whole.weight, mapping, mesh, rank);
      up.bias = hax::shard(*up_whole.bias, mapping, mesh, rank);
      down.weight = hax::shard(down_whole.weight, mapping, mesh, rank);
      auto model_group_sum = [&sum, rank](at::Tensor& t) { sum(rank, t); };
      hax::NamedArray x = x_whole.detach();
      x.array().requires_grad_(true);
      // clang-format off
      // [doc:tensor_parallel]
      auto tp = std::make_shared<hax::TensorParallel>();
      tp->split = {{"mlp", {2, rank}}};          // axis -> (blocks, this process's block)
      tp->all_reduce = model_group_sum;          // sums a tensor over the 2 processes, in place
      hax::TensorParallelScope scope(tp);
      hax::NamedArray h = up(x);                 // {batch: 4, mlp: 8}: this process's hidden units
      hax::NamedArray y = down(hax::nn::gelu(h));  // {batch: 4, embed: 8}: the partial products summed
      y.array().sum().backward();                // x's gradient: both processes' shares summed
      // [/doc:tensor_parallel]
      // clang-format on
      EXPECT_EQ(h.axes(), (hax::AxisSpec{Batch, hax::Axis("mlp", 8)}));
      ys[rank] = y.detach();
      x_grads[rank] = x.array().grad();
    });
  }
  for (auto& t : threads) t.join();
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_TRUE(at::allclose(ys[rank].array(), y_ref.array().detach(), 1e-5, 1e-6));
    EXPECT_TRUE(at::allclose(x_grads[rank], x_ref.array().grad(), 1e-5, 1e-6));
  }
}
