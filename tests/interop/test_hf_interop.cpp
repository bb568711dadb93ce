// Hugging Face interop checked by transformers itself (tests/interop/hf_reference.py in the pinned venv of
// scripts/interop_env; offline): a random GPT2LMHeadModel saved by save_pretrained (sharded) imports here with
// the same logits on real text; a model exported here loads with AutoModelForCausalLM / AutoTokenizer with the
// same logits and the same token ids; HF -> ours -> HF gives bit-identical tensors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "levanter/checkpoint/safetensors.h"
#include "levanter/compat/hf/hf_checkpoint.h"
#include "levanter/data/text.h"
#include "levanter/data/tokenizer/tokenizer.h"
#include "levanter/inference/generate.h"
#include "levanter/models/gpt2/gpt2.h"
#include "levanter/models/hf_adapter.h"
#include "levanter/models/llama/llama.h"
#include "levanter/models/model_config.h"
#include "levanter/npy.h"

namespace fs = std::filesystem;
namespace hf = levanter::compat::hf;
using haliax::Axis;
using haliax::NamedArray;

namespace {

const std::string kTokenizer = std::string(LEVANTER_SOURCE_DIR) + "/data/gpt2/tokenizer.json";

// Runs the reference script; the test fails with its output if it fails.
void reference(const std::string& args) {
  const std::string python = LEVANTER_INTEROP_PYTHON;
  ASSERT_TRUE(fs::exists(python)) << python << " is missing: run scripts/interop_env (scripts/test does)";
  const std::string cmd = python + " " + LEVANTER_SOURCE_DIR + "/tests/interop/hf_reference.py " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof(buf), p)) out += buf;
  ASSERT_EQ(pclose(p), 0) << cmd << "\n" << out;
}

class HfInterop : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("levanter_hf_interop_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
    // Real text: the first sentences of the bundled Austen validation split, as two rows of 40 tokens.
    tok_ = std::make_unique<levanter::data::Tokenizer>(levanter::data::Tokenizer::from_file(kTokenizer));
    text_ =
        "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
        "want of a wife.\n\nHowever little known the feelings or views of such a man may be on his first "
        "entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he "
        "is considered the rightful property of some one or other of their daughters.\n\n\"My dear Mr. "
        "Bennet,\" said his lady to him one day, \"have you heard that Netherfield Park is let at last?\"";
    auto ids = tok_->encode(text_);
    ASSERT_GE(ids.size(), 80u);
    std::vector<int64_t> v(ids.begin(), ids.begin() + 80);
    ids_ = at::tensor(v, at::kLong).reshape({2, 40});
    levanter::testing::write_npy((root_ / "ids.npy").string(), ids_);
  }
  void TearDown() override { fs::remove_all(root_); }

  at::Tensor our_logits(levanter::models::LmHeadModel& model) {
    at::NoGradGuard ng;
    NamedArray ids(ids_, {Axis("batch", 2), Axis("position", 40)});
    return model.logits(ids).array();  // (batch, position, vocab)
  }

  std::unique_ptr<levanter::models::LmHeadModel> import(const fs::path& dir) {
    hf::ModelDir d = hf::read_model_dir(dir.string());
    levanter::models::ModelConfig mc(hf::config_from_dir(d));
    auto model = mc->build(Axis("vocab", d.config.at("vocab_size").get<int64_t>()), haliax::random::Key(0));
    hf::load_into(*model, d);
    return model;
  }

  fs::path root_;
  std::unique_ptr<levanter::data::Tokenizer> tok_;
  std::string text_;
  at::Tensor ids_;
};

void expect_close(const at::Tensor& ours, const at::Tensor& theirs) {
  ASSERT_EQ(ours.sizes(), theirs.sizes());
  const double diff = (ours - theirs).abs().max().item<double>();
  EXPECT_TRUE(at::allclose(ours, theirs, 1e-4, 1e-4)) << "max logit difference " << diff;
}

}  // namespace

