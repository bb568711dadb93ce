// /api/token_probs of the dashboard: the token-probability view's page data for a run directory.
//
// A stub until the view's reader lands (the token-probability view, docs/visualization.md): null when the run has
// no token_probs.jsonl, and null too while there is no reader to turn it into page data. Merging the view
// replaces the body with its reader, e.g. `return read_token_probs_page(run_dir);` (null when the file is absent).
#include <filesystem>

#include "levanter/viz/dashboard.h"

namespace levanter::viz {

nlohmann::json dashboard_token_probs(const std::string& run_dir) {
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::path(run_dir) / "token_probs.jsonl", ec)) return nullptr;
  return nullptr;  // no reader yet
}

}  // namespace levanter::viz
