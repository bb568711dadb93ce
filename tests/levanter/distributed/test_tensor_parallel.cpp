// Tensor parallelism inside the model (haliax/partitioning.h): GPT-2's code, unchanged, run by two threads that each
// hold half of the heads and of the MLP (haliax::shard with Levanter's {mlp: model, heads: model}), with an exchange
// between the threads standing in for the processes' all-reduce (the trainer's, over c10d, is tested with real
// processes in test_data_parallel.cpp). In f64, the loss and every gradient agree with the whole model's, with
// dropout in attention and on the residuals, and with gradient checkpointing (whose recomputation exchanges again).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "haliax/nn/module.h"
#include "haliax/partitioning.h"
#include "levanter/models/gpt2/gpt2.h"

using namespace levanter::models;
namespace nn = haliax::nn;
using haliax::NamedArray;

namespace {

// Two threads' tensors summed in thread order, (t0 + t1), on both: what sum_in_rank_order gives two processes.
class TwoThreadSum {
 public:
  void all_reduce(int r, at::Tensor& t) {
    std::unique_lock<std::mutex> lock(m_);
    cv_.wait(lock, [&] { return left_ == 0; });  // the previous exchange has been read by both
    in_[r] = t;
    if (++arrived_ == 2) {
      sum_ = in_[0] + in_[1];
      arrived_ = 0;
      left_ = 2;
      ++generation_;
      cv_.notify_all();
    } else {
      const int64_t g = generation_;
      cv_.wait(lock, [&] { return generation_ != g; });
    }
    t.copy_(sum_);
    if (--left_ == 0) {
      in_[0] = in_[1] = sum_ = at::Tensor();
      cv_.notify_all();
    }
    ++exchanges_[r];
  }
  int64_t exchanges(int r) const { return exchanges_[r]; }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  at::Tensor in_[2], sum_;
  int arrived_ = 0, left_ = 0;
  int64_t generation_ = 0, exchanges_[2] = {0, 0};
};

struct Result {
  double loss = 0;
  std::map<std::string, at::Tensor> grads;
};

Result run(const LmHeadModel& model, const NamedArray& ids, const ForwardOptions& fo) {
  Result r;
  NamedArray loss = model.compute_next_token_loss(ids, fo, {});
  loss.array().backward();
  r.loss = loss.array().item<double>();
  for (const auto& [info, p] : nn::named_parameters(const_cast<LmHeadModel&>(model))) r.grads[info.path] = p.array().grad();
  return r;
}

}  // namespace

TEST(TensorParallel, Gpt2OnHalfTheHeadsAndMlpInEachOfTwoThreadsGivesTheWholeModelsLossAndGradients) {
  for (bool checkpointing : {false, true}) {
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
    const Result expected = run(*whole, ids, fo);

    const haliax::Mesh mesh({{"model", 2}});
    const haliax::AxisMapping mapping{{"heads", "model"}, {"mlp", "model"}};
    TwoThreadSum exchange;
    Result got[2];
    std::string failure[2];
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r) {
      threads.emplace_back([&, r] {
        try {
          auto piece = whole->clone();
          nn::for_each_parameter(*piece, [&](const nn::ParamInfo& info, NamedArray& p) {
            p = haliax::shard(p.detach(), mapping, mesh, r, info.path);
          });
          nn::requires_grad_(*piece);
          auto tp = std::make_shared<haliax::TensorParallel>();
          tp->split = {{"heads", {2, r}}, {"mlp", {2, r}}};
          tp->all_reduce = [&exchange, r](at::Tensor& t) { exchange.all_reduce(r, t); };
          haliax::TensorParallelScope scope(tp);
          got[r] = run(*piece, ids, fo);
        } catch (const std::exception& e) {
          failure[r] = e.what();
        }
      });
    }
    for (auto& t : threads) t.join();
    for (int r = 0; r < 2; ++r) {
      ASSERT_EQ(failure[r], "") << "thread " << r;
      EXPECT_NEAR(got[r].loss, expected.loss, 1e-12) << "thread " << r;
      // Per layer forward: the attention output and the MLP output summed (g); backward: the gradient reaching each
      // block's two normalised inputs summed (f); more with checkpointing's recomputation.
      EXPECT_GE(exchange.exchanges(r), 4 * c.num_layers);
      ASSERT_EQ(got[r].grads.size(), expected.grads.size());
      int split = 0;
      for (const auto& [path, g] : expected.grads) {
        const at::Tensor& mine = got[r].grads.at(path);
        ASSERT_TRUE(mine.defined()) << path;
        // This thread's piece of the whole gradient: the same cut as its parameter's.
        at::Tensor want = g;
        if (!mine.sizes().equals(g.sizes())) {
          ++split;
          for (int64_t d = 0; d < g.dim(); ++d) {
            if (mine.size(d) != g.size(d)) want = want.narrow(d, r * mine.size(d), mine.size(d));
          }
        }
        EXPECT_TRUE(at::allclose(mine, want, 1e-9, 1e-12))
            << path << " (thread " << r << ", checkpointing " << checkpointing
            << "): max difference " << (mine - want).abs().max().item<double>();
      }
      // Stacked over the layers: c_attn weight and bias, attention c_proj weight, c_fc weight and bias, mlp c_proj weight.
      EXPECT_EQ(split, 6);
    }
  }
}
