// The `optimizer:` section of a config, with Levanter's keys and defaults (levanter.optim.OptimizerConfig and
// AdamConfig), and the weight-decay mask it defines.
//
//   optimizer:
//     type: adam                # Levanter's choice key; adam (alias adamw) and lion are implemented
//     learning_rate: 6e-4
//     weight_decay: 0.1
//     min_lr_ratio: 0.1
//     warmup: 0.01              # a fraction of the steps if <= 1, else a number of steps
//     decay: null               # WSD: length of the decay phase (fraction or steps); null: all after warmup
//     lr_schedule: cosine       # constant | cosine | linear | inv_sqrt | inv, or {type: cosine, exponent: 2}
//     max_grad_norm: 1.0
//
// Levanter keys that this build does not implement (update_rms_clipping, clip_update_norm, skip_bad_steps, the
// `power` schedule, other optimizer types) are errors when set, never silently ignored. docs/optimizer.md
// lists every key. The schedule is in schedule.h, the optimizers in optimizer.h.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "haliax/nn/module.h"
#include "levanter/config/config.h"

namespace levanter::optim {

// `type:`: which optimizer. Levanter registers adam, lion, adopt, cautious, kron, mars, mini, muon, rmsprop,
// scion, soap, sophia-g, sophia-h; this build implements adam (AdamW, also accepted as `adamw`) and lion.
struct OptimizerType {
  std::string name = "adam";
  void parse_yaml(const YAML::Node& node, const config::Context& ctx);
  YAML::Node to_yaml() const;
};
std::string type_name(const OptimizerType&);

// `lr_schedule:` a name (`cosine`) or Levanter's LrSchedule choice as a mapping (`{type: cosine, exponent: 2}`).
struct LrScheduleSpec {
  std::string name = "cosine";  // constant | cosine | linear | inv_sqrt | inv
  double exponent = 1.0;        // cosine only: ((1 + cos(pi t / T)) / 2) ^ exponent
  double timescale = 10000;     // inv_sqrt only
  bool as_mapping = false;      // written as a mapping (kept for dumping)
  void parse_yaml(const YAML::Node& node, const config::Context& ctx);
  YAML::Node to_yaml() const;
};
std::string type_name(const LrScheduleSpec&);

// `weight_decay_modules:` Levanter's Optional[list[str] | str]. The two forms match differently, as in Levanter:
// a single string is a regular expression that must match at the start of a path (Python's re.match); a list
// holds plain substrings, any of which may occur anywhere in a path.
struct WeightDecayModules {
  enum class Kind { kNone, kRegex, kSubstrings };
  Kind kind = Kind::kNone;
  std::string regex;
  std::vector<std::string> substrings;
  bool is_none() const { return kind == Kind::kNone; }
  void parse_yaml(const YAML::Node& node, const config::Context& ctx);
  YAML::Node to_yaml() const;
};
std::string type_name(const WeightDecayModules&);

// `cycles:` (an int or a list of cycle end steps) and `cycle_length:` (a fraction or a number of steps, or a
// list of cycle lengths).
struct CycleSpec {
  std::optional<double> number;  // cycles: a count; cycle_length: a fraction (<= 1) or steps
  std::optional<std::vector<int64_t>> list;
  bool is_none() const { return !number && !list; }
  void parse_yaml(const YAML::Node& node, const config::Context& ctx);
  YAML::Node to_yaml() const;
};
std::string type_name(const CycleSpec&);

// A Levanter key this build does not implement: accepted when null (or Levanter's "off" value, `accepted`),
// an error naming the key and the reason otherwise.
struct Unsupported {
  const char* reason = "";
  const char* accepted = "";  // a scalar spelling that means "off" besides null, e.g. "false"
  std::string text;           // what was given (empty: null)
  void parse_yaml(const YAML::Node& node, const config::Context& ctx);
  YAML::Node to_yaml() const;
};
std::string type_name(const Unsupported&);

struct OptimizerConfig {
  OptimizerType type;
  // --- OptimizerConfig (every optimizer) ---
  double learning_rate = 6e-4;
  double weight_decay = 0.1;
  double min_lr_ratio = 0.1;
  double warmup = 0.01;            // fraction of the (first cycle's) steps if <= 1, else steps
  std::optional<double> decay;     // fraction or steps of the decay phase; none: all steps after warmup
  double rewarmup = 0.0;           // warmup of cycles after the first, from the previous cycle's final lr
  std::optional<double> cooldown;  // deprecated in Levanter: linear cooldown to min lr at the end
  CycleSpec cycle_length;
  CycleSpec cycles;
  LrScheduleSpec lr_schedule;
  CycleSpec haps;  // deprecated in Levanter: a list of cycle end points
  WeightDecayModules weight_decay_modules;
  std::optional<bool> default_weight_decay_mask;
  // --- AdamConfig and LionConfig (same keys and defaults; epsilon, nesterov and adamc_weight_decay are Adam's) ---
  double beta1 = 0.9;
  double beta2 = 0.95;
  double epsilon = 1e-8;
  std::optional<double> max_grad_norm = 1.0;  // none or 0: no clipping
  bool nesterov = false;
  bool adamc_weight_decay = false;  // weight decay scaled by lr / learning_rate (Defazio 2025, AdamC)
  // --- SophiaHConfig (type: sophia-h; Liu et al. 2023). Its other defaults differ from Adam's: beta1 0.96,
  // beta2 0.99, epsilon 1e-12 and no gradient clipping, applied when type: sophia-h is read (apply_type_defaults).
  std::optional<double> gamma;                 // null: 0.01 (Levanter's GAMMA_SOPHIA_H)
  std::optional<double> clip_threshold = 1.0;  // null: no clipping of the preconditioned update
  int64_t update_interval = 10;                // steps between Hessian estimates
  int64_t rng_seed = 0;                        // seed of the Hutchinson probe vectors
  Unsupported update_rms_clipping{"update RMS clipping is not implemented"};
  Unsupported clip_update_norm{"update-norm clipping is not implemented"};
  Unsupported skip_bad_steps{"skipping bad steps is not implemented", "false"};

