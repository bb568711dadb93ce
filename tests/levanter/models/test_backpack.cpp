// Backpack against an independent PyTorch restatement of the paper's model (tests/levanter/models/
// backpack_reference.py): logits, loss and every gradient; the sense logits of a lone token are its prediction;
// decoding gives the full forward pass; config errors; trains and resumes bit for bit.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "../npy.h"
#include "levanter/models/backpack/backpack.h"
#include "levanter/models/lm_loss.h"
#include "levanter/trainer/config.h"
#include "levanter/trainer/trainer.h"

using namespace levanter::models;
namespace fs = std::filesystem;
namespace nn = haliax::nn;
using haliax::Axis;
using haliax::NamedArray;
using ::testing::HasSubstr;

namespace {

BackpackConfig tiny() {
  BackpackConfig c;
  c.gpt2.seq_len = 12;
  c.gpt2.hidden_dim = 32;
  c.gpt2.num_layers = 2;
  c.gpt2.num_heads = 4;
  c.gpt2.gradient_checkpointing = false;
  c.num_senses = 4;
  c.sense_intermediate_scale = 2;
  return c;
}

BackpackLMHeadModel build(const BackpackConfig& c, const Axis& Vocab) {
  BackpackLMHeadModel m = BackpackLMHeadModel::init(Vocab, c, haliax::random::Key(0));
  // Levanter's init makes the head tiny; larger weights make the comparison exercise real values.
  nn::for_each_parameter(m, [](const nn::ParamInfo& info, NamedArray& p) {
    if (info.kind == nn::ParamKind::kEmbedding) p = p * 100.0;
    if (info.kind == nn::ParamKind::kNormWeight || info.kind == nn::ParamKind::kBias) {
      p = p + haliax::random::normal(haliax::random::Key(std::hash<std::string>{}(info.path) % 1000), p.axes()) * 0.1;
    }
  });
  return m;
}

// The reference's layout: (in, out) matrices, except the sense-weight projection (out, in) as torch.nn.Linear.
at::Tensor ref_layout(const at::Tensor& t, const std::string& key) {
  auto has = [&](const char* s) { return key.find(s) != std::string::npos; };
  if (has("sense_weight_net.c_attn.weight")) return t.reshape({-1, t.size(-1)});
  if (has("sense_weight_net.c_attn.bias")) return t.reshape({-1});
  if (has("final_mlp.c_proj.weight")) return t.reshape({t.size(0), -1});
  if (has("final_mlp.c_proj.bias")) return t.reshape({-1});
  if (has("attn.c_attn.weight")) return t.reshape({t.size(0), -1});
  if (has("attn.c_attn.bias")) return t.reshape({-1});
  if (has("attn.c_proj.weight")) return t.reshape({-1, t.size(-1)});
  return t;
}

}  // namespace

