#include "levanter/trainer/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <set>
#include <thread>

#include "haliax/nn/checkpoint.h"
#include "levanter/checkpoint/checkpoint.h"
#include "levanter/checkpoint/checkpointer.h"
#include "levanter/compat/hf/hf_checkpoint.h"
#include "levanter/data/loader.h"
#include "levanter/data/text.h"
#include "levanter/data/tokenizer/tokenizer.h"
#include "levanter/distributed/process_group.h"
#include "levanter/optim/hessian.h"
#include "levanter/optim/optimizer.h"
#include "levanter/optim/schedule.h"
#include "levanter/runtime/cpu_allocator.h"
#include "levanter/runtime/file_io.h"
#include "levanter/runtime/format.h"
#include "levanter/runtime/signals.h"
#include "levanter/trainer/fsdp.h"
#include "levanter/trainer/hooks.h"
#include "levanter/trainer/memory.h"
#include "levanter/trainer/peak_flops.h"
#include "levanter/trainer/profiler.h"
#include "levanter/trainer/run_dashboard.h"
#include "levanter/trainer/run_lock.h"
#include "levanter/trainer/run_record.h"
#include "levanter/trainer/sample_hook.h"
#include "levanter/trainer/viz_hook.h"

namespace levanter::trainer {

namespace fs = std::filesystem;
namespace nn = haliax::nn;
using haliax::Axis;
using haliax::NamedArray;
using haliax::random::Key;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

int configured_threads(const TrainerConfig& t) {
  unsigned hc = std::thread::hardware_concurrency();
  const int64_t hardware = hc ? static_cast<int64_t>(hc) : 1;
  // More compute threads than cores only adds contention; hundreds more stall thread creation (100000 started ~935
  // OpenMP threads and hung). Refuse beyond 4x the cores, with the numbers.
  if (t.num_threads > 4 * hardware) {
    throw config::ConfigError("trainer.num_threads: " + std::to_string(t.num_threads) + " is more than 4x the " +
                              std::to_string(hardware) + " hardware threads of this machine; use at most " +
                              std::to_string(hardware) + " (0: all cores)");
  }
  if (t.num_threads > 0) return static_cast<int>(t.num_threads);
  return static_cast<int>(hardware);
}

// The error for a checkpoint at `path` that does not fit this model (`what`: the tensor at fault), naming every model
// key whose value differs between the config the checkpoint was written with (recorded in its `metadata`) and the
// current one.
std::runtime_error does_not_fit(const std::string& path, const nlohmann::json& metadata, const std::string& what,
                                const TrainLmConfig& config) {
  std::string diff;
  try {
    if (metadata.contains("config") && metadata["config"].is_string()) {
      YAML::Node then = YAML::Load(metadata["config"].get<std::string>())["model"];
      YAML::Node now = YAML::Load(config::dump(config::to_yaml_value(config)))["model"];
      std::set<std::string> keys;
      for (auto kv : then) keys.insert(kv.first.as<std::string>());
      for (auto kv : now) keys.insert(kv.first.as<std::string>());
      for (const std::string& k : keys) {
        const std::string a = then[k] ? config::dump(then[k]) : "(absent)\n";
        const std::string b = now[k] ? config::dump(now[k]) : "(absent)\n";
        if (a != b) {
          diff += (diff.empty() ? "" : ", ") + std::string("model.") + k + ": " + a.substr(0, a.size() - 1) +
                  " in the checkpoint, " + b.substr(0, b.size() - 1) + " now";
        }
      }
    }
  } catch (const std::exception&) {
    // An unreadable recorded config: report the tensor error alone.
  }
  return std::runtime_error(path + ": the checkpoint does not fit this model: " + what +
                            (diff.empty() ? std::string()
                                          : "; the config differs from the one it was written with: " + diff +
                                                " (to start a new run instead, set another trainer.id)"));
}

// Loads a checkpoint's parameters into `model`; when they do not fit (a tensor's shape, a missing or extra
// tensor), the error is does_not_fit's.
void load_model_state(models::LmHeadModel& model, const checkpoint::Checkpoint& c, const TrainLmConfig& config) {
  try {
    nn::from_state_dict(model, c.group("model"));
  } catch (const std::exception& e) {
    throw does_not_fit(c.path, c.metadata, e.what(), config);
  }
}

Axis vocab_axis(const data::TextData& data) {
  if (!data.tokenizer()) throw std::runtime_error("the data config has no tokenizer to size the vocabulary");
  return Axis("vocab", static_cast<int64_t>(data.tokenizer()->vocab_size()));
}

at::Tensor batch_tensor(const data::TokenBatch& b) {
  return at::from_blob(const_cast<int32_t*>(b.tokens.data()), {b.batch_size, b.seq_len}, at::kInt).to(at::kLong);
}

// Each defined tensor of `per_parameter` (made contiguous in place) summed over `pg` in rank order, the order in which
// one process adds its microbatches: replicated data parallelism's Hessian estimate is then one process's, bit for
// bit, and a replica's gradient pieces add up in replica order.
void sum_defined_in_rank_order(distributed::ProcessGroup& pg, std::vector<at::Tensor>& per_parameter) {
  std::vector<at::Tensor> defined;
  for (at::Tensor& t : per_parameter) {
    if (!t.defined()) continue;
    t = t.contiguous();
    defined.push_back(t);
  }
  pg.sum_in_rank_order(defined);
}

// The sizes of Levanter's mesh (replica, data, model).
struct MeshShape {
  int64_t replica = 1, data = 1, model = 1;
};

// The mesh of `n` processes (Levanter's rules and messages): trainer.model_axis_size processes per model replica
// (tensor parallelism), replica_dcn_axis_size x replica_ici_axis_size replicas whose parameters are whole copies
// of each other, and the rest on the `data` axis (FSDP's); the replica and data axes together hold the rows of each
// batch, train_batch_size / (replicas x data) per model replica, in whole microbatches.
MeshShape check_mesh(const TrainLmConfig& config, int n) {
  const TrainerConfig& tc = config.trainer;
  const int64_t M = tc.model_axis_size, R = tc.replica_ici_axis_size * tc.replica_dcn_axis_size;
  if (n % M != 0) {
    throw config::ConfigError("trainer.model_axis_size: num_devices (" + std::to_string(n) +
                              ") is not divisible by model_axis_size (" + std::to_string(M) + ")");
  }
  if (n % (M * R) != 0) {
    throw config::ConfigError(
        "trainer.replica_ici_axis_size: num_devices (" + std::to_string(n) +
        ") is not divisible by replica_dcn_axis_size * replica_ici_axis_size * model_axis_size (" +
        std::to_string(tc.replica_dcn_axis_size) + " * " + std::to_string(tc.replica_ici_axis_size) + " * " +
        std::to_string(M) + ")");
  }
  config.check_parallel_axes();
  if (M > 1 && tc.model_axes().empty()) {
    throw config::ConfigError("trainer.tensor_parallel_axes: empty, but model_axis_size is " + std::to_string(M) +
                              ": name the axes to split over the model axis (for GPT-2, Levanter's [mlp, heads]; or "
                              "map them to model in trainer.axis_resources)");
  }
  const int64_t D = n / (M * R), B = tc.train_batch_size, pdp = tc.per_device_parallelism, rows = R * D;
  if (pdp > 0 ? B % (pdp * rows) != 0 : B % rows != 0) {
    throw config::ConfigError("trainer.train_batch_size (" + std::to_string(B) +
                              ") must be divisible by per_device_parallelism * data_axis_size (" +
                              std::to_string(pdp > 0 ? pdp : B / rows) + ", " + std::to_string(rows) + ")");
  }
  return {R, D, M};
}

RunPaths resolve_paths(const TrainLmConfig& config) {
  const TrainerConfig& tc = config.trainer;
  RunPaths p;
  p.run_id = run_id_for(config);
  validate_run_id(p.run_id);
  p.run_dir = (fs::path(tc.log_dir) / p.run_id).string();
  p.metrics = (fs::path(p.run_dir) / "metrics.jsonl").string();
  p.record = (fs::path(p.run_dir) / "run.json").string();
  if (tc.load_checkpoint_path)
    p.checkpoint_base = *tc.load_checkpoint_path;
  else if (tc.checkpointer.append_run_id_to_base_path)
    p.checkpoint_base = (fs::path(tc.checkpointer.base_path) / p.run_id).string();
  else
    p.checkpoint_base = tc.checkpointer.base_path;
  return p;
}

}  // namespace

TrainerState::TrainerState() = default;
TrainerState::~TrainerState() = default;
TrainerState::TrainerState(TrainerState&&) noexcept = default;
TrainerState& TrainerState::operator=(TrainerState&&) noexcept = default;

