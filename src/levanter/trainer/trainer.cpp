#include "levanter/trainer/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>
#include <torch/version.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "levanter/checkpoint/checkpoint.h"
#include "levanter/runtime/fault.h"
#include "levanter/data/loader.h"
#include "levanter/data/text.h"
#include "levanter/data/tokenizer/tokenizer.h"
#include "levanter/models/lm_loss.h"
#include "levanter/optim/adamw.h"
#include "levanter/optim/schedule.h"

namespace levanter::trainer {

namespace fs = std::filesystem;
namespace nn = haliax::nn;
using haliax::Axis;
using haliax::NamedArray;
using haliax::random::Key;
using models::Gpt2LMHeadModel;
using Clock = std::chrono::steady_clock;

namespace {

// --- small utilities -----------------------------------------------------------------------------------------

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string run_command(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[256];
  while (fgets(buf, sizeof(buf), p)) out += buf;
  pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

nlohmann::ordered_json git_info() {
  nlohmann::ordered_json g;
#ifdef LEVANTER_SOURCE_DIR
  std::string dir = LEVANTER_SOURCE_DIR;
#else
  std::string dir = ".";
#endif
  std::string commit = run_command("git -C '" + dir + "' rev-parse HEAD 2>/dev/null");
  g["commit"] = commit.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(commit);
  if (!commit.empty()) {
    g["dirty"] = !run_command("git -C '" + dir + "' status --porcelain --untracked-files=no 2>/dev/null").empty();
  }
  return g;
}

std::string now_iso() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::string fmt_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  int64_t t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof(buf), "%lldh%02lldm", (long long)(t / 3600), (long long)(t % 3600 / 60));
  else if (t >= 60) std::snprintf(buf, sizeof(buf), "%lldm%02llds", (long long)(t / 60), (long long)(t % 60));
  else std::snprintf(buf, sizeof(buf), "%llds", (long long)t);
  return buf;
}

std::string fmt_si(double v) {
  char buf[32];
  if (v >= 1e9) std::snprintf(buf, sizeof(buf), "%.2fG", v / 1e9);
  else if (v >= 1e6) std::snprintf(buf, sizeof(buf), "%.2fM", v / 1e6);
  else if (v >= 1e3) std::snprintf(buf, sizeof(buf), "%.1fk", v / 1e3);
  else std::snprintf(buf, sizeof(buf), "%.1f", v);
  return buf;
}

// One JSON object per line; values written with enough digits to recover their exact bits (losses are f32).
class MetricsLog {
 public:
  MetricsLog() = default;
  explicit MetricsLog(const std::string& path) : out_(path, std::ios::app) {
    if (!out_) throw std::runtime_error("cannot write metrics file " + path);
  }
  void write(const nlohmann::ordered_json& row) {
    if (!out_.is_open()) return;
    out_ << row.dump() << "\n";
    out_.flush();
  }

 private:
  std::ofstream out_;
};

// Bytes of text each token stands for (Levanter's byte_length_of_token): special tokens have none.
std::vector<int64_t> token_byte_lengths(const data::Tokenizer& tok, int64_t vocab) {
  std::vector<int64_t> out(static_cast<size_t>(vocab), 0);
  for (int64_t id = 0; id < vocab; ++id) {
    auto tid = static_cast<data::TokenId>(id);
    if (tok.is_special(tid)) continue;
    std::string text = tok.decode(&tid, 1);
    if (text.find("\xEF\xBF\xBD") == std::string::npos) {
      out[id] = static_cast<int64_t>(text.size());
    } else if (auto t = tok.id_to_token(tid)) {
      // A piece of a multi-byte character: in byte-level BPE each code point of the token is one byte.
      int64_t n = 0;
      for (unsigned char c : *t) n += (c & 0xC0) != 0x80;
      out[id] = n;
    }
  }
  return out;
}

at::Tensor batch_tensor(const data::TokenBatch& b) {
  return at::from_blob(const_cast<int32_t*>(b.tokens.data()), {b.batch_size, b.seq_len}, at::kInt).to(at::kLong);
}

// --- evaluation ----------------------------------------------------------------------------------------------

class Evaluator {
 public:
  Evaluator(data::TextData& data, int64_t seq_len, int64_t batch_size, std::optional<int64_t> max_batches,
            std::vector<int64_t> byte_lengths)
      : byte_lengths_(at::tensor(byte_lengths, at::kLong)) {
    for (auto& [name, ds] : data.validation_sets(seq_len)) {
      sets_.emplace_back(name, std::make_unique<data::EvalBatches>(ds, batch_size, max_batches.value_or(0)));
    }
  }
  bool empty() const { return sets_.empty(); }

