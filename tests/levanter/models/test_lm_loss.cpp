// The fused LM head + next-token loss against the same loss on materialised logits (next_token_loss of
// dot(hidden, lm_head)): values and gradients in f64 to 1e-10, over uneven blocks, with a loss mask, z-loss,
// mean and sum reductions; f32 and bf16 compute to fixed tolerances; the per-position (evaluation) form.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <torch/csrc/autograd/autograd.h>

#include "haliax/nn/gemm_bf16.h"
#include "levanter/models/lm_loss.h"

using namespace levanter::models;
namespace hax = haliax;
using hax::Axis;
using hax::NamedArray;

namespace {

const Axis Batch("batch", 3), Pos("position", 11), Embed("embed", 8), Vocab("vocab", 37);

struct Inputs {
  NamedArray hidden, head, ids, mask;
};

Inputs make(at::ScalarType dtype) {
  Inputs in;
  // hidden comes as (position, batch, embed): the fused path must line positions up with ids by name.
  in.hidden = hax::astype(hax::random::normal(hax::random::Key(1), {Pos, Batch, Embed}) * 2.0, dtype);
  in.head = hax::astype(hax::random::normal(hax::random::Key(2), {Vocab, Embed}), dtype);
  in.ids = hax::random::randint(hax::random::Key(3), {Batch, Pos}, 0, Vocab.size);
  in.mask = hax::random::bernoulli(hax::random::Key(4), {Batch, Pos}, 0.7);
  in.hidden.array().requires_grad_(true);
  in.head.array().requires_grad_(true);
  return in;
}

struct Result {
  at::Tensor loss, d_hidden, d_head;
};

Result grads(const NamedArray& loss, const Inputs& in) {
  auto g = torch::autograd::grad({loss.array()}, {in.hidden.array(), in.head.array()});
  return {loss.array().detach(), g[0], g[1]};
}

Result reference(const Inputs& in, const LossOptions& o, bool masked) {
  NamedArray logits =
      hax::astype(hax::dot(in.hidden, in.head, "embed"), in.hidden.dtype() == at::kDouble ? at::kDouble : at::kFloat);
  return grads(next_token_loss(logits, in.ids, masked ? std::optional<NamedArray>(in.mask) : std::nullopt, o), in);
}

Result fused(const Inputs& in, const LossOptions& o, bool masked) {
  return grads(
      fused_next_token_loss(in.hidden, in.head, in.ids, masked ? std::optional<NamedArray>(in.mask) : std::nullopt, o),
      in);
}

void expect_close(const Result& a, const Result& b, double rtol, double atol) {
  EXPECT_TRUE(at::allclose(a.loss.to(at::kDouble), b.loss.to(at::kDouble), rtol, atol))
      << a.loss.item<double>() << " vs " << b.loss.item<double>();
  EXPECT_TRUE(at::allclose(a.d_hidden.to(at::kDouble), b.d_hidden.to(at::kDouble), rtol, atol))
      << "max d_hidden diff " << (a.d_hidden.to(at::kDouble) - b.d_hidden.to(at::kDouble)).abs().max().item<double>();
  EXPECT_TRUE(at::allclose(a.d_head.to(at::kDouble), b.d_head.to(at::kDouble), rtol, atol))
      << "max d_head diff " << (a.d_head.to(at::kDouble) - b.d_head.to(at::kDouble)).abs().max().item<double>();
}

}  // namespace

TEST(FusedNextTokenLoss, MatchesMaterialisedLogitsInDouble) {
  Inputs in = make(at::kDouble);
  for (int64_t block : {1, 4, 7, 33, 0}) {  // 33 positions: uneven blocks, one block, and automatic
    for (auto reduction : {hax::nn::Reduction::kMean, hax::nn::Reduction::kSum}) {
      for (double z : {0.0, 1e-2}) {
        for (bool masked : {false, true}) {
          LossOptions o;
          o.block_size = block;
          o.reduction = reduction;
          o.z_loss_weight = z;
          SCOPED_TRACE("block " + std::to_string(block) + " sum " +
                       std::to_string(reduction == hax::nn::Reduction::kSum) + " z " + std::to_string(z) + " masked " +
                       std::to_string(masked));
          expect_close(fused(in, o, masked), reference(in, o, masked), 1e-10, 1e-12);
        }
      }
    }
  }
}