  template <typename V>
  void fields(V& v) {
    v("type", type,
      "Optimizer: adam (AdamW; alias adamw), lion (Chen et al. 2023), sophia-h or sophia-g (Liu et al. 2023). "
      "Levanter's other optimizers are not implemented");
    if constexpr (std::is_same_v<V, config::Reader>) apply_type_defaults();
    v("learning_rate", learning_rate, "Peak learning rate");
    v("weight_decay", weight_decay, "Decoupled weight decay (AdamW, Lion), applied to the parameters the mask selects");
    v("min_lr_ratio", min_lr_ratio, "Final learning rate as a fraction of learning_rate");
    v("warmup", warmup, "Linear warmup from 0: a fraction of the steps if <= 1, else a number of steps");
    v("decay", decay,
      "Length of the decay phase (fraction or steps; WSD: stable at learning_rate until then). "
      "Null: decay over all steps after warmup");
    v("rewarmup", rewarmup, "Warmup of each cycle after the first (fraction of the cycle or steps)");
    v("cooldown", cooldown, "Deprecated in Levanter: a final linear cooldown to the minimum (fraction or steps)");
    v("cycle_length", cycle_length, "Length of each cycle: a fraction or steps, or a list of lengths");
    v("cycles", cycles, "Number of cycles, or a list of cycle end steps");
    v("lr_schedule", lr_schedule,
      "Decay shape: constant, cosine, linear, inv_sqrt or inv; or {type: cosine, exponent: E} / "
      "{type: inv_sqrt, timescale: T}");
    v("haps", haps, "Deprecated in Levanter: cycle end steps (use cycles)");
    v("weight_decay_modules", weight_decay_modules,
      "Which parameters decay: a regex matched at the start of each parameter path, or a list of substrings");
    v("default_weight_decay_mask", default_weight_decay_mask,
      "Also apply the default mask (no decay for biases, norms, embeddings). Null: only when "
      "weight_decay_modules is null; false with no weight_decay_modules: decay every parameter");
    v("beta1", beta1,
      "Adam: first-moment decay. Lion: the interpolation weight of the momentum in the update sign. Sophia: the "
      "momentum's decay (default 0.96 with sophia-h)");
    v("beta2", beta2,
      "Adam: second-moment decay. Lion: the momentum's decay. Sophia: the Hessian estimate's decay (default 0.99 "
      "with sophia-h)");
    v("epsilon", epsilon,
      "Adam: added to sqrt of the second moment. Sophia: floor of gamma * h (default 1e-12 with sophia-h). "
      "Unused by Lion");
    v("max_grad_norm", max_grad_norm,
      "Clip gradients to this global L2 norm (null or 0: no clipping; the default with sophia-h)");
    v("nesterov", nesterov, "Nesterov momentum in Adam (optax's scale_by_adam(nesterov=True))");
    v("adamc_weight_decay", adamc_weight_decay, "AdamC: scale weight decay by lr / learning_rate");
    v("gamma", gamma,
      "Sophia: the update is momentum / max(gamma * h, epsilon) (null: 0.01 for sophia-h, 0.05 for sophia-g)");
    v("clip_threshold", clip_threshold, "Sophia: clip each update element to [-t, t] (null: no clipping)");
    v("update_interval", update_interval, "Sophia: steps between Hessian-diagonal estimates");
    v("rng_seed", rng_seed, "Sophia: seed of the Hutchinson probe vectors");
    v("update_rms_clipping", update_rms_clipping, "Not implemented: must be null");
    v("clip_update_norm", clip_update_norm, "Not implemented: must be null");
    v("skip_bad_steps", skip_bad_steps, "Not implemented: must be false");
    if constexpr (std::is_same_v<V, config::Reader>) validate();
  }