TEST_F(HfInterop, ImportedTransformersModelGivesTheirLogits) {
  // Sharded by save_pretrained (max_shard_size 2MB: model.safetensors.index.json and several files).
  reference("make " + (root_ / "hf").string() + " --ids " + (root_ / "ids.npy").string() + " --out " +
            (root_ / "hf_logits.npy").string() + " --max-shard-size 2MB");
  ASSERT_TRUE(fs::exists(root_ / "hf" / "model.safetensors.index.json"));
  auto model = import(root_ / "hf");
  EXPECT_EQ(model->config().model_type(), "gpt2");
  const auto& c = dynamic_cast<const levanter::models::Gpt2Config&>(model->config());
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.hidden_dim, 64);
  EXPECT_EQ(c.seq_len, 64);
  expect_close(our_logits(*model), levanter::testing::read_npy((root_ / "hf_logits.npy").string()));

  // HF -> ours -> HF: the same tensors, bit for bit (one file this time: transformers merges the shards).
  hf::ExportOptions o;
  o.output = (root_ / "back").string();
  hf::export_model(*model, o);
  reference("compare " + (root_ / "hf").string() + " " + (root_ / "back").string());
}

TEST_F(HfInterop, ExportedModelLoadsInTransformersWithOurLogitsAndTokenizer) {
  levanter::models::Gpt2Config c;
  c.seq_len = 64;
  c.hidden_dim = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.scale_attn_by_inverse_layer_idx = true;
  auto model = c.build(Axis("vocab", 50257), haliax::random::Key(3));
  // Levanter's init makes logits tiny; larger weights make the comparison exercise real values.
  haliax::nn::for_each_parameter(*model, [](const haliax::nn::ParamInfo& info, NamedArray& p) {
    p = p + haliax::random::normal(haliax::random::Key(std::hash<std::string>{}(info.path) % 997), p.axes()) * 0.05;
  });
  hf::ExportOptions o;
  o.output = (root_ / "ours").string();
  o.tokenizer_path = kTokenizer;
  o.max_shard_bytes = 3'000'000;  // sharded: wte alone is 6.4 MB
  auto files = hf::export_model(*model, o);
  EXPECT_THAT(files, ::testing::Contains("model.safetensors.index.json"));
  EXPECT_THAT(files, ::testing::Contains("tokenizer.json"));
  EXPECT_THAT(files, ::testing::Contains("merges.txt"));
  std::ofstream(root_ / "text.txt") << text_;
  auto text_ids = tok_->encode(text_);
  levanter::testing::write_npy((root_ / "text_ids.npy").string(),
                               at::tensor(std::vector<int64_t>(text_ids.begin(), text_ids.end()), at::kLong));
  reference("load " + o.output + " --ids " + (root_ / "ids.npy").string() + " --out " +
            (root_ / "their_logits.npy").string() + " --text " + (root_ / "text.txt").string() + " --text-ids " +
            (root_ / "text_ids.npy").string());
  expect_close(our_logits(*model), levanter::testing::read_npy((root_ / "their_logits.npy").string()));

  // Refuses to overwrite; replaces with overwrite.
  EXPECT_THROW(hf::export_model(*model, o), std::runtime_error);
  o.overwrite = true;
  o.max_shard_bytes = int64_t{1} << 40;
  EXPECT_NO_THROW(hf::export_model(*model, o));
  EXPECT_TRUE(fs::exists(root_ / "ours" / "model.safetensors"));
  EXPECT_FALSE(fs::exists(root_ / "ours" / "model.safetensors.index.json"));
}

TEST_F(HfInterop, PyTorchStateDictsBothWays) {
  // transformers' pytorch_model.bin (save_pretrained(safe_serialization=False)) imports with their logits.
  reference("make " + (root_ / "bin").string() + " --bin --ids " + (root_ / "ids.npy").string() + " --out " +
            (root_ / "bin_logits.npy").string());
  ASSERT_TRUE(fs::exists(root_ / "bin" / "pytorch_model.bin"));
  auto model = import(root_ / "bin");
  expect_close(our_logits(*model), levanter::testing::read_npy((root_ / "bin_logits.npy").string()));
  // Ours as pytorch_model.bin: torch.load reads it into GPT2LMHeadModel with strict keys, same logits.
  hf::ExportOptions o;
  o.output = (root_ / "ours_bin").string();
  o.format = hf::ExportOptions::Format::kTorch;
  EXPECT_THAT(hf::export_model(*model, o), ::testing::Contains("pytorch_model.bin"));
  reference("torchload " + o.output + " --ids " + (root_ / "ids.npy").string() + " --out " +
            (root_ / "torch_logits.npy").string());
  expect_close(our_logits(*model), levanter::testing::read_npy((root_ / "torch_logits.npy").string()));
}

