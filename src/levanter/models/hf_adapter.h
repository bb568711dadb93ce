// A model family's state-dict adapter to and from Hugging Face `transformers` (torchtitan's "state-dict
// adapter"): config.json fields, and parameter names and layouts. Pure mapping, no I/O: reading and writing
// model directories is compat/hf/. A family without one (LmConfig::hf_adapter() returns null) cannot be
// exported or imported, and says so.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "haliax/state_dict.h"
#include "levanter/models/lm_model.h"

namespace levanter::models {

class HfAdapter {
 public:
  virtual ~HfAdapter() = default;
  // config.json's "model_type" ("gpt2") and "architectures" entry ("GPT2LMHeadModel").
  virtual std::string hf_model_type() const = 0;
  virtual std::string hf_architecture() const = 0;

  // The architecture's config.json fields for `config` (the exporter adds vocab_size, dtype, token ids).
  // Throws std::invalid_argument naming the key our config has and Hugging Face's class cannot express.
  virtual nlohmann::ordered_json to_hf_config(const LmConfig& config) const = 0;
  // Our config from a config.json (with `source` naming the file in errors): every field that shapes the model
  // is read; a value we cannot represent is an error naming the field.
  virtual std::unique_ptr<LmConfig> from_hf_config(const nlohmann::json& hf, const std::string& source) const = 0;

  // The model's parameters under Hugging Face's names and layouts (tensors share storage where no reshape
  // copies). Tied weights appear once, as transformers saves them.
  virtual haliax::StateDict to_hf_state_dict(LmHeadModel& model) const = 0;
  // Tied parameters as (alias, name) pairs: the alias is in the HF module's state_dict() (and so in torch.save'd
  // files) but not in safetensors files, which keep one copy. GPT-2: {"lm_head.weight", "transformer.wte.weight"}.
  virtual std::vector<std::pair<std::string, std::string>> tied_parameters() const { return {}; }
  // Replaces the model's parameters from Hugging Face tensors (any floating dtype; converted to the parameter's).
  // Strict: a missing tensor, an unexpected one or a wrong shape is an error naming the tensor (and both shapes).
  // Non-parameter buffers that old checkpoints carry (e.g. GPT-2's attn.bias masks) are ignored.
  virtual void load_hf_state_dict(LmHeadModel& model, const haliax::StateDict& hf, const std::string& source) const = 0;
};

// For adapters' load_hf_state_dict: takes from `given` the Hugging Face tensor of each of the model's parameters
// (same name), checks that its shape is hf_shape(name, our shape), and returns them reshaped to our layout and
// dtypes, in the model's order. A missing tensor or a wrong shape is an error naming `source`, the tensor and both
// shapes; what is left in `given` matched no parameter (the caller decides what it may ignore).
using HfShapeFn = std::function<std::vector<int64_t>(const std::string& name, at::IntArrayRef ours)>;
haliax::StateDict take_hf_parameters(LmHeadModel& model, std::map<std::string, at::Tensor>& given,
                                     const HfShapeFn& hf_shape, const std::string& source);

// The adapter of the family registered under `hf_model_type` (config.json's "model_type"), or null.
std::unique_ptr<HfAdapter> hf_adapter_for_hf_type(const std::string& hf_model_type);

}  // namespace levanter::models