TEST(Backpack, MatchesPyTorchRestatementOfThePaper) {
  BackpackConfig c = tiny();
  Axis Vocab("vocab", 61);
  BackpackLMHeadModel model = build(c, Vocab);
  nn::requires_grad_(model);
  Axis Batch("batch", 3), Pos("position", 12);
  NamedArray ids = haliax::random::randint(haliax::random::Key(1), {Batch, Pos}, 0, Vocab.size);
  NamedArray logits = model.logits(ids);
  NamedArray loss = next_token_loss(haliax::astype(logits, at::kFloat), ids);
  loss.array().backward();

  fs::path dir = fs::temp_directory_path() / ("levanter_backpack_ref_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "params");
  std::ofstream(dir / "config.json") << "{\"n_layer\": 2, \"n_head\": 4, \"n_embd\": 32, \"n_positions\": 12, "
                                        "\"vocab_size\": 61, \"num_senses\": 4, \"layer_norm_epsilon\": 1e-5}";
  nn::StateDict sd = nn::to_state_dict(model);
  for (auto& [key, t] : sd) {
    levanter::testing::write_npy((dir / "params" / (key + ".npy")).string(), ref_layout(t, key));
  }
  levanter::testing::write_npy((dir / "ids.npy").string(), ids.array());
  std::string cmd = std::string(LEVANTER_PYTHON) + " " + std::string(LEVANTER_SOURCE_DIR) +
                    "/tests/levanter/models/backpack_reference.py " + dir.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

  at::Tensor ref_logits = levanter::testing::read_npy((dir / "out" / "logits.npy").string());
  at::Tensor ours = haliax::rearrange(logits, {"batch", "position", "vocab"}).array().detach();
  EXPECT_TRUE(at::allclose(ours, ref_logits, 1e-4, 1e-4))
      << "max logit diff " << (ours - ref_logits).abs().max().item<double>();
  at::Tensor ref_loss = levanter::testing::read_npy((dir / "out" / "loss.npy").string());
  EXPECT_NEAR(loss.item(), ref_loss.item<double>(), 1e-5 * std::abs(ref_loss.item<double>()));
  auto params = nn::named_parameters(model);
  std::vector<std::pair<nn::ParamInfo, NamedArray>> grads;
  for (auto& [info, p] : params) grads.emplace_back(info, p.grad());
  nn::StateDict gsd = nn::state_dict_from(grads);
  ASSERT_EQ(gsd.size(), sd.size());
  int sense_keys = 0;
  for (auto& [key, g] : gsd) {
    sense_keys += key.find("sense_") != std::string::npos;
    at::Tensor ref = levanter::testing::read_npy((dir / "out" / "grad" / (key + ".npy")).string());
    at::Tensor o = ref_layout(g, key);
    double scale = ref.abs().max().item<double>();
    EXPECT_GT(scale, 0) << key;
    EXPECT_TRUE(at::allclose(o, ref, 1e-3, 1e-5 + 1e-4 * scale))
        << key << ": max grad diff " << (o - ref).abs().max().item<double>() << " (max |grad| " << scale << ")";
  }
  EXPECT_EQ(sense_keys, 16);  // the sense network (14 tensors) and the sense-weight projection (2)
  fs::remove_all(dir);
}

TEST(Backpack, ParameterPathsAreLevantersHuggingFaceNames) {
  BackpackLMHeadModel m = build(tiny(), Axis("vocab", 61));
  std::vector<std::string> paths;
  for (auto& [key, t] : nn::to_state_dict(m)) paths.push_back(key);
  for (const char* want :
       {"backpack.gpt2_model.wte.weight", "backpack.gpt2_model.h.1.attn.c_attn.weight", "backpack.gpt2_model.ln_f.bias",
        "backpack.sense_network.ln.weight", "backpack.sense_network.block.mlp.c_fc.weight",
        "backpack.sense_network.final_mlp.c_proj.weight", "backpack.sense_weight_net.c_attn.weight"}) {
    EXPECT_THAT(paths, ::testing::Contains(std::string(want)));
  }
}

TEST(Backpack, ALoneTokensPredictionIsTheMeanOfItsSenseLogits) {
  // With one position every sense weight is 1: the output is the mean of the token's sense vectors, so the logits
  // are the mean of what sense_logits() reports per sense. This is what makes senses readable one by one.
  BackpackLMHeadModel m = build(tiny(), Axis("vocab", 61));
  at::NoGradGuard no_grad;
  NamedArray one(at::tensor({7, 42}, at::kLong).reshape({2, 1}), {Axis("batch", 2), Axis("position", 1)});
  at::Tensor logits = haliax::rearrange(m.logits(one), {"batch", "position", "vocab"}).array();
  NamedArray per_sense = m.sense_logits(one);  // (batch, position, senses, vocab)
  at::Tensor mean =
      haliax::rearrange(haliax::mean(per_sense, haliax::AxisSelection("senses")), {"batch", "position", "vocab"})
          .array();
  EXPECT_TRUE(at::allclose(logits, mean, 1e-5, 1e-5)) << (logits - mean).abs().max().item<double>();
}

TEST(Backpack, DecodingGivesTheFullForwardPass) {
  BackpackLMHeadModel m = build(tiny(), Axis("vocab", 61));
  at::NoGradGuard no_grad;
  Axis Batch("batch", 2);
  NamedArray ids = haliax::random::randint(haliax::random::Key(5), {Batch, Axis("position", 10)}, 0, 61);
  at::Tensor full = haliax::rearrange(m.activations(ids), {"batch", "position", "embed"}).array();
  auto cache = m.start_decode(2, 10);
  at::Tensor t = ids.array();
  NamedArray prefix(t.narrow(1, 0, 6), {Batch, Axis("position", 6)});
  at::Tensor h = haliax::rearrange(m.decode(prefix, *cache), {"batch", "position", "embed"}).array();
  EXPECT_TRUE(at::allclose(h, full.narrow(1, 0, 6), 1e-5, 1e-5));
  for (int64_t i = 6; i < 10; ++i) {
    NamedArray next(t.narrow(1, i, 1), {Batch, Axis("position", 1)});
    at::Tensor hi = haliax::rearrange(m.decode(next, *cache), {"batch", "position", "embed"}).array();
    EXPECT_TRUE(at::allclose(hi, full.narrow(1, i, 1), 1e-5, 1e-5)) << "position " << i;
  }
}

TEST(Backpack, ConfigErrorsNameTheKey) {
  BackpackConfig c = tiny();
  c.num_senses = 5;
  try {
    c.validate();
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("model.num_senses: hidden_dim (32) must be divisible by num_senses (5)"));
  }
  c = tiny();
  c.sense_intermediate_scale = 0;
  EXPECT_THROW(c.validate(), std::invalid_argument);
}

