// The on-disk records of a token cache: the manifest (one per cache) and the ledger (one per shard).
//
// Layout of a cache directory (one per source and split, e.g. cache/train/ or cache/kjv/validation/):
//
//   manifest.json          what the cache is: format version, how it was processed (tokenizer fingerprint,
//                          text key, BOS/EOS), the input files in shard order, and, once complete, totals.
//   00000/tokens.i32       shard 0: the token ids of its documents back to back (int32, little-endian)
//   00000/offsets.i64      shard 0: the end offset of each document in tokens.i32 (int64, little-endian)
//   00000/ledger.json      shard 0: how much of the two files is committed (rows, tokens), where to resume
//                          in the input (lines), and the input file's identity; `finished` when complete.
//   00001/...              one shard per input file, in the order the URLs expand to.
//
// Commit protocol: data are appended and fsynced first, then the ledger is replaced atomically (write a
// temporary file, fsync, rename, fsync the directory). Readers trust only the ledger: bytes past its counts
// are invisible and are truncated when the build resumes. A shard without a ledger does not exist.
//
// Integrity: the ledger also holds a CRC32 of every block of kChecksumBlockBytes bytes of tokens.i32 and of
// offsets.i64 (the last block of each may be partial). Blocks are fixed byte ranges of the files, not
// commits, so the checksums depend only on the bytes (a resumed build writes the same ledger). Readers check
// file sizes against the ledger when a shard is opened and each block's checksum on its first read. Ledgers
// written before checksums existed have none (block_bytes 0): they are still read, with the size and
// vocabulary checks only, so the format version did not change.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "levanter/data/files.h"

namespace levanter::data {

// Bumped whenever the layout or the meaning of a field changes; a cache of another version is refused.
constexpr int kCacheFormatVersion = 1;

// The checksummed block of a shard's token and offset files (1 MiB: 256 Ki tokens, 128 Ki documents).
constexpr int64_t kChecksumBlockBytes = 1 << 20;

// How documents become tokens. Two caches with equal Processing hold the same tokens for the same input.
struct Processing {
  std::string tokenizer;              // a name for messages: "gpt2", a path, "test"
  std::string tokenizer_fingerprint;  // "sha256:..." of the tokenizer's canonical form
  std::string text_key = "text";
  std::optional<int32_t> bos_id;  // prepended to every document when set
  std::optional<int32_t> eos_id;  // appended to every document when set
  bool operator==(const Processing& o) const;
  // Why `this` (what a cache holds) differs from `wanted` (what the config asks for), or "" if equal.
  std::string difference(const Processing& wanted) const;
};

struct SourceFile {
  std::string path;  // as the URL expanded
  int64_t size = 0;
  int64_t mtime_ns = 0;
  std::string hash;  // ContentHash hex of the raw bytes; set when the shard is finished
};

struct ShardLedger {
  int format_version = kCacheFormatVersion;
  SourceFile source;
  int64_t rows = 0;       // documents committed
  int64_t tokens = 0;     // tokens committed
  int64_t lines = 0;      // input records consumed (where to resume)
  int64_t bad_lines = 0;  // records skipped as bad (data.skip_bad_lines)
  int64_t chunks = 0;     // commits so far
  bool finished = false;
  // CRC32 of each block of `checksum_block_bytes` bytes of tokens.i32 / offsets.i64, up to the committed size
  // (the last block may be partial). checksum_block_bytes == 0: a ledger from before checksums, none known.
  int64_t checksum_block_bytes = 0;
  std::vector<uint32_t> tokens_crc32, offsets_crc32;
  std::string to_json() const;
  static ShardLedger from_json(const std::string& text, const std::string& where);
};

struct CacheManifest {
  int format_version = kCacheFormatVersion;
  Processing processing;
  std::vector<std::string> files;  // input files, shard i <- files[i]
  bool finished = false;
  int64_t rows = 0, tokens = 0, bad_lines = 0;  // totals, set when finished
  std::string to_json() const;
  static CacheManifest from_json(const std::string& text, const std::string& where);
};

std::string manifest_path(const std::string& cache_dir);
std::string shard_dir(const std::string& cache_dir, size_t shard);
std::string ledger_path(const std::string& cache_dir, size_t shard);
std::string tokens_path(const std::string& cache_dir, size_t shard);
std::string offsets_path(const std::string& cache_dir, size_t shard);
// The build lock (an flock holding its builder's pid): <dir>/.lock, or <dir>/.lock-<rank> for process `rank` > 0
// of a job building the cache together (CacheBuildOptions::processes).
std::string build_lock_path(const std::string& cache_dir, int rank = 0);
// Whether a process of a joint build other than process 0 still holds its lock (<dir>/.lock-<r>): then the cache is
// being built even when <dir>/.lock is free, and nobody else may take the build over.
bool joint_builders_alive(const std::string& cache_dir);

// The ledger of a shard, or nullopt if it has none (nothing committed).
std::optional<ShardLedger> read_ledger(const std::string& cache_dir, size_t shard);
std::optional<CacheManifest> read_manifest(const std::string& cache_dir);

}  // namespace levanter::data
