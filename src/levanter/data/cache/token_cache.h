// Reading a token cache: the documents of all shards back to back, as one stream of token ids.
//
// A TokenCache can be opened while the cache is being built. Shard i's tokens come after all of shard
// i-1's, so what a reader can see is the finished shards at the front plus the committed part of the first
// unfinished one. Reads block until the tokens they ask for exist: on a condition variable when the
// builder runs in this process, by polling the ledgers (every 200 ms) when another process builds it. A
// poller also checks the build lock: when the building process is gone it takes the build over (a cache
// opened by build_or_load_cache) or fails; while it waits it says so on stderr (once, then every 30 s).
//
// Nothing read is trusted blindly (every failure is a DataError naming the file, the shard and the fix):
//   - when a shard is finished (at open for a complete cache), its files' sizes must match its ledger, its
//     last offset its token count, and, for a complete cache, the ledgers' totals the manifest's;
//   - on the first read of each block (kChecksumBlockBytes) of a finished shard, the block's CRC32 must
//     match the ledger's and every token id must lie in [0, vocab_size) (CacheReadOptions);
//   - the committed part of a shard still being built is checked for size and vocabulary as it is read (its
//     checksums once it is finished).
// Files are read with pread, never mapped: a file that shrinks underneath gives a DataError, not a SIGBUS.
//
//   auto cache = TokenCache::open("cache/train");       // or build_or_load_cache(...) in cache/builder.h
//   cache->wait_for_tokens(1 << 20);                      // blocks until 1M tokens exist (or the cache ends)
//   std::vector<int32_t> buf(1024);
//   cache->read_tokens(4096, 1024, buf.data());           // tokens [4096, 5120)
//
// All methods are thread-safe. Once the cache is complete, reads take no lock.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
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

struct CacheReadOptions {
  // Token ids must lie in [0, vocab_size): the model's embedding has that many rows. 0: not checked.
  int64_t vocab_size = 0;
  // Say on stderr what a reader waits for while another process builds the cache.
  bool log_waits = true;
};

class TokenCache {
 public:
  // Opens an existing cache for reading; it may be complete or being built (by any process). DataError if
  // there is none, if its format version differs, if `expected` is given and the cache was processed
  // differently (another tokenizer, text key, BOS/EOS), or if a finished shard fails its size checks. Waiting
  // on a cache whose builder is gone fails (build_or_load_cache's caches take the build over instead).
  static std::shared_ptr<TokenCache> open(const std::string& dir,
                                          const std::optional<Processing>& expected = std::nullopt,
                                          const CacheReadOptions& options = {});
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

  // Reads every block of every finished shard now (checksums, vocabulary, offsets) instead of on first use;
  // waits for the cache to be complete. DataError on the first bad block. `levanter cache` runs it.
  void verify_all();

  // The build feeding this cache when it runs in this process (progress, wait, stop); null otherwise. A
  // cache that took over the build of a process that died has one from then on.
  CacheBuilder* builder() const;

  // --- for CacheBuilder ---
  TokenCache(std::string dir, CacheManifest manifest, CacheReadOptions options = {});
  void attach_builder(std::shared_ptr<CacheBuilder> builder);
  void on_commit(size_t shard, const ShardLedger& ledger);
  void on_failure(const std::string& message);
  void on_finished();
  // How to resume the build in this process when the process building it is gone: called (without the
  // cache's lock) with the build lock, already taken; attaches a builder or throws DataError.
  using Takeover = std::function<void(TokenCache& cache, runtime::FileLock lock)>;
  void set_takeover(Takeover takeover);
  // Built together by the processes of a job (CacheBuildOptions::processes): this is process `rank` of
  // `processes`, whose builder (if any) writes shards i % processes == rank; the others' shards are read from their
  // ledgers as they grow, and one whose builder is gone fails the read, naming it. Reads the ledgers now.
  void set_joint_build(int rank, int processes);

 private:
  struct ShardState {
    int64_t rows = 0, tokens = 0;
    bool finished = false;
    int64_t checksum_block_bytes = 0;  // 0: no checksums (an old ledger)
    std::vector<uint32_t> tokens_crc32, offsets_crc32;
  };
  struct ShardFiles {
    runtime::File tokens, offsets;
    // Per block of a finished shard: 1 once verified. Allocated when the shard is finished.
    std::unique_ptr<std::atomic<uint8_t>[]> tokens_ok, offsets_ok;
  };
  // A part of a read within one shard (captured under the lock).
  struct Piece {
    size_t shard;
    bool finished;  // its blocks are verified on first read; else only the read ids are checked
    int64_t local_start, count, out_offset;
  };
  enum class Kind { kTokens, kOffsets };

  void refresh_from_disk_locked();
  void advance_prefix_locked();
  void check_finished_locked(size_t shard);
  int64_t tokens_available_locked() const;
  int64_t rows_available_locked() const;
  template <typename Pred>
  void wait_locked(std::unique_lock<std::mutex>& lock, const std::string& what, Pred ready);
  void check_builder_locked(std::unique_lock<std::mutex>& lock, const std::string& what);
  // Whether to say now what this reader waits for (log_waits: once, then every kWaitReportInterval).
  bool report_wait_now_locked();
  void open_files_locked(size_t shard);
  void copy_piece(const Piece& p, int32_t* out);
  int64_t block_bytes(size_t shard) const;
  void ensure_verified(size_t shard, Kind kind, int64_t first_byte, int64_t end_byte);
  void verify_block(size_t shard, Kind kind, int64_t block);
  void check_ids(size_t shard, const int32_t* ids, int64_t n, int64_t first_index) const;
  int64_t read_offset(size_t shard, int64_t local_row);
  [[noreturn]] void corrupt(size_t shard, Kind kind, const std::string& what) const;
  std::string file_path(size_t shard, Kind kind) const;

  std::string dir_;
  CacheManifest manifest_;
  CacheReadOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<ShardState> shards_;
  std::vector<ShardFiles> files_;
  // Start of each shard in the global token/row stream, for the finished prefix (entries 0..prefix_);
  // reserved up front so that reading them without the lock is safe once published.
  std::vector<int64_t> token_start_, row_start_;
  size_t prefix_ = 0;  // shards 0..prefix_-1 are finished
  std::string error_;
  std::atomic<bool> complete_{false};         // all shards finished and checked: reads take the lock-free path
  bool builder_running_ = false;              // a builder in this process has yet to write the final manifest
  int joint_rank_ = 0, joint_processes_ = 1;  // set_joint_build
  std::shared_ptr<CacheBuilder> builder_;
  Takeover takeover_;
  // Waiting on another process: when we started and when we last said so on stderr.
  std::chrono::steady_clock::time_point wait_reported_{};
  bool wait_announced_ = false;
};

}  // namespace levanter::data
