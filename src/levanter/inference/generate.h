// Text generation from a language model: batched, with a key/value cache (the prompt is not recomputed per
// token), greedy or sampled (temperature, top-k, top-p), stopping at EOS or a length. Token ids in, token ids
// out; the CLI (`levanter sample`) does the text.
//
// Batching: every row advances one position per step, in lockstep from position 0. The common prefix length of
// the prompts is fed in one pass; after it, a row still inside its prompt is fed its next prompt token, and a
// row past its prompt the token sampled for it. So rows with prompts of different lengths share one cache and
// one position per step, and each row's tokens are what it would get alone.
//
// Determinism: randomness comes only from `key` (step s, row r draws from fold_in(fold_in(key, s), r)); the
// choice from the logits is computed in double in a fixed order. The logits themselves come from libtorch's
// kernels, whose last bits can depend on the thread count (as in training), so a different thread count can
// change a sample only where two choices are within rounding of each other.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "haliax/random.h"
#include "levanter/models/lm_model.h"

namespace levanter::inference {

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  double temperature = 1.0;       // 0: greedy (argmax; ties go to the lowest id)
  int64_t top_k = 0;              // keep the k most likely tokens (0: all)
  double top_p = 1.0;             // keep the smallest set of most likely tokens whose probability reaches p (1: all)
  std::optional<int64_t> eos_id;  // stop a row after it produces this token (the token is part of its output)
};

// Called once per generated token, in step order and, within a step, in row order.
using TokenCallback = std::function<void(size_t row, int64_t token)>;

// The new tokens of each prompt (each prompt non-empty; prompt + max_new_tokens must fit the model's positions).
std::vector<std::vector<int64_t>> generate(const models::LmHeadModel& model,
                                           const std::vector<std::vector<int64_t>>& prompts,
                                           const GenerateOptions& options, const haliax::random::Key& key,
                                           const TokenCallback& on_token = {});

// The token chosen from one row of logits (vocab,) under `options`, with uniform draw `u` in [0, 1).
int64_t choose_token(const at::Tensor& logits, const GenerateOptions& options, double u);

}  // namespace levanter::inference
