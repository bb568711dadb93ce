// Datasets of fixed-length token sequences, random access by index.
//
//   TokenSeqDataset    the cache's token stream cut into sequences: sequence i = tokens [i*L, (i+1)*L).
//                      Documents (each ending with EOS) lie back to back; the partial tail is dropped.
//                      Finite; grows while the cache is being built.
//   ShuffledDataset    an infinite view of a finite dataset, in epochs: index j of epoch e = j / n reads
//                      base[perm_e(j mod n)]. The order is one of
//                        kNone  the identity (sequential), every epoch;
//                        kFull  a Feistel permutation of [0, n) keyed by (seed, epoch). Needs the final n, so
//                               the first read waits until the cache is complete;
//                        kEra   eras of `era_length` sequences, each permuted within itself, keyed by
//                               (seed, epoch, era). Needs only the era's sequences to exist, so it works
//                               while the cache is still growing; the last era of an epoch may be shorter.
//   MixtureDataset     draws from named datasets in blocks of `block_size` sequences: within each block the
//                      number from each dataset is fixed (largest-remainder rounding of weight*block_size),
//                      so proportions hold exactly per block, and their order is a keyed permutation of the
//                      block. Weights may change at block-aligned sequence indices (a schedule).
//
// Every index maps to data by a pure function of (seed, index): a loader can start at any step with no
// iterator state, and the same step always gives the same batch.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "levanter/data/cache/token_cache.h"

namespace levanter::data {

class SequenceDataset {
 public:
  virtual ~SequenceDataset() = default;
  virtual int64_t seq_len() const = 0;
  // Copies sequence `index` (seq_len tokens) to `out`, waiting until it exists. std::out_of_range past the
  // end of a finite dataset.
  virtual void read(int64_t index, int32_t* out) = 0;
  // Sequences `indices[0..n)` to consecutive rows of `out`.
  virtual void read_batch(const int64_t* indices, int64_t n, int32_t* out);
  // nullopt for an infinite dataset. A finite one waits until its length is final.
  virtual std::optional<int64_t> length() = 0;
  // Sequences that can be read now without waiting (finite datasets), or nullopt (infinite).
  virtual std::optional<int64_t> available() = 0;
};

class TokenSeqDataset : public SequenceDataset {
 public:
  TokenSeqDataset(std::shared_ptr<TokenCache> cache, int64_t seq_len);
  int64_t seq_len() const override { return seq_len_; }
  void read(int64_t index, int32_t* out) override;
  std::optional<int64_t> length() override;
  std::optional<int64_t> available() override;
  // Waits until `n` sequences exist or the cache is complete; returns the number that exist then.
  int64_t wait_for(int64_t n);
  bool final_length_known() const { return cache_->finished(); }
  const std::shared_ptr<TokenCache>& cache() const { return cache_; }

 private:
  std::shared_ptr<TokenCache> cache_;
  int64_t seq_len_;
};

enum class ShuffleMode { kNone, kFull, kEra };

class ShuffledDataset : public SequenceDataset {
 public:
  // era_length is used by kEra only. The dataset is infinite (epochs); `max_epochs` > 0 makes it finite.
  ShuffledDataset(std::shared_ptr<TokenSeqDataset> base, ShuffleMode mode, uint64_t seed, int64_t era_length = 0,
                  int64_t max_epochs = 0);
  int64_t seq_len() const override { return base_->seq_len(); }
  void read(int64_t index, int32_t* out) override;
  std::optional<int64_t> length() override;
  std::optional<int64_t> available() override;
  // The base index that `index` reads (waits as read() does).
  int64_t base_index(int64_t index);

 private:
  std::shared_ptr<TokenSeqDataset> base_;
  ShuffleMode mode_;
  uint64_t seed_;
  int64_t era_length_;
  int64_t max_epochs_;
};

// Weights from a sequence index on: {start_index, {name: weight}}. Weights need not sum to 1.
struct MixtureStage {
  int64_t start = 0;
  std::map<std::string, double> weights;
};

class MixtureDataset : public SequenceDataset {
 public:
  // `datasets` should be infinite (ShuffledDataset): the mixture asks each for ever larger indices. Stage
  // starts must be increasing multiples of block_size, the first 0; std::invalid_argument otherwise, and for
  // negative weights, all-zero weights, or a weighted name with no dataset.
  MixtureDataset(std::vector<std::pair<std::string, std::shared_ptr<SequenceDataset>>> datasets,
                 std::vector<MixtureStage> stages, int64_t block_size, uint64_t seed);
  int64_t seq_len() const override { return seq_len_; }
  void read(int64_t index, int32_t* out) override;
  void read_batch(const int64_t* indices, int64_t n, int32_t* out) override;
  std::optional<int64_t> length() override { return std::nullopt; }
  std::optional<int64_t> available() override { return std::nullopt; }

  // Which dataset (by position in `datasets`) and which of its indices mixture index `index` reads.
  std::pair<size_t, int64_t> locate(int64_t index) const;
  // Sequences of each dataset per block in stage `stage` (they sum to block_size).
  const std::vector<int64_t>& counts_per_block(size_t stage) const { return counts_[stage]; }

  // Largest-remainder rounding: integers summing to `total`, proportional to `weights` (normalised).
  // Ties go to the earlier entry.
  static std::vector<int64_t> apportion(const std::vector<double>& weights, int64_t total);

 private:
  std::vector<std::pair<std::string, std::shared_ptr<SequenceDataset>>> datasets_;
  std::vector<int64_t> stage_start_;                // sequence index where each stage starts
  std::vector<std::vector<int64_t>> counts_;        // [stage][dataset] per block
  std::vector<std::vector<int64_t>> before_stage_;  // [stage][dataset]: sequences drawn before the stage
  int64_t block_size_;
  uint64_t seed_;
  int64_t seq_len_;
};

}  // namespace levanter::data
