// `trainer.sample`: continuations of fixed prompts generated every N steps during training and logged as text
// (`samples/<i>` in every tracker: metrics.jsonl, TensorBoard's Text tab). docs/training.md explains it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace levanter::inference {

struct SampleConfig {
  int64_t steps = 0;                 // 0: off
  std::vector<std::string> prompts;  // empty: one unconditional sample (from the tokenizer's BOS token)
  int64_t max_new_tokens = 32;
  double temperature = 0.7;  // 0: greedy
  int64_t top_k = 0;         // 0: all tokens
  double top_p = 1.0;

  template <typename V>
  void fields(V& v) {
    v("steps", steps,
      "Generate a continuation of each prompt every this many steps (and at the end), logged as text samples/<i>; "
      "0: off");
    v("prompts", prompts, "Prompts to continue (default: one unconditional sample from the BOS token)");
    v("max_new_tokens", max_new_tokens, "Tokens generated per prompt");
    v("temperature", temperature, "Sampling temperature (0: greedy)");
    v("top_k", top_k, "Sample from the k most likely tokens (0: all)");
    v("top_p", top_p, "Sample from the smallest set of most likely tokens whose probability reaches p (1: all)");
  }
  // Throws config::ConfigError naming `where`.<key>.
  void validate(const std::string& where = "trainer.sample") const;
};

}  // namespace levanter::inference
