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

}  // namespace haliax
