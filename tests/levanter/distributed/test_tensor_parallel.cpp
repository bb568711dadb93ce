// Tensor parallelism inside the model (haliax/partitioning.h): GPT-2's code, unchanged, run by two threads that each
// hold half of the heads and of the MLP (haliax::shard with Levanter's {mlp: model, heads: model}), with an exchange
// between the threads standing in for the processes' all-reduce (the trainer's, over c10d, is tested with real
// processes in test_data_parallel.cpp). In f64, the loss and every gradient agree with the whole model's, with
// dropout in attention and on the residuals, and with gradient checkpointing (whose recomputation exchanges again).
// `vocab` is split in compute only, as the trainer does it: the parameters stay whole and the fused LM head and loss
// compute each thread's block of the vocabulary.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <map>
#include <thread>

#include "haliax/nn/module.h"
#include "haliax/partitioning.h"
#include "haliax/testing.h"
#include "levanter/models/gpt2/gpt2.h"
#include "levanter/models/llama/llama.h"

using namespace levanter::models;
namespace nn = haliax::nn;
using haliax::NamedArray;

namespace {

struct Result {
  double loss = 0;
  std::map<std::string, at::Tensor> grads;
};

Result run(const LmHeadModel& model, const NamedArray& ids, const ForwardOptions& fo) {
  Result r;
  for (const auto& [info, p] : nn::named_parameters(const_cast<LmHeadModel&>(model)))
    p.array().mutable_grad() = at::Tensor();
  NamedArray loss = model.compute_next_token_loss(ids, fo, {});
  loss.array().backward();
  r.loss = loss.array().item<double>();
  for (const auto& [info, p] : nn::named_parameters(const_cast<LmHeadModel&>(model)))
    r.grads[info.path] = p.array().grad();
  return r;
}

// Runs `whole` (f64, with gradients) and, in two threads, its pieces under {axis: model} for each of `axes`; expects
// the whole model's loss and gradients in both, `split` parameters in pieces, and returns the exchanges per thread.
int64_t expect_whole_results_from_pieces(const LmHeadModel& whole, const std::vector<std::string>& axes,
                                         const NamedArray& ids, const ForwardOptions& fo, int split_parameters) {
  const Result expected = run(whole, ids, fo);
  const haliax::Mesh mesh({{"model", 2}});
  haliax::AxisMapping mapping;
  for (const std::string& a : axes)
    if (a != kVocabAxis) mapping[a] = "model";
  haliax::testing::SumOfTwoThreads exchange;
  Result got[2];
  std::string failure[2];
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      try {
        auto piece = whole.clone();
        nn::for_each_parameter(*piece, [&](const nn::ParamInfo& info, NamedArray& p) {
          p = haliax::shard(p.detach(), mapping, mesh, r, info.path);
        });
        nn::requires_grad_(*piece);
        auto tp = std::make_shared<haliax::TensorParallel>();
        for (const std::string& a : axes) (a == kVocabAxis ? tp->split_compute : tp->split)[a] = {2, r};
        // The whole sizes, as the trainer gives them.
        for (const auto& [info, p] : nn::named_parameters(const_cast<LmHeadModel&>(whole))) {
          for (const haliax::Axis& ax : p.axes())
            if (mapping.count(ax.name)) tp->whole[ax.name] = ax.size;
        }
        tp->all_reduce = [&exchange, r](at::Tensor& t) { exchange(r, t); };
        tp->all_gather = [&exchange, r](const at::Tensor& piece, at::Tensor& whole) {
          exchange.gather(r, piece, whole);
        };
        haliax::TensorParallelScope scope(tp);
        got[r] = run(*piece, ids, fo);
      } catch (const std::exception& e) {
        failure[r] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(failure[r], "") << "thread " << r;
    if (!failure[r].empty()) continue;
    EXPECT_NEAR(got[r].loss, expected.loss, 1e-12) << "thread " << r;
    EXPECT_EQ(got[r].grads.size(), expected.grads.size());
    int split = 0;
    for (const auto& [path, g] : expected.grads) {
      const at::Tensor& mine = got[r].grads.at(path);
      EXPECT_TRUE(mine.defined()) << path;
      if (!mine.defined()) continue;
      // This thread's piece of the whole gradient: the same cut as its parameter's.
      at::Tensor want = g;
      if (!mine.sizes().equals(g.sizes())) {
        ++split;
        for (int64_t d = 0; d < g.dim(); ++d) {
          if (mine.size(d) != g.size(d)) want = want.narrow(d, r * mine.size(d), mine.size(d));
        }
      }
      EXPECT_TRUE(at::allclose(mine, want, 1e-9, 1e-12))
          << path << " (thread " << r << "): max difference " << (mine - want).abs().max().item<double>();
    }
    EXPECT_EQ(split, split_parameters) << "thread " << r;
  }
  EXPECT_EQ(exchange.exchanges(0), exchange.exchanges(1));
  return exchange.exchanges(0);
}

}  // namespace