struct Trainer::Impl {
  TrainLmConfig config;
  TrainOptions options;
  RunPaths paths;
  int threads = 1;
  std::string config_yaml;
  uint64_t data_seed = 0;
  Key root{0};  // Levanter: data_key, loader_key, model_key, training_key = split(PRNGKey(seed), 4)
  std::unique_ptr<data::TextData> data;
  Axis Vocab{"vocab", 1};
  optim::LrSchedule schedule;
  std::optional<MemoryEstimate> memory;
  std::optional<double> available_memory;
  RunLock run_lock, checkpoint_lock;  // held for the Trainer's lifetime (run_lock.h)
  std::unique_ptr<checkpoint::Checkpointer> checkpointer;
  std::shared_ptr<CheckpointHook> checkpoint_hook;
  std::unique_ptr<tracker::Tracker> tracker;
  std::optional<PeakFlops> peak;
  std::unique_ptr<eval::Evaluator> evaluator;
  std::vector<std::pair<std::shared_ptr<Hook>, int64_t>> hooks;
  TrainResult result;
  // The processes of the job (one: no communication). Rank 0 writes the run's files (tracker, checkpoints, run
  // record) and evaluates; every rank trains on its rows of each global batch (data parallelism).
  std::unique_ptr<distributed::ProcessGroup> pg;
  // FSDP (several processes and a trainer.fsdp_axis), and from initial_state the plan that says which parameters
  // are held in pieces (fsdp.h).
  bool shard_parameters = false;
  std::optional<Fsdp> fsdp;
  // Tensor parallelism (trainer.model_axis_size > 1): the processes form Levanter's mesh (replica, data, model), rank
  // r at data coordinate r / M and model coordinate r % M. `tp` holds the plan of the pieces each process computes
  // with (the tensor_parallel_axes over `model`), `tp_scope` what the model's contractions need
  // (haliax::TensorParallel). model_pg: the processes of this one's model replica; data_pg: those at its model
  // coordinate in the other replicas (the whole job without tensor parallelism), over which data parallelism and
  // FSDP exchange.
  std::optional<Fsdp> tp;
  std::shared_ptr<const haliax::TensorParallel> tp_scope;
  std::shared_ptr<double> tp_exchange_s = std::make_shared<double>(0.0);  // its sums' time (within forward/backward)
  // With replica axes (replica_ici/dcn_axis_size), data_pg spans replica x data; FSDP works over fsdp_pg (the data
  // axis of this process's replica), and its gradient pieces are then summed over replica_pg (the processes holding
  // the same piece in the other replicas).
  std::unique_ptr<distributed::ProcessGroup> model_pg, data_subgroup, fsdp_subgroup, replica_pg;
  distributed::ProcessGroup* data_pg = nullptr;
  distributed::ProcessGroup* fsdp_pg = nullptr;
  MeshShape mesh_shape;
  int64_t model_axis_size = 1;
  int64_t parameter_count = 0;  // of the whole model
  int rank() const { return pg ? pg->rank() : 0; }
  int world() const { return pg ? pg->size() : 1; }
  int data_rank() const { return data_pg ? data_pg->rank() : 0; }
  int data_size() const { return data_pg ? data_pg->size() : 1; }
  int64_t local_batch() const { return config.trainer.train_batch_size / data_size(); }
  int64_t local_microbatch() const {
    return config.trainer.per_device_parallelism > 0 ? config.trainer.per_device_parallelism : local_batch();
  }
  std::unique_ptr<RunDashboard> dashboard;  // trainer.dashboard: serves while the Trainer lives (run_dashboard.h)

  eval::Evaluator& get_evaluator();
  nlohmann::json checkpoint_metadata(const TrainerState& state) const;
  bool from_initialize_from = false;  // the state came from trainer.initialize_from, not this run's checkpoints
  std::optional<checkpoint::Checkpoint> resume_checkpoint();
  void restore(TrainerState& state, const checkpoint::Checkpoint& c) const;
  void restore_optimizer(TrainerState& state, const checkpoint::Checkpoint& c) const;
  // The mean loss; the time of each phase goes to `info`.
  float forward_backward(TrainerState& state, const data::TokenBatch& batch, StepInfo* info = nullptr) const;
  // Calls fn(model, ids, options, num_micro) for each microbatch of `batch`, as the training step sees it: `model` is
  // `compute_model` when given (the step's compute copy), else the trainer's model or a differentiable copy in the
  // compute dtype (gradients reach the f32 master weights), and `options` hold the microbatch's dropout key.
  void for_each_microbatch(const TrainerState& state, const data::TokenBatch& batch,
                           const std::function<void(const models::LmHeadModel&, const NamedArray&,
                                                    const models::ForwardOptions&, int64_t, int64_t)>& fn,
                           const models::LmHeadModel* compute_model = nullptr) const;
  // Mixed precision: state.compute_copy made (first step) or refreshed from the master weights; its gradients
  // cleared. Returns the seconds it took.
  double refresh_compute_copy(TrainerState& state) const;
  // The step's gradient of each optimizer parameter, in its order: the master's .grad, or (mixed precision, one
  // microbatch, one process) the compute copy's.
  std::vector<at::Tensor> step_gradients(const TrainerState& state) const;
  optim::StepStats update(TrainerState& state, double learning_rate, const data::TokenBatch& batch) const;
  std::vector<at::Tensor> hessian_estimate(TrainerState& state, const data::TokenBatch& batch) const;
  std::vector<at::Tensor> gauss_newton_estimate(TrainerState& state, const data::TokenBatch& batch) const;
  // What Sophia's estimates differentiate, in the optimizer's order (see estimate_inputs).
  struct EstimateInputs {
    std::unique_ptr<models::LmHeadModel> held;   // a whole compute copy gathered for the estimate alone
    const models::LmHeadModel* model = nullptr;  // the whole compute copy under FSDP (for for_each_microbatch)
    std::vector<at::Tensor> params;
  };
  EstimateInputs estimate_inputs(TrainerState& state) const;
  void sum_estimate(std::vector<at::Tensor>& parts) const;
  void announce(const TrainerState& state) const;
  std::string memory_note() const;     // ", memory ~1.23 GB of 20.1 GB available" for the announcement
  std::string replicas_note() const {  // " in each of 2 data-parallel processes" for the announcement
    if (data_size() == 1) return "";
    return " in each of " + std::to_string(data_size()) + " data-parallel " +
           (model_axis_size > 1 ? "replicas of " + std::to_string(model_axis_size) + " processes" : "processes");
  }
  void lock_directories();
  // A checkpoint of `state` for a run that stops early (a signal, an I/O error), unless this process took no step
  // or already saved this one. Returns the newest checkpoint of the run, if any.
  std::optional<std::string> save_before_stopping(const TrainerState& state, int64_t start_step);
  // FSDP or tensor parallelism: the whole model (the parameter dtype), gathered from every process's pieces.
  // Collective.
  std::unique_ptr<models::LmHeadModel> whole_model(const TrainerState& state) const;
  // Calls call(hook, every) for every hook that runs now (runs(hook, every)), in order. Under FSDP, when one that
  // reads the model runs, every process first helps gather the whole model, which such hooks then see as
  // state.model (the others see the pieces); a process keeps it only while a hook of its own reads it.
  void call_hooks(TrainerState& state, const std::function<bool(const Hook&, int64_t)>& runs,
                  const std::function<void(Hook&, int64_t)>& call) {
    std::unique_ptr<models::LmHeadModel> whole;
    if (fsdp || tp) {
      bool needed = false;
      for (const auto& [hook, every] : hooks) needed = needed || (hook->reads_model() && runs(*hook, every));
      if (pg->any(needed)) whole = whole_model(state);
      if (!needed) whole.reset();  // no hook of this process reads it
    }
    for (auto& [hook, every] : hooks) {
      if (!runs(*hook, every)) continue;
      if (!whole || !hook->reads_model()) {
        call(*hook, every);
        continue;
      }
      std::swap(state.model, whole);
      try {
        call(*hook, every);
      } catch (...) {
        std::swap(state.model, whole);
        throw;
      }
      std::swap(state.model, whole);
    }
  }
  std::string io_error_message(const TrainerState& state, int64_t start_step, const std::string& what);
};

void Trainer::Impl::lock_directories() {
  run_lock = RunLock::acquire(paths.run_dir, "run directory", paths.run_id);
  std::error_code ec;
  fs::create_directories(paths.checkpoint_base, ec);
  // One lock per directory: two FileLocks on one file exclude each other even in one process.
  if (!fs::equivalent(paths.run_dir, paths.checkpoint_base, ec)) {
    checkpoint_lock = RunLock::acquire(paths.checkpoint_base, "checkpoint directory", paths.run_id);
  }
}

std::optional<std::string> Trainer::Impl::save_before_stopping(const TrainerState& state, int64_t start_step) {
  if (!checkpoint_hook) return checkpointer->latest();  // a rank other than 0 writes nothing
  if (state.step > start_step && checkpointer->last_save_step() != state.step) {
    result.last_checkpoint = checkpoint_hook->save_now(state, checkpoint::SaveKind::kTemporary);
  }
  if (!result.last_checkpoint) result.last_checkpoint = checkpointer->latest();
  return result.last_checkpoint;
}

