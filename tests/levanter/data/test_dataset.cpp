#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "data_testing.h"
#include "levanter/data/dataset.h"
#include "levanter/data/loader.h"

using namespace levanter::data;
using namespace levanter::data::testing;

namespace {

// A cache of `n` documents over 2 files, byte-tokenized; returns the cache (complete) and its tokens.
std::shared_ptr<TokenCache> small_cache(const TempDir& t, std::vector<int32_t>* all_tokens, int docs_per_file = 60) {
  std::vector<std::string> files;
  std::vector<std::string> all_docs;
  for (int f = 0; f < 2; ++f) {
    auto docs = make_docs(f, docs_per_file);
    write_gz(t / ("in/" + std::to_string(f) + ".jsonl.gz"), jsonl(docs));
    files.push_back(t / ("in/" + std::to_string(f) + ".jsonl.gz"));
    all_docs.insert(all_docs.end(), docs.begin(), docs.end());
  }
  CacheBuildOptions opts;
  opts.chunk_documents = 1000;
  auto cache = build_or_load_cache(t / "cache", files, byte_encoder(), opts);
  cache->wait_finished();
  if (all_tokens) *all_tokens = expected_bytes_tokens(all_docs);
  return cache;
}

// A dataset whose sequence i is [i, i, ..., i]: for checking index maps.
class IotaDataset : public SequenceDataset {
 public:
  IotaDataset(int64_t n, int64_t seq_len) : n_(n), seq_len_(seq_len) {}
  int64_t seq_len() const override { return seq_len_; }
  void read(int64_t index, int32_t* out) override {
    if (n_ > 0 && index >= n_) throw std::out_of_range("iota");
    std::fill(out, out + seq_len_, static_cast<int32_t>(index));
  }
  std::optional<int64_t> length() override { return n_ > 0 ? std::optional<int64_t>(n_) : std::nullopt; }
  std::optional<int64_t> available() override { return length(); }

 private:
  int64_t n_, seq_len_;
};

}  // namespace

TEST(TokenSeqDataset, PacksDocumentsBackToBackAndDropsTheTail) {
  TempDir t;
  std::vector<int32_t> all;
  auto cache = small_cache(t, &all);
  ASSERT_EQ(cache->total_tokens(), static_cast<int64_t>(all.size()));
  for (int64_t L : {1, 7, 64, 1000}) {
    TokenSeqDataset ds(cache, L);
    int64_t n = *ds.length();
    EXPECT_EQ(n, static_cast<int64_t>(all.size()) / L);
    std::vector<int32_t> buf(static_cast<size_t>(L));
    for (int64_t i : {int64_t{0}, n / 2, n - 1}) {
      ds.read(i, buf.data());
      EXPECT_TRUE(std::equal(buf.begin(), buf.end(), all.begin() + i * L)) << "L=" << L << " i=" << i;
    }
    EXPECT_THROW(ds.read(n, buf.data()), std::out_of_range);
  }
}

TEST(ShuffledDataset, FullShuffleIsAPermutationPerEpochKeyedByEpoch) {
  TempDir t;
  auto cache = small_cache(t, nullptr);
  auto base = std::make_shared<TokenSeqDataset>(cache, 16);
  const int64_t n = *base->length();
  ShuffledDataset a(base, ShuffleMode::kFull, 1234), b(base, ShuffleMode::kFull, 1234), c(base, ShuffleMode::kFull, 99);
  std::vector<int64_t> e0, e1;
  for (int64_t j = 0; j < n; ++j) e0.push_back(a.base_index(j));
  for (int64_t j = n; j < 2 * n; ++j) e1.push_back(a.base_index(j));
  std::vector<int64_t> sorted0 = e0, sorted1 = e1, iota(static_cast<size_t>(n));
  std::sort(sorted0.begin(), sorted0.end());
  std::sort(sorted1.begin(), sorted1.end());
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(sorted0, iota);
  EXPECT_EQ(sorted1, iota);
  EXPECT_NE(e0, e1);  // a new permutation each epoch
  int64_t same = 0;
  for (int64_t j = 0; j < n; ++j) {
    EXPECT_EQ(a.base_index(j), b.base_index(j));
    same += a.base_index(j) == c.base_index(j);
  }
  EXPECT_LT(same, n / 4);
  EXPECT_FALSE(a.length().has_value());  // infinite
  ShuffledDataset two_epochs(base, ShuffleMode::kFull, 1234, 0, 2);
  EXPECT_EQ(*two_epochs.length(), 2 * n);
  std::vector<int32_t> buf(16);
  EXPECT_THROW(two_epochs.read(2 * n, buf.data()), std::out_of_range);
}

