// The training loop in process, on a tiny GPT-2 and the bundled corpus: gradient accumulation, metrics with
// Levanter's names and exact loss bits, evaluation (loss, perplexity, bits per byte checked against the text's
// own bytes), `levanter eval` on a saved checkpoint, checkpoint refusal and skipping, mixed precision, the run
// record, and crash_on_nan.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "levanter/checkpoint/checkpoint.h"
#include "levanter/data/loader.h"
#include "levanter/data/text.h"
#include "levanter/data/tokenizer/tokenizer.h"
#include "levanter/models/lm_model.h"
#include "levanter/optim/optimizer.h"
#include "levanter/optim/schedule.h"
#include "levanter/temp_dir.h"
#include "levanter/trainer/trainer.h"

namespace fs = std::filesystem;
using levanter::trainer::TrainLmConfig;
using levanter::trainer::TrainOptions;
using levanter::trainer::TrainResult;
using ::testing::HasSubstr;

namespace {

const std::string kCorpus = std::string(LEVANTER_SOURCE_DIR) + "/data/corpus/austen/validation.jsonl.gz";

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override { root_ = levanter::testing::fresh_test_dir("levanter_trainer"); }
  void TearDown() override { fs::remove_all(root_); }

  // A 2-layer, 16-wide GPT-2 on the bundled validation split (both for training and validation).
  TrainLmConfig config(const std::vector<std::string>& overrides = {}, const std::string& id = "t") {
    fs::path f = root_ / "tiny.yaml";
    std::ofstream(f) << "data:\n  train_urls: [\"" << kCorpus << "\"]\n  validation_urls: [\"" << kCorpus
                     << "\"]\n  cache_dir: " << (root_ / "cache").string()
                     << "\nmodel:\n  type: gpt2\n  hidden_dim: 16\n  num_heads: 2\n  num_layers: 2\n  seq_len: 32\n"
                        "trainer:\n  seed: 1\n  num_train_steps: 4\n  train_batch_size: 4\n  steps_per_eval: 2\n"
                        "  max_eval_batches: 2\n  num_threads: 2\n  peak_flops: 1e9\n  id: "
                     << id << "\n  log_dir: " << (root_ / "logs").string()
                     << "\n  checkpointer:\n    base_path: " << (root_ / "ckpt").string()
                     << "\n    save_interval: 0s\n    keep: [{every: 3}]\n"
                        "optimizer:\n  learning_rate: 1e-2\n  warmup: 0.25\n";
    return levanter::trainer::load_train_config(f.string(), overrides);
  }

  TrainResult train(const TrainLmConfig& c) {
    TrainOptions o;
    o.progress = false;
    o.config_file = "tiny.yaml";
    return levanter::trainer::train(c, o);
  }

  static std::vector<nlohmann::json> rows(const std::string& metrics, const char* key) {
    std::vector<nlohmann::json> out;
    std::ifstream in(metrics);
    for (std::string line; std::getline(in, line);) {
      auto r = nlohmann::json::parse(line);
      if (r.contains(key)) out.push_back(r);
    }
    return out;
  }

  fs::path root_;
};

}  // namespace

