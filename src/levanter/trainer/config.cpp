#include "levanter/trainer/config.h"

#include <algorithm>
#include <sstream>

#include "levanter/compat/hf/hf_checkpoint.h"

namespace levanter::trainer {

using config::ConfigError;
using config::Context;

namespace {

at::ScalarType parse_dtype(const std::string& s) {
  std::string t = s;
  std::transform(t.begin(), t.end(), t.begin(), ::tolower);
  if (t == "f32" || t == "float32" || t == "full" || t == "float") return at::kFloat;
  if (t == "bf16" || t == "bfloat16") return at::kBFloat16;
  if (t == "f16" || t == "float16" || t == "half") {
    throw std::invalid_argument("float16 is not supported on CPU here (libtorch 1.13 has no f16 GEMM); use bfloat16");
  }
  throw std::invalid_argument("unknown dtype '" + s + "' (use f32 or bfloat16)");
}

}  // namespace

MixedPrecision MixedPrecision::parse(const std::string& text) {
  MixedPrecision mp;
  mp.text = text;
  if (text.find('=') == std::string::npos) {
    mp.param = mp.compute = mp.output = parse_dtype(text);
    return mp;
  }
  std::stringstream ss(text);
  for (std::string part; std::getline(ss, part, ',');) {
    size_t eq = part.find('=');
    if (eq == std::string::npos) throw std::invalid_argument("expected key=dtype in '" + part + "'");
    std::string key = part.substr(0, eq), val = part.substr(eq + 1);
    key.erase(std::remove_if(key.begin(), key.end(), ::isspace), key.end());
    val.erase(std::remove_if(val.begin(), val.end(), ::isspace), val.end());
    at::ScalarType dt = parse_dtype(val);
    if (key == "p" || key == "params")
      mp.param = dt;
    else if (key == "c" || key == "compute")
      mp.compute = dt;
    else if (key == "o" || key == "output")
      mp.output = dt;
    else
      throw std::invalid_argument("unknown policy key '" + key + "' (use p/params, c/compute, o/output)");
  }
  return mp;
}

void MixedPrecision::parse_yaml(const YAML::Node& node, const Context& ctx) {
  if (!node.IsScalar()) config::fail(ctx, node, "expected a policy like f32, bfloat16 or p=f32,c=bfloat16");
  try {
    *this = parse(node.Scalar());
  } catch (const std::invalid_argument& e) {
    config::fail(ctx, node, e.what());
  }
}

template <typename V>
void TrainerConfig::unsupported(V& v) {
  v.rejected("quantization", "fp8/int8 quantized training");
  v.rejected("model_averaging", "EMA / model averaging");
  v.rejected("wandb", "wandb needs network access; use tracker.type: json or tensorboard");
  v.rejected("watch", "parameter/gradient histograms");
  v.ignored("profiler_perfetto_link", "no link is made: open <run dir>/profiler/trace.json in https://ui.perfetto.dev");
  v.ignored("log_jaxprs", "there are no jaxprs");
  v.ignored("log_xla_hlo", "there is no XLA");
  v.rejected("allow_nondivisible_batch_size", "train_batch_size must be a multiple of per_device_parallelism");
  v.rejected("allow_partial_checkpoint", "checkpoints must hold every parameter");
  v.ignored("jax_config", "there is no JAX");
  v.ignored("jax_compilation_cache_dir", "there is no JAX");
  v.rejected("ray", "Ray clusters");
  v.rejected("require_accelerator", "this build runs on CPU");
  v.ignored("shutdown_at_exit", "there is no TPU VM to shut down");
}

void validate_run_id(const std::string& id) {
  std::string problem;
  if (id.empty()) {
    problem = "must not be empty (leave trainer.id out to derive one from the config)";
  } else if (id.find('/') != std::string::npos || id.find('\\') != std::string::npos) {
    problem = "must not contain '/' or '\\'";
  } else if (id.find("..") != std::string::npos || id == ".") {
    problem = "must not be '.' or contain '..'";
  } else if (std::any_of(id.begin(), id.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; })) {
    problem = "must not contain control characters";
  }
  if (!problem.empty()) {
    throw ConfigError("trainer.id: '" + id + "' " + problem +
                      ": the run id names a directory under trainer.log_dir and under the checkpoint base path");
  }
}