std::string Trainer::Impl::io_error_message(const TrainerState& state, int64_t start_step, const std::string& what) {
  std::string m = what + "\nThe run stopped after step " + std::to_string(state.step) + " of " +
                  std::to_string(config.trainer.num_train_steps) + ": ";
  try {
    // FSDP, tensor parallelism: a checkpoint needs every process, and the others are not stopping here.
    const bool pieces = fsdp || tp;
    const bool saved_now = !pieces && state.step > start_step && checkpointer->last_save_step() != state.step;
    std::optional<std::string> ckpt = pieces ? checkpointer->latest() : save_before_stopping(state, start_step);
    if (ckpt) {
      m += (saved_now ? "saved checkpoint " : "its newest checkpoint is ") + *ckpt;
    } else {
      m += "there is no checkpoint yet";
    }
  } catch (const std::exception& e) {
    auto latest = checkpointer->latest();
    m += std::string("could not save a checkpoint either (") + e.what() + "); the newest complete one is " +
         latest.value_or("(none)");
  }
  return m + ". Fix the problem and run the same command to resume";
}

eval::Evaluator& Trainer::Impl::get_evaluator() {
  if (!evaluator) {
    const TrainerConfig& tc = config.trainer;
    evaluator = std::make_unique<eval::Evaluator>(*data, config.model->max_seq_len(), tc.eval_batch_size(),
                                                  tc.max_eval_batches);
    if (world() > 1) {
      // Every process evaluates its share of the batches (with the whole model), with one process's bits.
      distributed::ProcessGroup* group = pg.get();
      evaluator->set_split({rank(), world(), [group](std::vector<double>& v) {
                              std::vector<at::Tensor> t{
                                  at::from_blob(v.data(), {static_cast<int64_t>(v.size())}, at::kDouble)};
                              group->sum_in_rank_order(t);
                            }});
    }
  }
  return *evaluator;
}

nlohmann::json Trainer::Impl::checkpoint_metadata(const TrainerState& state) const {
  nlohmann::json md;
  md["run_id"] = paths.run_id;
  md["root_key"] = {root.data()[0], root.data()[1]};
  md["data_seed"] = data_seed;
  md["config"] = config_yaml;
  md["num_threads"] = threads;
  md["step"] = state.step;
  if (std::isfinite(state.last_loss)) md["train_loss"] = state.last_loss;
  return md;
}

std::optional<checkpoint::Checkpoint> Trainer::Impl::resume_checkpoint() try {
  const TrainerConfig& tc = config.trainer;
  std::optional<checkpoint::Checkpoint> c;
  if (tc.load_checkpoint.value_or(true)) {
    c = checkpointer->load_latest();
    if (!c && tc.load_checkpoint.value_or(false)) {
      throw std::runtime_error("trainer.load_checkpoint is true but there is no complete checkpoint under " +
                               paths.checkpoint_base);
    }
  }
  if (!c && tc.initialize_from) {
    c = checkpoint::load_checkpoint(*tc.initialize_from, {}, checkpointer->blocks());
    from_initialize_from = true;
  }
  return c;
} catch (const checkpoint::DoesNotFit& e) {
  // This process's pieces cannot be cut from it (read as pieces under FSDP or tensor parallelism).
  nlohmann::json metadata;
  try {
    metadata = checkpoint::read_checkpoint_metadata(e.path());
  } catch (const std::exception&) {
  }
  throw does_not_fit(e.path(), metadata, e.what(), config);
}

// The optimizer state of a resumed run must be there; a checkpoint given as trainer.initialize_from may hold
// parameters only (levanter import), and the optimizer then starts fresh.
void Trainer::Impl::restore_optimizer(TrainerState& state, const checkpoint::Checkpoint& c) const {
  const bool has = std::any_of(c.groups.begin(), c.groups.end(), [](const auto& g) { return g.first == "opt_state"; });
  if (!has && from_initialize_from) {
    if (options.progress)
      std::fprintf(stderr, "%s holds no optimizer state: the optimizer starts fresh\n", c.path.c_str());
    return;
  }
  // Read as this process's pieces already when it holds pieces (resume_checkpoint).
  haliax::StateDict opt = c.group("opt_state");
  if (!checkpointer->blocks()) {
    if (tp) opt = tp->shard_optimizer_state(opt);
    if (fsdp) opt = fsdp->shard_optimizer_state(opt);
  }
  state.optimizer->load_state_dict(opt);
}

std::unique_ptr<models::LmHeadModel> Trainer::Impl::whole_model(const TrainerState& state) const {
  const at::ScalarType dtype = config.trainer.mp.param;
  std::unique_ptr<models::LmHeadModel> replica;  // FSDP's pieces gathered: this process's tensor-parallel pieces
  if (fsdp) {
    replica = fsdp->whole_like(*state.model, dtype);
    fsdp->gather(*fsdp_pg, *state.model, *replica);
  }
  if (!tp) return replica;
  const models::LmHeadModel& pieces = replica ? *replica : *state.model;
  std::unique_ptr<models::LmHeadModel> whole = tp->whole_like(pieces, dtype);
  tp->gather(*model_pg, pieces, *whole);
  return whole;
}

void Trainer::Impl::restore(TrainerState& state, const checkpoint::Checkpoint& c) const {
  load_model_state(*state.model, c, config);
  state.step = c.step;
  state.resumed_from = c.path;
  for (const std::string& w : checkpoint::resume_warnings(c.metadata)) {
    std::cerr << "warning: " << w;
    if (w.find("threads") != std::string::npos)
      std::cerr << " (set trainer.num_threads: " << c.metadata.value("num_threads", threads) << ")";
    std::cerr << "\n";
  }
  if (c.metadata.contains("train_loss") && c.metadata["train_loss"].is_number()) {
    state.last_loss = c.metadata["train_loss"].get<float>();
  }
}

void Trainer::Impl::for_each_microbatch(const TrainerState& state, const data::TokenBatch& batch,
                                        const std::function<void(const models::LmHeadModel&, const NamedArray&,
                                                                 const models::ForwardOptions&, int64_t, int64_t)>& fn,
                                        const models::LmHeadModel* compute_model) const {
  const MixedPrecision& mp = config.trainer.mp;
  // This process's rows of the global batch, in microbatches numbered as one process would number them (process r
  // holds microbatches [r*k, (r+1)*k)), so the dropout keys and the loss scale do not depend on the process count.
  const int64_t MB = local_microbatch(), num_micro = batch.batch_size / MB;
  const int64_t first = static_cast<int64_t>(data_rank()) * num_micro, num_global = num_micro * data_size();
  const Axis MicroBatch("batch", MB), Pos("position", batch.seq_len);
  const at::Tensor tokens = batch_tensor(batch);
  const Key step_key = state.key.fold_in(static_cast<uint64_t>(state.step));
  for (int64_t m = 0; m < num_micro; ++m) {
    NamedArray ids(tokens.narrow(0, m * MB, MB), {MicroBatch, Pos});
    std::unique_ptr<models::LmHeadModel> cast;  // differentiable: grads flow to the master weights
    if (!compute_model && mp.compute != mp.param) cast = models::cast_floating(*state.model, mp.compute);
    const models::LmHeadModel& model = compute_model ? *compute_model : cast ? *cast : *state.model;
    models::ForwardOptions fo;
    if (config.model->uses_dropout()) fo.key = step_key.fold_in(static_cast<uint64_t>(first + m));
    fn(model, ids, fo, first + m, num_global);
  }
}

// Whether the optimizer's last update wrote state.compute_copy and no master parameter has changed since.
static bool copy_is_current(const TrainerState& state) {
  const auto& at = state.compute_copy_written_at;
  const auto& params = state.optimizer->params();
  if (at.empty() || at.size() != params.size()) return false;
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].second._version() != at[i]) return false;
  return true;
}