TEST_F(TrainerTest, MetricsHaveLevantersNamesAndExactLossBits) {
  TrainLmConfig c = config();
  TrainResult r = train(c);
  EXPECT_EQ(r.start_step, 0);
  EXPECT_EQ(r.final_step, 4);
  EXPECT_EQ(r.paths.metrics, (root_ / "logs" / "t" / "metrics.jsonl").string());
  auto train_rows = rows(r.paths.metrics, "train/loss");
  ASSERT_EQ(train_rows.size(), 4u);
  for (size_t s = 0; s < train_rows.size(); ++s) {
    const auto& row = train_rows[s];
    EXPECT_EQ(row["step"].get<int64_t>(), static_cast<int64_t>(s));
    for (const char* k : {"train/learning_rate", "train/grad_norm", "throughput/tokens_per_second", "throughput/mfu",
                          "throughput/duration", "throughput/total_tokens"}) {
      EXPECT_TRUE(row.contains(k)) << k;
    }
    // Where the step went: each phase took time (no cast in f32, no exchange in one process), within the step.
    double phases = 0;
    for (const char* k : {"throughput/loading_time", "throughput/cast_time", "throughput/forward_time",
                          "throughput/backward_time", "throughput/exchange_time", "throughput/optimizer_time"}) {
      ASSERT_TRUE(row.contains(k)) << k;
      EXPECT_GE(row[k].get<double>(), 0.0) << k;
      phases += row[k].get<double>();
    }
    for (const char* k : {"throughput/forward_time", "throughput/backward_time", "throughput/optimizer_time"}) {
      EXPECT_GT(row[k].get<double>(), 0.0) << k;
    }
    EXPECT_EQ(row["throughput/cast_time"].get<double>(), 0.0);
    EXPECT_LE(phases, row["throughput/duration"].get<double>());
    EXPECT_DOUBLE_EQ(row["train/learning_rate"].get<double>(),
                     levanter::optim::learning_rate_at(c.optimizer, static_cast<int64_t>(s), 4));
    EXPECT_EQ(row["throughput/total_tokens"].get<int64_t>(), static_cast<int64_t>((s + 1) * 4 * 32));
    double loss = row["train/loss"].get<double>();
    EXPECT_TRUE(std::isfinite(loss));
    EXPECT_GT(loss, 0.0);
  }
  // The file holds the float's exact value.
  float last = static_cast<float>(train_rows.back()["train/loss"].get<double>());
  EXPECT_EQ(static_cast<double>(last), r.final_loss);
  // An untrained model scores about ln(vocab); a few steps at lr 1e-2 bring it down.
  EXPECT_NEAR(train_rows[0]["train/loss"].get<double>(), std::log(50257.0), 0.05);
  EXPECT_LT(train_rows[3]["train/loss"].get<double>(), train_rows[0]["train/loss"].get<double>());

  // Evaluations at step 2 (steps_per_eval) and at the end.
  auto eval_rows = rows(r.paths.metrics, "eval/loss");
  ASSERT_EQ(eval_rows.size(), 2u);
  EXPECT_EQ(eval_rows[0]["step"].get<int64_t>(), 2);
  EXPECT_EQ(eval_rows[1]["step"].get<int64_t>(), 4);
  for (const auto& e : eval_rows) {
    EXPECT_NEAR(e["eval/perplexity"].get<double>(), std::exp(e["eval/loss"].get<double>()),
                1e-9 * e["eval/perplexity"].get<double>());
  }
  ASSERT_EQ(r.eval.size(), 1u);
  EXPECT_DOUBLE_EQ(eval_rows[1]["eval/loss"].get<double>(), r.eval.at("").loss);
}

TEST_F(TrainerTest, BitsPerByteCountTheBytesOfThePredictedText) {
  TrainLmConfig c = config({"--trainer.num_train_steps", "1"});
  TrainResult r = train(c);
  const auto& em = r.eval.at("");
  // Independently: the eval batches' targets (each sequence without its first token), decoded as exact bytes
  // with special tokens (the end-of-text separators) dropped.
  levanter::data::TextData data(c.data);
  auto sets = data.validation_sets(32);
  levanter::data::EvalBatches batches(sets.at(""), c.trainer.eval_batch_size(), *c.trainer.max_eval_batches);
  int64_t bytes = 0, tokens = 0;
  levanter::data::DecodeOptions skip;
  skip.skip_special_tokens = true;
  for (int64_t i = 0; i < batches.num_batches(); ++i) {
    levanter::data::TokenBatch b = batches.batch(i);
    for (int64_t s = 0; s < b.batch_size; ++s) {
      std::vector<levanter::data::TokenId> targets(b.tokens.begin() + s * b.seq_len + 1,
                                                   b.tokens.begin() + (s + 1) * b.seq_len);
      bytes += static_cast<int64_t>(data.tokenizer()->decode(targets, skip).size());
      tokens += static_cast<int64_t>(targets.size());
    }
  }
  EXPECT_EQ(em.tokens, tokens);
  EXPECT_EQ(em.bytes, bytes);
  EXPECT_NEAR(em.bpb, em.loss * static_cast<double>(em.tokens) / std::log(2.0) / static_cast<double>(em.bytes), 1e-12);
  // English prose in GPT-2's vocabulary: about 4 bytes per token.
  EXPECT_GT(static_cast<double>(bytes) / tokens, 3.0);
  EXPECT_LT(static_cast<double>(bytes) / tokens, 6.0);
}

