// Building a token cache on background threads, resumably.
//
//   DocumentEncoder enc = ...;                               // tokenizer + BOS/EOS policy (data/pipeline.h)
//   auto cache = build_or_load_cache("cache/train", expand_urls({"corpus/*.jsonl.gz"}), enc);
//   cache->read_tokens(0, 1024, buf);                        // blocks only until those tokens exist
//   cache->builder()->wait();                                // or let it finish in the background
//
// One shard per input file. Workers take shards in order (so the readable prefix grows as fast as it can);
// a worker that finds no shard left helps tokenize the current chunk of another. A shard is read in chunks
// of `chunk_documents` documents (or `chunk_bytes` bytes of input, whichever comes first); each chunk is
// tokenized, appended, fsynced, and committed by rewriting the shard's ledger atomically.
//
// Guarantees:
//   - The bytes of a cache depend only on the input files, the processing and the chunk size: not on the
//     thread count, not on timing, not on how often the build was interrupted.
//   - A killed build resumes from each shard's last committed chunk (bytes past the ledger are discarded).
//   - Bad input fails the build with a message naming the file and line, and removes the failing shard's
//     directory (no half-written shard is left); with skip_bad_lines the line is skipped and counted.
//   - One builder per cache directory at a time (an flock on <dir>/.lock, which also holds the builder's
//     pid); a second process that opens the cache meanwhile reads it as it grows, and takes the build over
//     if the builder dies (the kernel releases a dead process's flock).
//   - Each commit records a CRC32 of every 1 MiB block of the shard's files in its ledger (see ledger.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "levanter/data/cache/ledger.h"
#include "levanter/data/cache/token_cache.h"

namespace levanter::data {

// Turns a document's text into token ids, appending to `out`. Called from several threads at once.
using EncodeFn = std::function<void(std::string_view text, std::vector<int32_t>& out)>;

// What the builder needs to tokenize: how (recorded in the cache) and the function that does it. The builder
// adds processing.bos_id / eos_id around each document's ids.
struct DocumentEncoder {
  Processing processing;
  EncodeFn encode;
};

struct CacheBuildOptions {
  int num_threads = 0;                    // 0: the number of hardware threads
  int64_t chunk_documents = 1024;         // a commit every this many documents...
  int64_t chunk_bytes = 16 << 20;         // ...or this many bytes of input text, whichever comes first
  bool skip_bad_lines = false;            // skip (and count) bad lines instead of failing
  bool rebuild = false;                   // discard a cache that was made differently or from other files
  bool log_warnings = true;               // print skipped lines, resumptions and waits for other processes to stderr
  int64_t max_document_bytes = 64 << 20;  // a longer document (JSONL line, .txt file) is an error
  int64_t vocab_size = 0;                 // readers check every token id against it (the tokenizer's); 0: unchecked
  // Building together with the other processes of one job (training: every process opens the training caches):
  // process `rank` of `processes` builds the shards i with i % processes == rank, under a lock of its own
  // (<dir>/.lock for process 0, <dir>/.lock-<rank> for the others), so no two processes write the same file.
  // Process 0 first checks (or writes) the manifest; then every process takes its lock and plans, and only when all
  // have (or one has failed, which every process then reports) does any build or read start. `all_gather` (every
  // process's string, in rank order, on every process; called twice per cache, in the same order everywhere) is how
  // they agree. Each process reads the others'
  // shards from their ledgers as they grow; process 0 marks the cache finished once every shard is. A killed
  // job launched again resumes every shard, whatever its process count. 1: this process builds every shard.
  int rank = 0;
  int processes = 1;
  std::function<std::vector<std::string>(const std::string&)> all_gather;
  // For tests: stop as if the process were killed after this many commits in total, leaving the next
  // chunk half-written past the ledgers. -1: never.
  int64_t simulate_kill_after_chunks = -1;
};

struct CacheBuildProgress {
  int64_t documents = 0, tokens = 0, bad_lines = 0;  // committed, including earlier runs
  int64_t input_bytes_done = 0, input_bytes_total = 0;
  int64_t bytes_read_this_run = 0;
  size_t shards_finished = 0, shards_total = 0;
  double elapsed_seconds = 0;
  bool done = false;  // finished, failed or stopped
  bool failed = false;
};

class CacheBuilder {
 public:
  ~CacheBuilder();
  CacheBuildProgress progress() const;
  // Blocks until the build ends; rethrows its error (DataError) if it failed.
  void wait();
  // Stops at the next chunk boundary (a resumable state) and joins the workers.
  void stop();

  struct Impl;
  explicit CacheBuilder(std::unique_ptr<Impl> impl);

 private:
  std::unique_ptr<Impl> impl_;
};

// Opens the cache in `dir` made from `files` (one shard each, in order) with `encoder`, and builds or resumes
// it in the background when it is not complete. Returns at once. DataError, before anything is written, if
// the cache there was made with another tokenizer/processing, from other files, or with another format
// version (unless options.rebuild), or if an input file is unreadable.
std::shared_ptr<TokenCache> build_or_load_cache(const std::string& dir, const std::vector<std::string>& files,
                                                const DocumentEncoder& encoder, const CacheBuildOptions& options = {});

}  // namespace levanter::data
