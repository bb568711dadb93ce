// GPT-2 against an independent PyTorch implementation (tests/levanter/models/gpt2_reference.py, Debian's
// python3-torch): same weights and batch -> logits, loss and every gradient agree to fixed f32 tolerances.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "../npy.h"
#include "levanter/models/gpt2/gpt2.h"
#include "levanter/models/lm_loss.h"

using namespace levanter::models;
namespace fs = std::filesystem;
namespace nn = haliax::nn;
using haliax::NamedArray;

namespace {

struct Case {
  bool scale_attn_by_inverse_layer_idx = false;
  bool gradient_checkpointing = false;
  double z_loss = 0.0;
  bool fused = false;  // the loss through compute_next_token_loss's fused LM head (blocks of 7 positions)
};

void run_case(const Case& cs) {
  Gpt2Config c;
  c.seq_len = 16;
  c.hidden_dim = 32;
  c.num_layers = 3;
  c.num_heads = 4;
  c.scale_attn_by_inverse_layer_idx = cs.scale_attn_by_inverse_layer_idx;
  c.gradient_checkpointing = cs.gradient_checkpointing;
  if (cs.fused) c.cross_entropy_block_size = 7;  // 48 positions: 6 full blocks and one of 6
  haliax::Axis Vocab("vocab", 101);
  Gpt2LMHeadModel model = Gpt2LMHeadModel::init(Vocab, c, haliax::random::Key(0));
  // Levanter's init makes the LM head tiny; use larger weights so the comparison exercises real values.
  nn::for_each_parameter(model, [](const nn::ParamInfo& info, NamedArray& p) {
    if (info.kind == nn::ParamKind::kEmbedding) p = p * 400.0;
    if (info.kind == nn::ParamKind::kNormWeight || info.kind == nn::ParamKind::kBias) {
      p = p + haliax::random::normal(haliax::random::Key(std::hash<std::string>{}(info.path) % 1000), p.axes()) * 0.1;
    }
  });
  nn::requires_grad_(model);
  haliax::Axis Batch("batch", 3), Pos("position", 16);
  NamedArray ids = haliax::random::randint(haliax::random::Key(1), {Batch, Pos}, 0, Vocab.size);

  LossOptions opts;
  opts.z_loss_weight = cs.z_loss;
  NamedArray logits, loss;
  if (cs.fused) {
    {
      at::NoGradGuard no_grad;
      logits = model(ids);
    }
    loss = model.compute_next_token_loss(ids, {}, opts);
  } else {
    logits = model(ids);
    loss = next_token_loss(logits, ids, std::nullopt, opts);
  }
  loss.array().backward();

  fs::path dir = fs::temp_directory_path() / ("levanter_gpt2_ref_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "params");
  std::ofstream(dir / "config.json") << "{\"n_layer\": 3, \"n_head\": 4, \"n_embd\": 32, \"n_positions\": 16, "
                                        "\"vocab_size\": 101, \"layer_norm_epsilon\": 1e-5, "
                                        "\"scale_attn_by_inverse_layer_idx\": "
                                     << (cs.scale_attn_by_inverse_layer_idx ? "true" : "false")
                                     << ", \"z_loss_weight\": " << cs.z_loss << "}";
  // HF layout: flatten each parameter's trailing axes into a matrix (c_attn: (embed, qkv*heads*head_size)).
  auto hf = [](const at::Tensor& t, const std::string& key) {
    if (key.find("attn.c_attn.weight") != std::string::npos) return t.reshape({t.size(0), -1});
    if (key.find("attn.c_attn.bias") != std::string::npos) return t.reshape({-1});
    if (key.find("attn.c_proj.weight") != std::string::npos) return t.reshape({-1, t.size(-1)});
    return t;
  };
  nn::StateDict sd = nn::to_state_dict(model);
  for (auto& [key, t] : sd) levanter::testing::write_npy((dir / "params" / (key + ".npy")).string(), hf(t, key));
  levanter::testing::write_npy((dir / "ids.npy").string(), ids.array());
  std::string cmd = std::string(LEVANTER_PYTHON) + " " + std::string(LEVANTER_SOURCE_DIR) +
                    "/tests/levanter/models/gpt2_reference.py " + dir.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

  at::Tensor ref_logits = levanter::testing::read_npy((dir / "out" / "logits.npy").string());
  at::Tensor ref_loss = levanter::testing::read_npy((dir / "out" / "loss.npy").string());
  EXPECT_TRUE(at::allclose(logits.array().detach(), ref_logits, 1e-4, 1e-4))
      << "max logit diff " << (logits.array().detach() - ref_logits).abs().max().item<double>();
  EXPECT_NEAR(loss.item(), ref_loss.item<double>(), 1e-5 * std::abs(ref_loss.item<double>()));
  // Gradients, per HF key (stacked parameters per layer).
  auto params = nn::named_parameters(model);
  std::vector<std::pair<nn::ParamInfo, NamedArray>> grads;
  for (auto& [info, p] : params) grads.emplace_back(info, p.grad());
  nn::StateDict gsd = nn::state_dict_from(grads);
  ASSERT_EQ(gsd.size(), sd.size());
  for (auto& [key, g] : gsd) {
    at::Tensor ref = levanter::testing::read_npy((dir / "out" / "grad" / (key + ".npy")).string());
    at::Tensor ours = hf(g, key);
    double scale = ref.abs().max().item<double>();
    EXPECT_TRUE(at::allclose(ours, ref, 1e-3, 1e-5 + 1e-4 * scale))
        << key << ": max grad diff " << (ours - ref).abs().max().item<double>() << " (max |grad| " << scale << ")";
  }
  fs::remove_all(dir);
}

}  // namespace

TEST(Gpt2, MatchesPyTorchReference) { run_case({}); }
TEST(Gpt2, MatchesPyTorchReferenceWithMistralScalingCheckpointingAndZLoss) { run_case({true, true, 1e-2}); }
TEST(Gpt2, FusedLmHeadLossMatchesPyTorchReference) { run_case({false, false, 0.0, true}); }
TEST(Gpt2, FusedLmHeadLossWithZLossAndCheckpointingMatchesPyTorchReference) { run_case({true, true, 1e-2, true}); }

TEST(Gpt2, ConfigAndAxes) {
  Gpt2Config c;
  EXPECT_EQ(c.HeadSize(), haliax::Axis("head_size", 64));
  EXPECT_EQ(c.Mlp(), haliax::Axis("mlp", 3072));
  // GPT-2 small: ~6 * 124M params per token is the usual estimate for training; forward matmuls ~ 2 * N.
  EXPECT_NEAR(c.flops_per_token(50257) / 1e6, 2 * 85.0 + 2 * 768 * 50257 / 1e6 + 12 * 2 * 2 * 1024 * 768 / 1e6 * 1.0,
              30);
  Gpt2Config bad = c;
  bad.num_heads = 7;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad = c;
  bad.activation_function = "swishy";
  try {
    bad.validate();
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("model.activation_function: unknown activation 'swishy'"));
  }
  haliax::Axis Vocab("vocab", 50257);
  Gpt2Config nano;
  nano.hidden_dim = 32;
  nano.num_heads = 4;
  nano.num_layers = 2;
  nano.seq_len = 64;
  Gpt2LMHeadModel m = Gpt2LMHeadModel::init(Vocab, nano, haliax::random::Key(0));
  auto params = nn::named_parameters(m);
  EXPECT_EQ(params[0].first.path, "transformer.wte.weight");
  EXPECT_EQ(nn::to_state_dict(m)[2].first, "transformer.h.0.ln_1.weight");
  EXPECT_EQ(
      nn::parameter_count(m),
      50257 * 32 + 64 * 32 + 2 * (2 * 32 * 2 + 32 * 96 + 96 + 32 * 32 + 32 + 32 * 128 + 128 + 128 * 32 + 32) + 64);
}