TEST_F(TrainerTest, GradientAccumulationMatchesTheFullBatch) {
  TrainResult full = train(config({"--trainer.per_device_parallelism", "4"}, "full"));
  TrainResult acc = train(config({"--trainer.per_device_parallelism", "1"}, "acc"));
  auto a = rows(full.paths.metrics, "train/loss"), b = rows(acc.paths.metrics, "train/loss");
  ASSERT_EQ(a.size(), b.size());
  for (size_t s = 0; s < a.size(); ++s) {
    // The same mean over the same 4 sequences, summed in another order: f32 rounding only.
    EXPECT_NEAR(a[s]["train/loss"].get<double>(), b[s]["train/loss"].get<double>(), 2e-5) << "step " << s;
    EXPECT_NEAR(a[s]["train/grad_norm"].get<double>(), b[s]["train/grad_norm"].get<double>(),
                1e-4 * a[s]["train/grad_norm"].get<double>())
        << "step " << s;
  }
}

TEST_F(TrainerTest, EvalCommandReproducesTheTrainingEvaluation) {
  TrainLmConfig c = config();
  TrainResult r = train(c);
  ASSERT_TRUE(r.last_checkpoint);
  EXPECT_EQ(fs::path(*r.last_checkpoint).filename(), "step-4");
  auto direct = levanter::trainer::evaluate_checkpoint(c, *r.last_checkpoint, false);
  auto via_base = levanter::trainer::evaluate_checkpoint(c, (root_ / "ckpt" / "t").string(), false);  // newest
  for (const auto& ev : {direct, via_base}) {
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev.at("").loss, r.eval.at("").loss);
    EXPECT_EQ(ev.at("").bpb, r.eval.at("").bpb);
    EXPECT_EQ(ev.at("").tokens, r.eval.at("").tokens);
  }
  // The CLI prints the same numbers as one JSON line.
  fs::path cfg = root_ / "tiny.yaml", out = root_ / "eval.jsonl";
  std::string cmd = std::string(LEVANTER_BINARY_DIR) + "/levanter eval --config '" + cfg.string() + "' --checkpoint '" +
                    *r.last_checkpoint + "' --output '" + out.string() + "' 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream in(out);
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  auto row = nlohmann::json::parse(line);
  EXPECT_EQ(row["eval/loss"].get<double>(), r.eval.at("").loss);
  EXPECT_EQ(row["eval/bpb"].get<double>(), r.eval.at("").bpb);
}

TEST_F(TrainerTest, LoadCheckpointTrueRequiresOne) {
  try {
    train(config({"--trainer.load_checkpoint", "true"}));
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("trainer.load_checkpoint is true but there is no complete checkpoint under"));
    EXPECT_THAT(e.what(), HasSubstr((root_ / "ckpt" / "t").string()));
  }
}