double Trainer::Impl::refresh_compute_copy(TrainerState& state) const {
  const auto t0 = Clock::now();
  RECORD_USER_SCOPE("cast");
  const at::ScalarType compute = config.trainer.mp.compute;
  if (!state.compute_copy) {
    state.compute_copy = models::cast_floating(*state.model, compute);
    nn::requires_grad_(*state.compute_copy);  // leaves: gradients stay in the compute dtype
    // A bfloat16 copy of f32 master weights is then written by the optimizer's update, chunk by chunk while the
    // chunk is in cache (the same bits as the copy_ below), instead of here in a pass of its own.
    const auto master = nn::named_parameters(*state.model);
    const auto copy = nn::named_parameters(*state.compute_copy);
    std::vector<at::Tensor> copies;
    bool all = master.size() == copy.size() && master.size() == state.optimizer->params().size();
    for (size_t i = 0; all && i < master.size(); ++i) {
      const at::Tensor& m = master[i].second.array();
      const at::Tensor& c = copy[i].second.array();
      all = m.scalar_type() == at::kFloat && c.scalar_type() == at::kBFloat16 && c.is_contiguous() &&
            m.device() == c.device() && state.optimizer->params()[i].second.is_same(m);
      copies.push_back(c);
    }
    if (all) state.optimizer->set_bf16_copies(std::move(copies));
  } else if (copy_is_current(state)) {
    for (auto& [name, p] : nn::named_parameters(*state.compute_copy)) p.array().mutable_grad() = at::Tensor();
  } else {
    at::NoGradGuard no_grad;
    const auto master = nn::named_parameters(*state.model);
    const auto copy = nn::named_parameters(*state.compute_copy);
    if (master.size() != copy.size()) throw std::logic_error("the compute copy does not match the model");
    for (size_t i = 0; i < master.size(); ++i) {
      at::Tensor c = copy[i].second.array();
      c.mutable_grad() = at::Tensor();
      // The same rounding as cast_floating's to(); parameters that are not floating are copied as they are.
      c.copy_(master[i].second.array());
    }
  }
  return seconds_since(t0);
}

std::vector<at::Tensor> Trainer::Impl::step_gradients(const TrainerState& state) const {
  std::vector<at::Tensor> grads;
  if (!state.compute_copy) {
    for (const auto& [info, p] : state.optimizer->params()) grads.push_back(p.grad());
    return grads;
  }
  // The optimizer's parameters are the master's, in named_parameters order (initial_state), as are the copy's.
  const auto copy = nn::named_parameters(*state.compute_copy);
  const auto& params = state.optimizer->params();
  if (copy.size() != params.size()) throw std::logic_error("the compute copy does not match the optimizer");
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& master_grad = params[i].second.grad();
    grads.push_back(master_grad.defined() ? master_grad : copy[i].second.array().grad());
  }
  return grads;
}

// Forward and backward over the step's microbatches; gradients accumulate in the parameters' .grad.
float Trainer::Impl::forward_backward(TrainerState& state, const data::TokenBatch& batch, StepInfo* info) const {
  double loss_sum = 0, forward_s = 0, backward_s = 0, cast_s = 0, gather_s = 0;
  const bool mixed = config.trainer.mp.compute != config.trainer.mp.param;
  if (fsdp) {
    // The compute copy gathered from every process's pieces (converted to the compute dtype on the way).
    const auto t0 = Clock::now();
    RECORD_USER_SCOPE("exchange");
    fsdp->gather(*fsdp_pg, *state.model, *state.compute_copy);  // (update() cleared the copy's gradients)
    gather_s = seconds_since(t0);
  } else if (mixed) {
    cast_s = refresh_compute_copy(state);
  }
  const int64_t num_micro = batch.batch_size / local_microbatch();
  // Gradients are summed in f32 (as the master weights' autograd did): over microbatches, and over processes.
  const bool widen = mixed && (num_micro > 1 || data_size() > 1);
  decltype(nn::named_parameters(*state.model)) master, copy;
  if (widen || fsdp) {
    master = nn::named_parameters(*state.model);
    copy = nn::named_parameters(*state.compute_copy);
  }
  // FSDP: the whole-shape f32 sums of the microbatches' gradients (the master's .grad holds only a piece).
  std::vector<at::Tensor> whole_grads(fsdp ? copy.size() : 0);
  // FSDP gathering layer by layer: the stacked layers' pieces gathered as they run; their gradients, summed over the
  // processes in backward, land in layer_grads.
  auto layer_grads = std::make_shared<std::vector<at::Tensor>>();
  std::optional<haliax::nn::LayerGather> layer_gather;
  if (fsdp && fsdp->unit() == Fsdp::Unit::kLayer)
    layer_gather.emplace(fsdp->layer_gather(*fsdp_pg, *state.compute_copy, layer_grads));
  // Tensor parallelism: the model computes with this process's pieces (haliax/partitioning.h).
  haliax::TensorParallelScope tensor_parallel(tp_scope);
  *tp_exchange_s = 0;
  for_each_microbatch(
      state, batch,
      [&](const models::LmHeadModel& model, const NamedArray& ids, const models::ForwardOptions& fo, int64_t,
          int64_t num_global_micro) {
        models::LossOptions lo;
        lo.z_loss_weight = config.z_loss_weight;
        auto t = Clock::now();
        NamedArray loss;
        {
          RECORD_USER_SCOPE("forward");
          loss = model.compute_next_token_loss(ids, fo, lo);
        }
        forward_s += seconds_since(t);
        t = Clock::now();
        {
          RECORD_USER_SCOPE("backward");
          (num_global_micro == 1 ? loss.array() : loss.array() / static_cast<double>(num_global_micro)).backward();
          // The compute-dtype gradient widened exactly and added to the f32 one, as autograd did when the cast was
          // part of the graph: the same bits.
          for (size_t i = 0; widen && i < copy.size(); ++i) {
            at::Tensor& g = copy[i].second.array().mutable_grad();
            if (!g.defined()) continue;
            if (fsdp && fsdp->gathered_by_layer(i)) {
              g = at::Tensor();  // its gradient went to layer_grads
              continue;
            }
            at::Tensor& acc = fsdp ? whole_grads[i] : master[i].second.array().mutable_grad();
            if (acc.defined()) {
              acc.add_(g.to(acc.scalar_type()));
            } else {
              acc = g.to(master[i].second.dtype());
            }
            g = at::Tensor();
          }
        }
        backward_s += seconds_since(t);
        loss_sum += static_cast<double>(loss.array().detach().item<float>());
      },
      mixed || fsdp ? state.compute_copy.get() : nullptr);
  const int64_t num_global = num_micro * data_size();
  const auto t_exchange = Clock::now();
  if (fsdp) {
    RECORD_USER_SCOPE("exchange");
    // Each process keeps its piece of the gradients summed over processes in rank order (whole parameters: the
    // whole sum), as the master's .grad.
    if (!widen) {
      for (size_t i = 0; i < copy.size(); ++i) {
        whole_grads[i] = copy[i].second.array().grad();
        copy[i].second.array().mutable_grad() = at::Tensor();
      }
    }
    layer_gather.reset();
    for (size_t i = 0; i < layer_grads->size(); ++i) {
      if (fsdp->gathered_by_layer(i)) whole_grads[i] = (*layer_grads)[i];
    }
    std::vector<at::Tensor> pieces = fsdp->reduce_gradients(*fsdp_pg, std::move(whole_grads));
    // Replica axes: the same pieces' sums from the other replicas, in replica order.
    if (replica_pg) sum_defined_in_rank_order(*replica_pg, pieces);
    for (size_t i = 0; i < pieces.size(); ++i) master[i].second.array().mutable_grad() = pieces[i];
    std::vector<at::Tensor> loss{at::full({1}, loss_sum, at::kDouble)};
    data_pg->sum_in_rank_order(loss);
    loss_sum = loss[0].item<double>();
  } else if (data_size() > 1) {
    RECORD_USER_SCOPE("exchange");
    // Gradients and losses summed over the processes in rank order: the order in which one process adds its
    // microbatches, so N processes with one microbatch each match one process with N, bit for bit.
    std::vector<at::Tensor> grads;
    for (const auto& [name, p] : nn::named_parameters(*state.model)) {
      if (p.array().grad().defined()) grads.push_back(p.array().grad());
    }
    data_pg->sum_in_rank_order(grads);
    std::vector<at::Tensor> loss{at::full({1}, loss_sum, at::kDouble)};
    data_pg->sum_in_rank_order(loss);
    loss_sum = loss[0].item<double>();
  }
  if (info) {
    info->cast_s = cast_s;
    info->forward_s = forward_s;
    info->backward_s = backward_s;
    info->exchange_s = gather_s + seconds_since(t_exchange) + *tp_exchange_s;
  }
  return static_cast<float>(loss_sum / static_cast<double>(num_global));
}

