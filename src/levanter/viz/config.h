// `trainer.viz` (the token-probability view recorded during training) and `trainer.dashboard` (the live local
// dashboard). docs/visualization.md explains both.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace levanter::viz {

struct VizConfig {
  int64_t steps = 100;  // 0: off
  int64_t num_docs = 4;
  int64_t max_tokens = 256;
  int64_t top_k = 5;
  std::optional<std::string> dataset;  // validation set name; default: the first

  template <typename V>
  void fields(V& v) {
    v("steps", steps,
      "Score the sample documents every this many steps (and at step 0 and the end) into <run dir>/token_probs.jsonl; "
      "0: off");
    v("num_docs", num_docs, "Validation documents in the sample (chosen from trainer.seed)");
    v("max_tokens", max_tokens, "Tokens kept from the start of each sample document");
    v("top_k", top_k, "Alternatives recorded per token (the most probable next tokens)");
    v("dataset", dataset, "Validation set the sample comes from (default: the first)");
  }
  // Throws config::ConfigError naming `where`.<key>.
  void validate(const std::string& where = "trainer.viz") const;
};

struct DashboardConfig {
  std::optional<int64_t> port;  // unset: no dashboard; 0: any free port
  std::string host = "127.0.0.1";

  template <typename V>
  void fields(V& v) {
    v("port", port,
      "Serve the live dashboard on this port while training (0: any free port; the URL is printed and written to "
      "<run dir>/dashboard.url); unset: no dashboard");
    v("host", host, "Address the dashboard binds to; anything but 127.0.0.1/localhost is announced with a warning");
  }
  void validate(const std::string& where = "trainer.dashboard") const;
};

}  // namespace levanter::viz