TEST_F(TrainerTest, ACorruptNewestCheckpointIsSkippedNeverLoaded) {
  TrainLmConfig c = config({"--trainer.num_train_steps", "6"});
  TrainResult first = train(c);
  fs::path newest = root_ / "ckpt" / "t" / "step-6";
  ASSERT_TRUE(fs::exists(newest / "manifest.json"));
  // Flip one byte in the middle of a tensor file of step-6: its checksum no longer matches.
  fs::path victim;
  for (const auto& e : fs::directory_iterator(newest)) {
    if (e.path().extension() == ".safetensors") victim = e.path();
  }
  ASSERT_FALSE(victim.empty());
  {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(fs::file_size(victim) / 2));
    char ch = 0;
    f.read(&ch, 1);
    ch = static_cast<char>(ch ^ 0x5a);
    f.seekp(static_cast<std::streamoff>(fs::file_size(victim) / 2));
    f.write(&ch, 1);
  }
  // The same command again: step-6 is refused, so it resumes from step-3 and redoes steps 3-5, bit for bit.
  TrainResult again = train(c);
  EXPECT_EQ(again.start_step, 3);
  EXPECT_EQ(again.final_loss, first.final_loss);
}

TEST_F(TrainerTest, MixedPrecisionKeepsF32MasterWeights) {
  TrainResult f32 = train(config({}, "f32"));
  TrainResult bf16 = train(config({"--trainer.mp", "p=f32,c=bfloat16"}, "bf16"));
  auto a = rows(f32.paths.metrics, "train/loss"), b = rows(bf16.paths.metrics, "train/loss");
  ASSERT_EQ(a.size(), b.size());
  // bf16 compute rounds activations to 8 bits of mantissa: close to f32, not equal. (At step 0 the logits of
  // Levanter's init are so small that both losses round to the same f32; by the last step they are not.)
  for (size_t s = 0; s < a.size(); ++s) {
    EXPECT_NEAR(a[s]["train/loss"].get<double>(), b[s]["train/loss"].get<double>(), 0.05) << "step " << s;
  }
  EXPECT_NE(a.back()["train/loss"].get<double>(), b.back()["train/loss"].get<double>());
  EXPECT_NE(a.back()["train/grad_norm"].get<double>(), b.back()["train/grad_norm"].get<double>());
  auto ck = levanter::checkpoint::load_checkpoint(*bf16.last_checkpoint, {"model", "opt_state"});
  ASSERT_FALSE(ck.group("model").empty());
  for (const auto& [name, t] : ck.group("model")) EXPECT_EQ(t.scalar_type(), at::kFloat) << name;
  for (const auto& [name, t] : ck.group("opt_state")) {
    if (t.is_floating_point()) {
      EXPECT_EQ(t.scalar_type(), at::kFloat) << name;
    }
  }
}

TEST_F(TrainerTest, RunRecordHoldsWhatReproducesTheRun) {
  TrainLmConfig c = config({"--trainer.num_train_steps", "1"});
  TrainResult r = train(c);
  std::ifstream in(r.paths.record);
  auto rec = nlohmann::json::parse(in);
  EXPECT_EQ(rec["run_id"], "t");
  EXPECT_EQ(rec["config_file"], "tiny.yaml");
  EXPECT_EQ(rec["num_threads"], 2);
  EXPECT_EQ(rec["seed"], 1);
  EXPECT_TRUE(rec["versions"].contains("libtorch"));
  EXPECT_TRUE(rec["git"].contains("commit"));
  EXPECT_EQ(rec["parameter_count"].get<int64_t>(), 50257 * 16 + 32 * 16 + 2 * (12 * 16 * 16 + 13 * 16) + 2 * 16);
  // The resolved config next to it loads back to the same config.
  TrainLmConfig again = levanter::trainer::load_train_config((fs::path(r.paths.run_dir) / "config.yaml").string(), {});
  EXPECT_EQ(levanter::config::dump(levanter::config::to_yaml_value(again)),
            levanter::config::dump(levanter::config::to_yaml_value(c)));
}

