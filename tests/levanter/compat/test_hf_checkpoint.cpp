// Hugging Face model directories without Python (tests/interop/ checks them against transformers itself):
// bad directories are refused by name; the trainer starts from one (initialize_from_hf, use_hf_model_config)
// and exports them while training (hf_save_path); `levanter import` makes a checkpoint that
// trainer.initialize_from continues from.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "levanter/checkpoint/safetensors.h"
#include "levanter/compat/hf/hf_checkpoint.h"
#include "levanter/models/gpt2/gpt2.h"
#include "levanter/runtime/file_io.h"
#include "levanter/temp_dir.h"
#include "levanter/trainer/trainer.h"

namespace fs = std::filesystem;
namespace hf = levanter::compat::hf;
using haliax::Axis;
using ::testing::HasSubstr;

namespace {

const std::string kTokenizer = std::string(LEVANTER_SOURCE_DIR) + "/data/gpt2/tokenizer.json";
const std::string kCorpus = std::string(LEVANTER_SOURCE_DIR) + "/data/corpus/austen/validation.jsonl.gz";

levanter::models::Gpt2Config tiny() {
  levanter::models::Gpt2Config c;
  c.seq_len = 32;
  c.hidden_dim = 16;
  c.num_layers = 2;
  c.num_heads = 2;
  return c;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

bool same_params(levanter::models::LmHeadModel& a, levanter::models::LmHeadModel& b) {
  auto sa = haliax::nn::to_state_dict(a), sb = haliax::nn::to_state_dict(b);
  if (sa.size() != sb.size()) return false;
  for (size_t i = 0; i < sa.size(); ++i) {
    if (sa[i].first != sb[i].first || !at::equal(sa[i].second, sb[i].second)) return false;
  }
  return true;
}

class HfCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = levanter::testing::fresh_test_dir("levanter_hf");
    model_ = tiny().build(Axis("vocab", 50257), haliax::random::Key(11));
    hf::ExportOptions o;
    o.output = (root_ / "hf").string();
    o.tokenizer_path = kTokenizer;
    hf::export_model(*model_, o);
  }
  void TearDown() override { fs::remove_all(root_); }

  levanter::trainer::TrainLmConfig config(const std::string& extra, const std::string& model = "") {
    fs::path f = root_ / "c.yaml";
    std::ofstream(f) << "data:\n  train_urls: [\"" << kCorpus << "\"]\n  validation_urls: [\"" << kCorpus
                     << "\"]\n  cache_dir: " << (root_ / "cache").string() << "\n"
                     << (model.empty() ? "model:\n  type: gpt2\n  hidden_dim: 16\n  num_heads: 2\n  num_layers: 2\n"
                                         "  seq_len: 32\n"
                                       : model)
                     << "trainer:\n  seed: 1\n  num_train_steps: 2\n  train_batch_size: 2\n  steps_per_eval: 100\n"
                        "  max_eval_batches: 1\n  num_threads: 2\n  peak_flops: 1e9\n  id: hf\n  log_dir: "
                     << (root_ / "logs").string() << "\n  checkpointer:\n    base_path: " << (root_ / "ckpt").string()
                     << "\n    save_interval: 0s\n    keep: []\n"
                     << extra;
    return levanter::trainer::load_train_config(f.string(), {});
  }

  fs::path root_;
  std::unique_ptr<levanter::models::LmHeadModel> model_;
};

}  // namespace

