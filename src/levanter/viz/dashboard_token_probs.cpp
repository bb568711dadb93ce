// /api/token_probs of the dashboard: the token-probability view's page data for a run directory (token_probs.jsonl
// through viz/token_probs.h's reader, with its resume rule; a line still being written is ignored), or null when the
// run has no token_probs.jsonl (trainer.viz.steps 0, or not scored yet).
#include <filesystem>

#include "levanter/viz/dashboard.h"
#include "levanter/viz/token_probs.h"

namespace levanter::viz {

nlohmann::json dashboard_token_probs(const std::string& run_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path file = fs::path(run_dir) / "token_probs.jsonl";
  if (!fs::exists(file, ec)) return nullptr;
  return read_page_data(file.string(), fs::path(run_dir).filename().string());
}

}  // namespace levanter::viz
