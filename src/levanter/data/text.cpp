#include "levanter/data/text.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "levanter/data/permutation.h"
#include "levanter/data/tokenizer/tokenizer.h"

namespace levanter::data {

namespace fs = std::filesystem;

const char* split_name(Split split) { return split == Split::kTrain ? "train" : "validation"; }

namespace {

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// Directories to look for the bundled data/ in: the executable's directory, the working directory, and
// their parents (a build directory sits inside the checkout).
std::vector<fs::path> search_roots() {
  std::vector<fs::path> roots;
  if (const char* env = std::getenv("LEVANTER_DATA_DIR"))
    roots.emplace_back(fs::path(env) / "..");  // env names data/ itself
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  for (fs::path start : {ec ? fs::path() : exe.parent_path(), fs::current_path(ec)}) {
    for (fs::path p = start; !p.empty(); p = p.parent_path()) {
      roots.push_back(p);
      if (p == p.parent_path()) break;
    }
  }
  return roots;
}

}  // namespace

std::string resolve_tokenizer_path(const std::string& name) {
  if (name.empty()) throw DataError("data.tokenizer: empty; use gpt2 or a path to a tokenizer.json");
  if (is_file(name)) return name;
  if (is_file(fs::path(name) / "tokenizer.json")) return (fs::path(name) / "tokenizer.json").string();
  bool looks_like_path =
      name.find('/') != std::string::npos || (name.size() > 5 && name.substr(name.size() - 5) == ".json");
  if (looks_like_path) {
    std::error_code ec;
    if (fs::is_directory(name, ec)) {
      throw DataError("data.tokenizer: " + name + ": a directory without a tokenizer.json");
    }
    if (fs::exists(name, ec)) {
      throw DataError("data.tokenizer: " + name + ": not a regular file (give a tokenizer.json)");
    }
    throw DataError("data.tokenizer: " + name + ": not found (give the path of a tokenizer.json, or gpt2)");
  }
  {
    if (const char* env = std::getenv("LEVANTER_DATA_DIR")) {
      fs::path p = fs::path(env) / name / "tokenizer.json";
      if (is_file(p)) return p.string();
    }
    for (const fs::path& root : search_roots()) {
      fs::path p = root / "data" / name / "tokenizer.json";
      if (is_file(p)) return p.string();
    }
  }
  throw DataError(
      "data.tokenizer: '" + name + "' is neither a tokenizer.json file nor a bundled tokenizer (data/" + name +
      "/tokenizer.json was not found beside the executable, in the working directory or in $LEVANTER_DATA_DIR). "
      "Hugging Face hub names need network access, which levanter-cpp does not use: download the "
      "model's tokenizer.json and give its path");
}

DocumentEncoder make_document_encoder(const DataConfig& config, std::shared_ptr<const Tokenizer>* tokenizer) {
  std::string path = resolve_tokenizer_path(config.tokenizer);
  auto tok = std::make_shared<const Tokenizer>(Tokenizer::from_file(path));
  if (tokenizer) *tokenizer = tok;
  DocumentEncoder enc;
  enc.processing.tokenizer = config.tokenizer;
  enc.processing.tokenizer_fingerprint = tok->fingerprint();
  enc.processing.text_key = config.text_key;
  // As Levanter: a policy the tokenizer cannot follow (no such token) is dropped.
  if (config.enforce_bos) enc.processing.bos_id = tok->bos_id();
  if (config.enforce_eos) enc.processing.eos_id = tok->eos_id();
  enc.encode = [tok](std::string_view text, std::vector<int32_t>& out) { tok->encode_into(text, out); };
  return enc;
}

TextData::TextData(DataConfig config, std::optional<DocumentEncoder> encoder) : config_(std::move(config)) {
  config_.validate();
  encoder_ = encoder ? std::move(*encoder) : make_document_encoder(config_, &tokenizer_);
  build_options_.num_threads = config_.cache_options.num_threads;
  build_options_.chunk_documents = config_.cache_options.chunk_documents;
  build_options_.skip_bad_lines = config_.skip_bad_lines;
  build_options_.max_document_bytes = config_.cache_options.max_document_bytes;
  build_options_.rebuild = config_.rebuild_cache;
}

int64_t TextData::vocab_size() const { return tokenizer_ ? static_cast<int64_t>(tokenizer_->vocab_size()) : 0; }

std::vector<std::string> TextData::source_names() const {
  if (!config_.is_mixture()) return {""};
  std::vector<std::string> names;
  for (const auto& kv : config_.configs) names.push_back(kv.first);
  return names;
}

static const DataSourceConfig& source_config(const DataConfig& c, const std::string& source) {
  auto it = c.configs.find(source);
  if (it == c.configs.end()) throw std::invalid_argument("no data source named '" + source + "' under data.configs");
  return it->second;
}

std::vector<std::string> TextData::urls(const std::string& source, Split split) const {
  if (!config_.is_mixture()) {
    if (!source.empty()) throw std::invalid_argument("a single-source data config has only the source \"\"");
    return split == Split::kTrain ? config_.train_urls : config_.validation_urls;
  }
  const DataSourceConfig& s = source_config(config_, source);
  return split == Split::kTrain ? s.train_urls : s.validation_urls;
}

std::string TextData::cache_dir(const std::string& source, Split split) const {
  fs::path base = config_.cache_dir;
  if (config_.is_mixture()) {
    const DataSourceConfig& s = source_config(config_, source);
    base = s.cache_dir ? fs::path(*s.cache_dir) : base / source;
  }
  return (base / split_name(split)).lexically_normal().string();
}

std::shared_ptr<TokenCache> TextData::cache(const std::string& source, Split split) {
  std::string dir = cache_dir(source, split);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = caches_.find(dir);
  if (it != caches_.end()) return it->second;

  DocumentEncoder enc = encoder_;
  if (config_.is_mixture()) {
    const DataSourceConfig& s = source_config(config_, source);
    if (s.text_key) enc.processing.text_key = *s.text_key;
  }
  std::vector<std::string> patterns = urls(source, split);
  std::string what =
      (source.empty() ? std::string("data.") : "data.configs." + source + ".") + split_name(split) + "_urls";
  if (patterns.empty()) throw DataError(what + ": no files configured");
  std::vector<std::string> files;
  try {
    files = expand_urls(patterns);
  } catch (const DataError& e) {
    // The inputs are gone, but a complete cache made from them with this processing can still be used.
    std::optional<CacheManifest> m;
    try {
      m = read_manifest(dir);
    } catch (const DataError&) {
    }
    if (!m || !m->finished || m->format_version != kCacheFormatVersion || !(m->processing == enc.processing)) {
      throw DataError(what + ": " + e.what());
    }
    std::cerr << "warning: " << e.what() << "; using the complete cache in " << dir << "\n";
    CacheReadOptions read;
    read.vocab_size = vocab_size();
    auto cache = TokenCache::open(dir, enc.processing, read);
    caches_[dir] = cache;
    return cache;
  }
  CacheBuildOptions options = build_options_;
  if (options.vocab_size == 0) options.vocab_size = vocab_size();  // readers check ids against the model's vocab
  if (split == Split::kTrain && joint_processes_ > 1) {
    options.rank = joint_rank_;
    options.processes = joint_processes_;
    options.all_gather = joint_all_gather_;
  }
  auto cache = build_or_load_cache(dir, files, enc, options);
  caches_[dir] = cache;
  return cache;
}

std::shared_ptr<SequenceDataset> TextData::train_set(int64_t seq_len, uint64_t seed, int64_t batch_size) {
  if (batch_size <= 0) throw std::invalid_argument("train_set: batch_size must be positive");
  auto shuffled = [&](const std::string& source, uint64_t key) -> std::shared_ptr<SequenceDataset> {
    auto base = std::make_shared<TokenSeqDataset>(cache(source, Split::kTrain), seq_len);
    return std::make_shared<ShuffledDataset>(base, config_.shuffle.mode, key, config_.shuffle.era_length);
  };
  if (!config_.is_mixture()) return shuffled("", seed);

  // Sources with weight somewhere in the schedule; each shuffled with its own key (as Levanter does).
  std::vector<std::pair<std::string, std::shared_ptr<SequenceDataset>>> datasets;
  std::vector<std::string> names = source_names();
  for (size_t i = 0; i < names.size(); ++i) {
    bool used = false;
    for (const auto& [step, w] : config_.train_weights.stages) {
      auto it = w.find(names[i]);
      used |= it != w.end() && it->second > 0;
    }
    if (!used) continue;
    datasets.emplace_back(names[i], shuffled(names[i], derive_key(seed, {0x736f75726365ull /* "source" */, i})));
  }
  std::vector<MixtureStage> stages;
  for (const auto& [step, w] : config_.train_weights.stages) {
    MixtureStage st;
    st.start = step * batch_size;
    for (const auto& [name, weight] : w) {
      if (weight > 0) st.weights[name] = weight;
    }
    stages.push_back(st);
  }
  try {
    return std::make_shared<MixtureDataset>(datasets, stages, config_.mixture_block_size,
                                            derive_key(seed, {0x6d6978ull /* "mix" */}));
  } catch (const std::invalid_argument& e) {
    throw config::ConfigError(std::string("data.train_weights: ") + e.what());
  }
}

std::map<std::string, std::shared_ptr<TokenSeqDataset>> TextData::validation_sets(int64_t seq_len) {
  std::map<std::string, std::shared_ptr<TokenSeqDataset>> out;
  std::vector<std::pair<std::string, std::shared_ptr<TokenCache>>> caches;
  for (const std::string& name : source_names()) {
    if (urls(name, Split::kValidation).empty()) continue;
    caches.emplace_back(name, cache(name, Split::kValidation));  // all start building before we wait
  }
  for (auto& [name, c] : caches) {
    c->wait_finished();
    out[name] = std::make_shared<TokenSeqDataset>(c, seq_len);
  }
  return out;
}

}  // namespace levanter::data