  // Sets the defaults that depend on `type` (Sophia-H's beta1, beta2, epsilon, max_grad_norm). Parsing calls it right
  // after reading `type`, before the other keys, so keys given in the file still win.
  void apply_type_defaults();
  bool is_sophia() const { return type.name == "sophia-h" || type.name == "sophia-g"; }
  // Levanter's GAMMA_SOPHIA_H (0.01) and GAMMA_SOPHIA_G (0.05).
  double sophia_gamma() const { return gamma.value_or(type.name == "sophia-g" ? 0.05 : 0.01); }

  // Checks the values that YAML parsing cannot (fractions, betas, schedule combinations); throws
  // config::ConfigError naming the key. Parsing calls it; so do AdamW and learning_rate_at.
  void validate() const;
};

// Levanter's `int | float` fraction-or-steps: <= 1 is a fraction of `total` (truncated), larger values must be
// whole numbers of steps. `key` names the field in errors.
int64_t fraction_or_steps(double value, int64_t total, const char* key);

// Whether each parameter is decayed, with Levanter's semantics (OptimizerConfig.build_weight_decay_mask):
// - weight_decay_modules null and default_weight_decay_mask false: every parameter decays.
// - the default mask (used when default_weight_decay_mask is true, or both keys are null) excludes biases, norm
//   weights and embeddings and decays everything else;
// - weight_decay_modules patterns are matched against two strings per parameter: its dotted path
//   ("transformer.h.attn.c_attn.weight") and, like Levanter's "<Class>.<field>" paths, "Linear.weight",
//   "Linear.bias" or "Embedding.weight" when the parameter's kind tells its class. A parameter decays if any
//   pattern matches; with the default mask also on, unmatched parameters fall back to the default.
std::vector<bool> weight_decay_mask(const OptimizerConfig& config, const std::vector<haliax::nn::ParamInfo>& params);

}  // namespace levanter::optim
