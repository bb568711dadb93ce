// A model that is not GPT-2 trains through the same Trainer with no change in trainer/: a tiny test-only LM,
// registered here under its own model.type, is configured from YAML, trained, checkpointed, "crashed" by a
// hook of the test's own, and resumed; the resumed run's losses equal the uninterrupted run's, bit for bit.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>

#include "levanter/models/model_config.h"
#include "levanter/trainer/trainer.h"

namespace fs = std::filesystem;
namespace hax = haliax;
namespace nn = haliax::nn;
using levanter::models::ForwardOptions;
using levanter::models::LmConfigBase;
using levanter::models::LmHeadModel;

namespace {

// A residual MLP over token + position embeddings, with an untied LM head: no attention, so each position sees
// only its own token (a bigram model with a little depth).
struct TinyLmConfig : LmConfigBase<TinyLmConfig> {
  int64_t seq_len = 32;
  int64_t hidden_dim = 16;
  double dropout = 0.0;
  template <typename V>
  void fields(V& v) {
    v("seq_len", seq_len, "Positions");
    v("hidden_dim", hidden_dim, "Width");
    v("dropout", dropout, "Dropout on the MLP output");
  }
  std::string model_type() const override { return "test_tiny"; }
  int64_t max_seq_len() const override { return seq_len; }
  double flops_per_token(int64_t vocab) const override {
    return 2.0 * (2 * hidden_dim * 4 * hidden_dim + hidden_dim * vocab);
  }
  bool uses_dropout() const override { return dropout > 0; }
  void validate() const override {
    if (hidden_dim <= 0) throw std::invalid_argument("model.hidden_dim: must be positive");
  }
  std::unique_ptr<LmHeadModel> build(const hax::Axis& Vocab, const hax::random::Key& key) const override;
};

struct TinyLm : LmHeadModel {
  TinyLmConfig cfg;
  hax::Axis vocab;
  nn::Embedding wte, wpe;
  nn::LayerNorm ln;
  nn::MLP mlp;
  nn::Linear head;  // embed -> vocab, weight (vocab, embed)
  nn::Dropout drop;

  const levanter::models::LmConfig& config() const override { return cfg; }
  hax::Axis Vocab() const override { return vocab; }
  hax::Axis Pos() const override { return {"position", cfg.seq_len}; }
  hax::Axis Embed() const override { return {"embed", cfg.hidden_dim}; }
  hax::NamedArray activations(const hax::NamedArray& ids, const ForwardOptions& o) const override {
    hax::Axis P = ids.resolve_axis("position");
    hax::NamedArray x = wte.embed(ids) + wpe.embed(hax::arange(P));
    hax::NamedArray y = mlp(ln(x));
    return x + (o.key ? drop(y, o.key) : y);
  }
  const hax::NamedArray& lm_head() const override { return head.weight; }
  void visit(nn::ParamVisitor& v) override {
    v("wte", wte);
    v("wpe", wpe);
    v("ln", ln);
    v("mlp", mlp);
    v("head", head);
  }
  std::unique_ptr<LmHeadModel> clone() const override { return std::make_unique<TinyLm>(*this); }
};

std::unique_ptr<LmHeadModel> TinyLmConfig::build(const hax::Axis& Vocab, const hax::random::Key& key) const {
  auto k = key.split(4);
  auto m = std::make_unique<TinyLm>();
  m->cfg = *this;
  m->vocab = Vocab;
  hax::Axis E = m->Embed();
  m->wte = nn::Embedding::init(Vocab, {E}, k[0], 1.0);
  m->wpe = nn::Embedding::init(m->Pos(), {E}, k[1], 0.5);
  m->ln = nn::LayerNorm::init({E});
  m->mlp = nn::MLP::init({E}, {E}, 4 * hidden_dim, 1, k[2], nn::MLPOptions().set_activation(nn::silu));
  m->head = nn::Linear::init({E}, {Vocab}, k[3], nn::LinearOptions().set_use_bias(false));
  m->drop = nn::Dropout{dropout};
  return m;
}

const std::string kCorpus = std::string(LEVANTER_SOURCE_DIR) + "/data/corpus/austen/validation.jsonl.gz";

class CustomModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    levanter::models::register_model_type("test_tiny", [] { return std::make_unique<TinyLmConfig>(); });
    root_ = fs::temp_directory_path() / ("levanter_custom_model_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  levanter::trainer::TrainLmConfig config(const std::string& id) {
    fs::path f = root_ / "tiny.yaml";
    std::ofstream(f)
        << "data:\n  train_urls: [\"" << kCorpus << "\"]\n  validation_urls: [\"" << kCorpus
        << "\"]\n  cache_dir: " << (root_ / "cache").string()
        << "\nmodel:\n  type: test_tiny\n  hidden_dim: 8\n  seq_len: 16\n  dropout: 0.1\n"
           "trainer:\n  seed: 5\n  num_train_steps: 7\n  train_batch_size: 4\n  per_device_parallelism: 2\n"
           "  steps_per_eval: 100\n  max_eval_batches: 1\n  num_threads: 2\n  peak_flops: 1e9\n"
           "  id: "
        << id << "\n  log_dir: " << (root_ / "logs").string()
        << "\n  checkpointer:\n    base_path: " << (root_ / "ckpt").string()
        << "\n    save_interval: 0s\n    keep: [{every: 3}]\n"
           "optimizer:\n  learning_rate: 1e-2\n  warmup: 2\n";
    return levanter::trainer::load_train_config(f.string(), {});
  }

