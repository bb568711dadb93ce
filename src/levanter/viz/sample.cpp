#include "levanter/viz/sample.h"

#include <algorithm>

#include "levanter/config/config.h"
#include "levanter/data/permutation.h"
#include "levanter/data/text.h"

namespace levanter::viz {

namespace {
constexpr uint64_t kVizSampleKey = 0x76697a;  // "viz": the sample's branch of the run's seed
}

std::optional<Sample> validation_sample(data::TextData& data, const VizConfig& config, uint64_t seed, int64_t max_len) {
  std::vector<std::string> sets;
  for (const std::string& name : data.source_names()) {
    if (!data.urls(name, data::Split::kValidation).empty()) sets.push_back(name);
  }
  if (sets.empty()) return std::nullopt;
  std::string set = sets.front();
  if (config.dataset) {
    if (std::find(sets.begin(), sets.end(), *config.dataset) == sets.end()) {
      std::string have;
      for (const auto& s : sets) have += (have.empty() ? "" : ", ") + (s.empty() ? std::string("\"\"") : s);
      throw config::ConfigError("trainer.viz.dataset: no validation set named '" + *config.dataset +
                                "' (the validation sets: " + have + ")");
    }
    set = *config.dataset;
  }
  auto cache = data.cache(set, data::Split::kValidation);
  const int64_t rows = cache->total_rows();
  Sample out;
  out.source = set.empty() ? "validation" : set;
  const int64_t keep = std::max<int64_t>(2, std::min(config.max_tokens, max_len));
  if (rows == 0) return out;
  data::FeistelPermutation perm(rows, data::derive_key(seed, {kVizSampleKey}));
  for (int64_t i = 0; i < rows && static_cast<int64_t>(out.docs.size()) < config.num_docs; ++i) {
    const int64_t row = perm(i);
    auto [begin, end] = cache->document(row);
    const int64_t n = std::min(end - begin, keep);
    if (n < 2) continue;
    SampleDoc d;
    d.index = row;
    d.tokens.resize(static_cast<size_t>(n));
    cache->read_tokens(begin, n, d.tokens.data());
    out.docs.push_back(std::move(d));
  }
  return out;
}

}  // namespace levanter::viz
