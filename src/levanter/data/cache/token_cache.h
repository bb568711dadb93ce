// Reading a token cache: the documents of all shards back to back, as one stream of token ids.
//
// A TokenCache can be opened while the cache is being built. Shard i's tokens come after all of shard
// i-1's, so what a reader can see is the finished shards at the front plus the committed part of the first
// unfinished one. Reads block until the tokens they ask for exist: on a condition variable when the
// builder runs in this process, by polling the ledgers (every 200 ms) when another process builds it.
//
//   auto cache = TokenCache::open("cache/train");       // or build_or_load_cache(...) in cache/builder.h
//   cache->wait_for_tokens(1 << 20);                      // blocks until 1M tokens exist (or the cache ends)
//   std::vector<int32_t> buf(1024);
//   cache->read_tokens(4096, 1024, buf.data());           // tokens [4096, 5120)
//
// All methods are thread-safe. Once the cache is complete, reads take no lock (the shards are mmapped).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "levanter/data/cache/ledger.h"
#include "levanter/runtime/file_io.h"

namespace levanter::data {

class CacheBuilder;

class TokenCache {
 public:
  // Opens an existing cache for reading; it may be complete or being built (by any process). DataError if
  // there is none, if its format version differs, or if `expected` is given and the cache was processed
  // differently (another tokenizer, text key, BOS/EOS).
  static std::shared_ptr<TokenCache> open(const std::string& dir,
                                          const std::optional<Processing>& expected = std::nullopt);
  ~TokenCache();
  TokenCache(const TokenCache&) = delete;
  TokenCache& operator=(const TokenCache&) = delete;

  const std::string& dir() const { return dir_; }
  const CacheManifest& manifest() const { return manifest_; }
  size_t num_shards() const { return manifest_.files.size(); }

  // What can be read now, without waiting.
  int64_t tokens_available() const;
  int64_t rows_available() const;
  bool finished() const;

  // Block until at least `n` tokens (documents) can be read or the cache is complete; returns the count
  // then (less than n only when the cache is complete and smaller). Rethrows a failed build's error.
  int64_t wait_for_tokens(int64_t n);
  int64_t wait_for_rows(int64_t n);
  void wait_finished();
  int64_t total_tokens();  // waits for the cache to be complete
  int64_t total_rows();

  // Copies tokens [start, start + n) to `out`, waiting until they exist. std::out_of_range if they lie past
  // the end of the complete cache.
  void read_tokens(int64_t start, int64_t n, int32_t* out);
  // The token range [begin, end) of document `row` (waits until it exists; std::out_of_range past the end).
  std::pair<int64_t, int64_t> document(int64_t row);

  // The build feeding this cache when it runs in this process (progress, wait, stop); null otherwise.
  CacheBuilder* builder() const { return builder_.get(); }

  // --- for CacheBuilder ---
  TokenCache(std::string dir, CacheManifest manifest);
  void attach_builder(std::shared_ptr<CacheBuilder> builder);
  void on_commit(size_t shard, int64_t rows, int64_t tokens, bool finished);
  void on_failure(const std::string& message);
  void on_finished();

 private:
  struct ShardState {
    int64_t rows = 0, tokens = 0;
    bool finished = false;
  };
  struct ShardFiles {
    runtime::File tokens, offsets;
    const int32_t* tokens_map = nullptr;  // set once the shard is finished (and non-empty)
    const int64_t* offsets_map = nullptr;
    size_t tokens_bytes = 0, offsets_bytes = 0;
  };
  // A part of a read within one shard, with what to read it from (captured under the lock).
  struct Piece {
    size_t shard;
    const int32_t* map;         // null: read from file
    const runtime::File* file;  // files_ never reallocates
    int64_t local_start, count, out_offset;
  };

  void refresh_from_disk_locked();
  void advance_prefix_locked();
  void map_finished_locked(size_t shard);
  int64_t tokens_available_locked() const;
  int64_t rows_available_locked() const;
  template <typename Pred>
  void wait_locked(std::unique_lock<std::mutex>& lock, Pred ready);
  void open_files_locked(size_t shard);
  void copy_piece(const Piece& p, int32_t* out);

  std::string dir_;
  CacheManifest manifest_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<ShardState> shards_;
  std::vector<ShardFiles> files_;
  // Start of each shard in the global token/row stream, for the finished prefix (entries 0..prefix_);
  // reserved up front so that reading them without the lock is safe once published.
  std::vector<int64_t> token_start_, row_start_;
  size_t prefix_ = 0;  // shards 0..prefix_-1 are finished
  std::string error_;
  std::atomic<bool> complete_{false};  // all shards finished and mapped: reads take the lock-free path
  bool builder_running_ = false;       // a builder in this process has yet to write the final manifest
  std::shared_ptr<CacheBuilder> builder_;
};

}  // namespace levanter::data
