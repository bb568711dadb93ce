#include "levanter/inference/sample_config.h"

#include "levanter/config/config.h"

namespace levanter::inference {

void SampleConfig::validate(const std::string& where) const {
  auto fail = [&](const std::string& key, const std::string& what) {
    throw config::ConfigError(where + "." + key + ": " + what);
  };
  if (steps < 0) fail("steps", "must be >= 0 (0 turns sampling off), got " + std::to_string(steps));
  if (max_new_tokens < 1) fail("max_new_tokens", "must be >= 1, got " + std::to_string(max_new_tokens));
  if (!(temperature >= 0)) fail("temperature", "must be >= 0 (0: greedy), got " + std::to_string(temperature));
  if (top_k < 0) fail("top_k", "must be >= 0 (0: all tokens), got " + std::to_string(top_k));
  if (!(top_p > 0 && top_p <= 1)) fail("top_p", "must be in (0, 1], got " + std::to_string(top_p));
}

}  // namespace levanter::inference
