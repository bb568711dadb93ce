// The `trainer:` section (Levanter's TrainerConfig) and the whole training config (Levanter's TrainLmConfig:
// data, model, trainer, optimizer).
#pragma once

#include <c10/core/ScalarType.h>

#include <optional>
#include <string>
#include <vector>

#include "levanter/checkpoint/checkpointer.h"
#include "levanter/config/config.h"
#include "levanter/data/config.h"
#include "levanter/distributed/config.h"
#include "levanter/inference/sample_config.h"
#include "levanter/models/model_config.h"
#include "levanter/optim/config.h"
#include "levanter/tracker/config.h"
#include "levanter/viz/config.h"

namespace levanter::trainer {

// Levanter's `mp` (a jmp policy): one dtype for everything ("f32", "bfloat16"), or "p=f32,c=bfloat16,o=f32"
// (params, compute, output; long names params=/compute=/output= too).
struct MixedPrecision {
  at::ScalarType param = at::kFloat;
  at::ScalarType compute = at::kFloat;
  at::ScalarType output = at::kFloat;
  std::string text = "f32";
  void parse_yaml(const YAML::Node& node, const config::Context& ctx);
  YAML::Node to_yaml() const { return YAML::Node(text); }
  static MixedPrecision parse(const std::string& text);  // throws std::invalid_argument
};
inline std::string type_name(const MixedPrecision&) { return "mixed-precision policy"; }

struct TrainerConfig {
  int64_t seed = 0;
  MixedPrecision mp;
  std::string log_dir = "logs/";
  std::optional<std::string> id;
  tracker::TrackerConfigs tracker;
  bool crash_on_nan = true;
  bool crash_on_inf = true;

  std::string batch_axis = "batch";
  std::optional<std::vector<std::string>> fsdp_axis = std::vector<std::string>{"embed"};
  std::string fsdp_gather = "step";
  std::optional<std::vector<std::string>> tensor_parallel_axes;
  int64_t model_axis_size = 1;
  int64_t replica_ici_axis_size = 1;
  int64_t replica_dcn_axis_size = 1;
  // Levanter's explicit mappings of logical axes to mesh axes (`replica`, `data`, `model`; a name, a list of names,
  // or null for none per axis). They add to what batch_axis, fsdp_axis and tensor_parallel_axes map, in the forms
  // this trainer runs (see compute_axis_mapping); any other mapping is refused, naming the key.
  using ResourceMapping = std::map<std::string, std::optional<std::vector<std::string>>>;
  std::optional<ResourceMapping> axis_resources;  // null: none, as an empty mapping
  std::optional<ResourceMapping> parameter_axis_resources;

  int64_t train_batch_size = 512;
  int64_t per_device_parallelism = -1;
  int64_t per_device_eval_parallelism = -1;
  int64_t num_train_steps = 400000;
  int64_t steps_per_eval = 1000;
  std::optional<int64_t> max_eval_batches;

  checkpoint::CheckpointerConfig checkpointer;
  std::optional<bool> load_checkpoint;
  std::optional<std::string> load_checkpoint_path;
  std::optional<std::string> initialize_from;

  // levanter-cpp additions.
  int64_t num_threads = 0;           // 0: all cores
  std::optional<double> peak_flops;  // per-second peak for MFU; default: probed GEMM peak, cached per machine
  int64_t log_every = 1;             // console progress line every N steps (metrics.jsonl gets every step)
  bool check_memory = true;          // refuse a run whose estimated memory exceeds what the machine has
  bool profiler = false;             // libtorch's operator profiler over a window of steps (profiler.h)
  int64_t profiler_start_step = 5;
  int64_t profiler_num_steps = 100;
  viz::VizConfig viz;                          // the token-probability view (docs/visualization.md)
  viz::DashboardConfig dashboard;              // the live dashboard
  inference::SampleConfig sample;              // continuations of fixed prompts, logged as text
  distributed::DistributedConfig distributed;  // how the processes of a job find each other