// Sophia-H's estimate of the Hessian diagonal on this step's batch at the current parameters (Hutchinson: z * Hz,
// z Gaussian): the same loss as forward_backward (microbatches, mixed precision, dropout keys), differentiated
// twice through libtorch's autograd (a Hessian-vector product is the gradient of <grad L, z>). Needs the loss
// without the fused LM head and without activation checkpointing, whose backward passes are not differentiable.
std::vector<at::Tensor> Trainer::Impl::hessian_estimate(TrainerState& state, const data::TokenBatch& batch) const {
  optim::Optimizer& opt = *state.optimizer;
  if (opt.config().type.name == "sophia-g") return gauss_newton_estimate(state, batch);
  // The probes one process draws for the whole parameters. Tensor parallelism computes with its pieces of them: each
  // is drawn whole and cut at once, so that no more than one whole probe exists at a time.
  std::vector<at::Tensor> z;
  if (tp) {
    const std::vector<std::vector<int64_t>> shapes = tp->whole_shapes();
    for (size_t i = 0; i < shapes.size(); ++i) z.push_back(tp->piece_of(i, opt.hessian_probe(i, shapes[i])));
  } else {
    z = fsdp ? opt.hessian_probes(fsdp->whole_shapes()) : opt.hessian_probes();
  }
  // FSDP: each process's piece of the summed products meets its piece of the probe. In mixed precision the whole copy
  // is bf16, as the cast one process differentiates (whose backward only widens), so the products widened to f32 are
  // one process's.
  const EstimateInputs in = estimate_inputs(state);
  const std::vector<at::Tensor>& params = in.params;
  // Tensor parallelism: the products run on the pieces with the step's exchanges, differentiated twice (Megatron's f
  // and g are each other's backward).
  haliax::TensorParallelScope tensor_parallel(tp_scope);
  haliax::nn::NoCheckpointing no_checkpointing;
  std::vector<at::Tensor> hz(params.size());
  for_each_microbatch(
      state, batch,
      [&](const models::LmHeadModel& model, const NamedArray& ids, const models::ForwardOptions& fo, int64_t,
          int64_t num_micro) {
        models::LossOptions lo;
        lo.z_loss_weight = config.z_loss_weight;
        lo.differentiable_twice = true;
        at::Tensor loss = model.compute_next_token_loss(ids, fo, lo).array();
        if (num_micro > 1) loss = loss / static_cast<double>(num_micro);
        std::vector<at::Tensor> hv = optim::hessian_vector_product(loss, params, z);
        for (size_t i = 0; i < params.size(); ++i) {
          if (!hv[i].defined()) continue;
          at::Tensor t = fsdp ? hv[i].to(at::kFloat) : hv[i];  // FSDP's bf16 copy: widened, as the cast's backward
          hz[i] = hz[i].defined() ? hz[i] + t : t;
        }
      },
      in.model);
  sum_estimate(hz);
  if (fsdp) z = fsdp->pieces_of(std::move(z));
  std::vector<at::Tensor> estimate(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    if (hz[i].defined()) estimate[i] = (z[i] * hz[i].to(at::kFloat)).contiguous();
  }
  return estimate;
}

// Sophia-G's estimate: N * g * g, g the gradient of the mean loss against labels sampled from the model's own
// next-token distribution at every position (N positions in the batch; microbatches average their gradients as the
// training step does). One forward and one backward: no double backward, so the fused kernels' absence matters only
// for memory (the full logits of a microbatch).
std::vector<at::Tensor> Trainer::Impl::gauss_newton_estimate(TrainerState& state, const data::TokenBatch& batch) const {
  optim::Optimizer& opt = *state.optimizer;
  // FSDP: in mixed precision the whole copy is bf16, as the cast one process differentiates, and its gradient widened
  // to f32 is what that cast's backward gives.
  const EstimateInputs in = estimate_inputs(state);
  const std::vector<at::Tensor>& params = in.params;
  const Key sample_key = opt.hessian_key();
  std::vector<at::Tensor> g(params.size());
  // Tensor parallelism: the model's pieces communicate as in the step (the gradients of the pieces are this
  // process's pieces of the whole gradient; whole parameters' are the same on every process of the replica).
  haliax::TensorParallelScope tensor_parallel(tp_scope);
  for_each_microbatch(
      state, batch,
      [&](const models::LmHeadModel& model, const NamedArray& ids, const models::ForwardOptions& fo, int64_t m,
          int64_t num_micro) {
        at::Tensor logits = haliax::rearrange(model.logits(ids, fo), {"batch", "position", "vocab"}).array();
        std::vector<at::Tensor> gm =
            optim::sampled_label_gradient(logits, params, sample_key.fold_in(static_cast<uint64_t>(m)));
        for (size_t i = 0; i < params.size(); ++i) {
          if (!gm[i].defined()) continue;
          at::Tensor t = gm[i].to(at::kFloat) / static_cast<double>(num_micro);
          g[i] = g[i].defined() ? g[i] + t : t;
        }
      },
      in.model);
  sum_estimate(g);
  // N: the positions of the global batch (this process holds batch.batch_size of its rows).
  const double n = static_cast<double>(batch.batch_size * data_size() * batch.seq_len);
  std::vector<at::Tensor> estimate(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    if (g[i].defined()) estimate[i] = (g[i] * g[i] * n).contiguous();
  }
  return estimate;
}

// The parameters Sophia's estimates differentiate, in the optimizer's order: the optimizer's own, or under FSDP (where
// the optimizer holds this process's pieces) those of the whole compute copy: the step's, when the step gathers it
// whole; when the step gathers layer by layer, one gathered from the pieces for the estimate alone, which lives as
// long as the result (every update_interval steps). Collective under layer-by-layer gathering.
Trainer::Impl::EstimateInputs Trainer::Impl::estimate_inputs(TrainerState& state) const {
  EstimateInputs in;
  const auto& opt_params = state.optimizer->params();
  if (!fsdp) {
    for (const auto& [info, p] : opt_params) in.params.push_back(p);
    return in;
  }
  models::LmHeadModel* whole = state.compute_copy.get();
  if (fsdp->unit() == Fsdp::Unit::kLayer) {
    in.held = fsdp->whole_like(*state.model, config.trainer.mp.compute);
    fsdp->gather(*fsdp_pg, *state.model, *in.held);
    nn::requires_grad_(*in.held);
    whole = in.held.get();
  }
  in.model = whole;
  for (auto& [name, p] : nn::named_parameters(*whole)) in.params.push_back(p.array());
  if (in.params.size() != opt_params.size()) throw std::logic_error("the compute copy does not match the optimizer");
  return in;
}

// An estimate's per-parameter parts summed over the data-parallel processes in rank order, as the step's gradients
// are: under FSDP cut to this process's pieces (whole parameters: the whole sum) and summed over the replicas.
// Collective.
void Trainer::Impl::sum_estimate(std::vector<at::Tensor>& parts) const {
  if (fsdp) {
    parts = fsdp->reduce_gradients(*fsdp_pg, std::move(parts));
    if (replica_pg) sum_defined_in_rank_order(*replica_pg, parts);
  } else if (data_size() > 1) {
    sum_defined_in_rank_order(*data_pg, parts);
  }
}

optim::StepStats Trainer::Impl::update(TrainerState& state, double learning_rate, const data::TokenBatch& batch) const {
  optim::Optimizer& opt = *state.optimizer;
  std::vector<at::Tensor> grads = step_gradients(state);
  std::vector<at::Tensor> hessian;
  if (opt.needs_hessian()) hessian = hessian_estimate(state, batch);
  state.compute_copy_written_at.clear();
  optim::StepStats stats = opt.step(grads, learning_rate, opt.needs_hessian() ? &hessian : nullptr);
  if (opt.has_bf16_copies()) {
    for (const auto& [info, p] : opt.params()) state.compute_copy_written_at.push_back(p._version());
  }
  grads.clear();
  for (const auto& [info, p] : opt.params()) p.mutable_grad() = at::Tensor();
  if (state.compute_copy) {
    for (auto& [name, p] : nn::named_parameters(*state.compute_copy)) p.array().mutable_grad() = at::Tensor();
  }
  return stats;
}

std::string Trainer::Impl::memory_note() const {
  if (!memory) return "";
  char buf[96];
  std::snprintf(buf, sizeof(buf), ", memory ~%.2f GB", memory->total() / 1e9);
  std::string s = buf;
  if (available_memory) {
    std::snprintf(buf, sizeof(buf), " of %.1f GB available", *available_memory / 1e9);
    s += buf;
  }
  return s;
}

void Trainer::Impl::announce(const TrainerState& state) const {
  if (!options.progress) return;
  const int64_t B = config.trainer.train_batch_size, micro = B / local_microbatch();
  std::fprintf(
      stderr,
      "levanter: run %s, %s %lld params, batch %lld x %lld tokens (%lld microbatch%s%s), %d threads, mp %s%s%s\n",
      paths.run_id.c_str(), config.model.type().c_str(), (long long)parameter_count, (long long)B,
      (long long)config.model->max_seq_len(), (long long)micro, micro == 1 ? "" : "es", replicas_note().c_str(),
      threads, config.trainer.mp.text.c_str(), memory_note().c_str(),
      state.resumed_from ? (" — resumed from " + *state.resumed_from).c_str() : "");
  if (tp) {
    std::string compute;
    for (const auto& [axis, blocks] : tp_scope->split_compute) compute += "; " + axis + " split in compute (LM head)";
    std::fprintf(stderr, "levanter: tensor parallelism: %s%s\n", tp->describe().c_str(), compute.c_str());
  }
  if (fsdp) std::fprintf(stderr, "levanter: FSDP: %s\n", fsdp->describe().c_str());
}