TEST(ShuffledDataset, EraShufflePermutesWithinErasOnly) {
  TempDir t;
  auto cache = small_cache(t, nullptr);
  auto base = std::make_shared<TokenSeqDataset>(cache, 8);
  const int64_t n = *base->length(), E = 50;
  ASSERT_GT(n % E, 0) << "the test wants a partial last era";
  ShuffledDataset ds(base, ShuffleMode::kEra, 7, E);
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    for (int64_t era = 0; era * E < n; ++era) {
      int64_t lo = era * E, hi = std::min(n, lo + E);
      std::set<int64_t> got;
      bool moved = false;
      for (int64_t p = lo; p < hi; ++p) {
        int64_t b = ds.base_index(epoch * n + p);
        EXPECT_GE(b, lo);
        EXPECT_LT(b, hi);
        got.insert(b);
        moved |= b != p;
      }
      EXPECT_EQ(static_cast<int64_t>(got.size()), hi - lo) << "era " << era;
      if (hi - lo > 2) {
        EXPECT_TRUE(moved);
      }
    }
  }
  // Epochs differ.
  int64_t same = 0;
  for (int64_t p = 0; p < n; ++p) same += ds.base_index(p) == ds.base_index(n + p);
  EXPECT_LT(same, n / 4);
}

TEST(ShuffledDataset, NoShuffleIsSequentialAndWraps) {
  TempDir t;
  auto cache = small_cache(t, nullptr);
  auto base = std::make_shared<TokenSeqDataset>(cache, 32);
  const int64_t n = *base->length();
  ShuffledDataset ds(base, ShuffleMode::kNone, 0);
  EXPECT_EQ(ds.base_index(0), 0);
  EXPECT_EQ(ds.base_index(n - 1), n - 1);
  EXPECT_EQ(ds.base_index(n + 3), 3);
}

TEST(MixtureDataset, ApportionIsLargestRemainder) {
  EXPECT_EQ(MixtureDataset::apportion({0.5, 0.5}, 7), (std::vector<int64_t>{4, 3}));  // tie: the earlier one
  EXPECT_EQ(MixtureDataset::apportion({1, 1, 1}, 10), (std::vector<int64_t>{4, 3, 3}));
  EXPECT_EQ(MixtureDataset::apportion({7, 2, 1}, 1000), (std::vector<int64_t>{700, 200, 100}));
  EXPECT_EQ(MixtureDataset::apportion({1, 2}, 2048), (std::vector<int64_t>{683, 1365}));
  EXPECT_EQ(MixtureDataset::apportion({3, 0, 1}, 5), (std::vector<int64_t>{4, 0, 1}));
  EXPECT_EQ(MixtureDataset::apportion({0.2, 0.8}, 1), (std::vector<int64_t>{0, 1}));
  EXPECT_THROW(MixtureDataset::apportion({0, 0}, 4), std::invalid_argument);
  EXPECT_THROW(MixtureDataset::apportion({-1, 2}, 4), std::invalid_argument);
}

TEST(MixtureDataset, ProportionsAreExactInEveryBlockAndIndicesAreDense) {
  std::vector<std::pair<std::string, std::shared_ptr<SequenceDataset>>> ds = {
      {"a", std::make_shared<IotaDataset>(0, 1)},
      {"b", std::make_shared<IotaDataset>(0, 1)},
      {"c", std::make_shared<IotaDataset>(0, 1)}};
  const int64_t B = 64;
  MixtureDataset mix(ds, {{0, {{"a", 0.5}, {"b", 0.3}, {"c", 0.2}}}}, B, 11);
  std::vector<int64_t> expect = MixtureDataset::apportion({0.5, 0.3, 0.2}, B);
  std::vector<std::set<int64_t>> drawn(3);
  std::vector<std::vector<size_t>> orders;
  for (int64_t block = 0; block < 20; ++block) {
    std::vector<int64_t> count(3, 0);
    std::vector<size_t> order;
    for (int64_t p = 0; p < B; ++p) {
      auto [d, i] = mix.locate(block * B + p);
      ++count[d];
      order.push_back(d);
      EXPECT_TRUE(drawn[d].insert(i).second) << "index drawn twice";
    }
    EXPECT_EQ(count, expect) << "block " << block;
    orders.push_back(order);
  }
  EXPECT_NE(orders[0], orders[1]);  // the order within a block is permuted per block
  for (size_t d = 0; d < 3; ++d) {
    // Each dataset is read densely: 0, 1, 2, ... with no gaps.
    EXPECT_EQ(*drawn[d].rbegin() + 1, static_cast<int64_t>(drawn[d].size()));
  }
  // Same seed, same mixture; reads go to the located dataset and index.
  MixtureDataset again(ds, {{0, {{"a", 0.5}, {"b", 0.3}, {"c", 0.2}}}}, B, 11);
  for (int64_t i = 0; i < 300; ++i) EXPECT_EQ(mix.locate(i), again.locate(i));
  int32_t v;
  mix.read(77, &v);
  EXPECT_EQ(v, mix.locate(77).second);
}