namespace {

std::string resources_str(const std::optional<std::vector<std::string>>& r) {
  if (!r || r->empty()) return "null";
  if (r->size() == 1) return (*r)[0];
  std::string out;
  for (const std::string& a : *r) out += (out.empty() ? "" : ", ") + a;
  return "[" + out + "]";
}

bool maps_to(const std::optional<std::vector<std::string>>& r, const std::string& mesh_axis) {
  return r && r->size() == 1 && (*r)[0] == mesh_axis;
}

bool whole(const std::optional<std::vector<std::string>>& r) { return !r || r->empty(); }

bool contains(const std::optional<std::vector<std::string>>& axes, const std::string& axis) {
  return axes && std::find(axes->begin(), axes->end(), axis) != axes->end();
}

void add_unique(std::vector<std::string>& to, const std::string& axis) {
  if (std::find(to.begin(), to.end(), axis) == to.end()) to.push_back(axis);
}

}  // namespace

TrainerConfig::ResourceMapping TrainerConfig::compute_axis_mapping() const {
  const ResourceMapping axis_resources = this->axis_resources.value_or(ResourceMapping{});
  for (const auto& [axis, r] : axis_resources) {
    if (axis == batch_axis || whole(r) || maps_to(r, "model")) continue;
    throw ConfigError("trainer.axis_resources." + axis + ": " + resources_str(r) +
                      ": in compute, only the batch axis (trainer.batch_axis: " + batch_axis +
                      ") is split over data here, and any other axis over model (tensor parallelism); to hold "
                      "parameters in pieces over data, use trainer.fsdp_axis or parameter_axis_resources");
  }
  ResourceMapping m = axis_resources;
  for (const std::string& a : tensor_parallel_axes.value_or(std::vector<std::string>{}))
    m[a] = std::vector<std::string>{"model"};
  m[batch_axis] = std::vector<std::string>{"replica", "data"};
  return m;
}

TrainerConfig::ResourceMapping TrainerConfig::parameter_axis_mapping() const {
  const ResourceMapping compute = compute_axis_mapping();
  const ResourceMapping axis_resources = this->axis_resources.value_or(ResourceMapping{});
  const ResourceMapping parameter_axis_resources = this->parameter_axis_resources.value_or(ResourceMapping{});
  ResourceMapping m = compute;
  for (const auto& [axis, r] : parameter_axis_resources) m[axis] = r;
  for (const std::string& a : fsdp_axis.value_or(std::vector<std::string>{})) m[a] = std::vector<std::string>{"data"};
  m.erase(batch_axis);  // parameters have no batch axis
  for (const auto& [axis, r] : m) {
    auto c = compute.find(axis);
    const bool computed_over_model = c != compute.end() && maps_to(c->second, "model");
    // The key that set this entry last (fsdp_axis is applied last, as in Levanter).
    const std::string key = contains(fsdp_axis, axis)              ? "trainer.fsdp_axis"
                            : parameter_axis_resources.count(axis) ? "trainer.parameter_axis_resources." + axis
                            : axis_resources.count(axis)           ? "trainer.axis_resources." + axis
                                                                   : "trainer.tensor_parallel_axes";
    if (maps_to(r, "data")) {
      if (computed_over_model) {
        const std::string tp = axis_resources.count(axis) && !contains(tensor_parallel_axes, axis)
                                   ? "trainer.axis_resources (model)"
                                   : "trainer.tensor_parallel_axes";
        throw ConfigError(key + ": '" + axis + "' is also in " + tp +
                          "; an axis is split over data (FSDP) or over model (tensor parallelism), not both");
      }
    } else if (maps_to(r, "model")) {
      if (!computed_over_model) {
        throw ConfigError(key + ": '" + axis +
                          "' held in pieces over model but computed whole is not supported: add it to "
                          "trainer.tensor_parallel_axes to split its computation too");
      }
    } else if (!whole(r)) {
      throw ConfigError(key + ": " + resources_str(r) +
                        ": parameters are held in pieces over data (FSDP) or model (tensor parallelism) here");
    } else if (computed_over_model && axis != models::kVocabAxis) {
      throw ConfigError(key + ": '" + axis +
                        "' computed over model but held whole is not supported (only the vocabulary is)");
    }
  }
  return m;
}

std::vector<std::string> TrainerConfig::model_axes() const {
  std::vector<std::string> out = tensor_parallel_axes.value_or(std::vector<std::string>{});
  for (const auto& [axis, r] : compute_axis_mapping())
    if (maps_to(r, "model")) add_unique(out, axis);
  return out;
}

std::string TrainerConfig::model_axis_key(const std::string& axis) const {
  if (contains(tensor_parallel_axes, axis) || !axis_resources || !axis_resources->count(axis))
    return "trainer.tensor_parallel_axes";
  return "trainer.axis_resources." + axis;
}