TEST_F(HfInterop, GreedyContinuationEqualsTransformersGenerate) {
  // The model of save_pretrained, imported; its greedy continuation here and in transformers' generate().
  reference("make " + (root_ / "hf").string() + " --ids " + (root_ / "ids.npy").string() + " --out " +
            (root_ / "unused.npy").string() + " --positions 64 --noise 0.5");
  auto model = import(root_ / "hf");
  std::vector<int64_t> prompt(ids_.data_ptr<int64_t>(), ids_.data_ptr<int64_t>() + 20);
  levanter::testing::write_npy((root_ / "prompt.npy").string(), at::tensor(prompt, at::kLong));
  reference("generate " + (root_ / "hf").string() + " --prompt-ids " + (root_ / "prompt.npy").string() +
            " --max-new 30 --out " + (root_ / "theirs.npy").string());
  at::Tensor theirs = levanter::testing::read_npy((root_ / "theirs.npy").string());
  levanter::inference::GenerateOptions o;
  o.temperature = 0;
  o.max_new_tokens = 30;
  o.eos_id = 50256;
  auto ours = levanter::inference::generate(*model, {prompt}, o, haliax::random::Key(0))[0];
  std::vector<int64_t> want(theirs.data_ptr<int64_t>(), theirs.data_ptr<int64_t>() + theirs.numel());
  EXPECT_EQ(ours, want);
  // Not a degenerate repetition: the comparison covers many different choices.
  EXPECT_GE(std::set<int64_t>(ours.begin(), ours.end()).size(), 10u);
}

// --- Llama: LlamaForCausalLM in transformers against ours ---------------------------------------------------------

namespace {

struct LlamaCase {
  int kv_heads;
  bool tie;
  std::string rope;  // default, linear, llama3
};

}  // namespace