TEST_F(HfCheckpoint, WritesWhatTransformersReads) {
  const fs::path d = root_ / "hf";
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                        "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"}) {
    EXPECT_TRUE(fs::exists(d / f)) << f;
  }
  auto config = nlohmann::json::parse(levanter::runtime::read_small_file((d / "config.json").string()));
  EXPECT_EQ(config["architectures"][0], "GPT2LMHeadModel");
  EXPECT_EQ(config["model_type"], "gpt2");
  EXPECT_EQ(config["n_layer"], 2);
  EXPECT_EQ(config["n_embd"], 16);
  EXPECT_EQ(config["vocab_size"], 50257);
  EXPECT_EQ(config["eos_token_id"], 50256);
  EXPECT_EQ(config["torch_dtype"], "float32");
  auto st = levanter::checkpoint::load_safetensors((d / "model.safetensors").string());
  EXPECT_EQ(st.metadata.at("format"), "pt");  // transformers refuses safetensors without it
  std::map<std::string, std::vector<int64_t>> shapes;
  for (auto& [k, t] : st.tensors) shapes[k] = t.sizes().vec();
  EXPECT_EQ(shapes["transformer.h.0.attn.c_attn.weight"], (std::vector<int64_t>{16, 48}));  // Conv1D: (in, 3 * in)
  EXPECT_EQ(shapes["transformer.h.1.attn.c_proj.weight"], (std::vector<int64_t>{16, 16}));
  EXPECT_EQ(shapes["transformer.h.0.attn.c_attn.bias"], (std::vector<int64_t>{48}));
  EXPECT_EQ(shapes.count("lm_head.weight"), 0u);  // tied: saved once, as transformers does
  auto tc = nlohmann::json::parse(levanter::runtime::read_small_file((d / "tokenizer_config.json").string()));
  EXPECT_EQ(tc["tokenizer_class"], "GPT2Tokenizer");
  EXPECT_EQ(tc["eos_token"], "<|endoftext|>");
  EXPECT_EQ(tc["model_max_length"], 32);
  // And it reads back to the same parameters.
  auto back = tiny().build(Axis("vocab", 50257), haliax::random::Key(99));
  hf::load_into(*back, hf::read_model_dir(d.string()));
  EXPECT_TRUE(same_params(*back, *model_));
}

TEST_F(HfCheckpoint, BadDirectoriesAreRefusedByName) {
  const fs::path d = root_ / "hf";
  EXPECT_THAT(error_of([&] { hf::read_model_dir((root_ / "nothing").string()); }),
              HasSubstr("no config.json here: not a Hugging Face model directory"));
  auto back = tiny().build(Axis("vocab", 50257), haliax::random::Key(0));
  auto load = [&] { hf::load_into(*back, hf::read_model_dir(d.string())); };

  // An architecture we do not have, named with the ones we do.
  auto config = nlohmann::json::parse(levanter::runtime::read_small_file((d / "config.json").string()));
  auto with = [&](const nlohmann::json& c) {
    levanter::runtime::write_file_atomic((d / "config.json").string(), c.dump());
  };
  nlohmann::json mistral = config;
  mistral["model_type"] = "mistral";
  with(mistral);
  EXPECT_THAT(error_of([&] { hf::config_from_dir(hf::read_model_dir(d.string(), false)); }),
              HasSubstr("model_type 'mistral' is not supported (supported: gpt2, llama)"));
  // A different architecture than the model's, and a different vocabulary.
  nlohmann::json deeper = config;
  deeper["n_layer"] = 3;
  with(deeper);
  EXPECT_THAT(error_of(load), HasSubstr("\"n_layer\" is 3 but the model config gives 2"));
  nlohmann::json vocab = config;
  vocab["vocab_size"] = 1000;
  with(vocab);
  EXPECT_THAT(error_of(load), HasSubstr("\"vocab_size\" is 1000 but the tokenizer has 50257 tokens"));
  with(config);
  EXPECT_NO_THROW(load());

  // A missing tensor, an unexpected one, a wrong shape: each named.
  auto st = levanter::checkpoint::load_safetensors((d / "model.safetensors").string());
  auto write = [&](const haliax::StateDict& t) {
    levanter::checkpoint::save_safetensors((d / "model.safetensors").string(), t, {{"format", "pt"}});
  };
  haliax::StateDict missing(st.tensors.begin() + 1, st.tensors.end());
  write(missing);
  EXPECT_THAT(error_of(load), HasSubstr("tensor transformer.wte.weight is missing"));
  haliax::StateDict extra = st.tensors;
  extra.emplace_back("transformer.h.9.mlp.c_fc.weight", at::zeros({16, 64}));
  write(extra);
  EXPECT_THAT(error_of(load), HasSubstr("unexpected tensor transformer.h.9.mlp.c_fc.weight"));
  haliax::StateDict wrong = st.tensors;
  for (auto& [k, t] : wrong) {
    if (k == "transformer.h.0.attn.c_attn.weight") t = at::zeros({48, 16});
  }
  write(wrong);
  EXPECT_THAT(error_of(load),
              HasSubstr("tensor transformer.h.0.attn.c_attn.weight has shape (48, 16), expected (16, 48)"));
  // Buffers of old transformers versions (the causal-mask attn.bias) are ignored.
  haliax::StateDict old = st.tensors;
  old.emplace_back("transformer.h.0.attn.bias", at::ones({1, 1, 32, 32}));
  write(old);
  EXPECT_NO_THROW(load());
}