  // step -> every train/loss logged for it, as JSON text (exact bits).
  std::map<int64_t, std::vector<std::string>> losses(const std::string& id) {
    std::map<int64_t, std::vector<std::string>> out;
    std::ifstream in(root_ / "logs" / id / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      auto row = nlohmann::json::parse(line);
      if (row.contains("train/loss")) out[row["step"].get<int64_t>()].push_back(row["train/loss"].dump());
    }
    return out;
  }

  fs::path root_;
};

struct Crash : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace

TEST_F(CustomModelTest, TrainsCheckpointsAndResumesBitForBitThroughTheSameTrainer) {
  levanter::trainer::TrainLmConfig c = config("straight");
  EXPECT_EQ(c.model.type(), "test_tiny");
  EXPECT_EQ(c.model.as<TinyLmConfig>().hidden_dim, 8);
  levanter::trainer::TrainOptions quiet;
  quiet.progress = false;
  levanter::trainer::TrainResult straight = levanter::trainer::train(c, quiet);
  EXPECT_EQ(straight.final_step, 7);
  ASSERT_TRUE(straight.last_checkpoint);
  EXPECT_TRUE(fs::exists(fs::path(*straight.last_checkpoint) / "model.safetensors"));
  EXPECT_TRUE(std::isfinite(straight.eval.at("").loss));

  // The same run, stopped by a hook of its own right after step 5 (the newest checkpoint is step 3), then resumed.
  {
    levanter::trainer::Trainer t(config("crashed"), quiet);
    t.add_hook(1, [](const levanter::trainer::StepInfo& info, levanter::trainer::TrainerState&) {
      if (info.step == 4) throw Crash("crash after step 5");
    });
    EXPECT_THROW(t.train(), Crash);
  }
  levanter::trainer::TrainResult resumed = levanter::trainer::train(config("crashed"), quiet);
  EXPECT_EQ(resumed.start_step, 3);
  EXPECT_EQ(resumed.final_step, 7);

  auto a = losses("straight"), b = losses("crashed");
  ASSERT_EQ(a.size(), 7u);
  ASSERT_EQ(b.size(), 7u);
  for (const auto& [step, values] : a) {
    ASSERT_EQ(values.size(), 1u) << step;
    // Steps 3 and 4 ran twice in the crashed run (before the crash and after resuming from step 3); the resume
    // rewrote their rows, so each has one.
    EXPECT_EQ(b[step].size(), 1u) << step;
    for (const std::string& v : b[step]) EXPECT_EQ(v, values[0]) << "step " << step;
  }
  EXPECT_EQ(resumed.final_loss, straight.final_loss);
  EXPECT_EQ(resumed.eval.at("").loss, straight.eval.at("").loss);
}

TEST_F(CustomModelTest, UnknownModelTypesAreRefusedWithTheRegisteredOnes) {
  fs::path f = root_ / "bad.yaml";
  std::ofstream(f) << "model:\n  type: mamba\n";
  try {
    levanter::trainer::load_train_config(f.string(), {});
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("model type 'mamba' is not implemented; valid: gpt2"));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("test_tiny"));
  }
}
