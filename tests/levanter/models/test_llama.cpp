// Llama without Python (tests/interop/ checks it against transformers' LlamaForCausalLM): decoding with the
// key/value cache gives the full forward pass; grouped-query attention is multi-head attention with each key/value
// head repeated (the one attention function serves MHA, GQA and MQA); rotary embeddings rotate by position and
// keep norms; config errors name the key; Levanter's Llama configs load; a Llama trains and resumes bit for bit.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "levanter/models/llama/llama.h"
#include "levanter/models/model_config.h"
#include "levanter/trainer/config.h"
#include "levanter/trainer/trainer.h"

namespace fs = std::filesystem;
namespace nn = haliax::nn;
using haliax::Axis;
using haliax::NamedArray;
using levanter::models::LlamaConfig;
using levanter::models::LlamaLMHeadModel;
using ::testing::HasSubstr;

namespace {

LlamaConfig tiny(int64_t kv_heads, const std::string& rope = "default") {
  LlamaConfig c;
  c.seq_len = 48;
  c.hidden_dim = 32;
  c.intermediate_dim = 40;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = kv_heads;
  c.rope.type = rope;
  if (rope == "llama3") c.rope.original_max_position_embeddings = 8;
  return c;
}

std::unique_ptr<levanter::models::LmHeadModel> build(const LlamaConfig& c, uint64_t seed = 3) {
  auto m = c.build(Axis("vocab", 61), haliax::random::Key(seed));
  nn::for_each_parameter(*m, [](const nn::ParamInfo& info, NamedArray& p) {
    p = p + haliax::random::normal(haliax::random::Key(std::hash<std::string>{}(info.path) % 1009), p.axes()) * 0.2;
  });
  return m;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(Llama, ParameterPathsAreHuggingFaces) {
  auto m = build(tiny(2));
  std::vector<std::string> keys;
  for (auto& [k, t] : nn::to_state_dict(*m)) keys.push_back(k + " " + std::to_string(t.dim()));
  EXPECT_THAT(keys, ::testing::Contains("model.embed_tokens.weight 2"));
  EXPECT_THAT(keys, ::testing::Contains("model.layers.1.self_attn.q_proj.weight 4"));  // (kv, group, head, embed)
  EXPECT_THAT(keys, ::testing::Contains("model.layers.0.self_attn.k_proj.weight 3"));
  EXPECT_THAT(keys, ::testing::Contains("model.layers.0.mlp.gate_proj.weight 2"));
  EXPECT_THAT(keys, ::testing::Contains("model.layers.0.post_attention_layernorm.weight 1"));
  EXPECT_THAT(keys, ::testing::Contains("model.norm.weight 1"));
  EXPECT_THAT(keys, ::testing::Contains("lm_head.weight 2"));
  LlamaConfig tied = tiny(2);
  tied.tie_word_embeddings = true;
  auto t = build(tied);
  for (auto& [k, v] : nn::to_state_dict(*t)) EXPECT_NE(k, "lm_head.weight");
  EXPECT_TRUE(t->lm_head().array().is_same(dynamic_cast<LlamaLMHeadModel&>(*t).embed_tokens.weight.array()));
}

TEST(Llama, DecodingWithTheCacheGivesTheFullForwardPass) {
  for (int64_t kv : {4, 2, 1}) {
    for (const char* rope : {"default", "llama3"}) {
      auto m = build(tiny(kv, rope));
      at::NoGradGuard ng;
      NamedArray ids = haliax::random::randint(haliax::random::Key(1), {Axis("batch", 2), Axis("position", 13)}, 0, 61);
      at::Tensor full = m->activations(ids).array();
      auto cache = m->start_decode(2, 20);
      std::vector<at::Tensor> parts;
      for (auto [start, n] : {std::pair<int64_t, int64_t>{0, 5}, {5, 1}, {6, 4}, {10, 3}}) {
        NamedArray chunk(ids.array().narrow(1, start, n), {Axis("batch", 2), Axis("position", n)});
        parts.push_back(m->decode(chunk, *cache).array());
      }
      at::Tensor stepwise = at::cat(parts, 1);
      EXPECT_TRUE(at::allclose(stepwise, full, 1e-5, 1e-5))
          << "kv_heads " << kv << " rope " << rope << ": max difference "
          << (stepwise - full).abs().max().item<double>();
    }
  }
}

TEST(Llama, GroupedQueryAttentionIsMultiHeadWithRepeatedKeyValueHeads) {
  // A GQA model (2 kv heads for 4 query heads) and an MHA model whose k/v projections repeat each kv head twice
  // (query head h uses kv head h / 2) compute the same function.
  auto gqa = build(tiny(2));
  auto mha = tiny(4).build(Axis("vocab", 61), haliax::random::Key(0));
  auto src = nn::to_state_dict(*gqa);
  haliax::StateDict dst;
  for (auto& [k, t] : nn::to_state_dict(*mha)) {
    at::Tensor s;
    for (auto& [sk, st] : src) {
      if (sk == k) s = st;
    }
    if (k.find("k_proj") != std::string::npos || k.find("v_proj") != std::string::npos) {
      s = s.repeat_interleave(2, 0);  // (kv_heads, head_size, embed) -> (heads, head_size, embed)
    } else if (k.find("q_proj") != std::string::npos) {
      s = s.reshape(t.sizes());  // (kv, group, head_size, embed) -> (heads = kv * group, 1, head_size, embed)
    }
    dst.emplace_back(k, s.reshape(t.sizes()).clone());
  }
  nn::from_state_dict(*mha, dst);
  at::NoGradGuard ng;
  NamedArray ids = haliax::random::randint(haliax::random::Key(2), {Axis("batch", 2), Axis("position", 17)}, 0, 61);
  at::Tensor a = gqa->logits(ids).array(), b = mha->logits(ids).array();
  EXPECT_TRUE(at::allclose(a, b, 1e-5, 1e-5)) << "max difference " << (a - b).abs().max().item<double>();
}

TEST(Llama, RotaryEmbeddingsRotateByPosition) {
  levanter::models::RopeConfig rc;
  Axis HeadSize("head_size", 8), Pos("position", 6);
  levanter::models::RotaryEmbedding rope(rc, HeadSize);
  // inv_freq = 1 / 10000^(2i / d).
  for (int64_t i = 0; i < 4; ++i) EXPECT_NEAR(rope.inv_freq()[i].item<double>(), std::pow(10000.0, -2.0 * i / 8), 1e-7);
  // Norms are kept, position 0 is the identity, and q.k depends only on the distance between positions.
  NamedArray x = haliax::random::normal(haliax::random::Key(4), {Pos, HeadSize});
  NamedArray y = rope.apply(x, rope.tables(Pos, 0, at::kFloat));
  EXPECT_TRUE(at::allclose(y.array().norm(2, {1}), x.array().norm(2, {1}), 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(y.array()[0], x.array()[0]));
  NamedArray same = haliax::random::normal(haliax::random::Key(5), {HeadSize});
  NamedArray rows = haliax::broadcast_to(same, {Pos, HeadSize});
  at::Tensor r = rope.apply(rows, rope.tables(Pos, 0, at::kFloat)).array();
  at::Tensor r_later = rope.apply(rows, rope.tables(Pos, 100, at::kFloat)).array();
  EXPECT_NEAR(r[1].dot(r[3]).item<double>(), r_later[1].dot(r_later[3]).item<double>(), 1e-4);
  EXPECT_NEAR(r[0].dot(r[2]).item<double>(), r[3].dot(r[5]).item<double>(), 1e-4);
  // linear scaling divides the frequencies by the factor; llama3 leaves the highest ones alone.
  rc.type = "linear";
  rc.factor = 4;
  EXPECT_NEAR(levanter::models::RotaryEmbedding(rc, HeadSize).inv_freq()[1].item<double>(),
              rope.inv_freq()[1].item<double>() / 4, 1e-8);
  levanter::models::RopeConfig l3;
  l3.type = "llama3";
  l3.original_max_position_embeddings = 64;
  levanter::models::RotaryEmbedding llama3(l3, HeadSize);
  levanter::models::RopeConfig plain;
  plain.theta = 500000;
  levanter::models::RotaryEmbedding base(plain, HeadSize);
  EXPECT_FLOAT_EQ(llama3.inv_freq()[0].item<float>(), base.inv_freq()[0].item<float>());
  EXPECT_FLOAT_EQ(llama3.inv_freq()[3].item<float>(), base.inv_freq()[3].item<float>() / 8);
}

TEST(Llama, ConfigErrorsNameTheKey) {
  LlamaConfig c = tiny(3);
  EXPECT_THAT(error_of([&] { c.validate(); }),
              HasSubstr("model.num_kv_heads: num_heads (4) must be divisible by num_kv_heads (3)"));
  c = tiny(2, "yarn");
  EXPECT_THAT(error_of([&] { c.validate(); }), HasSubstr("model.rope.type: unknown rotary embedding 'yarn'"));
  c = tiny(2);
  c.head_dim = 7;
  EXPECT_THAT(error_of([&] { c.validate(); }), HasSubstr("model.head_dim: rotary embeddings need an even head size"));
  c = tiny(2);
  c.head_dim = 16;  // wider heads than hidden_dim / num_heads: allowed, as in transformers
  auto m = c.build(Axis("vocab", 61), haliax::random::Key(0));
  EXPECT_EQ(nn::to_state_dict(*m)[1].second.sizes(), (std::vector<int64_t>{2, 2, 16, 32}));
}

namespace {

const std::string kSource = LEVANTER_SOURCE_DIR;

levanter::trainer::TrainLmConfig load_in_source(const std::string& rel,
                                                const std::vector<std::string>& overrides = {}) {
  fs::path old = fs::current_path();
  fs::current_path(kSource);
  try {
    auto c = levanter::trainer::load_train_config(rel, overrides);
    fs::current_path(old);
    return c;
  } catch (...) {
    fs::current_path(old);
    throw;
  }
}

}  // namespace

TEST(Llama, LevantersLlamaConfigsLoadOrNameWhatIsMissing) {
  auto nano = load_in_source("tests/data/levanter_configs/llama2_nano.yaml");
  const auto& c = nano.model.as<LlamaConfig>();
  EXPECT_EQ(c.hidden_dim, 64);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.intermediate_dim, 11008);  // Levanter's default
  EXPECT_EQ(c.seq_len, 2048);
  EXPECT_EQ(c.rope.type, "default");
  EXPECT_DOUBLE_EQ(c.rope.resolved_theta(), 10000);
  EXPECT_FALSE(c.tie_word_embeddings);
  // llama_small_fast: everything parses (its tracker is a list); its tracker is wandb, refused by name.
  EXPECT_THAT(error_of([] { load_in_source("tests/data/levanter_configs/llama_small_fast.yaml"); }),
              HasSubstr("wandb"));
  auto fast = load_in_source("tests/data/levanter_configs/llama_small_fast.yaml", {"--trainer.tracker.type", "json"});
  EXPECT_EQ(fast.model.as<LlamaConfig>().intermediate_dim, 2048);
  EXPECT_EQ(*fast.trainer.tracker[0].project, "levanter");
  // Ours.
  auto small = load_in_source("config/llama_small.yaml");
  EXPECT_EQ(small.model.as<LlamaConfig>().num_layers, 12);
  EXPECT_TRUE(small.model.as<LlamaConfig>().tie_word_embeddings);
  auto rope = load_in_source("config/llama_nano.yaml", {"--model.rope", "{type: llama3, factor: 4}"});
  EXPECT_DOUBLE_EQ(rope.model.as<LlamaConfig>().rope.resolved_theta(), 500000);
  EXPECT_DOUBLE_EQ(rope.model.as<LlamaConfig>().rope.resolved_factor(), 4);
}

TEST(Llama, TrainsAndResumesBitForBit) {
  const fs::path root = fs::temp_directory_path() / ("levanter_llama_" + std::to_string(::getpid()));
  fs::remove_all(root);
  auto cfg = [&](int64_t steps) {
    return load_in_source("config/llama_nano.yaml", {"--trainer.num_train_steps",
                                                     std::to_string(steps),
                                                     "--trainer.train_batch_size",
                                                     "4",
                                                     "--model.num_layers",
                                                     "2",
                                                     "--model.seq_len",
                                                     "32",
                                                     "--trainer.steps_per_eval",
                                                     "100",
                                                     "--trainer.max_eval_batches",
                                                     "1",
                                                     "--trainer.id",
                                                     "llama",
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
  // step -> train/loss from metrics.jsonl (the last row of a step wins).
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
  // Preempted after step 2: only the step-2 checkpoint survives; the resumed run redoes steps 3 and 4.
  ASSERT_TRUE(fs::exists(root / "ckpt" / "llama" / "step-2"));
  fs::remove_all(root / "ckpt" / "llama" / "step-4");
  fs::remove_all(root / "logs");
  auto resumed = levanter::trainer::train(cfg(4), quiet);
  EXPECT_EQ(resumed.start_step, 2);
  auto b = losses(resumed.paths.metrics);
  ASSERT_EQ(b.size(), 2u);
  for (auto& [step, loss] : b) EXPECT_EQ(loss, a[step]) << "step " << step;
  fs::remove_all(root);
}