  std::map<std::string, EvalMetrics> run(const Gpt2LMHeadModel& model, at::ScalarType compute) {
    at::NoGradGuard no_grad;
    Gpt2LMHeadModel m = compute == at::kFloat ? model : nn::cast_floating(model, compute);
    std::map<std::string, EvalMetrics> out;
    for (auto& [name, batches] : sets_) {
      double loss_sum = 0;
      int64_t tokens = 0, bytes = 0;
      for (int64_t i = 0; i < batches->num_batches(); ++i) {
        data::TokenBatch b = batches->batch(i);
        NamedArray ids(batch_tensor(b), {Axis("batch", b.batch_size), Axis("position", b.seq_len)});
        models::LossOptions lo;
        lo.reduction = nn::Reduction::kNone;
        NamedArray per = m.compute_next_token_loss(ids, {}, lo);  // (batch, position); masked positions are 0
        auto [targets, mask] = models::next_token_targets(ids, std::nullopt);
        loss_sum += per.array().to(at::kDouble).sum().item<double>();
        tokens += mask.array().sum().item<int64_t>();
        at::Tensor b_pos = byte_lengths_.index_select(0, targets.array().reshape({-1})).reshape(targets.array().sizes());
        bytes += (b_pos * mask.array()).sum().item<int64_t>();
      }
      EvalMetrics em;
      em.tokens = tokens;
      em.bytes = bytes;
      em.loss = tokens ? loss_sum / static_cast<double>(tokens) : 0.0;
      em.perplexity = std::exp(em.loss);
      em.bpb = bytes ? loss_sum / std::log(2.0) / static_cast<double>(bytes) : 0.0;
      out[name] = em;
    }
    return out;
  }

 private:
  at::Tensor byte_lengths_;
  std::vector<std::pair<std::string, std::unique_ptr<data::EvalBatches>>> sets_;
};

std::string eval_prefix(const std::string& set) { return set.empty() ? "eval/" : "eval/" + set + "/"; }

// --- model state <-> checkpoint ------------------------------------------------------------------------------

haliax::StateDict copy_list(const nn::StateDict& sd) {
  haliax::StateDict out;
  for (const auto& [k, t] : sd) out.emplace_back(k, t.detach().clone());
  return out;
}

int configured_threads(const TrainerConfig& t) {
  if (t.num_threads > 0) return static_cast<int>(t.num_threads);
  unsigned hc = std::thread::hardware_concurrency();
  return hc ? static_cast<int>(hc) : 1;
}

Axis vocab_axis(const data::TextData& data) {
  if (!data.tokenizer()) throw std::runtime_error("the data config has no tokenizer to size the vocabulary");
  return Axis("vocab", static_cast<int64_t>(data.tokenizer()->vocab_size()));
}

}  // namespace

std::string run_id_for(const TrainLmConfig& config) {
  if (config.trainer.id && !config.trainer.id->empty()) return *config.trainer.id;
  std::string dump = config::dump(config::to_yaml_value(config));
  char buf[32];
  std::snprintf(buf, sizeof(buf), "run-%012llx", (unsigned long long)(fnv1a(dump) & 0xffffffffffffull));
  return buf;
}

double measure_peak_flops(at::ScalarType dtype) {
  at::NoGradGuard ng;
  const int64_t n = 1024;
  at::Tensor a = at::ones({n, n}, dtype), b = at::ones({n, n}, dtype);
  at::mm(a, b);  // warm up (oneDNN/OpenBLAS setup)
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    auto t0 = Clock::now();
    at::mm(a, b);
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, 2.0 * n * n * n / s);
  }
  return best;
}