TEST(FusedNextTokenLoss, F32AndBf16Compute) {
  // Several blocks (the head's gradient accumulated in f32) and one block (in bf16: the block's GEMM itself).
  for (int64_t block : {5, 0}) {
    SCOPED_TRACE(block);
    Inputs in32 = make(at::kFloat);
    LossOptions o;
    o.block_size = block;
    o.z_loss_weight = 1e-3;
    Result a32 = fused(in32, o, true);
    expect_close(a32, reference(in32, o, true), 1e-5, 1e-6);
    // bf16 GEMMs, f32 loss: the same roundings as the materialised path except the f32 accumulation of the
    // head's gradient over blocks and, on the widened route (haliax/nn/gemm_bf16.h), the GEMMs' order of summing.
    Inputs in16 = make(at::kBFloat16);
    for (hax::nn::Bf16Gemm route : {hax::nn::Bf16Gemm::widened, hax::nn::Bf16Gemm::native}) {
      SCOPED_TRACE(hax::nn::bf16_gemm_route_name(route));
      hax::nn::Bf16GemmRouteOverride scope(route);
      Result a = fused(in16, o, true), b = reference(in16, o, true);
      EXPECT_EQ(a.d_hidden.scalar_type(), at::kBFloat16);
      EXPECT_EQ(a.d_head.scalar_type(), at::kBFloat16);
      EXPECT_EQ(a.loss.scalar_type(), at::kFloat);
      expect_close(a, b, 2e-2, 2e-3);
      if (route == hax::nn::Bf16Gemm::widened) {
        // The whole head in f32 on the operands widened (blocked_loss): the f32 loss on them, bit for bit, and its
        // gradients rounded once.
        Inputs wide = in16;
        auto widened = [](const NamedArray& x) {
          return NamedArray(x.array().detach().to(at::kFloat).requires_grad_(true), x.axes());
        };
        wide.hidden = widened(in16.hidden);
        wide.head = widened(in16.head);
        Result f = fused(wide, o, true);
        EXPECT_TRUE(at::equal(a.loss, f.loss)) << a.loss.item<double>() << " vs " << f.loss.item<double>();
        EXPECT_TRUE(at::equal(a.d_hidden, f.d_hidden.to(at::kBFloat16)));
        EXPECT_TRUE(at::equal(a.d_head, f.d_head.to(at::kBFloat16)));
      }
      // Without gradients (evaluation): the same value, bit for bit.
      at::NoGradGuard no_grad;
      EXPECT_TRUE(at::equal(fused_next_token_loss(in16.hidden, in16.head, in16.ids, in16.mask, o).array(), a.loss));
    }
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::equal(fused_next_token_loss(in32.hidden, in32.head, in32.ids, in32.mask, o).array(), a32.loss));
  }
}

TEST(FusedNextTokenLoss, PerPositionLossesForEvaluation) {
  Inputs in = make(at::kDouble);
  LossOptions o;
  o.reduction = hax::nn::Reduction::kNone;
  o.block_size = 6;
  at::NoGradGuard no_grad;
  NamedArray per = fused_next_token_loss(in.hidden, in.head, in.ids, in.mask, o);
  NamedArray ref = next_token_loss(hax::dot(in.hidden, in.head, "embed"), in.ids, in.mask, o);
  EXPECT_EQ(per.axes(), in.ids.axes());
  EXPECT_TRUE(at::allclose(per.array(), hax::rearrange(ref, per.axes()).array(), 1e-12, 1e-12));
  // The last position and masked positions count for nothing.
  EXPECT_EQ(hax::slice(per, "position", 10, 1).array().abs().sum().item<double>(), 0.0);
}

TEST(FusedNextTokenLoss, PerPositionLossesHaveNoGradient) {
  Inputs in = make(at::kFloat);
  LossOptions o;
  o.reduction = hax::nn::Reduction::kNone;
  EXPECT_THAT([&] { fused_next_token_loss(in.hidden, in.head, in.ids, std::nullopt, o); },
              ::testing::ThrowsMessage<std::invalid_argument>(::testing::HasSubstr("use kMean or kSum to train")));
}

TEST(FusedNextTokenLoss, LmHeadMustBeVocabByEmbed) {
  Inputs in = make(at::kFloat);
  NamedArray wrong = hax::random::normal(hax::random::Key(5), {Vocab, Axis("embed", 9)});
  EXPECT_THAT([&] { fused_next_token_loss(in.hidden, wrong, in.ids); },
              ::testing::ThrowsMessage<std::invalid_argument>(
                  ::testing::HasSubstr("lm_head must be (vocab, embed) with embed 8")));
}