TEST(MixtureDataset, WeightScheduleChangesAtBlockBoundaries) {
  std::vector<std::pair<std::string, std::shared_ptr<SequenceDataset>>> ds = {
      {"a", std::make_shared<IotaDataset>(0, 1)}, {"b", std::make_shared<IotaDataset>(0, 1)}};
  const int64_t B = 10;
  MixtureDataset mix(ds, {{0, {{"a", 1.0}}}, {30, {{"a", 0.5}, {"b", 0.5}}}, {50, {{"b", 1.0}}}}, B, 3);
  std::vector<int64_t> a_idx;
  for (int64_t i = 0; i < 80; ++i) {
    auto [d, k] = mix.locate(i);
    if (i < 30) {
      EXPECT_EQ(d, 0u);
    }
    if (i >= 50) {
      EXPECT_EQ(d, 1u);
    }
    if (d == 0) a_idx.push_back(k);
  }
  std::sort(a_idx.begin(), a_idx.end());
  std::vector<int64_t> iota(40);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(a_idx, iota);  // 30 from stage 0, 5 + 5 from stage 1, continuing where stage 0 stopped
  EXPECT_THROW(MixtureDataset(ds, {{0, {{"a", 1.0}}}, {15, {{"b", 1.0}}}}, B, 3), std::invalid_argument);
  EXPECT_THROW(MixtureDataset(ds, {{0, {{"zzz", 1.0}}}}, B, 3), std::invalid_argument);
}

TEST(DataLoader, SameSeedAndStepGiveTheSameBatchAcrossInstances) {
  TempDir t;
  auto cache = small_cache(t, nullptr);
  auto make = [&](uint64_t seed) {
    auto base = std::make_shared<TokenSeqDataset>(cache, 16);
    return std::make_shared<ShuffledDataset>(base, ShuffleMode::kFull, seed);
  };
  std::vector<TokenBatch> first;
  {
    DataLoader loader(make(5), {4, 0, 3, 2});
    for (int s = 0; s < 30; ++s) {
      first.push_back(loader.next());
      EXPECT_EQ(first.back().step, s);
      EXPECT_EQ(first.back().batch_size, 4);
      EXPECT_EQ(first.back().tokens.size(), 4u * 16u);
    }
  }
  // A new loader (a resumed run) starting at step 17 gives the same batches from there on.
  DataLoader resumed(make(5), {4, 17, 2, 1});
  for (int s = 17; s < 30; ++s) {
    TokenBatch b = resumed.next();
    EXPECT_EQ(b.step, s);
    EXPECT_EQ(b.tokens, first[static_cast<size_t>(s)].tokens) << "step " << s;
  }
  auto ds = make(5);
  EXPECT_EQ(batch_at(*ds, 4, 9).tokens, first[9].tokens);
  auto other = make(6);
  EXPECT_NE(batch_at(*other, 4, 9).tokens, first[9].tokens);
}

TEST(DataLoader, ErrorsReachTheConsumerInOrder) {
  auto finite = std::make_shared<IotaDataset>(10, 2);
  DataLoader loader(finite, {4, 0, 4, 2});
  EXPECT_EQ(loader.next().tokens[0], 0);
  EXPECT_EQ(loader.next().tokens[0], 4);
  EXPECT_THROW(loader.next(), std::out_of_range);  // step 2 needs sequences 8..11
}

TEST(EvalBatches, SequentialWithATrueSizedPartialLastBatch) {
  TempDir t;
  std::vector<int32_t> all;
  auto cache = small_cache(t, &all);
  auto ds = std::make_shared<TokenSeqDataset>(cache, 32);
  const int64_t n = *ds->length();
  ASSERT_NE(n % 5, 0);
  EvalBatches eval(ds, 5);
  EXPECT_EQ(eval.num_batches(), (n + 4) / 5);
  TokenBatch b;
  int64_t rows = 0, batches = 0;
  while (eval.next(b)) {
    EXPECT_EQ(b.step, batches);
    EXPECT_TRUE(std::equal(b.tokens.begin(), b.tokens.end(), all.begin() + rows * 32));
    rows += b.batch_size;
    ++batches;
  }
  EXPECT_EQ(rows, n);
  EXPECT_EQ(b.batch_size, n % 5);
  EvalBatches limited(ds, 5, 3);
  EXPECT_EQ(limited.num_batches(), 3);
  EXPECT_EQ(limited.num_sequences(), 15);
}
