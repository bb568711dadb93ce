// `model:`: Levanter's model choice. `type` picks a family from the registry (default gpt2); the other keys are
// that family's (LmConfig). The registry maps each `model.type` to a function that makes the family's default
// config; the built-in families are registered in model_config.cpp, and anything else (a test's own model, a
// plugin) with register_model_type.
#pragma once

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "levanter/config/config.h"
#include "levanter/models/lm_model.h"

namespace levanter::models {

using ConfigFactory = std::function<std::unique_ptr<LmConfig>()>;

// Adds (or replaces) a family. Registration order is the order of model_types() and of the docs.
void register_model_type(const std::string& type, ConfigFactory make_default_config);
// The registered types, built-in first.
std::vector<std::string> model_types();
// The default config of `type`; std::invalid_argument listing the valid types if it is not registered.
std::unique_ptr<LmConfig> default_model_config(const std::string& type);

// The `model:` section: a value type (copies are deep) holding one family's config.
class ModelConfig {
 public:
  ModelConfig();  // gpt2 with its defaults
  explicit ModelConfig(std::unique_ptr<LmConfig> config);
  ModelConfig(const ModelConfig& other);
  ModelConfig& operator=(const ModelConfig& other);
  ModelConfig(ModelConfig&&) noexcept = default;
  ModelConfig& operator=(ModelConfig&&) noexcept = default;

  std::string type() const { return config_->model_type(); }
  const LmConfig& get() const { return *config_; }
  LmConfig& get() { return *config_; }
  const LmConfig* operator->() const { return config_.get(); }
  // The family's own config; std::logic_error if the model is of another type.
  template <typename C>
  const C& as() const {
    auto* c = dynamic_cast<const C*>(config_.get());
    if (!c) throw std::logic_error("model config is of type '" + type() + "', not the one asked for");
    return *c;
  }
  template <typename C>
  C& as() {
    return const_cast<C&>(static_cast<const ModelConfig&>(*this).as<C>());
  }

  void parse_yaml(const YAML::Node& node, const config::Context& ctx);
  YAML::Node to_yaml() const;

 private:
  std::unique_ptr<LmConfig> config_;
};
inline std::string type_name(const ModelConfig&) { return "model choice (type: gpt2, ...)"; }

// Documentation rows for `model.type` and every registered family's keys (model.<key>).
void describe_model_config(std::vector<config::DocRow>& rows, const std::string& prefix);

}  // namespace levanter::models
