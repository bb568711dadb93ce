// A state dict: named tensors in order, the one flat form of a model's (or optimizer's) state. Keys are dotted
// parameter paths ("transformer.h.0.attn.c_attn.weight"). Modules produce and consume it (nn/module.h),
// checkpoints store one per safetensors file, and Hugging Face export writes it under HF's names.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace haliax {

using StateDict = std::vector<std::pair<std::string, at::Tensor>>;

// Haliax's with_prefix: "prefix.leaf", or whichever is non-empty (an empty string stands for Python's None).
inline std::string with_prefix(const std::string& prefix, const std::string& leaf) {
  return prefix.empty() ? leaf : leaf.empty() ? prefix : prefix + "." + leaf;
}

// The entries of `dict` under `prefix` (the key is the prefix itself or starts with "prefix."), in order and
// with their keys unchanged. An empty prefix selects everything.
StateDict entries_under(const StateDict& dict, const std::string& prefix);

}  // namespace haliax
