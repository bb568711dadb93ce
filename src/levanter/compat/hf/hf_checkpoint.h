// Hugging Face model directories: what `transformers`' save_pretrained writes and from_pretrained reads.
//
//   <dir>/config.json              architecture fields (the family's HfAdapter), vocab_size, dtype, token ids
//   <dir>/model.safetensors        parameters under HF's names and layouts, metadata {"format": "pt"}
//     or model-0000i-of-0000n.safetensors + model.safetensors.index.json (above the shard size)
//     or pytorch_model.bin           a torch.save'd state dict (export with Format::kTorch; import reads it too)
//   <dir>/generation_config.json   bos/eos token ids
//   <dir>/tokenizer.json, tokenizer_config.json, special_tokens_map.json (+ vocab.json, merges.txt for BPE)
//
// Export writes everything into a temporary directory beside the output and renames it into place, so a
// crash never leaves a half-written model directory under the output's name; an existing non-empty output is
// refused unless `overwrite`. Import reads config.json and the weights (single or sharded safetensors) and
// maps them through the family's adapter, with errors that name the file, the field or the tensor.
#pragma once

#include <c10/core/ScalarType.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "haliax/state_dict.h"
#include "levanter/models/lm_model.h"

namespace levanter::compat::hf {

struct ExportOptions {
  std::string output;                       // the model directory to create
  std::optional<at::ScalarType> dtype;      // floating tensors in this dtype (default: as the parameters, f32)
  std::string tokenizer_path;               // the tokenizer.json to ship (empty: no tokenizer files)
  int64_t max_shard_bytes = 5'000'000'000;  // transformers' default: larger models are sharded
  bool overwrite = false;                   // replace an existing non-empty output directory
  // kTorch: pytorch_model.bin (libtorch's torch.save-compatible pickle, not sharded) instead of safetensors: a
  // state dict that torch.load reads and the HF class loads with strict keys (tied weights appear under both
  // names, as model.state_dict() has them).
  enum class Format { kSafetensors, kTorch } format = Format::kSafetensors;
};

// Writes `model` as a Hugging Face model directory; returns the names of the files written, in order.
std::vector<std::string> export_model(models::LmHeadModel& model, const ExportOptions& options);

struct ModelDir {
  std::string path;
  nlohmann::json config;      // config.json
  haliax::StateDict tensors;  // every tensor of the weight files, in file order
  std::vector<std::string> weight_files;
};

// Reads config.json and, with `weights`, the weights: model.safetensors, or the shards its index names, or
// pytorch_model.bin (or its shards).
ModelDir read_model_dir(const std::string& dir, bool weights = true);

// A torch.save'd dict of tensors (what torch.load reads), and back. Written atomically.
void save_torch_state_dict(const std::string& path, const haliax::StateDict& tensors);
haliax::StateDict load_torch_state_dict(const std::string& path);

// The model config a directory's config.json describes (through the registered family with that model_type).
std::unique_ptr<models::LmConfig> config_from_dir(const ModelDir& dir);

// Replaces `model`'s parameters with the directory's. The directory's architecture (config.json) must equal
// the model's, and its vocab_size the model's vocabulary: a difference is an error naming the field and both
// values.
void load_into(models::LmHeadModel& model, const ModelDir& dir);

}  // namespace levanter::compat::hf
