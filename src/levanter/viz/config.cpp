#include "levanter/viz/config.h"

#include "levanter/config/config.h"

namespace levanter::viz {

void VizConfig::validate(const std::string& where) const {
  auto fail = [&](const std::string& key, const std::string& what) {
    throw config::ConfigError(where + "." + key + ": " + what);
  };
  if (steps < 0) fail("steps", "must be >= 0 (0 turns the view off), got " + std::to_string(steps));
  if (num_docs < 1) fail("num_docs", "must be >= 1, got " + std::to_string(num_docs));
  if (max_tokens < 2)
    fail("max_tokens", "must be >= 2 (the first token has no prediction), got " + std::to_string(max_tokens));
  if (top_k < 0 || top_k > 100) fail("top_k", "must be between 0 and 100, got " + std::to_string(top_k));
}

void DashboardConfig::validate(const std::string& where) const {
  if (port && (*port < 0 || *port > 65535)) {
    throw config::ConfigError(where + ".port: must be between 0 and 65535 (0: any free port), got " +
                              std::to_string(*port));
  }
  if (host.empty()) throw config::ConfigError(where + ".host: must not be empty (default 127.0.0.1)");
}

}  // namespace levanter::viz