TrainResult train(const TrainLmConfig& config, const TrainOptions& options) {
  const TrainerConfig& tc = config.trainer;
  at::set_num_threads(configured_threads(tc));
  const int threads = at::get_num_threads();
  const MixedPrecision& mp = tc.mp;

  // --- run directory and record ---------------------------------------------------------------------------
  TrainResult result;
  RunPaths& paths = result.paths;
  paths.run_id = run_id_for(config);
  paths.run_dir = (fs::path(tc.log_dir) / paths.run_id).string();
  fs::create_directories(paths.run_dir);
  paths.metrics = (fs::path(paths.run_dir) / "metrics.jsonl").string();
  paths.record = (fs::path(paths.run_dir) / "run.json").string();
  std::string config_yaml = config::dump(config::to_yaml_value(config));
  paths.checkpoint_base = tc.load_checkpoint_path ? *tc.load_checkpoint_path : tc.checkpointer.base_path;
  paths.checkpoint_base = tc.checkpointer.append_run_id_to_base_path && !tc.load_checkpoint_path
                              ? (fs::path(tc.checkpointer.base_path) / paths.run_id).string()
                              : paths.checkpoint_base;

  // --- data -----------------------------------------------------------------------------------------------
  data::TextData data(config.data);
  const Axis Vocab = vocab_axis(data);
  const models::Gpt2Config& mc = config.model.gpt2;
  const int64_t seq_len = mc.seq_len, B = tc.train_batch_size, MB = tc.microbatch_size();
  const int64_t num_micro = B / MB;
  const uint64_t data_seed = static_cast<uint64_t>(config.data_seed.value_or(tc.seed));

  // --- model and optimizer ----------------------------------------------------------------------------------
  // Levanter: data_key, loader_key, model_key, training_key = split(PRNGKey(seed), 4).
  Key root(static_cast<uint64_t>(tc.seed));
  std::vector<Key> keys = root.split(4);
  const Key model_key = keys[2], training_key = keys[3];
  Gpt2LMHeadModel model = Gpt2LMHeadModel::init(Vocab, mc, model_key);
  if (mp.param != at::kFloat) model = nn::cast_floating(model, mp.param);

  checkpoint::Checkpointer checkpointer(paths.checkpoint_base, tc.checkpointer);
  int64_t start_step = 0;
  std::optional<checkpoint::Checkpoint> resumed;
  std::optional<std::string> init_from;
  if (tc.load_checkpoint.value_or(true)) {
    resumed = checkpoint::load_latest_checkpoint(paths.checkpoint_base);
    if (!resumed && tc.load_checkpoint.value_or(false)) {
      throw std::runtime_error("trainer.load_checkpoint is true but there is no complete checkpoint under " +
                               paths.checkpoint_base);
    }
  }
  if (!resumed && tc.initialize_from) {
    init_from = *tc.initialize_from;
    resumed = checkpoint::load_checkpoint(*tc.initialize_from);
  }
  if (resumed) {
    nn::StateDict params;
    for (const auto& [k, t] : resumed->group("model")) params.emplace_back(k, t);
    nn::from_state_dict(model, params);
    start_step = resumed->step;
    int ck_threads = resumed->metadata.value("num_threads", threads);
    if (ck_threads != threads) {
      std::cerr << "warning: the checkpoint was written with " << ck_threads << " threads and this run uses " << threads
                << ": results will not be bit-identical to an uninterrupted run (set trainer.num_threads: "
                << ck_threads << ")\n";
    }
  }
  nn::requires_grad_(model);
  optim::AdamW optimizer(config.optimizer, nn::named_parameters(model));
  if (resumed) {
    nn::StateDict opt;
    for (const auto& [k, t] : resumed->group("opt_state")) opt.emplace_back(k, t);
    optimizer.load_state_dict(opt);
  }
  result.start_step = start_step;
  // The loss of the last finished step (kept in checkpoints, so that resuming a finished run can report it).
  float last_loss = NAN;
  if (resumed && resumed->metadata.contains("train_loss") && resumed->metadata["train_loss"].is_number()) {
    last_loss = resumed->metadata["train_loss"].get<float>();
  }

  {
    nlohmann::ordered_json rec;
    rec["run_id"] = paths.run_id;
    rec["started"] = now_iso();
    rec["config_file"] = options.config_file;
    rec["command_line"] = options.command_line;
    rec["git"] = git_info();
    rec["versions"] = {{"levanter-cpp", "0.1.0"},
                       {"libtorch", std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
                                        std::to_string(TORCH_VERSION_PATCH)},
                       {"compiler", __VERSION__}};
    rec["num_threads"] = threads;
    {
      nlohmann::ordered_json env = nlohmann::ordered_json::object();
      for (const char* k : {"OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "LEVANTER_CPU_ALLOCATOR",
                            "LEVANTER_CPU_CACHE_LIMIT_MB"}) {
        if (const char* v = std::getenv(k)) env[k] = v;
      }
      rec["environment"] = env;  // settings that change speed (never results) of this run
    }
    rec["seed"] = tc.seed;
    rec["data_seed"] = data_seed;
    rec["resumed_from"] = resumed ? nlohmann::ordered_json(resumed->path) : nlohmann::ordered_json();
    rec["checkpoint_base"] = paths.checkpoint_base;
    rec["parameter_count"] = nn::parameter_count(model);
    rec["tracker"] = {{"type", tc.tracker.type}, {"project", tc.tracker.project.value_or("")}, {"tags", tc.tracker.tags}};
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    rec["hostname"] = host;
    std::ofstream(paths.record) << rec.dump(2) << "\n";
    std::ofstream(fs::path(paths.run_dir) / "config.yaml") << config_yaml;
  }
  MetricsLog metrics = tc.tracker.type == "json" ? MetricsLog(paths.metrics) : MetricsLog();

  const double flops_per_token = mc.flops_per_token(Vocab.size);
  const double peak = tc.peak_flops ? *tc.peak_flops : measure_peak_flops(mp.compute);
  auto train_set = data.train_set(seq_len, data_seed, B);
  std::vector<int64_t> byte_lengths = token_byte_lengths(*data.tokenizer(), Vocab.size);
  std::unique_ptr<Evaluator> evaluator;
  auto get_evaluator = [&]() -> Evaluator& {
    if (!evaluator) evaluator = std::make_unique<Evaluator>(data, seq_len, tc.eval_batch_size(), tc.max_eval_batches, byte_lengths);
    return *evaluator;
  };
  auto evaluate = [&](int64_t step) {
    Evaluator& ev = get_evaluator();
    if (ev.empty()) return;
    auto t0 = Clock::now();
    result.eval = ev.run(model, mp.compute);
    nlohmann::ordered_json row;
    row["step"] = step;
    for (const auto& [name, em] : result.eval) {
      std::string p = eval_prefix(name);
      row[p + "loss"] = em.loss;
      row[p + "perplexity"] = em.perplexity;
      row[p + "bpb"] = em.bpb;
      row[p + "tokens"] = em.tokens;
      if (options.progress) {
        std::fprintf(stderr, "eval%s%s step %lld: loss %.4f  ppl %.2f  bpb %.4f  (%lld tokens, %.1fs)\n",
                     name.empty() ? "" : " ", name.c_str(), (long long)step, em.loss, em.perplexity, em.bpb,
                     (long long)em.tokens, std::chrono::duration<double>(Clock::now() - t0).count());
      }
    }
    metrics.write(row);
  };

  auto checkpoint_groups = [&] {
    return checkpoint::TensorGroups{{"model", copy_list(nn::to_state_dict(model))},
                                    {"opt_state", copy_list(optimizer.state_dict())}};
  };
  auto checkpoint_metadata = [&](int64_t step) {
    nlohmann::json md;
    md["run_id"] = paths.run_id;
    md["root_key"] = {root.data()[0], root.data()[1]};
    md["data_seed"] = data_seed;
    md["config"] = config_yaml;
    md["num_threads"] = threads;
    md["step"] = step;
    if (std::isfinite(last_loss)) md["train_loss"] = last_loss;
    return md;
  };

  if (options.progress) {
    std::fprintf(stderr,
                 "levanter: run %s, GPT-2 %lld params, batch %lld x %lld tokens (%lld microbatch%s), %d threads, "
                 "mp %s%s\n",
                 paths.run_id.c_str(), (long long)nn::parameter_count(model), (long long)B, (long long)seq_len,
                 (long long)num_micro, num_micro == 1 ? "" : "es", threads, mp.text.c_str(),
                 resumed ? (" — resumed from " + resumed->path).c_str() : "");
  }

  data::LoaderOptions lo;
  lo.batch_size = B;
  lo.start_step = start_step;
  data::DataLoader loader(train_set, lo);
  const Axis Pos("position", seq_len), MicroBatch("batch", MB);
  const auto run_start = Clock::now();
  double ema_step_s = 0;
  int64_t step = start_step;
  for (; step < tc.num_train_steps; ++step) {
    auto t0 = Clock::now();
    data::TokenBatch batch = loader.next();
    auto t_data = Clock::now();
    at::Tensor tokens = batch_tensor(batch);
    const Key step_key = training_key.fold_in(static_cast<uint64_t>(step));
    double loss_acc = 0;
    for (int64_t m = 0; m < num_micro; ++m) {
      NamedArray ids(tokens.narrow(0, m * MB, MB), {MicroBatch, Pos});
      std::optional<Gpt2LMHeadModel> cast_model;
      const Gpt2LMHeadModel* cm = &model;
      if (mp.compute != mp.param) {
        cast_model = nn::cast_floating(model, mp.compute);  // differentiable: grads flow to the master weights
        cm = &*cast_model;
      }
      models::ForwardOptions fo;
      if (mc.embed_pdrop > 0 || mc.resid_pdrop > 0 || mc.attn_pdrop > 0) fo.key = step_key.fold_in(static_cast<uint64_t>(m));
      models::LossOptions loss_opts;
      loss_opts.z_loss_weight = config.z_loss_weight;
      NamedArray loss = cm->compute_next_token_loss(ids, fo, loss_opts);
      at::Tensor scaled = num_micro == 1 ? loss.array() : loss.array() / static_cast<double>(num_micro);
      scaled.backward();
      loss_acc += static_cast<double>(loss.array().detach().item<float>());
    }
    float step_loss = static_cast<float>(loss_acc / static_cast<double>(num_micro));
    if ((tc.crash_on_nan && std::isnan(step_loss)) || (tc.crash_on_inf && std::isinf(step_loss))) {
      auto last = checkpointer.latest();
      throw std::runtime_error(
          "step " + std::to_string(step) + ": the loss is " + (std::isnan(step_loss) ? "NaN" : "infinite") +
          "; the update was not applied. Try a lower optimizer.learning_rate or a longer optimizer.warmup, "
          "optimizer.max_grad_norm: 1.0, z_loss_weight: 1e-4, or trainer.mp: f32. Resume from " +
          (last ? *last : std::string("(no checkpoint yet)")) + " (set trainer.crash_on_nan: false to continue anyway)");
    }
    // Crash-test hook: LEVANTER_FAULT=train_step_mid:<step> dies between backward and the update.
    runtime::maybe_inject_fault("train_step_mid", step, "after backward, before the optimizer update");
    std::vector<at::Tensor> grads;
    grads.reserve(optimizer.params().size());
    for (const auto& [info, p] : optimizer.params()) grads.push_back(p.grad());
    const double lr = optim::learning_rate_at(config.optimizer, step, tc.num_train_steps);
    optim::StepStats stats = optimizer.step(grads, lr);
    for (const auto& [info, p] : optimizer.params()) p.mutable_grad() = at::Tensor();
    if ((tc.crash_on_nan && std::isnan(stats.grad_norm)) || (tc.crash_on_inf && std::isinf(stats.grad_norm))) {
      throw std::runtime_error("step " + std::to_string(step) + ": the gradient norm is " +
                               (std::isnan(stats.grad_norm) ? "NaN" : "infinite") +
                               " (loss " + std::to_string(step_loss) +
                               "); parameters are no longer finite. Try a lower optimizer.learning_rate, "
                               "optimizer.max_grad_norm: 1.0 or trainer.mp: f32, and resume from the last checkpoint");
    }
    last_loss = step_loss;
    auto t1 = Clock::now();
    const double step_s = std::chrono::duration<double>(t1 - t0).count();
    const double data_s = std::chrono::duration<double>(t_data - t0).count();
    const double tok_s = static_cast<double>(B * seq_len) / step_s;
    const double mfu = 3.0 * flops_per_token * tok_s / peak;
    ema_step_s = ema_step_s == 0 ? step_s : 0.9 * ema_step_s + 0.1 * step_s;

    nlohmann::ordered_json row;
    row["step"] = step;
    row["train/loss"] = step_loss;
    row["train/learning_rate"] = lr;
    row["train/grad_norm"] = stats.grad_norm;
    row["throughput/tokens_per_second"] = tok_s;
    row["throughput/mfu"] = mfu;
    row["throughput/duration"] = step_s;
    row["throughput/loading_time"] = data_s;
    row["throughput/total_tokens"] = (step + 1) * B * seq_len;
    metrics.write(row);

    const int64_t done = step + 1;
    if (options.progress && (done % tc.log_every == 0 || done == tc.num_train_steps || done == start_step + 1)) {
      double eta = ema_step_s * static_cast<double>(tc.num_train_steps - done);
      int pct = static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(tc.num_train_steps));
      std::string bar(20, '.');
      std::fill(bar.begin(), bar.begin() + pct / 5, '#');
      std::fprintf(stderr, "step %lld/%lld [%s] %3d%% loss %.4f lr %.3g |g| %.3g  %s tok/s  mfu %.1f%%  %.0f ms/step  ETA %s\n",
                   (long long)done, (long long)tc.num_train_steps, bar.c_str(), pct, step_loss, lr, stats.grad_norm,
                   fmt_si(tok_s).c_str(), 100 * mfu, 1000 * step_s, fmt_duration(eta).c_str());
    }
    if (done % tc.steps_per_eval == 0 && done != tc.num_train_steps) evaluate(done);
    if (checkpointer.should_save(done)) {
      result.last_checkpoint = checkpointer.save(done, checkpoint_groups(), checkpoint_metadata(done));
    }
    runtime::maybe_inject_fault("train_step_end", done, "after the step (and its checkpoint, if any)");
  }
  result.final_step = step;
  result.final_loss = last_loss;
  if (resumed && start_step >= tc.num_train_steps && options.progress) {
    std::fprintf(stderr,
                 "run %s is already complete (step %lld of %lld in %s): evaluating it. Train further with "
                 "--trainer.num_train_steps N, or start another run with --trainer.id NAME\n",
                 paths.run_id.c_str(), (long long)start_step, (long long)tc.num_train_steps, resumed->path.c_str());
  }
  evaluate(step);
  if (auto p = checkpointer.on_run_end(step, checkpoint_groups(), checkpoint_metadata(step))) result.last_checkpoint = p;
  if (!result.last_checkpoint) result.last_checkpoint = checkpointer.latest();
  if (options.progress) {
    std::fprintf(stderr, "done: %lld steps in %s\n", (long long)(step - start_step),
                 fmt_duration(std::chrono::duration<double>(Clock::now() - run_start).count()).c_str());
  }
  return result;
}