TEST_F(HfCheckpoint, TrainerStartsFromADirectoryAndExportsWhileTraining) {
  const std::string dir = (root_ / "hf").string();
  {
    levanter::trainer::Trainer t(config("initialize_from_hf: " + dir + "\n"));
    levanter::trainer::TrainerState s = t.initial_state();
    EXPECT_EQ(s.step, 0);
    EXPECT_TRUE(same_params(*s.model, *model_));
  }
  // The and older configs' spellings: trainer.initialize_from_hf, model.initialize_from_hf.
  EXPECT_EQ(config("  initialize_from_hf: " + dir + "\n").initialize_from_hf, dir);
  EXPECT_EQ(config("",
                   "model:\n  type: gpt2\n  hidden_dim: 16\n  num_heads: 2\n  num_layers: 2\n  seq_len: 32\n"
                   "  initialize_from_hf: " +
                       dir + "\n")
                .initialize_from_hf,
            dir);
  EXPECT_THAT(error_of([&] { config("  initialize_from_hf: " + dir + "\ninitialize_from_hf: " + dir + "\n"); }),
              HasSubstr("trainer.initialize_from_hf and initialize_from_hf are both set"));
  // use_hf_model_config: the model section is replaced by the directory's config.json.
  auto c = config("initialize_from_hf: " + dir + "\nuse_hf_model_config: true\n",
                  "model:\n  type: gpt2\n  hidden_dim: 64\n  num_heads: 4\n  num_layers: 5\n  seq_len: 32\n");
  EXPECT_EQ(c.model.as<levanter::models::Gpt2Config>().num_layers, 2);
  EXPECT_EQ(c.model.as<levanter::models::Gpt2Config>().hidden_dim, 16);
  // Without it, a different model section is an error naming the field.
  EXPECT_THAT(error_of([&] {
                levanter::trainer::Trainer t(
                    config("initialize_from_hf: " + dir + "\n",
                           "model:\n  type: gpt2\n  hidden_dim: 16\n  num_heads: 2\n  num_layers: 3\n  seq_len: 32\n"));
                t.initial_state();
              }),
              HasSubstr("\"n_layer\" is 2 but the model config gives 3"));
  EXPECT_THAT(error_of([&] { config("initialize_from_hf: true\n"); }), HasSubstr("needs the network"));

  // hf_save_path: a model directory every hf_save_steps steps (and at the end), loadable again.
  levanter::trainer::TrainOptions quiet;
  quiet.progress = false;
  auto r = levanter::trainer::train(
      config("hf_save_path: " + (root_ / "hf_out").string() + "\nhf_save_steps: 1\nhf_save_dtype: bfloat16\n"), quiet);
  for (const char* step : {"step-1", "step-2"}) {
    EXPECT_TRUE(fs::exists(root_ / "hf_out" / "hf" / step / "model.safetensors")) << step;
    EXPECT_TRUE(fs::exists(root_ / "hf_out" / "hf" / step / "tokenizer.json")) << step;
  }
  auto st = levanter::checkpoint::load_safetensors((root_ / "hf_out" / "hf" / "step-2" / "model.safetensors").string());
  EXPECT_EQ(st.tensors.front().second.scalar_type(), at::kBFloat16);
  auto exported = tiny().build(Axis("vocab", 50257), haliax::random::Key(0));
  hf::load_into(*exported, hf::read_model_dir((root_ / "hf_out" / "hf" / "step-2").string()));
  auto trained = levanter::trainer::load_model_from_checkpoint(config(""), *r.last_checkpoint);
  auto a = haliax::nn::to_state_dict(*exported), b = haliax::nn::to_state_dict(*trained);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(at::equal(a[i].second, b[i].second.to(at::kBFloat16).to(at::kFloat))) << a[i].first;
  }
}

