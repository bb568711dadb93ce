// The data pipeline from a `data:` config to what the trainer consumes (Levanter's data/text.py).
//
//   TextData data(cfg.data);                                  // loads the tokenizer, validates the config
//   auto train = data.train_set(seq_len, seed, batch_size);   // starts building the train caches in the
//                                                             // background; reads block only as needed
//   LoaderOptions opts;  opts.batch_size = batch_size;  opts.start_step = step;
//   DataLoader loader(train, opts);
//   TokenBatch b = loader.next();                             // b.tokens: batch_size x seq_len, row-major
//   for (auto& [name, ds] : data.validation_sets(seq_len)) {  // "" for a single source, else source names
//     EvalBatches eval(ds, batch_size, max_eval_batches);     // metrics: eval/loss, eval/<name>/loss
//     ...
//   }
//
// Cache directories: one source: <cache_dir>/train and <cache_dir>/validation; a mixture: <dir>/<split>
// where <dir> is configs.<name>.cache_dir or <cache_dir>/<name>.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "levanter/data/cache/builder.h"
#include "levanter/data/config.h"
#include "levanter/data/dataset.h"
#include "levanter/data/loader.h"

namespace levanter::data {

enum class Split { kTrain, kValidation };
const char* split_name(Split split);

// The tokenizer.json that `data.tokenizer` names: a path (to the file or a directory holding it), or a
// bundled name ("gpt2" -> data/gpt2/tokenizer.json, found under $LEVANTER_DATA_DIR, then beside the
// executable's directory or the working directory and their parents). DataError if there is none.
std::string resolve_tokenizer_path(const std::string& name);

class Tokenizer;

// The encoder of a config: its tokenizer plus the BOS/EOS policy (data.enforce_bos / enforce_eos). The
// loaded tokenizer is also returned through `tokenizer` when given.
DocumentEncoder make_document_encoder(const DataConfig& config, std::shared_ptr<const Tokenizer>* tokenizer = nullptr);

class TextData {
 public:
  // Validates the config (ConfigError) and loads the tokenizer. `encoder` replaces the tokenizer (tests,
  // other tokenizers); its Processing is recorded in the caches as given.
  explicit TextData(DataConfig config, std::optional<DocumentEncoder> encoder = std::nullopt);
  const DataConfig& config() const { return config_; }
  const DocumentEncoder& encoder() const { return encoder_; }
  std::optional<int32_t> eos_id() const { return encoder_.processing.eos_id; }
  // The configured tokenizer (null when an encoder was given instead): vocab_size() sizes the model's
  // embedding, decode() shows text.
  const std::shared_ptr<const Tokenizer>& tokenizer() const { return tokenizer_; }
  // The tokenizer's vocabulary size (0 without one): every cache read checks its token ids against it,
  // unless build_options().vocab_size says otherwise.
  int64_t vocab_size() const;

  // "" for a single-source config, else the mixture's source names (sorted).
  std::vector<std::string> source_names() const;
  std::vector<std::string> urls(const std::string& source, Split split) const;
  std::string cache_dir(const std::string& source, Split split) const;
  // The cache of one source and split, built or resumed in the background the first time it is asked for
  // (build options from the config, overridable). DataError if the source has no files for that split.
  std::shared_ptr<TokenCache> cache(const std::string& source, Split split);
  void set_build_options(const CacheBuildOptions& options) { build_options_ = options; }
  const CacheBuildOptions& build_options() const { return build_options_; }
  // The training caches are built by the `processes` processes of a job together (CacheBuildOptions::rank,
  // processes, all_gather; every process must then call train_set the same way); validation caches are built as
  // usual (one process builds, the others read as it goes).
  void set_joint_train_build(int rank, int processes,
                             std::function<std::vector<std::string>(const std::string&)> all_gather) {
    joint_rank_ = rank;
    joint_processes_ = processes;
    joint_all_gather_ = std::move(all_gather);
  }

  // The training set: packed sequences of `seq_len` tokens, shuffled per data.shuffle (keyed by `seed`)
  // and, for a mixture, mixed per data.train_weights (schedule steps are converted to sequence indices
  // with `batch_size`). Infinite: epochs repeat with a new permutation. Index it with batch_at / DataLoader.
  std::shared_ptr<SequenceDataset> train_set(int64_t seq_len, uint64_t seed, int64_t batch_size);
  // Validation sets by name, unshuffled and finite. Waits for their caches to be complete.
  std::map<std::string, std::shared_ptr<TokenSeqDataset>> validation_sets(int64_t seq_len);

 private:
  DataConfig config_;
  DocumentEncoder encoder_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  CacheBuildOptions build_options_;
  int joint_rank_ = 0, joint_processes_ = 1;
  std::function<std::vector<std::string>(const std::string&)> joint_all_gather_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<TokenCache>> caches_;  // by directory
};

}  // namespace levanter::data
