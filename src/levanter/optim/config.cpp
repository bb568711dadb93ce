#include "levanter/optim/config.h"

#include <cmath>
#include <regex>
#include <sstream>

namespace levanter::optim {

using config::ConfigError;
using config::Context;

namespace {

std::string number_text(double x) {
  std::ostringstream o;
  o.precision(17);
  o << x;
  return o.str();
}

const char* kOtherTypes = "adopt, cautious, kron, mars, mini, muon, rmsprop, scion, soap";

}  // namespace

// --- type ---------------------------------------------------------------------------------------------------

void OptimizerType::parse_yaml(const YAML::Node& node, const Context& ctx) {
  if (!node.IsScalar()) config::fail(ctx, node, "expected an optimizer name (adam or lion)");
  std::string s = node.Scalar();
  if (s == "adam" || s == "adamw") {
    name = "adam";
    return;
  }
  if (s == "lion" || s == "sophia-h" || s == "sophia-g") {
    name = s;
    return;
  }
  config::fail(ctx, node,
               "unsupported optimizer type '" + s +
                   "': this build implements 'adam' (AdamW, also spelled 'adamw'), 'lion', 'sophia-h' and 'sophia-g'; "
                   "Levanter's other optimizers (" +
                   kOtherTypes + ") are not implemented");
}

YAML::Node OptimizerType::to_yaml() const { return YAML::Node(name); }
std::string type_name(const OptimizerType&) { return "choice: adam, lion, sophia-h, sophia-g"; }

// --- lr_schedule --------------------------------------------------------------------------------------------

static const std::vector<std::string> kScheduleNames = {"constant", "cosine", "linear", "inv_sqrt", "inv"};

static void check_schedule_name(const std::string& s, const YAML::Node& node, const Context& ctx) {
  for (const auto& n : kScheduleNames) {
    if (s == n) return;
  }
  if (s == "power") {
    config::fail(ctx, node,
                 "lr_schedule 'power' (Shen et al. 2024) is not implemented; use constant, cosine, linear, "
                 "inv_sqrt or inv");
  }
  std::string near = config::nearest(s, kScheduleNames);
  config::fail(ctx, node,
               "unknown lr_schedule '" + s + "'" + (near.empty() ? "" : "; did you mean '" + near + "'?") +
                   " Valid: constant, cosine, linear, inv_sqrt, inv");
}

void LrScheduleSpec::parse_yaml(const YAML::Node& node, const Context& ctx) {
  *this = LrScheduleSpec{};
  if (node.IsScalar()) {
    check_schedule_name(node.Scalar(), node, ctx);
    name = node.Scalar();
    return;
  }
  if (!node.IsMap()) config::fail(ctx, node, "expected a schedule name (cosine) or a mapping {type: cosine, ...}");
  as_mapping = true;
  YAML::Node t = node["type"];
  if (!t.IsDefined() || !t.IsScalar()) config::fail(ctx, node, "a mapping lr_schedule needs `type:` (e.g. cosine)");
  check_schedule_name(t.Scalar(), t, ctx.child("type"));
  name = t.Scalar();
  std::vector<std::string> allowed = {"type"};
  if (name == "cosine") allowed.push_back("exponent");
  if (name == "inv_sqrt") allowed.push_back("timescale");
  for (const auto& kv : node) {
    std::string key = config::key_name(ctx, kv.first);
    bool ok = false;
    for (const auto& a : allowed) ok = ok || a == key;
    if (!ok) {
      std::string valid;
      for (const auto& a : allowed) valid += (valid.empty() ? "" : ", ") + a;
      config::fail(ctx.child(key), kv.first, "unknown key for lr_schedule '" + name + "'; valid keys: " + valid);
    }
  }
  if (node["exponent"].IsDefined()) config::parse_value(node["exponent"], ctx.child("exponent"), exponent);
  if (node["timescale"].IsDefined()) config::parse_value(node["timescale"], ctx.child("timescale"), timescale);
  if (name == "inv_sqrt" && !(timescale > 0)) config::fail(ctx.child("timescale"), node, "must be > 0");
}

YAML::Node LrScheduleSpec::to_yaml() const {
  if (!as_mapping) return YAML::Node(name);
  YAML::Node n(YAML::NodeType::Map);
  n["type"] = name;
  if (name == "cosine") n["exponent"] = config::to_yaml_value(exponent);
  if (name == "inv_sqrt") n["timescale"] = config::to_yaml_value(timescale);
  return n;
}

std::string type_name(const LrScheduleSpec&) { return "choice or mapping"; }

// --- weight_decay_modules -----------------------------------------------------------------------------------

void WeightDecayModules::parse_yaml(const YAML::Node& node, const Context& ctx) {
  *this = WeightDecayModules{};
  if (node.IsNull()) return;
  if (node.IsScalar()) {
    kind = Kind::kRegex;
    regex = node.Scalar();
    try {
      std::regex re(regex, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      config::fail(ctx, node,
                   "invalid regular expression '" + regex + "': " + e.what() +
                       " (ECMAScript syntax; Python-only constructs such as (?P<name>...) are not supported)");
    }
    return;
  }
  if (!node.IsSequence()) config::fail(ctx, node, "expected a regular expression or a list of path substrings");
  kind = Kind::kSubstrings;
  config::parse_value(node, ctx, substrings);
}

YAML::Node WeightDecayModules::to_yaml() const {
  switch (kind) {
    case Kind::kRegex:
      return YAML::Node(regex);
    case Kind::kSubstrings:
      return config::to_yaml_value(substrings);
    default:
      return YAML::Node(YAML::NodeType::Null);
  }
}

std::string type_name(const WeightDecayModules&) { return "regex or list of strings (optional)"; }

// --- cycles, cycle_length -----------------------------------------------------------------------------------

void CycleSpec::parse_yaml(const YAML::Node& node, const Context& ctx) {
  *this = CycleSpec{};
  if (node.IsNull()) return;
  if (node.IsSequence()) {
    std::vector<int64_t> v;
    config::parse_value(node, ctx, v);
    list = std::move(v);
    return;
  }
  double x = 0;
  config::parse_value(node, ctx, x);
  number = x;
}

YAML::Node CycleSpec::to_yaml() const {
  if (list) return config::to_yaml_value(*list);
  if (number) return config::to_yaml_value(*number);
  return YAML::Node(YAML::NodeType::Null);
}

std::string type_name(const CycleSpec&) { return "number or list of int (optional)"; }

// --- unsupported keys ---------------------------------------------------------------------------------------

void Unsupported::parse_yaml(const YAML::Node& node, const Context& ctx) {
  text.clear();
  if (node.IsNull()) return;
  if (node.IsScalar() && *accepted && node.Scalar() == accepted) return;
  if (node.IsScalar() && std::string(accepted) == "false" && node.Scalar() == "0") return;
  std::string off = *accepted ? std::string(" (or ") + accepted + ")" : "";
  config::fail(ctx, node, std::string("not supported in this build: ") + reason + "; leave it null" + off);
}

YAML::Node Unsupported::to_yaml() const {
  if (std::string(accepted) == "false") return YAML::Node(false);
  return YAML::Node(YAML::NodeType::Null);
}

std::string type_name(const Unsupported&) { return "unsupported"; }

// --- validation ---------------------------------------------------------------------------------------------

int64_t fraction_or_steps(double value, int64_t total, const char* key) {
  if (!(value >= 0.0) || (value > 1.0 && std::fmod(value, 1.0) != 0.0) || !std::isfinite(value)) {
    throw ConfigError(std::string("optimizer.") + key + ": invalid value " + number_text(value) +
                      ": must be a fraction in [0, 1] or a whole number of steps");
  }
  if (value <= 1.0) return static_cast<int64_t>(value * static_cast<double>(total));  // Python's int(): truncates
  return static_cast<int64_t>(value);
}

void OptimizerConfig::apply_type_defaults() {
  if (is_sophia()) {  // Levanter's BaseSophiaConfig
    beta1 = 0.96;
    beta2 = 0.99;
    epsilon = 1e-12;
    max_grad_norm = std::nullopt;
  }
}

void OptimizerConfig::validate() const {
  auto bad = [](const std::string& key, const std::string& msg) { throw ConfigError("optimizer." + key + ": " + msg); };
  fraction_or_steps(warmup, 1, "warmup");
  fraction_or_steps(rewarmup, 1, "rewarmup");
  if (decay) fraction_or_steps(*decay, 1, "decay");
  if (cooldown) fraction_or_steps(*cooldown, 1, "cooldown");
  if (!(learning_rate >= 0) || !std::isfinite(learning_rate)) bad("learning_rate", "must be finite and >= 0");
  if (!(weight_decay >= 0) || !std::isfinite(weight_decay)) bad("weight_decay", "must be finite and >= 0");
  if (!(min_lr_ratio >= 0) || !std::isfinite(min_lr_ratio)) bad("min_lr_ratio", "must be finite and >= 0");
  if (!(beta1 >= 0 && beta1 < 1)) bad("beta1", "must be in [0, 1), got " + number_text(beta1));
  if (!(beta2 >= 0 && beta2 < 1)) bad("beta2", "must be in [0, 1), got " + number_text(beta2));
  if (!(epsilon >= 0) || !std::isfinite(epsilon)) bad("epsilon", "must be finite and >= 0");
  if (max_grad_norm && (!(*max_grad_norm >= 0) || !std::isfinite(*max_grad_norm))) {
    bad("max_grad_norm", "must be finite and >= 0 (or null for no clipping)");
  }
  if (type.name != "adam") {  // Levanter's LionConfig and SophiaHConfig have no such keys
    if (nesterov) bad("nesterov", "is an Adam key; optimizer.type is " + type.name);
    if (adamc_weight_decay) bad("adamc_weight_decay", "is an Adam key; optimizer.type is " + type.name);
  }
  if (!is_sophia()) {  // Sophia's keys, set to something else than their defaults, with another optimizer
    if (gamma) bad("gamma", "is a Sophia key; optimizer.type is " + type.name);
    if (clip_threshold != std::optional<double>(1.0))
      bad("clip_threshold", "is a Sophia key; optimizer.type is " + type.name);
    if (update_interval != 10) bad("update_interval", "is a Sophia key; optimizer.type is " + type.name);
    if (rng_seed != 0) bad("rng_seed", "is a Sophia key; optimizer.type is " + type.name);
  } else {
    if (update_interval < 1) bad("update_interval", "must be >= 1");
    if (gamma && !(*gamma > 0 && std::isfinite(*gamma))) bad("gamma", "must be finite and > 0");
    if (clip_threshold && !(*clip_threshold > 0)) bad("clip_threshold", "must be > 0 (or null for no clipping)");
  }
  if (!cycle_length.is_none() && !cycles.is_none()) bad("cycle_length", "can't use both cycle_length and cycles");
  if (haps.number) bad("haps", "must be a list of cycle end steps");
  if (!cycle_length.is_none() && !haps.is_none()) bad("cycle_length", "can't use both cycle_length and haps");
  if (cycle_length.number) {
    double c = *cycle_length.number;
    fraction_or_steps(c, 1, "cycle_length");
    if (c <= 0) bad("cycle_length", "must be > 0");
  }
  if (cycles.number && (*cycles.number < 1 || std::fmod(*cycles.number, 1.0) != 0)) {
    bad("cycles", "must be a whole number >= 1 or a list of cycle end steps, got " + number_text(*cycles.number));
  }
  if (lr_schedule.name == "inv_sqrt" && !(lr_schedule.timescale > 0)) bad("lr_schedule.timescale", "must be > 0");
  if (weight_decay_modules.kind == WeightDecayModules::Kind::kRegex) {
    try {
      std::regex re(weight_decay_modules.regex, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      bad("weight_decay_modules", "invalid regular expression '" + weight_decay_modules.regex + "': " + e.what());
    }
  }
}

// --- weight-decay mask --------------------------------------------------------------------------------------

namespace {

bool contains(const std::string& s, const char* sub) { return s.find(sub) != std::string::npos; }
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Levanter's reasonable_default: false for norms, embeddings and biases, "no opinion" otherwise. Levanter decides
// from class names in the path; here the module that declared the parameter says what it is (its kind), and the
// path tests are kept for paths that spell class names.
std::optional<bool> reasonable_default(const haliax::nn::ParamInfo& info, const std::string& key_path) {
  using haliax::nn::ParamKind;
  if (info.kind == ParamKind::kBias || info.kind == ParamKind::kNormWeight || info.kind == ParamKind::kEmbedding) {
    return false;
  }
  if (contains(key_path, "LayerNorm") || contains(key_path, "RMSNorm") || contains(key_path, "RmsNorm") ||
      contains(key_path, "Embedding") || ends_with(key_path, "bias")) {
    return false;
  }
  return std::nullopt;
}

// Levanter's "<Class>.<field>" key path, where the kind tells the class. A bias is a Linear's when the weight
// next to it is a Linear weight.
std::optional<std::string> class_key_path(const haliax::nn::ParamInfo& info,
                                          const std::vector<haliax::nn::ParamInfo>& all) {
  using haliax::nn::ParamKind;
  switch (info.kind) {
    case ParamKind::kLinearWeight:
      return std::string("Linear.weight");
    case ParamKind::kEmbedding:
      return std::string("Embedding.weight");
    case ParamKind::kBias: {
      if (!ends_with(info.path, "bias")) return std::nullopt;
      std::string weight = info.path.substr(0, info.path.size() - 4) + "weight";
      for (const auto& other : all) {
        if (other.path == weight && other.kind == ParamKind::kLinearWeight) return std::string("Linear.bias");
      }
      return std::nullopt;
    }
    default:
      return std::nullopt;
  }
}

}  // namespace

std::vector<bool> weight_decay_mask(const OptimizerConfig& config, const std::vector<haliax::nn::ParamInfo>& params) {
  const WeightDecayModules& modules = config.weight_decay_modules;
  // No modules and the default explicitly off: Levanter passes mask=None to optax, which decays everything.
  if (modules.is_none() && config.default_weight_decay_mask == false) return std::vector<bool>(params.size(), true);
  const bool use_default =
      config.default_weight_decay_mask == true || (!config.default_weight_decay_mask.has_value() && modules.is_none());
  std::optional<std::regex> re;
  if (modules.kind == WeightDecayModules::Kind::kRegex) re.emplace(modules.regex, std::regex::ECMAScript);

  auto matches = [&](const std::string& key_path) {
    if (re) return std::regex_search(key_path, *re, std::regex_constants::match_continuous);  // re.match
    for (const auto& s : modules.substrings) {
      if (key_path.find(s) != std::string::npos) return true;
    }
    return false;
  };

  std::vector<bool> mask;
  mask.reserve(params.size());
  for (const auto& info : params) {
    std::vector<std::string> key_paths = {info.path};
    if (auto cls = class_key_path(info, params)) key_paths.push_back(*cls);
    // The same decision procedure as Levanter's _apply_on, with None as nullopt.
    std::optional<bool> should_decay;
    for (const auto& kp : key_paths) {
      if (!modules.is_none()) should_decay = should_decay.value_or(false) || matches(kp);
      if (use_default && !should_decay.value_or(false)) should_decay = reasonable_default(info, kp);
      if (should_decay.value_or(false)) break;
    }
    mask.push_back(should_decay.has_value() ? *should_decay : use_default);
  }
  return mask;
}

}  // namespace levanter::optim
