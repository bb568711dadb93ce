// The documents the token-probability view scores: a fixed sample of a validation set, the same for the whole run
// (and for `levanter viz` with the same config), chosen by a keyed permutation of the set's documents.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "levanter/viz/config.h"
#include "levanter/viz/token_probs.h"

namespace levanter::data {
class TextData;
}

namespace levanter::viz {

struct Sample {
  std::string source;  // the validation set's name ("validation" for a single-source config)
  std::vector<SampleDoc> docs;
};

// num_docs documents of validation set `config.dataset` (default: the first that has validation files), in the
// order of a Feistel permutation keyed by `seed`, each cut to min(max_tokens, max_len) tokens; documents of fewer
// than 2 tokens are passed over. Waits for the set's cache to be complete. nullopt when the data config has no
// validation files; config::ConfigError when `config.dataset` names no validation set.
std::optional<Sample> validation_sample(data::TextData& data, const VizConfig& config, uint64_t seed, int64_t max_len);

}  // namespace levanter::viz
