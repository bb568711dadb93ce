#include "levanter/models/model_config.h"

#include <mutex>
#include <utility>

#include "levanter/models/backpack/backpack.h"
#include "levanter/models/gpt2/gpt2.h"
#include "levanter/models/hf_adapter.h"
#include "levanter/models/llama/llama.h"

namespace levanter::models {

namespace {

struct Registry {
  std::mutex mu;
  std::vector<std::pair<std::string, ConfigFactory>> families;  // in registration order
};

// The built-in families, in the order `levanter config` documents them. An explicit list, not static
// registrars: the linker drops an object file of a static library that nothing references.
void register_builtin_models(Registry& r) {
  r.families.emplace_back("gpt2", [] { return std::make_unique<Gpt2Config>(); });
  r.families.emplace_back("llama", [] { return std::make_unique<LlamaConfig>(); });
  r.families.emplace_back("backpack", [] { return std::make_unique<BackpackConfig>(); });
}

Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry;  // never destroyed: usable from other static destructors
    register_builtin_models(*reg);
    return reg;
  }();
  return *r;
}

std::string type_list() {
  std::string out;
  for (const std::string& t : model_types()) out += (out.empty() ? "" : ", ") + t;
  return out;
}

}  // namespace

void register_model_type(const std::string& type, ConfigFactory make_default_config) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  for (auto& [t, f] : r.families) {
    if (t == type) {
      f = std::move(make_default_config);
      return;
    }
  }
  r.families.emplace_back(type, std::move(make_default_config));
}

std::vector<std::string> model_types() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<std::string> out;
  for (const auto& [t, f] : r.families) out.push_back(t);
  return out;
}

std::unique_ptr<LmConfig> default_model_config(const std::string& type) {
  ConfigFactory make;
  {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mu);
    for (const auto& [t, f] : r.families) {
      if (t == type) make = f;
    }
  }
  if (!make) throw std::invalid_argument("model type '" + type + "' is not implemented; valid: " + type_list());
  return make();
}

std::unique_ptr<HfAdapter> hf_adapter_for_hf_type(const std::string& hf_model_type) {
  for (const std::string& type : model_types()) {
    std::unique_ptr<HfAdapter> a = default_model_config(type)->hf_adapter();
    if (a && a->hf_model_type() == hf_model_type) return a;
  }
  return nullptr;
}

ModelConfig::ModelConfig() : config_(default_model_config("gpt2")) {}
ModelConfig::ModelConfig(std::unique_ptr<LmConfig> config) : config_(std::move(config)) {}
ModelConfig::ModelConfig(const ModelConfig& other) : config_(other.config_->clone()) {}
ModelConfig& ModelConfig::operator=(const ModelConfig& other) {
  if (this != &other) config_ = other.config_->clone();
  return *this;
}

void ModelConfig::parse_yaml(const YAML::Node& node, const config::Context& ctx) {
  if (node.IsNull()) return;
  if (!node.IsMap()) config::fail(ctx, node, "expected a mapping with type: <family> and the model's keys");
  YAML::Node t = node["type"];
  if (t.IsDefined()) {
    std::string type;
    config::parse_value(t, ctx.child("type"), type);
    if (type != config_->model_type()) {
      try {
        config_ = default_model_config(type);
      } catch (const std::invalid_argument& e) {
        config::fail(ctx.child("type"), t, e.what());
      }
    }
  }
  // The remaining keys go to the family's config (the Reader rejects unknown keys, naming the nearest one).
  YAML::Node rest(YAML::NodeType::Map);
  for (const auto& kv : node) {
    if (config::key_name(ctx, kv.first) != "type") rest[kv.first] = kv.second;
  }
  config::Reader r(rest, ctx);
  config_->read_fields(r);
  r.finish();
}

YAML::Node ModelConfig::to_yaml() const {
  config::Writer w;
  config_->write_fields(w);
  YAML::Node out(YAML::NodeType::Map);
  out["type"] = config_->model_type();
  for (const auto& kv : w.node()) out[kv.first] = kv.second;
  return out;
}

void describe_model_config(std::vector<config::DocRow>& rows, const std::string& prefix) {
  const std::vector<std::string> types = model_types();
  rows.push_back({prefix + ".type", "string", types.front(), "Model family (" + type_list() + ")"});
  for (const std::string& type : types) {
    std::vector<config::DocRow> family;
    config::Describer d(family, prefix);
    default_model_config(type)->describe_fields(d);
    for (config::DocRow& row : family) {
      if (types.size() > 1) row.help = "[" + type + "] " + row.help;
      rows.push_back(std::move(row));
    }
  }
}

}  // namespace levanter::models
