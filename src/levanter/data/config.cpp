#include "levanter/data/config.h"
#include "levanter/runtime/thread_pool.h"

#include <algorithm>
#include <cmath>

namespace levanter::data {

using config::ConfigError;
using config::Context;

void ShuffleConfig::parse_yaml(const YAML::Node& node, const Context& ctx) {
  if (!node.IsScalar()) config::fail(ctx, node, "expected true, false or an era length (an integer)");
  std::string s = node.Scalar();
  std::string l = s;
  std::transform(l.begin(), l.end(), l.begin(), ::tolower);
  if (l == "true" || l == "yes" || l == "on") {
    mode = ShuffleMode::kFull;
    era_length = 0;
    return;
  }
  if (l == "false" || l == "no" || l == "off" || l == "0") {
    mode = ShuffleMode::kNone;
    era_length = 0;
    return;
  }
  int64_t n = 0;
  config::parse_value(node, ctx, n);  // fails with "expected an integer, got ..."
  if (n < 0) config::fail(ctx, node, "an era length must be positive, got " + s);
  mode = ShuffleMode::kEra;
  era_length = n;
}

YAML::Node ShuffleConfig::to_yaml() const {
  if (mode == ShuffleMode::kEra) return YAML::Node(static_cast<long long>(era_length));
  return YAML::Node(mode == ShuffleMode::kFull);
}

static std::map<std::string, double> parse_weights(const YAML::Node& node, const Context& ctx) {
  if (!node.IsMap()) config::fail(ctx, node, "expected a mapping of source names to weights");
  std::map<std::string, double> out;
  config::parse_value(node, ctx, out);
  for (const auto& [name, w] : out) {
    if (!(w >= 0) || !std::isfinite(w)) config::fail(ctx.child(name), node[name], "a weight must be finite and >= 0");
  }
  return out;
}

void TrainWeights::parse_yaml(const YAML::Node& node, const Context& ctx) {
  stages.clear();
  if (node.IsNull() || ((node.IsMap() || node.IsSequence()) && node.size() == 0)) {  // {} or []: no weights
    schedule = false;
    return;
  }
  if (node.IsMap()) {
    schedule = false;
    stages.emplace_back(0, parse_weights(node, ctx));
    return;
  }
  if (!node.IsSequence())
    config::fail(ctx, node, "expected {name: weight} or a schedule [[step, {name: weight}], ...]");
  schedule = true;
  for (size_t i = 0; i < node.size(); ++i) {
    Context c = ctx.child(std::to_string(i));
    const YAML::Node& e = node[i];
    if (!e.IsSequence() || e.size() != 2) config::fail(c, e, "expected [step, {name: weight}]");
    int64_t step = 0;
    config::parse_value(e[0], c.child("0"), step);
    if (i == 0 && step != 0) config::fail(c, e[0], "the first stage of a weight schedule must start at step 0");
    if (i > 0 && step <= stages.back().first) config::fail(c, e[0], "the steps of a weight schedule must increase");
    stages.emplace_back(step, parse_weights(e[1], c.child("1")));
  }
}

YAML::Node TrainWeights::to_yaml() const {
  if (stages.empty()) return YAML::Node(YAML::NodeType::Null);
  if (!schedule && stages.size() == 1) return config::to_yaml_value(stages[0].second);
  YAML::Node n(YAML::NodeType::Sequence);
  for (const auto& [step, w] : stages) {
    YAML::Node pair(YAML::NodeType::Sequence);
    pair.push_back(config::to_yaml_value(step));
    pair.push_back(config::to_yaml_value(w));
    n.push_back(pair);
  }
  return n;
}

static void refuse_hub(const std::string& key, const std::string& id) {
  throw ConfigError(key + ": Hugging Face hub datasets ('" + id +
                    "') need network access, which levanter-cpp does not use. Download the data as JSON Lines "
                    "(.jsonl, .jsonl.gz or .jsonl.zst, one {\"text\": ...} per line) and list the files in " +
                    (key.rfind("data.configs.", 0) == 0 ? key.substr(0, key.size() - 3) + ".train_urls"
                                                        : std::string("data.train_urls")) +
                    " and validation_urls");
}

void DataConfig::validate() const {
  if (!id.empty()) refuse_hub("data.id", id);
  {
    const int hardware = runtime::hardware_threads();
    if (cache_options.num_threads < 0) throw ConfigError("data.cache_options.num_threads: must be >= 0 (0: all cores)");
    if (cache_options.num_threads > 4 * hardware) {
      throw ConfigError("data.cache_options.num_threads: " + std::to_string(cache_options.num_threads) +
                        " is more than 4x the " + std::to_string(hardware) +
                        " hardware threads of this machine; use at most " + std::to_string(hardware) +
                        " (0: all cores)");
    }
  }
  if (!name.empty())
    throw ConfigError(
        "data.name: a Hugging Face hub subset needs data.id, which is not supported; use data.train_urls");
  if (is_mixture()) {
    if (!train_urls.empty() || !validation_urls.empty()) {
      throw ConfigError(
          "data: use either train_urls/validation_urls (one source) or configs (a mixture of named sources), not both");
    }
    for (const auto& [src, c] : configs) {
      if (!c.id.empty()) refuse_hub("data.configs." + src + ".id", c.id);
      if (!c.name.empty())
        throw ConfigError("data.configs." + src + ".name: hub subsets are not supported; use train_urls");
    }
    if (train_weights.empty())
      throw ConfigError("data.train_weights: a mixture (data.configs) needs weights, e.g. {" + configs.begin()->first +
                        ": 1.0}");
    for (const auto& [step, weights] : train_weights.stages) {
      double sum = 0;
      for (const auto& [src, w] : weights) {
        if (!configs.count(src)) {
          std::vector<std::string> names;
          for (const auto& kv : configs) names.push_back(kv.first);
          std::string near = config::nearest(src, names);
          throw ConfigError("data.train_weights: '" + src + "' is not a source under data.configs" +
                            (near.empty() ? std::string() : "; did you mean '" + near + "'?"));
        }
        sum += w;
      }
      if (sum <= 0)
        throw ConfigError("data.train_weights: the weights at step " + std::to_string(step) + " are all zero");
    }
  } else {
    if (!train_weights.empty())
      throw ConfigError("data.train_weights: weights need a mixture of named sources (data.configs)");
  }
  if (mixture_block_size <= 0)
    throw ConfigError("data.mixture_block_size: must be positive, got " + std::to_string(mixture_block_size));
  if (stop_strategy != "restart") {
    throw ConfigError("data.stop_strategy: '" + stop_strategy +
                      "' is not supported; the only strategy is 'restart' (as in Levanter)");
  }
  if (permutation_type != "feistel") {
    throw ConfigError("data.permutation_type: '" + permutation_type + "' is not supported; use feistel");
  }
  if (cache_options.chunk_documents <= 0) throw ConfigError("data.cache_options.chunk_documents: must be positive");
  if (cache_options.max_document_bytes <= 0)
    throw ConfigError("data.cache_options.max_document_bytes: must be positive");
  if (cache_dir.empty()) throw ConfigError("data.cache_dir: must be set");
}

}  // namespace levanter::data