TEST_F(HfCheckpoint, ImportCommandMakesACheckpointTrainingContinuesFrom) {
  const std::string bin = std::string(LEVANTER_BINARY_DIR) + "/levanter";
  const std::string cmd = bin + " import " + (root_ / "hf").string() + " --output " + (root_ / "imported").string() +
                          " > " + (root_ / "import.txt").string() + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << levanter::runtime::read_small_file((root_ / "import.txt").string());
  EXPECT_THAT(levanter::runtime::read_small_file((root_ / "import.txt").string()), HasSubstr("num_layers: 2"));
  const std::string ckpt = (root_ / "imported" / "step-0").string();
  auto loaded = levanter::trainer::load_model_from_checkpoint(config(""), ckpt);
  EXPECT_TRUE(same_params(*loaded, *model_));
  // trainer.initialize_from continues from it; it has no optimizer state, so the optimizer starts fresh.
  levanter::trainer::Trainer t(config("  initialize_from: " + ckpt + "\n"));
  levanter::trainer::TrainerState s = t.initial_state();
  EXPECT_TRUE(same_params(*s.model, *model_));
}

// `levanter sample` on a Hugging Face directory: the text is a function of the seed, whatever the thread count;
// several prompts come back as JSON lines with exactly the asked number of tokens (--no_eos).
TEST_F(HfCheckpoint, SampleCommandIsAFunctionOfTheSeedWhateverTheThreads) {
  const std::string bin = std::string(LEVANTER_BINARY_DIR) + "/levanter";
  auto run = [&](const std::string& env, const std::string& args, const std::string& name) {
    const fs::path out = root_ / (name + ".out"), err = root_ / (name + ".err");
    const std::string cmd = env + " " + bin + " sample --hf " + (root_ / "hf").string() + " " + args + " > " +
                            out.string() + " 2> " + err.string();
    EXPECT_EQ(std::system(cmd.c_str()), 0) << levanter::runtime::read_small_file(err.string());
    EXPECT_THAT(levanter::runtime::read_small_file(err.string()), HasSubstr("tokens/s"));
    return levanter::runtime::read_small_file(out.string());
  };
  const std::string args = "--prompt 'It is a truth universally' --max_new_tokens 24 --temperature 1 --no_eos";
  const std::string one = run("OMP_NUM_THREADS=1", args + " --seed 3", "one");
  EXPECT_EQ(one.rfind("It is a truth universally", 0), 0u) << one;
  EXPECT_GT(one.size(), std::string("It is a truth universally\n").size() + 10);
  EXPECT_EQ(run("OMP_NUM_THREADS=2", args + " --seed 3", "two"), one);
  EXPECT_NE(run("OMP_NUM_THREADS=2", args + " --seed 4", "other"), one);

  std::ofstream(root_ / "prompts.jsonl") << "{\"prompt\": \"Emma Woodhouse\"}\n\n{\"text\": \"Mr. Darcy\"}\n";
  const std::string batch = run(
      "OMP_NUM_THREADS=2", "--prompts " + (root_ / "prompts.jsonl").string() + " --max_new_tokens 7 --no_eos", "batch");
  std::istringstream lines(batch);
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(lines, line);) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 2u) << batch;
  EXPECT_EQ(rows[0]["prompt"], "Emma Woodhouse");
  EXPECT_EQ(rows[1]["prompt"], "Mr. Darcy");
  for (const auto& r : rows) EXPECT_EQ(r["tokens"].size(), 7u) << r.dump();

  // Bad input is named.
  const std::string cmd = bin + " sample --hf " + (root_ / "hf").string() + " --prompts " +
                          (root_ / "missing.jsonl").string() + " > " + (root_ / "bad.txt").string() + " 2>&1";
  EXPECT_NE(std::system(cmd.c_str()), 0);
  EXPECT_THAT(levanter::runtime::read_small_file((root_ / "bad.txt").string()), HasSubstr("missing.jsonl"));
}
