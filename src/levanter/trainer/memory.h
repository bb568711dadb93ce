// The memory a training run will need, estimated from its config before anything is allocated, and the memory
// the machine has. A run whose estimate exceeds what is available is refused with the numbers
// (trainer.check_memory), instead of growing until the kernel's OOM killer ends it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "levanter/trainer/config.h"

namespace levanter::trainer {

struct MemoryEstimate {
  int64_t parameters = 0;
  double weights = 0;       // bytes: the parameters in trainer.mp's param dtype
  double gradients = 0;     // their gradients
  double optimizer = 0;     // optimizer state (Adam: m and v; Lion: m; Sophia: m and the Hessian estimate)
  double compute_copy = 0;  // the compute-dtype copy of the parameters and its gradients (mixed precision only)
  double activations = 0;   // what one microbatch keeps for the backward pass (an estimate from the layer structure)
  double loss = 0;          // the LM head + loss working set: a block of logits, their f32 copy and gradient
  double temporaries = 0;   // one more parameter-sized buffer: update temporaries, the checkpoint being written
  double runtime = 0;       // libtorch, OpenBLAS and the process itself
  double total() const {
    return weights + gradients + optimizer + compute_copy + activations + loss + temporaries + runtime;
  }
  // "4.12 GB: weights 1.0 GB, gradients 1.0 GB, ..." for messages.
  std::string describe() const;
};

// nullopt when the model family does not say how many parameters it has (LmConfig::parameter_count). Per process of
// a job of `processes`: each holds train_batch_size / processes rows, and under FSDP (trainer.fsdp_axis set)
// 1/processes of the weights, their f32 gradients and the optimizer state, plus the whole compute copy and its
// gradients. With tensor parallelism over `model_axis_size` processes (`processes` then counts the data-parallel
// replicas), the parameters other than the token embeddings are held in that many pieces.
std::optional<MemoryEstimate> estimate_training_memory(const TrainLmConfig& config, int64_t vocab_size,
                                                       int processes = 1, int model_axis_size = 1);

// Bytes this process can still use: MemAvailable from /proc/meminfo, lowered to the cgroup's limit (v2
// memory.max - memory.current, or v1 memory.limit_in_bytes - memory.usage_in_bytes) when one is set.
std::optional<double> available_memory_bytes();

// Throws config::ConfigError naming the numbers and what to reduce when `estimate` exceeds `available`.
void check_memory(const MemoryEstimate& estimate, double available);

}  // namespace levanter::trainer
