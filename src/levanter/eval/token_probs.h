// The probability a model gives each token of some documents (Levanter's token-probability visualisation):
// for every position j >= 1 of a document, p(token_j | tokens_<j), the token's rank among the vocabulary and
// the k most probable alternatives, plus the document's mean next-token loss. The view that shows them is
// levanter/viz/ (docs/visualization.md); this is the libtorch half.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "levanter/models/lm_model.h"

namespace levanter::eval {

struct TokenScores {
  double loss = 0;            // mean negative log-likelihood (nats) over positions 1..n-1
  std::vector<float> p;       // p[j-1] = p(token_j | tokens_<j), j = 1..n-1
  std::vector<int64_t> rank;  // 1 + the number of vocabulary entries with a strictly higher logit
  std::vector<std::vector<std::pair<int64_t, float>>> top;  // per position: the top_k (id, p), most probable first
};

// Scores each document (token ids, 2 <= length <= the model's position axis; std::invalid_argument otherwise)
// with `model`'s parameters cast to `compute`, one document at a time, without gradients or dropout. Logits are
// widened to f32 before the softmax. top_k is clamped to the vocabulary size.
std::vector<TokenScores> score_tokens(const models::LmHeadModel& model, const std::vector<std::vector<int64_t>>& docs,
                                      int64_t top_k, at::ScalarType compute = at::kFloat);

}  // namespace levanter::eval