// For MHA, GQA and MQA, tied and untied, and each rotary variant: a random LlamaForCausalLM imports with its
// logits, its loss and every gradient (f32, fixed tolerances); exported again it loads in transformers with our
// logits, and as pytorch_model.bin with strict keys.
TEST_F(HfInterop, LlamaLogitsLossAndGradientsEqualTransformers) {
  for (const LlamaCase& c :
       {LlamaCase{4, false, "default"}, LlamaCase{2, true, "llama3"}, LlamaCase{1, false, "linear"}}) {
    SCOPED_TRACE("kv_heads " + std::to_string(c.kv_heads) + (c.tie ? " tied" : " untied") + " rope " + c.rope);
    const fs::path dir = root_ / ("llama_" + c.rope), prefix = root_ / ("llama_ref_" + c.rope);
    reference("llama " + dir.string() + " --ids " + (root_ / "ids.npy").string() + " --out " + prefix.string() +
              " --kv-heads " + std::to_string(c.kv_heads) + (c.tie ? " --tie" : "") + " --rope-type " + c.rope +
              " --rope-factor " + (c.rope == "linear" ? "2" : "8"));
    auto model = import(dir);
    ASSERT_EQ(model->config().model_type(), "llama");
    const auto& lc = dynamic_cast<const levanter::models::LlamaConfig&>(model->config());
    EXPECT_EQ(lc.num_kv_heads, c.kv_heads);
    EXPECT_EQ(lc.tie_word_embeddings, c.tie);
    EXPECT_EQ(lc.rope.type, c.rope);
    expect_close(our_logits(*model), levanter::testing::read_npy(prefix.string() + "_logits.npy"));

    // Loss and gradients: transformers' mean next-token cross-entropy with labels = ids.
    haliax::nn::requires_grad_(*model);
    NamedArray ids(ids_, {Axis("batch", 2), Axis("position", 40)});
    NamedArray loss = model->compute_next_token_loss(ids);
    loss.array().backward();
    const double ref_loss = levanter::testing::read_npy(prefix.string() + "_loss.npy").item<double>();
    EXPECT_NEAR(loss.item(), ref_loss, 1e-5 * std::abs(ref_loss));
    auto ref_grads = levanter::checkpoint::load_safetensors(prefix.string() + "_grads.safetensors");
    std::map<std::string, at::Tensor> ref;
    for (auto& [k, t] : ref_grads.tensors) ref[k] = t;
    std::vector<std::pair<haliax::nn::ParamInfo, NamedArray>> grads;
    for (auto& [info, p] : haliax::nn::named_parameters(*model)) grads.emplace_back(info, p.grad());
    haliax::StateDict ours = haliax::nn::state_dict_from(grads);
    haliax::StateDict hf_layout = model->config().hf_adapter()->to_hf_state_dict(*model);
    ASSERT_EQ(ours.size(), ref.size());
    for (size_t i = 0; i < ours.size(); ++i) {
      const std::string& key = ours[i].first;
      ASSERT_TRUE(ref.count(key)) << key;
      at::Tensor g = ours[i].second.reshape(hf_layout[i].second.sizes());
      const double scale = ref[key].abs().max().item<double>();
      EXPECT_TRUE(at::allclose(g, ref[key], 1e-3, 1e-5 + 1e-4 * scale))
          << key << ": max grad difference " << (g - ref[key]).abs().max().item<double>() << " (max |grad| " << scale
          << ")";
    }

    // Ours -> a Hugging Face directory that transformers loads with our logits; and torch.load with strict keys.
    haliax::nn::requires_grad_(*model, false);
    hf::ExportOptions o;
    o.output = (root_ / ("llama_ours_" + c.rope)).string();
    o.tokenizer_path = kTokenizer;
    hf::export_model(*model, o);
    reference("load " + o.output + " --ids " + (root_ / "ids.npy").string() + " --out " +
              (root_ / "their_logits.npy").string());
    expect_close(our_logits(*model), levanter::testing::read_npy((root_ / "their_logits.npy").string()));
    reference("compare " + dir.string() + " " + o.output);
    o.output = (root_ / ("llama_bin_" + c.rope)).string();
    o.format = hf::ExportOptions::Format::kTorch;
    hf::export_model(*model, o);
    reference("torchload " + o.output + " --ids " + (root_ / "ids.npy").string() + " --out " +
              (root_ / "torch_logits.npy").string());
    expect_close(our_logits(*model), levanter::testing::read_npy((root_ / "torch_logits.npy").string()));
  }
}

// Greedy decoding with the key/value cache (rotary positions continuing past the prompt) gives transformers'
// generate() tokens, for grouped-query attention with llama3 rotary scaling.
TEST_F(HfInterop, LlamaGreedyContinuationEqualsTransformersGenerate) {
  const fs::path dir = root_ / "llama";
  reference("llama " + dir.string() + " --ids " + (root_ / "ids.npy").string() + " --out " +
            (root_ / "unused").string() + " --kv-heads 2 --rope-type llama3 --noise 0.5");
  auto model = import(dir);
  std::vector<int64_t> prompt(ids_.data_ptr<int64_t>(), ids_.data_ptr<int64_t>() + 20);
  levanter::testing::write_npy((root_ / "prompt.npy").string(), at::tensor(prompt, at::kLong));
  reference("generate " + dir.string() + " --prompt-ids " + (root_ / "prompt.npy").string() + " --max-new 40 --out " +
            (root_ / "theirs.npy").string());
  at::Tensor theirs = levanter::testing::read_npy((root_ / "theirs.npy").string());
  levanter::inference::GenerateOptions o;
  o.temperature = 0;
  o.max_new_tokens = 40;
  o.eos_id = 2;  // transformers' LlamaConfig default, which generate() stops at
  auto ours = levanter::inference::generate(*model, {prompt}, o, haliax::random::Key(0))[0];
  std::vector<int64_t> want(theirs.data_ptr<int64_t>(), theirs.data_ptr<int64_t>() + theirs.numel());
  EXPECT_EQ(ours, want);
  EXPECT_GE(std::set<int64_t>(ours.begin(), ours.end()).size(), 10u);
}
