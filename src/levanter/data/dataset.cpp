#include "levanter/data/dataset.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include "levanter/data/permutation.h"

namespace levanter::data {

namespace {
// Separate key streams for separate uses of the seed.
constexpr uint64_t kStreamFull = 1, kStreamEra = 2, kStreamMixture = 3;
}  // namespace

void SequenceDataset::read_batch(const int64_t* indices, int64_t n, int32_t* out) {
  const int64_t L = seq_len();
  for (int64_t i = 0; i < n; ++i) read(indices[i], out + i * L);
}

// --- TokenSeqDataset ---------------------------------------------------------------------------------------

TokenSeqDataset::TokenSeqDataset(std::shared_ptr<TokenCache> cache, int64_t seq_len)
    : cache_(std::move(cache)), seq_len_(seq_len) {
  if (seq_len <= 0)
    throw std::invalid_argument("TokenSeqDataset: seq_len must be positive, got " + std::to_string(seq_len));
}

void TokenSeqDataset::read(int64_t index, int32_t* out) {
  if (index < 0) throw std::out_of_range("TokenSeqDataset: negative index " + std::to_string(index));
  if (cache_->tokens_available() < (index + 1) * seq_len_ &&
      cache_->wait_for_tokens((index + 1) * seq_len_) < (index + 1) * seq_len_) {
    throw std::out_of_range(cache_->dir() + ": sequence " + std::to_string(index) + " lies past the end (" +
                            std::to_string(cache_->total_tokens() / seq_len_) + " sequences of " +
                            std::to_string(seq_len_) + " tokens)");
  }
  cache_->read_tokens(index * seq_len_, seq_len_, out);
}

std::optional<int64_t> TokenSeqDataset::length() { return cache_->total_tokens() / seq_len_; }

std::optional<int64_t> TokenSeqDataset::available() { return cache_->tokens_available() / seq_len_; }

int64_t TokenSeqDataset::wait_for(int64_t n) { return cache_->wait_for_tokens(n * seq_len_) / seq_len_; }

// --- ShuffledDataset ---------------------------------------------------------------------------------------

ShuffledDataset::ShuffledDataset(std::shared_ptr<TokenSeqDataset> base, ShuffleMode mode, uint64_t seed,
                                 int64_t era_length, int64_t max_epochs)
    : base_(std::move(base)), mode_(mode), seed_(seed), era_length_(era_length), max_epochs_(max_epochs) {
  if (mode == ShuffleMode::kEra && era_length <= 0) {
    throw std::invalid_argument("ShuffledDataset: era shuffling needs a positive era length, got " +
                                std::to_string(era_length));
  }
}

static int64_t nonempty(int64_t n, const std::shared_ptr<TokenSeqDataset>& base) {
  if (n <= 0) {
    throw std::out_of_range(base->cache()->dir() + ": the dataset has no complete sequence of " +
                            std::to_string(base->seq_len()) + " tokens (" +
                            std::to_string(base->cache()->total_tokens()) + " tokens in all)");
  }
  return n;
}

int64_t ShuffledDataset::base_index(int64_t j) {
  if (j < 0) throw std::out_of_range("ShuffledDataset: negative index " + std::to_string(j));
  if (max_epochs_ > 0) {
    int64_t n = *base_->length();
    if (j >= max_epochs_ * n) {
      throw std::out_of_range("index " + std::to_string(j) + " is past the last of " + std::to_string(max_epochs_) +
                              " epochs of " + std::to_string(n) + " sequences");
    }
  }
  switch (mode_) {
    case ShuffleMode::kNone: {
      if (j < *base_->available() || j < base_->wait_for(j + 1)) return j;
      int64_t n = nonempty(*base_->length(), base_);
      return j % n;
    }
    case ShuffleMode::kFull: {
      int64_t n = nonempty(*base_->length(), base_);
      int64_t epoch = j / n;
      FeistelPermutation perm(n, derive_key(seed_, {kStreamFull, static_cast<uint64_t>(epoch)}));
      return perm(j % n);
    }
    case ShuffleMode::kEra: {
      const int64_t E = era_length_;
      // A whole era of the first epoch can be permuted as soon as it exists, final length or not; the
      // branch below gives the same answer for it, so the order does not depend on timing.
      int64_t era = j / E, need = (era + 1) * E;
      if (need <= *base_->available() || need <= base_->wait_for(need)) {
        FeistelPermutation perm(E, derive_key(seed_, {kStreamEra, 0, static_cast<uint64_t>(era)}));
        return era * E + perm(j - era * E);
      }
      int64_t n = nonempty(*base_->length(), base_);
      int64_t epoch = j / n, p = j % n;
      era = p / E;
      int64_t size = std::min(E, n - era * E);
      FeistelPermutation perm(
          size, derive_key(seed_, {kStreamEra, static_cast<uint64_t>(epoch), static_cast<uint64_t>(era)}));
      return era * E + perm(p - era * E);
    }
  }
  throw std::logic_error("ShuffledDataset: unknown mode");
}

void ShuffledDataset::read(int64_t index, int32_t* out) { base_->read(base_index(index), out); }

std::optional<int64_t> ShuffledDataset::length() {
  if (max_epochs_ <= 0) return std::nullopt;
  return max_epochs_ * *base_->length();
}

std::optional<int64_t> ShuffledDataset::available() {
  if (max_epochs_ <= 0) return std::nullopt;
  if (!base_->final_length_known()) return 0;
  return max_epochs_ * *base_->length();
}

// --- MixtureDataset ----------------------------------------------------------------------------------------

std::vector<int64_t> MixtureDataset::apportion(const std::vector<double>& weights, int64_t total) {
  double sum = 0;
  for (double w : weights) {
    if (!(w >= 0) || !std::isfinite(w)) throw std::invalid_argument("mixture weights must be finite and non-negative");
    sum += w;
  }
  if (sum <= 0) throw std::invalid_argument("mixture weights must not all be zero");
  std::vector<int64_t> counts(weights.size());
  std::vector<double> frac(weights.size());
  int64_t assigned = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    double q = weights[i] / sum * static_cast<double>(total);
    counts[i] = static_cast<int64_t>(std::floor(q));
    frac[i] = q - std::floor(q);
    assigned += counts[i];
  }
  std::vector<size_t> order(weights.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return frac[a] > frac[b]; });
  // Only entries with positive weight get a remainder (floating error could leave a zero weight "ahead").
  for (size_t k = 0; assigned < total; k = (k + 1) % order.size()) {
    if (weights[order[k]] > 0) {
      ++counts[order[k]];
      ++assigned;
    }
  }
  return counts;
}