Trainer::Trainer(const TrainLmConfig& config, TrainOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& I = *impl_;
  I.config = config;
  I.options = std::move(options);
  const TrainerConfig& tc = I.config.trainer;
  at::set_num_threads(configured_threads(tc));
  I.threads = at::get_num_threads();
  I.paths = resolve_paths(I.config);
  I.result.paths = I.paths;
  const distributed::ProcessInfo process = distributed::resolve_process(tc.distributed);
  I.mesh_shape = check_mesh(I.config, process.world_size);
  I.model_axis_size = I.mesh_shape.model;
  if (process.distributed()) {
    I.pg = distributed::ProcessGroup::connect(process, std::chrono::seconds(tc.distributed.timeout));
    if (I.rank() != 0) I.options.progress = false;  // one progress line per job
    // Rank = (r * D + d) * M + m at replica r, data d, model m.
    const int R = static_cast<int>(I.mesh_shape.replica), D = static_cast<int>(I.mesh_shape.data),
              M = static_cast<int>(I.mesh_shape.model);
    const int r = I.rank() / (D * M), d = (I.rank() / M) % D, m = I.rank() % M;
    I.data_pg = I.fsdp_pg = I.pg.get();
    // Every process makes its groups in the same order: model, data (replica x data), FSDP's, replica.
    auto group = [&](const std::string& name, int count, const std::function<int(int)>& rank_of) {
      std::vector<int> ranks;
      for (int i = 0; i < count; ++i) ranks.push_back(rank_of(i));
      return I.pg->subgroup(name, ranks);
    };
    if (M > 1) {
      I.model_pg = group("model" + std::to_string(r * D + d), M, [&](int j) { return (r * D + d) * M + j; });
      I.data_subgroup = group("data" + std::to_string(m), R * D, [&](int i) { return i * M + m; });
      I.data_pg = I.fsdp_pg = I.data_subgroup.get();
    }
    if (R > 1) {
      I.fsdp_subgroup =
          group("fsdp" + std::to_string(r) + "." + std::to_string(m), D, [&](int i) { return (r * D + i) * M + m; });
      I.replica_pg =
          group("replica" + std::to_string(d) + "." + std::to_string(m), R, [&](int i) { return (i * D + d) * M + m; });
      I.fsdp_pg = I.fsdp_subgroup.get();
    }
    I.shard_parameters = D > 1 && !tc.fsdp_axes().empty();
  }
  if (I.rank() == 0) I.lock_directories();  // before anything reads or writes the run's files
  I.config_yaml = config::dump(config::to_yaml_value(I.config));
  I.data_seed = static_cast<uint64_t>(I.config.data_seed.value_or(tc.seed));
  I.root = Key(static_cast<uint64_t>(tc.seed));
  I.data = std::make_unique<data::TextData>(I.config.data);
  if (I.pg) {
    // Every process builds its share of the training caches' shards (data/cache/builder.h).
    distributed::ProcessGroup* pg = I.pg.get();
    I.data->set_joint_train_build(I.rank(), I.world(), [pg](const std::string& v) { return pg->all_gather(v); });
  }
  I.Vocab = vocab_axis(*I.data);
  // Before anything large is allocated: a run that cannot fit is refused with the numbers.
  I.memory = estimate_training_memory(I.config, I.Vocab.size, static_cast<int>(I.mesh_shape.data),
                                      static_cast<int>(I.model_axis_size));
  I.available_memory = available_memory_bytes();
  if (tc.check_memory && I.memory && I.available_memory) check_memory(*I.memory, *I.available_memory);
  I.schedule = optim::LrSchedule::build(I.config.optimizer, tc.num_train_steps);
  I.checkpointer = std::make_unique<checkpoint::Checkpointer>(I.paths.checkpoint_base, tc.checkpointer);
  if (I.rank() != 0) {
    // Ranks other than 0 train and evaluate their share of the validation batches (process 0 logs the result): no
    // tracker files, checkpoints (but their pieces) or exports.
    I.tracker = std::make_unique<tracker::NoopTracker>();
    add_hook(std::make_shared<NanPolicyHook>(tc.crash_on_nan, tc.crash_on_inf, *I.checkpointer));
    add_hook(std::make_shared<EvalHook>([&I]() -> eval::Evaluator& { return I.get_evaluator(); }, tc.mp.compute,
                                        tc.num_train_steps, *I.tracker, false, I.result.eval),
             tc.steps_per_eval);
    if (I.shard_parameters || I.model_axis_size > 1) {
      // FSDP, tensor parallelism: every process writes its pieces of each checkpoint (process 0 commits it).
      I.checkpoint_hook = std::make_shared<CheckpointHook>(
          *I.checkpointer, [&I](const TrainerState& s) { return I.checkpoint_metadata(s); }, I.result.last_checkpoint);
      add_hook(I.checkpoint_hook);
    }
    add_hook(std::make_shared<FaultHook>());
    return;
  }
  I.tracker = tracker::make_tracker(tc.tracker, I.paths.run_dir, I.paths.run_id);
  I.dashboard = RunDashboard::start_if_configured(tc, I.paths.run_dir);

  add_hook(std::make_shared<NanPolicyHook>(tc.crash_on_nan, tc.crash_on_inf, *I.checkpointer));
  add_hook(std::make_shared<MetricsHook>(*I.tracker));
  if (I.options.progress) add_hook(std::make_shared<ProgressHook>(tc.num_train_steps, tc.log_every));
  add_hook(std::make_shared<EvalHook>([&I]() -> eval::Evaluator& { return I.get_evaluator(); }, tc.mp.compute,
                                      tc.num_train_steps, *I.tracker, I.options.progress, I.result.eval),
           tc.steps_per_eval);
  if (tc.sample.steps > 0) {
    // Its own stream of the root key, apart from Levanter's four (data, loader, model, training).
    add_hook(
        std::make_shared<SampleHook>(tc.sample, *I.data->tokenizer(), I.root.fold_in(0x73616d706c65ULL), *I.tracker),
        tc.sample.steps);
  }
  I.checkpoint_hook = std::make_shared<CheckpointHook>(
      *I.checkpointer, [&I](const TrainerState& s) { return I.checkpoint_metadata(s); }, I.result.last_checkpoint);
  add_hook(I.checkpoint_hook);
  if (I.config.hf_save_path) {
    std::optional<at::ScalarType> dtype;
    if (I.config.hf_save_dtype && (*I.config.hf_save_dtype == "bfloat16" || *I.config.hf_save_dtype == "bf16")) {
      dtype = at::kBFloat16;
    }
    add_hook(std::make_shared<HfExportHook>((fs::path(*I.config.hf_save_path) / I.paths.run_id).string(),
                                            data::resolve_tokenizer_path(I.config.data.tokenizer), dtype,
                                            I.options.progress),
             I.config.hf_save_steps);
  }
  if (tc.viz.steps > 0) {
    add_hook(std::make_shared<VizHook>(tc.viz, *I.data, I.config.model->max_seq_len(), static_cast<uint64_t>(tc.seed),
                                       tc.mp.compute, tc.num_train_steps, I.paths.run_dir, I.options.progress),
             tc.viz.steps);
  }
  add_hook(std::make_shared<FaultHook>());
}

Trainer::~Trainer() = default;

const TrainLmConfig& Trainer::config() const { return impl_->config; }
const RunPaths& Trainer::paths() const { return impl_->paths; }

void Trainer::add_hook(std::shared_ptr<Hook> hook, int64_t every) {
  if (every <= 0) throw std::invalid_argument("a hook's `every` must be positive, got " + std::to_string(every));
  impl_->hooks.emplace_back(std::move(hook), every);
}

void Trainer::add_hook(int64_t every, std::function<void(const StepInfo&, TrainerState&)> fn) {
  struct FunctionHook : Hook {
    std::function<void(const StepInfo&, TrainerState&)> fn;
    void after_step(const StepInfo& info, TrainerState& state) override { fn(info, state); }
  };
  auto h = std::make_shared<FunctionHook>();
  h->fn = std::move(fn);
  add_hook(std::move(h), every);
}

