// The `data:` section of a config, with Levanter's keys.
//
// One source:                              A mixture of named sources:
//   data:                                    data:
//     train_urls: [corpus/*.jsonl.gz]          cache_dir: cache/
//     validation_urls: [val.jsonl.gz]          configs:
//     cache_dir: cache/                          kjv: {train_urls: [kjv/train.jsonl.gz], validation_urls: [...]}
//     tokenizer: gpt2                            austen: {train_urls: [austen/train.jsonl.gz]}
//     shuffle: true                            train_weights: {kjv: 0.3, austen: 0.7}
//                                              # or a schedule: [[0, {kjv: 1.0}], [1000, {kjv: 0.5, austen: 0.5}]]
//
// Every key, its default and meaning: docs/data.md (and `levanter config-doc`).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "levanter/config/config.h"
#include "levanter/data/dataset.h"

namespace levanter::data {

// `shuffle: false` (sequential), `true` (a full permutation per epoch), or an integer era length.
struct ShuffleConfig {
  ShuffleMode mode = ShuffleMode::kNone;
  int64_t era_length = 0;
  void parse_yaml(const YAML::Node& node, const config::Context& ctx);
  YAML::Node to_yaml() const;
};

// `train_weights: {name: weight}` or Levanter's schedule `[[step, {name: weight}], ...]` (steps are training
// steps; the first must be 0).
struct TrainWeights {
  std::vector<std::pair<int64_t, std::map<std::string, double>>> stages;
  bool schedule = false;  // written as a list (kept for dumping)
  bool empty() const { return stages.empty(); }
  void parse_yaml(const YAML::Node& node, const config::Context& ctx);
  YAML::Node to_yaml() const;
};

// One named source of a mixture (`configs: {name: {...}}`).
struct DataSourceConfig {
  std::vector<std::string> train_urls;
  std::vector<std::string> validation_urls;
  std::optional<std::string> cache_dir;  // default: <data.cache_dir>/<name>
  std::optional<std::string> text_key;   // default: data.text_key
  std::vector<std::string> tags;
  std::string id;  // Hugging Face hub: refused (no network)
  std::string name;

  template <typename V>
  void fields(V& v) {
    v("train_urls", train_urls, "Training files: local paths with globs (*, ?, **) and braces ({a,b}, {1..8})");
    v("validation_urls", validation_urls, "Validation files (a validation set named after this source)");
    v("cache_dir", cache_dir, "Cache directory of this source (default: <data.cache_dir>/<name>)");
    v("text_key", text_key, "JSON field holding the text (default: data.text_key)");
    v("tags", tags, "Tags for this source's metrics");
    v("id", id, "Hugging Face hub dataset id: not supported (no network); use train_urls");
    v("name", name, "Hugging Face hub dataset subset: not supported (no network)");
    v.rejected("stream", "Hugging Face streaming; hub datasets are not supported");
    v.rejected("format", "only the text format (data.text_key) is supported");
  }
};

// Cache construction (Levanter's cache_options, plus what is ours).
struct CacheOptionsConfig {
  int num_threads = 0;
  int64_t chunk_documents = 1024;
  int64_t max_document_bytes = 64 << 20;
  template <typename V>
  void fields(V& v) {
    v("num_threads", num_threads, "Threads that tokenize (0: all hardware threads)");
    v("chunk_documents", chunk_documents, "Documents per committed chunk; part of what the cache's bytes depend on");
    v("max_document_bytes", max_document_bytes,
      "Longest document read (a JSONL line, a whole .txt file): a longer one is an error naming file and line");
    v.ignored("num_shard_groups", "Ray shard groups; this build has one shard per input file");
    v.ignored("target_size_per_flush", "this build commits every chunk_documents documents");
    v.ignored("batch_size", "this build commits every chunk_documents documents");
  }
};

struct DataConfig {
  // One source (Levanter's UrlSingleDatasetLMConfig)...
  std::vector<std::string> train_urls;
  std::vector<std::string> validation_urls;
  std::string id;  // Hugging Face hub: refused with an explanation
  std::string name;
  // ...or a mixture (LMMixtureDatasetConfig).
  std::map<std::string, DataSourceConfig> configs;
  TrainWeights train_weights;
  int64_t mixture_block_size = 2048;
  std::string stop_strategy = "restart";

  std::string cache_dir = "cache/";
  std::string tokenizer = "gpt2";
  std::string text_key = "text";
  bool enforce_eos = true;
  bool enforce_bos = false;
  ShuffleConfig shuffle;
  std::string permutation_type = "feistel";
  std::vector<std::string> tags;
  bool rebuild_cache = false;
  bool skip_bad_lines = false;
  CacheOptionsConfig cache_options;

  template <typename V>
  void fields(V& v) {
    v("train_urls", train_urls, "Training files: local paths with globs (*, ?, **) and braces ({a,b}, {1..8})");
    v("validation_urls", validation_urls, "Validation files (one validation set, named \"\")");
    v("id", id, "Hugging Face hub dataset id: not supported (no network); use train_urls");
    v("name", name, "Hugging Face hub dataset subset: not supported (no network)");
    v("configs", configs, "A mixture: named sources, each with train_urls, validation_urls, cache_dir, text_key");
    v("train_weights", train_weights, "Mixture weights {name: w}, or a schedule [[step, {name: w}], ...]");
    v("mixture_block_size", mixture_block_size, "Sequences per mixture block (exact proportions per block)");
    v("stop_strategy", stop_strategy, "What a mixture does when a source runs out: restart (the only one)");
    v("cache_dir", cache_dir, "Where token caches live: <cache_dir>/<split> or <cache_dir>/<name>/<split>");
    v("tokenizer", tokenizer, "gpt2 (the bundled data/gpt2/tokenizer.json) or a path to a tokenizer.json");
    v("text_key", text_key, "JSON field holding the document text");
    v("enforce_eos", enforce_eos, "Append the tokenizer's EOS id to every document");
    v("enforce_bos", enforce_bos, "Prepend the tokenizer's BOS id to every document");
    v("shuffle", shuffle, "false, true (full permutation per epoch) or an era length (permute within eras)");
    v("permutation_type", permutation_type, "feistel (the only one)");
    v("tags", tags, "Tags for metrics");
    v("rebuild_cache", rebuild_cache, "Rebuild a cache made with another tokenizer, settings or input files");
    v("skip_bad_lines", skip_bad_lines, "Skip (and count) malformed input lines instead of failing");
    v("cache_options", cache_options, "How caches are built");
    v.rejected("vocab_size", "the vocabulary size comes from the tokenizer");
    v.rejected("ignore_token_id", "loss masking is the trainer's");
    v.rejected("chat_template", "only the text format is supported");
    v.rejected("stream", "Hugging Face streaming; hub datasets are not supported");
    v.rejected("max_train_batches", "not supported");
    v.rejected("num_validation_sequences", "not supported");
    v.rejected("target_budget", "simulated epoching is not supported");
    v.rejected("experiment_budget", "simulated epoching is not supported");
  }

  bool is_mixture() const { return !configs.empty(); }
  // Cross-field checks (a hub id, a mixture without weights, ...); ConfigError "data.<key>: why; what to do".
  void validate() const;
};

}  // namespace levanter::data