MixtureDataset::MixtureDataset(std::vector<std::pair<std::string, std::shared_ptr<SequenceDataset>>> datasets,
                               std::vector<MixtureStage> stages, int64_t block_size, uint64_t seed)
    : datasets_(std::move(datasets)), block_size_(block_size), seed_(seed) {
  if (datasets_.empty()) throw std::invalid_argument("a mixture needs at least one dataset");
  if (block_size <= 0)
    throw std::invalid_argument("mixture_block_size must be positive, got " + std::to_string(block_size));
  if (stages.empty()) throw std::invalid_argument("a mixture needs weights (data.train_weights)");
  seq_len_ = datasets_[0].second->seq_len();
  for (const auto& [name, ds] : datasets_) {
    if (ds->seq_len() != seq_len_) throw std::invalid_argument("mixture datasets must have the same seq_len");
  }
  std::vector<int64_t> drawn(datasets_.size(), 0);
  for (size_t s = 0; s < stages.size(); ++s) {
    const MixtureStage& st = stages[s];
    if (s == 0 && st.start != 0) {
      throw std::invalid_argument("the first mixture stage must start at 0, not " + std::to_string(st.start));
    }
    if (s > 0 && st.start <= stages[s - 1].start)
      throw std::invalid_argument("mixture stages must be in increasing order");
    if (st.start % block_size != 0) {
      throw std::invalid_argument("a mixture stage starts at sequence " + std::to_string(st.start) +
                                  ", which is not a multiple of mixture_block_size (" + std::to_string(block_size) +
                                  "); choose stage steps so that step * batch_size is a multiple of it");
    }
    for (const auto& weight : st.weights) {
      const std::string& name = weight.first;  // not a structured binding: clang before 16 cannot capture those
      bool found = std::any_of(datasets_.begin(), datasets_.end(), [&](const auto& d) { return d.first == name; });
      if (!found) throw std::invalid_argument("mixture weight for '" + name + "', which is not a configured dataset");
    }
    std::vector<double> w(datasets_.size(), 0.0);
    for (size_t d = 0; d < datasets_.size(); ++d) {
      auto it = st.weights.find(datasets_[d].first);
      if (it != st.weights.end()) w[d] = it->second;
    }
    if (s > 0) {
      int64_t blocks = (st.start - stages[s - 1].start) / block_size;
      for (size_t d = 0; d < datasets_.size(); ++d) drawn[d] += blocks * counts_.back()[d];
    }
    stage_start_.push_back(st.start);
    counts_.push_back(apportion(w, block_size));
    before_stage_.push_back(drawn);
  }
}

std::pair<size_t, int64_t> MixtureDataset::locate(int64_t index) const {
  if (index < 0) throw std::out_of_range("MixtureDataset: negative index " + std::to_string(index));
  int64_t block = index / block_size_, pos = index % block_size_;
  size_t s = static_cast<size_t>(std::upper_bound(stage_start_.begin(), stage_start_.end(), block * block_size_) -
                                 stage_start_.begin()) -
             1;
  FeistelPermutation perm(block_size_, derive_key(seed_, {kStreamMixture, static_cast<uint64_t>(block)}));
  int64_t id = perm(pos);
  const std::vector<int64_t>& counts = counts_[s];
  size_t d = 0;
  while (id >= counts[d]) {
    id -= counts[d];
    ++d;
  }
  int64_t blocks_into_stage = block - stage_start_[s] / block_size_;
  return {d, before_stage_[s][d] + blocks_into_stage * counts[d] + id};
}

void MixtureDataset::read(int64_t index, int32_t* out) {
  auto [d, i] = locate(index);
  datasets_[d].second->read(i, out);
}

void MixtureDataset::read_batch(const int64_t* indices, int64_t n, int32_t* out) {
  for (int64_t k = 0; k < n; ++k) read(indices[k], out + k * seq_len_);
}

}  // namespace levanter::data