TEST(TensorParallel, Gpt2OnHalfTheHeadsAndMlpInEachOfTwoThreadsGivesTheWholeModelsLossAndGradients) {
  for (bool checkpointing : {false, true}) {
    SCOPED_TRACE(checkpointing ? "gradient checkpointing" : "no checkpointing");
    Gpt2Config c;
    c.seq_len = 16;
    c.hidden_dim = 32;
    c.num_layers = 2;
    c.num_heads = 4;
    c.attn_pdrop = 0.2;
    c.resid_pdrop = 0.1;
    c.gradient_checkpointing = checkpointing;
    const haliax::Axis Vocab("vocab", 101), Batch("batch", 3), Pos("position", 16);
    const auto whole = cast_floating(Gpt2LMHeadModel::init(Vocab, c, haliax::random::Key(0)), at::kDouble);
    nn::requires_grad_(*whole);
    const NamedArray ids = haliax::random::randint(haliax::random::Key(1), {Batch, Pos}, 0, Vocab.size);
    ForwardOptions fo;
    fo.key = haliax::random::Key(7);  // dropout on
    // Stacked over the layers: c_attn weight and bias, attention c_proj weight, c_fc weight and bias, mlp c_proj
    // weight. Per layer in forward the attention's and the MLP's outputs are summed (g); in backward the gradients
    // reaching the block's two normalised inputs (f); checkpointing's recomputation sums again.
    const int64_t exchanges = expect_whole_results_from_pieces(*whole, {"heads", "mlp"}, ids, fo, 6);
    EXPECT_EQ(exchanges, (checkpointing ? 6 : 4) * c.num_layers);
    // The vocabulary (101: blocks of 51 and 50 rows) in compute: one exchange of the softmax's statistics for the
    // loss's one block of positions, one gather of the tied head's gradient, one sum of the hidden gradient (f).
    SCOPED_TRACE("[heads, mlp, vocab]");
    EXPECT_EQ(expect_whole_results_from_pieces(*whole, {"heads", "mlp", "vocab"}, ids, fo, 6), exchanges + 3);
  }
}

// Llama's query heads are (kv_heads, q_heads_per_group): with kv_heads in the mapping every projection computes its
// piece; with Levanter's GPT-2 mapping [mlp, heads] alone, the attention is computed whole on each process and its
// output cut to the process's heads for the output projection (the gradient of the cut summed back), still exact.
TEST(TensorParallel, LlamaWithOrWithoutKvHeadsInTheMappingGivesTheWholeModelsLossAndGradients) {
  LlamaConfig c;
  c.seq_len = 16;
  c.hidden_dim = 32;
  c.intermediate_dim = 48;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  const haliax::Axis Vocab("vocab", 101), Batch("batch", 2), Pos("position", 16);
  const auto whole = cast_floating(LlamaLMHeadModel::init(Vocab, c, haliax::random::Key(0)), at::kDouble);
  nn::requires_grad_(*whole);
  const NamedArray ids = haliax::random::randint(haliax::random::Key(1), {Batch, Pos}, 0, Vocab.size);
  // q, k, v, o projections and the MLP's gate, up and down.
  SCOPED_TRACE("[heads, kv_heads, mlp]");
  expect_whole_results_from_pieces(*whole, {"heads", "kv_heads", "mlp"}, ids, {}, 7);
  // o_proj and the MLP's three.
  SCOPED_TRACE("[heads, mlp]");
  expect_whole_results_from_pieces(*whole, {"heads", "mlp"}, ids, {}, 4);
  // Llama's untied lm_head, its vocabulary split in compute.
  SCOPED_TRACE("[heads, kv_heads, mlp, vocab]");
  expect_whole_results_from_pieces(*whole, {"heads", "kv_heads", "mlp", "vocab"}, ids, {}, 7);
}

