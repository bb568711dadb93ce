#include "levanter/viz/assets.h"

#include <stdexcept>
#include <utility>

namespace levanter::viz {
namespace {

const std::pair<std::string_view, std::string_view> kAssets[] = {
#include "levanter/viz/assets.inc"
};

}  // namespace

std::string_view asset(std::string_view name) {
  for (const auto& [n, text] : kAssets) {
    if (n == name) return text;
  }
  std::string have;
  for (const auto& [n, text] : kAssets) have += (have.empty() ? "" : ", ") + std::string(n);
  throw std::out_of_range("no embedded asset '" + std::string(name) + "' (src/levanter/viz/assets/ has " + have + ")");
}

std::vector<std::string> asset_names() {
  std::vector<std::string> names;
  for (const auto& [n, text] : kAssets) names.emplace_back(n);
  return names;
}

}  // namespace levanter::viz