TrainerState Trainer::initial_state() {
  Impl& I = *impl_;
  const TrainerConfig& tc = I.config.trainer;
  std::vector<Key> keys = I.root.split(4);
  TrainerState state;
  state.key = keys[3];
  // The initialisation, in the parameters' dtype.
  auto build_model = [&] {
    std::unique_ptr<models::LmHeadModel> m = I.config.model->build(I.Vocab, keys[2]);
    if (tc.mp.param != at::kFloat) m = models::cast_floating(*m, tc.mp.param);
    return m;
  };
  // Levanter's mesh (replica, data, model); its parameter mapping sends the tensor-parallel axes to `model` and the
  // FSDP axes to `data`.
  const int64_t M = I.model_axis_size;
  const haliax::Mesh mesh({{"replica", I.mesh_shape.replica}, {"data", I.mesh_shape.data}, {"model", M}});
  // In pieces (FSDP or tensor parallelism), no process ever holds the whole model, as in Levanter (eval_shape, then
  // an initialisation whose output is sharded): the plans below are made from the model's shapes alone (built on the
  // meta device), then the model is built as this process's pieces (haliax::CreatePiecesScope), the same bits as
  // cutting the whole initialisation.
  const bool in_pieces = I.shard_parameters || M > 1;
  std::unique_ptr<models::LmHeadModel> shapes;  // in pieces: the model's shapes, cut as the plans cut it
  if (in_pieces) {
    haliax::EvalShapeScope shapes_only;
    shapes = build_model();
  } else {
    state.model = build_model();
  }
  models::LmHeadModel& planned = in_pieces ? *shapes : *state.model;
  I.parameter_count = nn::parameter_count(planned);
  haliax::CreatePieces pieces;  // what the plans cut: logical axis -> (pieces, this process's block)
  checkpoint::Sharding sh;
  sh.mesh = mesh.axes();
  if (M > 1) {
    // This process keeps (and computes with) its pieces of the tensor-parallel axes, except the vocabulary: the
    // parameters hold it whole and the fused LM head and loss compute this process's block of it.
    haliax::AxisMapping mapping;
    auto scope = std::make_shared<haliax::TensorParallel>();
    const int64_t coordinate = mesh.coordinate(I.rank(), "model");
    for (const std::string& a : tc.model_axes()) {
      if (a == models::kVocabAxis) {
        scope->split_compute[a] = {M, coordinate};
      } else {
        mapping[a] = "model";
      }
    }
    I.tp.emplace(planned, mapping, mesh, I.rank(), Fsdp::Unit::kStep, "model");
    if (scope->split_compute.count(models::kVocabAxis)) {
      // An empty block would only show at the first step: refuse it now, by name.
      try {
        haliax::compute_block_of(models::kVocabAxis, planned.lm_head().resolve_axis(models::kVocabAxis).size, M,
                                 coordinate);
      } catch (const haliax::ValueError& e) {
        throw config::ConfigError(tc.model_axis_key(models::kVocabAxis) + ": " + e.what());
      }
    }
    for (const auto& [axis, physical] : mapping) scope->split[axis] = pieces.split[axis] = {M, coordinate};
    for (const auto& [info, p] : nn::named_parameters(planned)) {
      for (const haliax::Axis& a : p.axes())
        if (mapping.count(a.name)) scope->whole[a.name] = a.size;  // before the cut
    }
    I.tp->shard_(planned);
    distributed::ProcessGroup* model_pg = I.model_pg.get();
    std::shared_ptr<double> seconds = I.tp_exchange_s;
    scope->all_reduce = [model_pg, seconds](at::Tensor& t) {
      const auto t0 = Clock::now();
      std::vector<at::Tensor> v{t};
      model_pg->sum_in_rank_order(v);
      *seconds += seconds_since(t0);
    };
    scope->all_gather = [model_pg, seconds](const at::Tensor& piece, at::Tensor& whole) {
      const auto t0 = Clock::now();
      std::vector<at::Tensor> full{whole};
      model_pg->all_gather({piece}, {0}, full);
      *seconds += seconds_since(t0);
    };
    I.tp_scope = std::move(scope);
    sh.dims = I.tp->checkpoint_dims();
  }
  if (I.shard_parameters) {
    // The whole replica becomes the compute copy (gathered again at every step); this process keeps its pieces.
    haliax::AxisMapping mapping;
    for (const std::string& a : tc.fsdp_axes()) mapping[a] = "data";
    for (const auto& [axis, physical] : mapping)
      pieces.split[axis] = {I.mesh_shape.data, mesh.coordinate(I.rank(), "data")};
    I.fsdp.emplace(planned, std::move(mapping), mesh, I.rank(),
                   tc.fsdp_gather == "layer" ? Fsdp::Unit::kLayer : Fsdp::Unit::kStep);
    I.fsdp->shard_(planned);
    for (const auto& [group, keys] : I.fsdp->checkpoint_dims()) {
      for (const auto& [key, cuts] : keys) sh.dims[group][key].insert(cuts.begin(), cuts.end());
    }
  }
  if (in_pieces) {
    {
      haliax::CreatePiecesScope in_pieces_scope(pieces);
      state.model = build_model();
    }
    // A parameter that its module made without haliax's creation functions comes whole: cut it now, and say so (the
    // process held it whole for a moment).
    std::vector<std::string> made_whole;  // in parameter order, each once (both plans may cut one)
    for (const std::optional<Fsdp>* plan : {&I.tp, &I.fsdp}) {
      if (!*plan) continue;
      for (std::string& path : (**plan).shard_(*state.model))
        if (std::find(made_whole.begin(), made_whole.end(), path) == made_whole.end()) made_whole.push_back(path);
    }
    if (!made_whole.empty() && I.rank() == 0) {
      std::fprintf(stderr,
                   "warning: %zu parameters (first: %s) were created whole, not with haliax's creation "
                   "functions, and cut afterwards\n",
                   made_whole.size(), made_whole[0].c_str());
    }
    const auto made = nn::named_parameters(*state.model), expected = nn::named_parameters(planned);
    for (size_t i = 0; i < std::max(made.size(), expected.size()); ++i) {
      if (i >= made.size() || i >= expected.size() || made[i].first.path != expected[i].first.path ||
          made[i].second.axes() != expected[i].second.axes()) {
        throw std::logic_error("the model built in pieces differs from its shapes at parameter " + std::to_string(i));
      }
    }
  }
  if (I.fsdp) {
    // The compute copy: whole (gathered from the pieces at every step), except the stacked layers' pieces under
    // layer-by-layer gathering; its contents are written by the step's gather before anything reads them.
    state.compute_copy = I.fsdp->whole_like(*state.model, tc.mp.compute, /*keep_layer_pieces=*/true);
    nn::requires_grad_(*state.compute_copy);
  }
  if (I.fsdp || I.tp) {
    sh.rank = I.rank();
    sh.processes = I.world();
    distributed::ProcessGroup* pg = I.pg.get();
    sh.broadcast = [pg](const std::string& v) { return pg->broadcast(v); };
    sh.all_gather = [pg](const std::string& v) { return pg->all_gather(v); };
    sh.max = [pg](int64_t v) { return pg->max(v); };
    I.checkpointer->set_sharding(std::move(sh));
  }
  // Under FSDP or tensor parallelism the model now holds this process's pieces, and a checkpoint is read as those
  // pieces alone (Checkpointer::blocks): no process holds the whole state, whatever processes wrote it. (The FSDP
  // compute copy made above from the initialisation is gathered from the pieces at every step.)
  std::optional<checkpoint::Checkpoint> resumed = I.resume_checkpoint();
  if (resumed) {
    I.restore(state, *resumed);
  } else if (I.config.initialize_from_hf) {
    const compat::hf::ModelDir dir = compat::hf::read_model_dir(*I.config.initialize_from_hf);
    if (I.fsdp || I.tp) {
      // The whole model from the files, cut as the plans cut the initialisation.
      std::unique_ptr<models::LmHeadModel> whole = build_model();
      compat::hf::load_into(*whole, dir);
      if (I.tp) I.tp->shard_(*whole);
      if (I.fsdp) I.fsdp->shard_(*whole);
      nn::from_state_dict(*state.model, nn::to_state_dict(*whole));
    } else {
      compat::hf::load_into(*state.model, dir);
    }
    if (I.options.progress) std::fprintf(stderr, "initialised from %s\n", I.config.initialize_from_hf->c_str());
  }
  nn::requires_grad_(*state.model);
  state.optimizer = std::make_unique<optim::Optimizer>(I.config.optimizer, nn::named_parameters(*state.model));
  if (I.fsdp || I.tp) {
    // The gradient norm: each parameter's sum of squares over the pieces of the model axis, then of the data axis.
    Trainer::Impl* impl = &I;
    state.optimizer->set_sum_of_squares([impl](const std::vector<double>& local) {
      std::vector<double> sums = local;
      if (impl->tp) sums = impl->tp->sums_of_squares(*impl->model_pg, sums);
      if (impl->fsdp) sums = impl->fsdp->sums_of_squares(*impl->fsdp_pg, sums);
      double total = 0;
      for (double v : sums) total += v;  // in parameter order
      return total;
    });
  }
  if (resumed) I.restore_optimizer(state, *resumed);
  I.result.start_step = state.step;
  // The rows of the steps this run does (again) are written again: metrics.jsonl forgets the old ones.
  I.tracker->resume_at(state.step, state.step >= tc.num_train_steps);
  I.tracker->log_hyperparameters({{"config", I.config_yaml}});

  // Rank 0 logs MFU; the other ranks neither probe nor report.
  I.peak = I.rank() == 0 ? PeakFlops::resolve(tc.mp.compute, tc.peak_flops)
                         : PeakFlops(tc.peak_flops.value_or(1.0), "not used on ranks other than 0", true);
  RunRecord rec{I.paths.run_id,
                I.options.config_file,
                I.options.command_line,
                I.threads,
                I.data_seed,
                state.resumed_from.value_or(""),
                I.paths.checkpoint_base,
                I.parameter_count,
                I.peak->value(),
                I.peak->source()};
  if (I.rank() == 0) write_run_record(I.paths.run_dir, I.config, rec);
  // Building the model and reading a checkpoint leave large temporaries (random bits, file buffers) in the caching
  // allocator in size classes the steps never ask for again: give them back (about 0.6 GB at GPT-2 124M).
  runtime::empty_cpu_allocator_cache();
  return state;
}