  template <typename V>
  void fields(V& v) {
    v("seed", seed, "Root random seed: model init, data order and dropout all derive from it");
    v("mp", mp, "Mixed precision: f32, bfloat16, or p=f32,c=bfloat16 (f32 master weights, bf16 compute)");
    v("log_dir", log_dir, "Run directories (metrics.jsonl, run record) go under <log_dir>/<run id>/");
    v("id", id, "Run id; default: derived from a hash of the resolved config, so the same command resumes");
    v("tracker", tracker, "Metrics tracker: one (a mapping) or several (a list of mappings)");
    v("crash_on_nan", crash_on_nan, "Stop with an error when the loss or gradient norm is NaN");
    v("crash_on_inf", crash_on_inf, "Stop with an error when the loss or gradient norm is infinite");
    v("batch_axis", batch_axis, "Name of the batch axis (data parallelism)");
    v("fsdp_axis", fsdp_axis,
      "FSDP: with several processes, parameters (and their optimizer state) with this axis are held in pieces along "
      "it, one per process (null: every process holds all)");
    v("fsdp_gather", fsdp_gather,
      "When FSDP's pieces become whole: step (all before the step, kept through backward, as PyTorch's SHARD_GRAD_OP) "
      "or layer (each layer of a stacked model just before it runs and again in its recomputation, FULL_SHARD: one "
      "whole layer at a time; pair with model.gradient_checkpointing)");
    v("tensor_parallel_axes", tensor_parallel_axes,
      "Axes split over the model axis (tensor parallelism; GPT-2: heads, mlp; Llama also kv_heads); vocab splits "
      "the LM head's compute, the parameters keep it whole");
    v("axis_resources", axis_resources,
      "Levanter's compute axis mapping, {axis: mesh axis}: an axis mapped to model is split over it as in "
      "tensor_parallel_axes; the batch axis always maps to replica and data; any other mapping is refused, naming the "
      "key");
    v("parameter_axis_resources", parameter_axis_resources,
      "Levanter's parameter axis mapping over axis_resources, {axis: mesh axis}: an axis mapped to data is held in "
      "pieces as in fsdp_axis; one mapped to model must also be computed over model");
    v("model_axis_size", model_axis_size, "Processes per model replica (tensor parallel width); 1 in one process");
    v("replica_ici_axis_size", replica_ici_axis_size, "Data-parallel replicas within a slice; 1 in one process");
    v("replica_dcn_axis_size", replica_dcn_axis_size, "Data-parallel slices; 1 in one process");
    v("train_batch_size", train_batch_size, "Sequences per optimizer step");
    v("per_device_parallelism", per_device_parallelism,
      "Sequences per forward/backward pass; smaller than train_batch_size means gradient accumulation (-1: all)");
    v("per_device_eval_parallelism", per_device_eval_parallelism,
      "Sequences per eval batch (-1: as per_device_parallelism)");
    v("num_train_steps", num_train_steps, "Number of optimizer steps");
    v("steps_per_eval", steps_per_eval, "Evaluate on every validation set every this many steps (and at the end)");
    v("max_eval_batches", max_eval_batches, "At most this many batches per validation set (default: all)");
    v("checkpointer", checkpointer, "Checkpoint policy");
    v("load_checkpoint", load_checkpoint,
      "Resume from the newest complete checkpoint: null = if one exists, true = require one, false = never");
    v("load_checkpoint_path", load_checkpoint_path, "Where to look for checkpoints (a base path or one checkpoint)");
    v("initialize_from", initialize_from,
      "Start from this checkpoint's parameters and optimizer state (step and data continue)");
    v("num_threads", num_threads, "CPU threads for compute (0: all cores); bits are reproducible for a fixed count");
    v("peak_flops", peak_flops,
      "Peak FLOP/s for MFU (default: this machine's GEMM peak for the compute dtype, probed once and cached)");
    v("log_every", log_every, "Print a progress line every N steps");
    v("check_memory", check_memory,
      "Before building the model, estimate the memory of the run (weights, gradients, optimizer state, activations) "
      "and refuse to start when it exceeds the memory available");
    v("profiler", profiler,
      "Profile steps with libtorch's operator profiler: <run dir>/profiler/trace.json (Perfetto, chrome://tracing) "
      "and ops.txt (operators by self time)");
    v("profiler_start_step", profiler_start_step, "First step the profiler records");
    v("profiler_num_steps", profiler_num_steps, "Number of steps the profiler records");
    v("viz", viz, "Token-probability view: a fixed sample of validation documents scored as training goes");
    v("dashboard", dashboard, "Live dashboard (HTTP on localhost) of the run's metrics and token probabilities");
    v("distributed", distributed,
      "Processes of one job (Levanter's DistributedConfig; default: torchrun's or SLURM's environment, else one)");
    v("sample", sample, "Text samples: continuations of fixed prompts generated as training goes, logged as text");
    unsupported(v);
  }