// The fused LM head and loss with the vocabulary split in compute over two threads, against the whole head: several
// blocks of positions (one exchange each), z-loss, a loss mask, both reductions with gradients, per-position losses
// without, and a vocabulary that does not divide (7 rows: blocks of 4 and 3).
TEST(TensorParallel, FusedLossWithTheVocabularySplitInComputeMatchesTheWholeHead) {
  const haliax::Axis Batch("batch", 2), Pos("position", 9), Embed("embed", 5), Vocab("vocab", 7);
  const NamedArray hidden0 = haliax::random::normal(haliax::random::Key(1), {Batch, Pos, Embed}).astype(at::kDouble);
  const NamedArray head0 = haliax::random::normal(haliax::random::Key(2), {Vocab, Embed}).astype(at::kDouble);
  const NamedArray ids = haliax::random::randint(haliax::random::Key(3), {Batch, Pos}, 0, Vocab.size);
  const NamedArray mask = haliax::random::randint(haliax::random::Key(4), {Batch, Pos}, 0, 4) > 0;
  for (haliax::nn::Reduction reduction :
       {haliax::nn::Reduction::kMean, haliax::nn::Reduction::kSum, haliax::nn::Reduction::kNone}) {
    SCOPED_TRACE(static_cast<int>(reduction));
    LossOptions lo;
    lo.z_loss_weight = 0.1;
    lo.block_size = 4;  // 18 positions: 5 blocks
    lo.reduction = reduction;
    const bool grads = reduction != haliax::nn::Reduction::kNone;
    auto compute = [&](at::Tensor* dh, at::Tensor* dw) {
      NamedArray h(hidden0.array().clone().requires_grad_(grads), hidden0.axes());
      NamedArray w(head0.array().clone().requires_grad_(grads), head0.axes());
      NamedArray loss = fused_next_token_loss(h, w, ids, mask, lo);
      if (grads) {
        loss.array().backward();
        *dh = h.array().grad();
        *dw = w.array().grad();
      }
      return loss.array().detach();
    };
    at::Tensor want_dh, want_dw;
    const at::Tensor want = compute(&want_dh, &want_dw);
    haliax::testing::SumOfTwoThreads exchange;
    at::Tensor got[2], dh[2], dw[2];
    std::string failure[2];
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r) {
      threads.emplace_back([&, r] {
        try {
          auto tp = std::make_shared<haliax::TensorParallel>();
          tp->split_compute[kVocabAxis] = {2, r};
          tp->all_reduce = [&exchange, r](at::Tensor& t) { exchange(r, t); };
          tp->all_gather = [&exchange, r](const at::Tensor& piece, at::Tensor& whole) {
            exchange.gather(r, piece, whole);
          };
          haliax::TensorParallelScope scope(tp);
          got[r] = compute(&dh[r], &dw[r]);
        } catch (const std::exception& e) {
          failure[r] = e.what();
        }
      });
    }
    for (auto& t : threads) t.join();
    for (int r = 0; r < 2; ++r) {
      ASSERT_EQ(failure[r], "") << "thread " << r;
      EXPECT_TRUE(at::allclose(got[r], want, 1e-12, 1e-12)) << "thread " << r << ": " << got[r] << " vs " << want;
      if (!grads) continue;
      EXPECT_TRUE(at::allclose(dh[r], want_dh, 1e-10, 1e-12)) << "thread " << r;
      EXPECT_TRUE(at::allclose(dw[r], want_dw, 1e-10, 1e-12)) << "thread " << r;
    }
    // Both threads hold the same bits.
    EXPECT_TRUE(at::equal(got[0], got[1]));
    if (grads) {
      EXPECT_TRUE(at::equal(dw[0], dw[1]));
    }
    // Per block of positions one exchange of statistics; with gradients one gather of the head's and one sum of the
    // hidden's.
    EXPECT_EQ(exchange.exchanges(0), 5 + (grads ? 2 : 0));
  }
  // An id outside the vocabulary would be no process's target: refused, not dropped.
  auto tp = std::make_shared<haliax::TensorParallel>();
  tp->split_compute[kVocabAxis] = {2, 0};
  tp->all_reduce = [](at::Tensor&) {};
  tp->all_gather = [](const at::Tensor&, at::Tensor&) {};
  haliax::TensorParallelScope scope(tp);
  const NamedArray bad(ids.array().clone().fill_(Vocab.size), ids.axes());
  EXPECT_THROW(fused_next_token_loss(hidden0, head0, bad, mask, {}), std::invalid_argument);
}

TEST(TensorParallel, ComputeBlocksCoverTheAxisAndRefuseAnEmptyOne) {
  auto blocks = [](int64_t size, int64_t pieces) {
    std::vector<std::pair<int64_t, int64_t>> out;
    for (int64_t i = 0; i < pieces; ++i) {
      auto tp = std::make_shared<haliax::TensorParallel>();
      tp->split_compute["vocab"] = {pieces, i};
      tp->all_gather = [](const at::Tensor&, at::Tensor&) {};
      haliax::TensorParallelScope scope(tp);
      const auto b = haliax::compute_block("vocab", size);
      EXPECT_FALSE(haliax::compute_block("embed", size).has_value());
      out.emplace_back(b->begin, b->end);
    }
    return out;
  };
  using V = std::vector<std::pair<int64_t, int64_t>>;
  EXPECT_EQ(blocks(50257, 2), (V{{0, 25129}, {25129, 50257}}));
  EXPECT_EQ(blocks(12, 4), (V{{0, 3}, {3, 6}, {6, 9}, {9, 12}}));
  EXPECT_EQ(blocks(10, 4), (V{{0, 3}, {3, 6}, {6, 9}, {9, 10}}));
  EXPECT_FALSE(haliax::compute_block("vocab", 10).has_value());  // no scope
  try {
    blocks(5, 4);  // blocks of 2: the fourth would be empty
    ADD_FAILURE() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("axis 'vocab' of size 5 cannot be cut into 4 blocks of 2"), std::string::npos)
        << e.what();
  }
}