std::vector<std::string> TrainerConfig::fsdp_axes() const {
  std::vector<std::string> out = fsdp_axis.value_or(std::vector<std::string>{});
  for (const auto& [axis, r] : parameter_axis_mapping())
    if (maps_to(r, "data")) add_unique(out, axis);
  return out;
}

void TrainerConfig::validate() const {
  tracker.validate();
  viz.validate();
  dashboard.validate();
  sample.validate();
  distributed.validate();
  if (id) validate_run_id(*id);
  auto positive = [](const char* key, int64_t v) {
    if (v <= 0) throw ConfigError(std::string("trainer.") + key + ": must be positive, got " + std::to_string(v));
  };
  positive("train_batch_size", train_batch_size);
  positive("num_train_steps", num_train_steps);
  positive("steps_per_eval", steps_per_eval);
  positive("log_every", log_every);
  if (profiler) positive("profiler_num_steps", profiler_num_steps);
  if (profiler_start_step < 0) throw ConfigError("trainer.profiler_start_step: must be >= 0");
  if (per_device_parallelism > 0 && train_batch_size % per_device_parallelism != 0) {
    throw ConfigError("trainer.per_device_parallelism: " + std::to_string(per_device_parallelism) +
                      " does not divide train_batch_size " + std::to_string(train_batch_size) +
                      " (gradient accumulation needs whole microbatches)");
  }
  if (max_eval_batches && *max_eval_batches < 0) throw ConfigError("trainer.max_eval_batches: must be >= 0");
  if (model_axis_size < 1)
    throw ConfigError("trainer.model_axis_size: must be >= 1, got " + std::to_string(model_axis_size));
  for (auto [key, v] : {std::pair<const char*, int64_t>{"replica_ici_axis_size", replica_ici_axis_size},
                        {"replica_dcn_axis_size", replica_dcn_axis_size}}) {
    if (v < 1) throw ConfigError(std::string("trainer.") + key + ": must be >= 1, got " + std::to_string(v));
  }
  if (num_threads < 0) throw ConfigError("trainer.num_threads: must be >= 0 (0: all cores)");
  if (fsdp_gather != "step" && fsdp_gather != "layer")
    throw ConfigError("trainer.fsdp_gather: '" + fsdp_gather + "': expected step or layer");
  if (peak_flops && *peak_flops <= 0) throw ConfigError("trainer.peak_flops: must be positive");
  if (mp.param != at::kFloat && mp.param != at::kBFloat16)
    throw ConfigError("trainer.mp: parameters must be f32 or bfloat16");
  compute_axis_mapping();  // refuses, by key, a mapping this trainer cannot run
}

template <typename V>
void TrainLmConfig::unsupported(V& v) {
  v.rejected("hf_upload", "Hugging Face hub upload (no network)");
  v.rejected("initialize_from_checkpoint_path", "use trainer.initialize_from");
  v.rejected("epoch", "data epochs are automatic (the permutation changes each epoch)");
  v.rejected("eval_harness", "lm-evaluation-harness");
  v.ignored("eval_harness_steps", "lm-evaluation-harness is not available");
  v.rejected("log_entropy", "entropy logging");
}

void TrainLmConfig::check_parallel_axes() const {
  if (trainer.model_axis_size > 1) {
    // Only axes whose pieces the model's code handles (through dot and Linear).
    const std::vector<std::string> ok = model->tensor_parallel_axes();
    std::string supported;
    for (const std::string& a : ok) supported += (supported.empty() ? "" : ", ") + a;
    for (const std::string& a : trainer.model_axes()) {
      if (std::find(ok.begin(), ok.end(), a) == ok.end()) {
        throw ConfigError(
            trainer.model_axis_key(a) + ": '" + a + "' cannot be split in a " + model.type() + " model (" +
            (ok.empty() ? "this family has not been checked under tensor parallelism" : "it can split: " + supported) +
            ")");
      }
    }
  }
  trainer.parameter_axis_mapping();  // refuses, by key, a mapping this trainer cannot run
}