  // Levanter keys that have no implementation here: an error when set (never silently ignored).
  template <typename V>
  void unsupported(V& v);
  void validate() const;
  // Levanter's TrainerConfig.compute_axis_mapping: axis_resources, then each tensor-parallel axis -> model, then the
  // batch axis -> (replica, data). Throws ConfigError naming the key for a mapping this trainer cannot run: in
  // compute, only the batch axis is split over data, and only over `model` otherwise.
  ResourceMapping compute_axis_mapping() const;
  // Levanter's parameter_axis_mapping: the compute mapping, parameter_axis_resources over it, then each FSDP axis ->
  // data. Refused by name: an axis held over model but computed whole or the other way round (`vocab`, which the
  // parameters keep whole, excepted: see tensor_parallel_axes), and an axis both held over data and computed over
  // model.
  ResourceMapping parameter_axis_mapping() const;
  // What the two mean here. The axes computed and held in pieces over `model` (tensor parallelism, `vocab` in
  // compute only): tensor_parallel_axes in their order, then those of axis_resources.
  std::vector<std::string> model_axes() const;
  // The axes whose parameters are held in pieces over `data` (FSDP): fsdp_axis in its order, then those of
  // parameter_axis_resources.
  std::vector<std::string> fsdp_axes() const;
  // The key that puts `axis` among model_axes(), for messages: trainer.tensor_parallel_axes, or
  // trainer.axis_resources.<axis>.
  std::string model_axis_key(const std::string& axis) const;
  int64_t microbatch_size() const { return per_device_parallelism > 0 ? per_device_parallelism : train_batch_size; }
  int64_t eval_batch_size() const {
    return per_device_eval_parallelism > 0 ? per_device_eval_parallelism : microbatch_size();
  }
};

// The whole config of `levanter train` / `levanter eval` (Levanter's TrainLmConfig).
struct TrainLmConfig {
  data::DataConfig data;
  models::ModelConfig model;
  TrainerConfig trainer;
  optim::OptimizerConfig optimizer;
  double z_loss_weight = 0.0;
  std::optional<int64_t> data_seed;
  // Hugging Face interop (Levanter's keys).
  std::optional<std::string> initialize_from_hf;
  bool use_hf_model_config = false;
  std::optional<std::string> hf_save_path;
  int64_t hf_save_steps = 10000;
  std::optional<std::string> hf_save_dtype;

  template <typename V>
  void fields(V& v) {
    v("data", data, "Training and validation data");
    v("model", model, "Model architecture");
    v("trainer", trainer, "Training loop, checkpoints and logging");
    v("optimizer", optimizer, "Optimizer and learning-rate schedule");
    v("z_loss_weight", z_loss_weight, "Weight of the z-loss (logsumexp^2) added to the loss");
    v("data_seed", data_seed, "Seed of the data order (default: trainer.seed)");
    v("initialize_from_hf", initialize_from_hf,
      "Start from the weights of this Hugging Face model directory (config.json + safetensors); a resumed "
      "checkpoint takes precedence. Hub names need the network: download first, then give the directory");
    v("use_hf_model_config", use_hf_model_config,
      "Take the model config from initialize_from_hf's config.json instead of the model section");
    v("hf_save_path", hf_save_path,
      "Export a Hugging Face model directory every hf_save_steps steps to <hf_save_path>/<run id>/step-N");
    v("hf_save_steps", hf_save_steps, "Steps between Hugging Face exports (with hf_save_path)");
    v("hf_save_dtype", hf_save_dtype, "dtype of the exported weights: f32 (default) or bfloat16");
    unsupported(v);
  }
  template <typename V>
  void unsupported(V& v);
  void validate() const;
  // Tensor-parallel axes the model family handles (with model_axis_size > 1), and axis mappings this trainer runs;
  // throws ConfigError naming the key. Part of validate(); the Trainer checks it again for configs built in code.
  void check_parallel_axes() const;
};

// Throws config::ConfigError naming trainer.id unless `id` can name a directory of its own: not empty, no '/' or
// '\\', not '.' and no '..', no control characters.
void validate_run_id(const std::string& id);

// Load a training config (file + --a.b.c overrides), validated.
TrainLmConfig load_train_config(const std::string& file, const std::vector<std::string>& overrides);
// All keys of TrainLmConfig with types, defaults and help (for docs/configuration.md and `levanter config`).
std::vector<config::DocRow> describe_train_config();

}  // namespace levanter::trainer