StepInfo Trainer::train_step(TrainerState& state, const data::TokenBatch& batch) {
  Impl& I = *impl_;
  StepInfo info;
  info.step = state.step;
  info.tokens = batch.batch_size * batch.seq_len * I.data_size();  // the global batch's
  info.learning_rate = I.schedule.at(state.step);
  info.loss = I.forward_backward(state, batch, &info);
  for (auto& [hook, every] : I.hooks) hook->before_update(info, state);
  const auto t_update = Clock::now();
  {
    RECORD_USER_SCOPE("optimizer");
    info.grad_norm = I.update(state, info.learning_rate, batch).grad_norm;
  }
  info.optimizer_s = seconds_since(t_update);
  state.last_loss = info.loss;
  state.step += 1;
  return info;
}

void Trainer::run_hooks(const StepInfo& info, TrainerState& state) {
  impl_->call_hooks(
      state, [&](const Hook&, int64_t every) { return (info.step + 1) % every == 0; },
      [&](Hook& hook, int64_t every) {
        // A hook that runs every N > 1 steps (evaluation, scoring, samples, exports) works on buffers of its own
        // sizes: the caching allocator gives back the step's before it runs and the hook's after, so that the two
        // never add up in memory. The next step takes its buffers from the system again, once every N steps.
        if (every > 1) runtime::empty_cpu_allocator_cache();
        hook.after_step(info, state);
        if (every > 1) runtime::empty_cpu_allocator_cache();
      });
}

TrainResult Trainer::train() {
  Impl& I = *impl_;
  const TrainerConfig& tc = I.config.trainer;
  TrainerState state = initial_state();
  I.announce(state);
  data::LoaderOptions lo;
  lo.batch_size = tc.train_batch_size;
  lo.start_step = state.step;
  lo.row_begin = I.data_rank() * I.local_batch();  // this replica's rows of each global batch
  lo.row_count = I.local_batch();
  data::DataLoader loader(I.data->train_set(I.config.model->max_seq_len(), I.data_seed, tc.train_batch_size), lo);
  // Every data source is opened before step 0: a missing or unusable validation file is found now, not at the first
  // evaluation `steps_per_eval` steps later (where it also cost the checkpoint due at that step).
  I.get_evaluator();
  I.call_hooks(
      state, [](const Hook&, int64_t) { return true; }, [&](Hook& hook, int64_t) { hook.at_start(state); });
  const double flops_per_token = state.model->flops_per_token();
  const auto run_start = Clock::now();
  const int64_t start_step = state.step;
  StepProfiler profiler(tc, I.paths.run_dir, I.options.progress, /*enabled=*/I.rank() == 0);
  int stop = 0;
  try {
    while (state.step < tc.num_train_steps) {
      // Between steps: a SIGINT/SIGTERM/SIGHUP (runtime/signals.h) stops the run here.
      // Every process stops at the same step: a signal seen by any stops all.
      stop = runtime::stop_signal();
      if (I.pg && I.pg->any(stop != 0) && stop == 0) stop = SIGTERM;
      if (stop != 0) break;
      profiler.before_step(state.step);
      const auto t0 = Clock::now();
      data::TokenBatch batch;
      {
        RECORD_USER_SCOPE("data");
        batch = loader.next();
      }
      const auto t_data = Clock::now();
      StepInfo info;
      {
        RECORD_USER_SCOPE("step");
        info = train_step(state, batch);
      }
      info.duration_s = seconds_since(t0);
      info.loading_s = std::chrono::duration<double>(t_data - t0).count();
      info.tokens_per_second = static_cast<double>(info.tokens) / info.duration_s;
      // Per process: its share of the job's FLOP/s against its own peak.
      if (I.rank() == 0) info.mfu = I.peak->mfu(3.0 * flops_per_token * info.tokens_per_second / I.world());
      run_hooks(info, state);
      profiler.after_step(info.step);
    }
    profiler.finish();
    if (stop) {
      runtime::restore_default_stop_signals();  // a further signal ends the process at once
      if (I.options.progress) {
        std::fprintf(stderr, "levanter: %s: stopping after step %lld of %lld%s\n", runtime::stop_signal_name(stop),
                     (long long)state.step, (long long)tc.num_train_steps,
                     state.step > start_step ? ", saving a checkpoint (a second signal ends the process at once)" : "");
      }
      I.save_before_stopping(state, start_step);
      I.result.stopped_by_signal = stop;
    } else {
      if (state.resumed_from && start_step >= tc.num_train_steps && I.options.progress) {
        std::fprintf(stderr,
                     "run %s is already complete (step %lld of %lld in %s): evaluating it. Train further with "
                     "--trainer.num_train_steps N, or start another run with --trainer.id NAME\n",
                     I.paths.run_id.c_str(), (long long)start_step, (long long)tc.num_train_steps,
                     state.resumed_from->c_str());
      }
      runtime::empty_cpu_allocator_cache();  // the steps' buffers: the final evaluation and scoring need their own
      I.call_hooks(
          state, [](const Hook&, int64_t) { return true; },
          [&](Hook& hook, int64_t) {
            hook.at_end(state);
            runtime::empty_cpu_allocator_cache();
          });
    }
    I.tracker->finish();
  } catch (const runtime::IoError& e) {
    // Output that cannot be written (metrics.jsonl on a full disk, its directory removed): stop, with a checkpoint
    // if one can still be written, rather than train on without a record.
    throw runtime::IoError(I.io_error_message(state, start_step, e.what()));
  }
  I.result.final_step = state.step;
  I.result.final_loss = state.last_loss;
  if (I.options.progress) {
    std::fprintf(stderr, "done: %lld steps in %s\n", (long long)(state.step - start_step),
                 runtime::format_duration(seconds_since(run_start)).c_str());
  }
  return I.result;
}

TrainResult train(const TrainLmConfig& config, const TrainOptions& options) { return Trainer(config, options).train(); }

std::unique_ptr<models::LmHeadModel> load_model_from_checkpoint(const TrainLmConfig& config, const std::string& path,
                                                                std::string* loaded_from, int64_t* step) {
  const Axis Vocab("vocab",
                   static_cast<int64_t>(
                       data::Tokenizer::from_file(data::resolve_tokenizer_path(config.data.tokenizer)).vocab_size()));
  std::unique_ptr<models::LmHeadModel> model = config.model->build(Vocab, Key(0));
  std::string ckpt = path;
  if (!fs::exists(fs::path(path) / "manifest.json")) {
    auto latest = checkpoint::latest_checkpoint(path);
    if (!latest) throw std::runtime_error(path + ": no complete checkpoint here (a step-N directory with a manifest)");
    ckpt = *latest;
  }
  checkpoint::Checkpoint c = checkpoint::load_checkpoint(ckpt, {"model"});
  load_model_state(*model, c, config);
  if (loaded_from) *loaded_from = ckpt;
  if (step) *step = c.step;
  return model;
}

std::map<std::string, EvalMetrics> evaluate_checkpoint(const TrainLmConfig& config, const std::string& path,
                                                       bool progress) {
  at::set_num_threads(configured_threads(config.trainer));
  std::string ckpt;
  int64_t step = 0;
  std::unique_ptr<models::LmHeadModel> model = load_model_from_checkpoint(config, path, &ckpt, &step);
  data::TextData data(config.data);
  eval::Evaluator ev(data, config.model->max_seq_len(), config.trainer.eval_batch_size(),
                     config.trainer.max_eval_batches);
  if (ev.empty())
    throw std::runtime_error("no validation sets: set data.validation_urls (or validation_urls of a source)");
  auto out = ev.run(*model, config.trainer.mp.compute);
  if (progress) std::fprintf(stderr, "evaluated %s (step %lld)\n", ckpt.c_str(), (long long)step);
  return out;
}

std::string run_id_for(const TrainLmConfig& config) {
  if (config.trainer.id) return *config.trainer.id;
  std::string dump = config::dump(config::to_yaml_value(config));
  char buf[32];
  std::snprintf(buf, sizeof(buf), "run-%012llx", (unsigned long long)(fnv1a(dump) & 0xffffffffffffull));
  return buf;
}

}  // namespace levanter::trainer
