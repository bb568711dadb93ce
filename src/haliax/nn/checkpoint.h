// Gradient checkpointing (activation recompute): run a function without keeping its intermediate
// activations, and run it again during backward. Trades one extra forward per checkpointed block for the
// memory of all its activations. The function must be deterministic: with explicit keys (dropout), it is.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace haliax::nn {

using TensorsFn = std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>&)>;

// outputs = f(inputs), differentiable with respect to every input that requires grad. Only the inputs are
// saved for backward; f's intermediates are recomputed then.
std::vector<at::Tensor> checkpoint(const TensorsFn& f, const std::vector<at::Tensor>& inputs);

// Whether modules that checkpoint (Stacked with gradient_checkpointing) do so on this thread. A checkpointed
// block's backward is not itself differentiable, so code that differentiates twice (Hessian-vector products)
// turns checkpointing off for its scope with a NoCheckpointing guard; the results are the same.
bool checkpointing_enabled();
class NoCheckpointing {
 public:
  NoCheckpointing();
  ~NoCheckpointing();
  NoCheckpointing(const NoCheckpointing&) = delete;
  NoCheckpointing& operator=(const NoCheckpointing&) = delete;

 private:
  bool previous_;
};

}  // namespace haliax::nn