void TrainLmConfig::validate() const {
  data.validate();
  trainer.validate();
  try {
    model.get().validate();
  } catch (const std::invalid_argument& e) {
    throw ConfigError(e.what());
  }
  check_parallel_axes();
  if (z_loss_weight < 0) throw ConfigError("z_loss_weight: must be >= 0");
  if (initialize_from_hf && *initialize_from_hf == "true") {
    throw ConfigError(
        "initialize_from_hf: true means the model's default checkpoint on the Hugging Face hub, which "
        "needs the network; download it and give its directory");
  }
  if (initialize_from_hf && trainer.initialize_from) {
    throw ConfigError("initialize_from_hf and trainer.initialize_from are both set: start from one of them");
  }
  if (use_hf_model_config && !initialize_from_hf) {
    throw ConfigError("use_hf_model_config: true needs initialize_from_hf (the directory whose config.json to use)");
  }
  if (hf_save_steps <= 0) throw ConfigError("hf_save_steps: must be positive, got " + std::to_string(hf_save_steps));
  if (hf_save_dtype && *hf_save_dtype != "f32" && *hf_save_dtype != "float32" && *hf_save_dtype != "bfloat16" &&
      *hf_save_dtype != "bf16") {
    throw ConfigError("hf_save_dtype: '" + *hf_save_dtype + "' is not f32 or bfloat16");
  }
}

TrainLmConfig load_train_config(const std::string& file, const std::vector<std::string>& overrides) {
  auto includes = std::make_shared<config::IncludeMap>();
  YAML::Node root = file.empty() ? YAML::Node(YAML::NodeType::Map) : config::load_yaml_file(file, includes.get());
  // Levanter's configs often hold a list of one tracker: read as that tracker, so that `--trainer.tracker.type`
  // overrides reach it. Several trackers stay a list.
  if (root["trainer"].IsMap() && root["trainer"]["tracker"].IsSequence() && root["trainer"]["tracker"].size() == 1) {
    const YAML::Node only = root["trainer"]["tracker"][0];  // the node itself: its line stays in messages
    root["trainer"]["tracker"] = only;
  }
  // `--trainer.id ""` (an unset shell variable) would read as YAML null, i.e. "derive an id": refused instead.
  for (size_t i = 0; i < overrides.size(); ++i) {
    if (overrides[i] == "--trainer.id=" || (overrides[i] == "--trainer.id" && i + 1 < overrides.size() &&
                                            overrides[i + 1].find_first_not_of(" \t") == std::string::npos)) {
      validate_run_id("");
    }
  }
  config::apply_overrides(root, overrides, includes.get());
  // `trainer.initialize_from_hf` and `model.initialize_from_hf` are accepted as the top-level key (where
  // Levanter's TrainLmConfig has it).
  for (const char* section : {"trainer", "model"}) {
    YAML::Node s = root[section];
    if (!s.IsMap() || !s["initialize_from_hf"]) continue;
    const YAML::Node value = s["initialize_from_hf"];
    if (root["initialize_from_hf"]) {
      config::fail(config::Context{file, section, includes}, value,
                   std::string(section) + ".initialize_from_hf and initialize_from_hf are both set: give one");
    }
    root["initialize_from_hf"] = YAML::Clone(value);
    s.remove("initialize_from_hf");
  }
  TrainLmConfig c{};
  config::parse_value(root, config::Context{file, "", includes}, c);
  // Levanter's initialize_from_hf is `false` or a name; `false` (or empty) means off.
  if (c.initialize_from_hf && (c.initialize_from_hf->empty() || *c.initialize_from_hf == "false")) {
    c.initialize_from_hf.reset();
  }
  if (c.use_hf_model_config && c.initialize_from_hf) {
    try {
      c.model =
          models::ModelConfig(compat::hf::config_from_dir(compat::hf::read_model_dir(*c.initialize_from_hf, false)));
    } catch (const std::exception& e) {
      throw ConfigError(std::string("use_hf_model_config: ") + e.what());
    }
  }
  c.validate();
  return c;
}

std::vector<config::DocRow> describe_train_config() {
  std::vector<config::DocRow> rows;
  TrainLmConfig defaults;
  config::Describer d(rows, "");
  defaults.fields(d);
  // The model section is a choice: model.type, then the keys of every registered family.
  std::vector<config::DocRow> out;
  for (config::DocRow r : rows) {
    if (r.key == "model") {
      r.type = "section";
      r.default_value = "";
    }
    out.push_back(r);
    if (r.key == "model") models::describe_model_config(out, "model");
  }
  return out;
}

template void TrainerConfig::unsupported<config::Reader>(config::Reader&);
template void TrainerConfig::unsupported<config::Writer>(config::Writer&);
template void TrainerConfig::unsupported<config::Describer>(config::Describer&);
template void TrainLmConfig::unsupported<config::Reader>(config::Reader&);
template void TrainLmConfig::unsupported<config::Writer>(config::Writer&);
template void TrainLmConfig::unsupported<config::Describer>(config::Describer&);

}  // namespace levanter::trainer