TEST_F(TrainerTest, CrashOnNanNamesTheStepAndWhatToTry) {
  // A learning rate of 1e30 sends the weights to infinity after the first update.
  TrainLmConfig c =
      config({"--optimizer.learning_rate", "1e30", "--optimizer.warmup", "0", "--optimizer.max_grad_norm", "null"});
  try {
    train(c);
    FAIL() << "expected a NaN/Inf error";
  } catch (const std::runtime_error& e) {
    std::string m = e.what();
    EXPECT_THAT(m, HasSubstr("step 1:"));
    EXPECT_THAT(m, HasSubstr("optimizer.learning_rate"));
    EXPECT_THAT(m, HasSubstr("crash_on_nan"));
  }
}

// trainer.profiler (Levanter's keys): libtorch's operator profiler over steps [start, start + num): a Chrome trace
// with the trainer's ranges around the operators, and a table by self time. Profiling changes no numerics.
TEST_F(TrainerTest, ProfilerTracesTheChosenStepsAndChangesNoBits) {
  TrainResult plain = train(config({}, "plain"));
  TrainResult r = train(
      config({"--trainer.profiler", "true", "--trainer.profiler_start_step", "1", "--trainer.profiler_num_steps", "2"},
             "profiled"));
  auto a = rows(plain.paths.metrics, "train/loss"), b = rows(r.paths.metrics, "train/loss");
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i]["train/loss"], b[i]["train/loss"]) << "step " << i;

  const fs::path dir = fs::path(r.paths.run_dir) / "profiler";
  nlohmann::json trace = nlohmann::json::parse(std::ifstream(dir / "trace.json"));
  struct Span {
    double begin, end;
  };
  std::map<std::string, std::vector<Span>> spans;
  for (const auto& e : trace.at("traceEvents")) {
    EXPECT_EQ(e.at("ph"), "X");
    const double ts = e.at("ts").get<double>(), dur = e.at("dur").get<double>();
    EXPECT_GE(dur, 0.0);
    EXPECT_LE(e.at("args").at("self_us").get<double>(), dur + 1e-6);
    spans[e.at("name").get<std::string>()].push_back({ts, ts + dur});
  }
  // Steps 1 and 2, each holding one forward, backward and optimizer range, with the GEMMs inside.
  ASSERT_EQ(spans["step"].size(), 2u);
  for (const char* phase : {"forward", "backward", "optimizer"}) {
    ASSERT_EQ(spans[phase].size(), 2u) << phase;
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_GE(spans[phase][i].begin, spans["step"][i].begin) << phase;
      EXPECT_LE(spans[phase][i].end, spans["step"][i].end + 1e-3) << phase;
    }
  }
  // GPT-2's f32 layers run their GEMMs in haliax's oneDNN Linear (a range of its own each way), the attention in its
  // fused kernel.
  EXPECT_GE(spans["haliax::linear_f32"].size(), 2u * 2 * 2);
  EXPECT_GE(spans["haliax::linear_f32_backward"].size(), 2u * 2 * 2);
  EXPECT_GE(spans["haliax::attention_f32"].size(), 2u * 2);
  EXPECT_EQ(spans["data"].size(), 2u);

  std::ifstream ops(dir / "ops.txt");
  std::string first;
  std::getline(ops, first);
  EXPECT_THAT(first, HasSubstr("2 profiled steps"));
  std::stringstream rest;
  rest << ops.rdbuf();
  EXPECT_THAT(rest.str(), HasSubstr("haliax::linear_f32"));
  EXPECT_THAT(rest.str(), HasSubstr("self ms/step"));
}