TEST(Backpack, TrainsAndResumesBitForBit) {
  const fs::path root = fs::temp_directory_path() / ("levanter_backpack_" + std::to_string(::getpid()));
  fs::remove_all(root);
  const fs::path old = fs::current_path();
  fs::current_path(LEVANTER_SOURCE_DIR);
  auto cfg = [&](int64_t steps) {
    return levanter::trainer::load_train_config("config/backpack_nano.yaml", {"--trainer.num_train_steps",
                                                                              std::to_string(steps),
                                                                              "--trainer.train_batch_size",
                                                                              "4",
                                                                              "--model.num_layers",
                                                                              "2",
                                                                              "--model.seq_len",
                                                                              "32",
                                                                              "--model.resid_pdrop",
                                                                              "0.1",
                                                                              "--trainer.steps_per_eval",
                                                                              "100",
                                                                              "--trainer.max_eval_batches",
                                                                              "1",
                                                                              "--trainer.id",
                                                                              "backpack",
                                                                              "--trainer.log_dir",
                                                                              (root / "logs").string(),
                                                                              "--trainer.checkpointer.base_path",
                                                                              (root / "ckpt").string(),
                                                                              "--trainer.checkpointer.keep",
                                                                              "[{every: 2}]",
                                                                              "--data.cache_dir",
                                                                              (root / "cache").string(),
                                                                              "--trainer.num_threads",
                                                                              "2",
                                                                              "--trainer.peak_flops",
                                                                              "1e9"});
  };
  auto losses = [](const std::string& metrics) {
    std::map<int64_t, double> out;
    std::ifstream in(metrics);
    for (std::string line; std::getline(in, line);) {
      auto r = nlohmann::json::parse(line);
      if (r.contains("train/loss")) out[r["step"].get<int64_t>()] = r["train/loss"].get<double>();
    }
    return out;
  };
  levanter::trainer::TrainOptions quiet;
  quiet.progress = false;
  auto full = levanter::trainer::train(cfg(4), quiet);
  auto a = losses(full.paths.metrics);
  ASSERT_EQ(a.size(), 4u);
  EXPECT_LT(a.rbegin()->second, a.begin()->second);
  ASSERT_TRUE(fs::exists(root / "ckpt" / "backpack" / "step-2"));
  fs::remove_all(root / "ckpt" / "backpack" / "step-4");
  fs::remove_all(root / "logs");
  auto resumed = levanter::trainer::train(cfg(4), quiet);
  EXPECT_EQ(resumed.start_step, 2);
  auto b = losses(resumed.paths.metrics);
  ASSERT_EQ(b.size(), 2u);
  for (auto& [step, loss] : b) EXPECT_EQ(loss, a[step]) << "step " << step;

  // `levanter senses` on the trained checkpoint: every sense of " bank", its top and bottom tokens by score, as the
  // library's sense_logits computes them.
  std::string args = " --trainer.num_train_steps 4 --model.num_layers 2 --model.seq_len 32 --data.cache_dir '" +
                     (root / "cache").string() + "'";
  std::string cmd = std::string(LEVANTER_BINARY_DIR) + "/levanter senses --config config/backpack_nano.yaml " +
                    "--checkpoint '" + (root / "ckpt" / "backpack").string() + "' --word bank --top_k 3 --json" + args +
                    " > '" + (root / "senses.jsonl").string() + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(root / "senses.jsonl");
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  auto row = nlohmann::json::parse(line);
  EXPECT_EQ(row["token"], " bank");
  ASSERT_EQ(row["senses"].size(), 16u);
  auto model = levanter::trainer::load_model_from_checkpoint(cfg(4), (root / "ckpt" / "backpack").string());
  auto& bp = dynamic_cast<BackpackLMHeadModel&>(*model);
  at::NoGradGuard no_grad;
  NamedArray one(at::full({1, 1}, row["id"].get<int64_t>(), at::kLong), {Axis("batch", 1), Axis("position", 1)});
  at::Tensor scores =
      haliax::rearrange(bp.sense_logits(one), {"batch", "position", "senses", "vocab"}).array().reshape({16, -1});
  for (int64_t s = 0; s < 16; ++s) {
    const auto& sense = row["senses"][s];
    ASSERT_EQ(sense["top"].size(), 3u);
    EXPECT_EQ(sense["top"][0]["id"].get<int64_t>(), scores[s].argmax().item<int64_t>()) << "sense " << s;
    EXPECT_EQ(sense["bottom"][0]["id"].get<int64_t>(), scores[s].argmin().item<int64_t>()) << "sense " << s;
    EXPECT_GE(sense["top"][0]["score"].get<double>(), sense["top"][2]["score"].get<double>());
  }
  EXPECT_FALSE(std::getline(in, line));  // " bank" is one GPT-2 token
  fs::current_path(old);
  fs::remove_all(root);
}