std::map<std::string, EvalMetrics> evaluate_checkpoint(const TrainLmConfig& config, const std::string& path,
                                                       bool progress) {
  at::set_num_threads(configured_threads(config.trainer));
  data::TextData data(config.data);
  const Axis Vocab = vocab_axis(data);
  Gpt2LMHeadModel model = Gpt2LMHeadModel::init(Vocab, config.model.gpt2, Key(0));
  std::string ckpt = path;
  if (!fs::exists(fs::path(path) / "manifest.json")) {
    auto latest = checkpoint::latest_checkpoint(path);
    if (!latest) throw std::runtime_error(path + ": no complete checkpoint here (a step-N directory with a manifest)");
    ckpt = *latest;
  }
  checkpoint::Checkpoint c = checkpoint::load_checkpoint(ckpt, {"model"});
  nn::StateDict params;
  for (const auto& [k, t] : c.group("model")) params.emplace_back(k, t);
  nn::from_state_dict(model, params);
  Evaluator ev(data, config.model.gpt2.seq_len, config.trainer.eval_batch_size(), config.trainer.max_eval_batches,
               token_byte_lengths(*data.tokenizer(), Vocab.size));
  if (ev.empty()) throw std::runtime_error("no validation sets: set data.validation_urls (or validation_urls of a source)");
  auto out = ev.run(model, config.trainer.mp.compute);
  if (progress) std::fprintf(stderr, "evaluated %s (step %lld)\n", ckpt.c_str(), (long long)c.step);
  return out;
}

}  // namespace levanter::trainer