// Mixed precision keeps a compute-dtype copy of the parameters between steps (written by the optimizer's update) and
// hands its gradients to the optimizer. That gives the same bits as making the copy inside autograd's graph, so
// that gradients flow back into f32 .grad of the master weights: checked step by step, with one microbatch and
// with two (accumulated in f32), against that reference built here from the same initial state.
TEST_F(TrainerTest, MixedPrecisionComputeCopyGivesTheBitsOfACastInTheGraph) {
  namespace nn = haliax::nn;
  for (int64_t micro : {4, 2}) {
    SCOPED_TRACE("microbatch " + std::to_string(micro));
    TrainLmConfig c = config({"--trainer.mp", "p=f32,c=bfloat16", "--trainer.per_device_parallelism",
                              std::to_string(micro), "--optimizer.max_grad_norm", "0.5"},
                             "copy" + std::to_string(micro));
    TrainOptions o;
    o.progress = false;
    levanter::trainer::Trainer trainer(c, o);
    levanter::trainer::TrainerState state = trainer.initial_state();
    levanter::trainer::TrainerState ref = trainer.initial_state();  // the same init (keys from the seed)
    levanter::data::TokenBatch batch;
    batch.batch_size = 4;
    batch.seq_len = 32;
    for (int64_t i = 0; i < 4 * 32; ++i) batch.tokens.push_back(static_cast<int32_t>((i * 7919) % 50257));
    for (int step = 0; step < 3; ++step) {
      levanter::trainer::StepInfo info = trainer.train_step(state, batch);
      // The reference step: per microbatch, a differentiable cast, the loss / microbatches, backward into f32 .grad.
      double loss_sum = 0;
      for (int64_t m = 0; m < 4 / micro; ++m) {
        auto cast = levanter::models::cast_floating(*ref.model, at::kBFloat16);
        at::Tensor ids = at::from_blob(batch.tokens.data() + m * micro * 32, {micro, 32}, at::kInt).to(at::kLong);
        haliax::NamedArray loss = cast->compute_next_token_loss(
            haliax::NamedArray(ids, {haliax::Axis("batch", micro), haliax::Axis("position", 32)}), {}, {});
        (micro == 4 ? loss.array() : loss.array() / static_cast<double>(4 / micro)).backward();
        loss_sum += loss.array().item<float>();
      }
      std::vector<at::Tensor> grads;
      for (const auto& [p, t] : ref.optimizer->params()) grads.push_back(t.grad());
      auto stats = ref.optimizer->step(grads, levanter::optim::learning_rate_at(c.optimizer, step, 4));
      for (const auto& [p, t] : ref.optimizer->params()) t.mutable_grad() = at::Tensor();
      EXPECT_EQ(info.loss, static_cast<float>(loss_sum / static_cast<double>(4 / micro))) << "step " << step;
      EXPECT_EQ(info.grad_norm, stats.grad_norm) << "step " << step;
      const auto a = nn::named_parameters(*state.model), b = nn::named_parameters(*ref.model);
      ASSERT_EQ(a.size(), b.size());
      for (size_t i = 0; i < a.size(); ++i) {
        EXPECT_EQ(a[i].second.dtype(), at::kFloat);
        EXPECT_TRUE(at::equal(a[i].second.array(), b[i].second.array())) << a[i].first.path << " step " << step;
      }
    }
    ASSERT_TRUE(state.compute_copy);
    for (const auto& [p, t] : nn::named_parameters(*state.compute_copy)) EXPECT_EQ(t.dtype(), at::kBFloat16);
    // The optimizer writes the copy as it updates; a write to the master weights between steps (a hook's, your own)
    // still reaches the next step: its loss is that of the halved weights.
    double expected = 0;
    {
      at::NoGradGuard no_grad;
      for (auto& [p, t] : nn::named_parameters(*state.model)) t.array().mul_(0.5);
      auto cast = levanter::models::cast_floating(*state.model, at::kBFloat16);
      for (int64_t m = 0; m < 4 / micro; ++m) {
        at::Tensor ids = at::from_blob(batch.tokens.data() + m * micro * 32, {micro, 32}, at::kInt).to(at::kLong);
        expected +=
            cast->compute_next_token_loss(
                    haliax::NamedArray(ids, {haliax::Axis("batch", micro), haliax::Axis("position", 32)}), {}, {})
                .array()
                .item<float>();
      }
    }
    EXPECT_EQ(trainer.train_step(state, batch).loss, static_cast<float>(expected / static_cast<double>(4 / micro)));
  }
}
