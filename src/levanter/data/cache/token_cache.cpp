#include "levanter/data/cache/token_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "levanter/data/cache/builder.h"
#include "levanter/runtime/file_io.h"

namespace levanter::data {

namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(200);

// A read of committed bytes: the file ending early means the cache is corrupt.
void read_committed(const runtime::File& f, void* buf, size_t n, uint64_t offset) {
  try {
    f.read_exact_at(buf, n, offset);
  } catch (const runtime::IoError& e) {
    throw DataError(std::string(e.what()) + " (shorter than its ledger says? the cache is corrupt; rebuild it)");
  }
}

}  // namespace

std::shared_ptr<TokenCache> TokenCache::open(const std::string& dir, const std::optional<Processing>& expected) {
  std::optional<CacheManifest> m = read_manifest(dir);
  if (!m)
    throw DataError(dir + ": no token cache here (no manifest.json); build it with `levanter cache --config ...`");
  if (m->format_version != kCacheFormatVersion) {
    throw DataError(dir + ": the cache has format version " + std::to_string(m->format_version) +
                    ", this build reads " + std::to_string(kCacheFormatVersion) +
                    "; rebuild it (data.rebuild_cache: true, or levanter cache --rebuild)");
  }
  if (expected && !(m->processing == *expected)) {
    throw DataError(
        dir + ": refusing to use this cache: " + m->processing.difference(*expected) +
        ". Set data.rebuild_cache: true (or pass --rebuild to levanter cache) to rebuild it, or use another cache_dir");
  }
  auto cache = std::make_shared<TokenCache>(dir, std::move(*m));
  std::lock_guard<std::mutex> lock(cache->mu_);
  cache->refresh_from_disk_locked();
  return cache;
}

TokenCache::TokenCache(std::string dir, CacheManifest manifest) : dir_(std::move(dir)), manifest_(std::move(manifest)) {
  size_t n = manifest_.files.size();
  shards_.resize(n);
  files_.resize(n);
  token_start_.reserve(n + 1);
  row_start_.reserve(n + 1);
  token_start_.push_back(0);
  row_start_.push_back(0);
  if (n == 0) complete_ = true;
}

TokenCache::~TokenCache() {
  if (builder_) builder_->stop();
  for (ShardFiles& f : files_) {
    if (f.tokens_map) ::munmap(const_cast<int32_t*>(f.tokens_map), f.tokens_bytes);
    if (f.offsets_map) ::munmap(const_cast<int64_t*>(f.offsets_map), f.offsets_bytes);
  }
}

void TokenCache::attach_builder(std::shared_ptr<CacheBuilder> builder) {
  std::lock_guard<std::mutex> lock(mu_);
  builder_ = std::move(builder);
  builder_running_ = true;
}

// --- state ---------------------------------------------------------------------------------------------------

void TokenCache::refresh_from_disk_locked() {
  for (size_t i = prefix_; i < shards_.size(); ++i) {
    if (shards_[i].finished) continue;
    std::optional<ShardLedger> l = read_ledger(dir_, i);
    if (!l) continue;
    if (l->format_version != kCacheFormatVersion) {
      throw DataError(ledger_path(dir_, i) + ": shard ledger has format version " + std::to_string(l->format_version) +
                      ", this build reads " + std::to_string(kCacheFormatVersion) + "; rebuild the cache");
    }
    shards_[i] = {l->rows, l->tokens, l->finished};
  }
  advance_prefix_locked();
}

void TokenCache::advance_prefix_locked() {
  while (prefix_ < shards_.size() && shards_[prefix_].finished) {
    map_finished_locked(prefix_);
    token_start_.push_back(token_start_.back() + shards_[prefix_].tokens);
    row_start_.push_back(row_start_.back() + shards_[prefix_].rows);
    ++prefix_;
  }
  // With a builder here, the cache is complete once the builder has also written the manifest (on_finished).
  if (prefix_ == shards_.size() && !builder_running_ && !complete_.load(std::memory_order_relaxed)) {
    complete_.store(true, std::memory_order_release);
    cv_.notify_all();
  }
}

void TokenCache::open_files_locked(size_t shard) {
  ShardFiles& f = files_[shard];
  if (f.tokens.is_open()) return;
  runtime::rethrow_io_errors_as<DataError>([&] {
    runtime::File tokens = runtime::File::open(tokens_path(dir_, shard), O_RDONLY);
    f.offsets = runtime::File::open(offsets_path(dir_, shard), O_RDONLY);
    f.tokens = std::move(tokens);  // last: an open tokens file means both are open
  });
}

void TokenCache::map_finished_locked(size_t shard) {
  const ShardState& s = shards_[shard];
  ShardFiles& f = files_[shard];
  if (f.tokens_map || s.tokens == 0) return;
  open_files_locked(shard);
  f.tokens_bytes = static_cast<size_t>(s.tokens) * sizeof(int32_t);
  void* t = ::mmap(nullptr, f.tokens_bytes, PROT_READ, MAP_SHARED, f.tokens.fd(), 0);
  if (t == MAP_FAILED) throw DataError(tokens_path(dir_, shard) + ": mmap failed: " + std::strerror(errno));
  f.offsets_bytes = static_cast<size_t>(s.rows) * sizeof(int64_t);
  void* o = ::mmap(nullptr, f.offsets_bytes, PROT_READ, MAP_SHARED, f.offsets.fd(), 0);
  if (o == MAP_FAILED) {
    ::munmap(t, f.tokens_bytes);
    throw DataError(offsets_path(dir_, shard) + ": mmap failed: " + std::strerror(errno));
  }
  f.tokens_map = static_cast<const int32_t*>(t);
  f.offsets_map = static_cast<const int64_t*>(o);
}

int64_t TokenCache::tokens_available_locked() const {
  return token_start_[prefix_] + (prefix_ < shards_.size() ? shards_[prefix_].tokens : 0);
}
int64_t TokenCache::rows_available_locked() const {
  return row_start_[prefix_] + (prefix_ < shards_.size() ? shards_[prefix_].rows : 0);
}

int64_t TokenCache::tokens_available() const {
  if (complete_.load(std::memory_order_acquire)) return token_start_[shards_.size()];
  std::lock_guard<std::mutex> lock(mu_);
  return tokens_available_locked();
}
int64_t TokenCache::rows_available() const {
  if (complete_.load(std::memory_order_acquire)) return row_start_[shards_.size()];
  std::lock_guard<std::mutex> lock(mu_);
  return rows_available_locked();
}
bool TokenCache::finished() const { return complete_.load(std::memory_order_acquire); }

template <typename Pred>
void TokenCache::wait_locked(std::unique_lock<std::mutex>& lock, Pred ready) {
  while (true) {
    if (ready() || complete_.load(std::memory_order_relaxed)) return;
    if (!error_.empty()) throw DataError(error_);
    if (builder_) {
      cv_.wait_for(lock, kPollInterval);
    } else {
      // Another process builds it (or nobody does: then this waits until someone resumes the build).
      cv_.wait_for(lock, kPollInterval);
      refresh_from_disk_locked();
    }
  }
}

int64_t TokenCache::wait_for_tokens(int64_t n) {
  if (complete_.load(std::memory_order_acquire)) return token_start_[shards_.size()];
  std::unique_lock<std::mutex> lock(mu_);
  wait_locked(lock, [&] { return tokens_available_locked() >= n; });
  return tokens_available_locked();
}

int64_t TokenCache::wait_for_rows(int64_t n) {
  if (complete_.load(std::memory_order_acquire)) return row_start_[shards_.size()];
  std::unique_lock<std::mutex> lock(mu_);
  wait_locked(lock, [&] { return rows_available_locked() >= n; });
  return rows_available_locked();
}

void TokenCache::wait_finished() {
  if (complete_.load(std::memory_order_acquire)) return;
  std::unique_lock<std::mutex> lock(mu_);
  wait_locked(lock, [] { return false; });
}

int64_t TokenCache::total_tokens() {
  wait_finished();
  return token_start_[shards_.size()];
}
int64_t TokenCache::total_rows() {
  wait_finished();
  return row_start_[shards_.size()];
}

// --- reads ---------------------------------------------------------------------------------------------------

void TokenCache::copy_piece(const Piece& p, int32_t* out) {
  if (p.map) {
    std::memcpy(out + p.out_offset, p.map + p.local_start, static_cast<size_t>(p.count) * sizeof(int32_t));
  } else {
    read_committed(*p.file, out + p.out_offset, static_cast<size_t>(p.count) * sizeof(int32_t),
                   static_cast<uint64_t>(p.local_start) * sizeof(int32_t));
  }
}

void TokenCache::read_tokens(int64_t start, int64_t n, int32_t* out) {
  if (n <= 0) return;
  if (start < 0) throw std::out_of_range("TokenCache::read_tokens: negative start " + std::to_string(start));
  const int64_t end = start + n;
  size_t num = shards_.size();
  if (complete_.load(std::memory_order_acquire)) {
    // Lock-free: every shard is mapped and token_start_ is final.
    if (end > token_start_[num]) {
      throw std::out_of_range(dir_ + ": tokens [" + std::to_string(start) + ", " + std::to_string(end) +
                              ") lie past the end of the cache (" + std::to_string(token_start_[num]) + " tokens)");
    }
    size_t k =
        static_cast<size_t>(std::upper_bound(token_start_.begin(), token_start_.end(), start) - token_start_.begin()) -
        1;
    int64_t pos = start;
    while (pos < end) {
      while (token_start_[k + 1] <= pos) ++k;  // skip empty shards
      int64_t take = std::min(end, token_start_[k + 1]) - pos;
      std::memcpy(out + (pos - start), files_[k].tokens_map + (pos - token_start_[k]),
                  static_cast<size_t>(take) * sizeof(int32_t));
      pos += take;
    }
    return;
  }
  std::vector<Piece> pieces;
  {
    std::unique_lock<std::mutex> lock(mu_);
    wait_locked(lock, [&] { return tokens_available_locked() >= end; });
    int64_t avail = tokens_available_locked();
    if (end > avail) {
      throw std::out_of_range(dir_ + ": tokens [" + std::to_string(start) + ", " + std::to_string(end) +
                              ") lie past the end of the cache (" + std::to_string(avail) + " tokens)");
    }
    int64_t pos = start;
    size_t k = static_cast<size_t>(std::upper_bound(token_start_.begin(), token_start_.begin() + prefix_ + 1, start) -
                                   token_start_.begin()) -
               1;
    while (pos < end) {
      int64_t shard_start = token_start_[k];
      int64_t shard_end = shard_start + shards_[k].tokens;
      if (shard_end <= pos) {
        ++k;
        continue;
      }
      int64_t take = std::min(end, shard_end) - pos;
      open_files_locked(k);
      pieces.push_back({k, files_[k].tokens_map, &files_[k].tokens, pos - shard_start, take, pos - start});
      pos += take;
    }
  }
  for (const Piece& p : pieces) copy_piece(p, out);
}

std::pair<int64_t, int64_t> TokenCache::document(int64_t row) {
  if (row < 0) throw std::out_of_range("TokenCache::document: negative row");
  size_t k;
  int64_t local, base;
  const int64_t* offsets_map;
  const runtime::File* offsets_file;
  {
    std::unique_lock<std::mutex> lock(mu_);
    wait_locked(lock, [&] { return rows_available_locked() > row; });
    if (row >= rows_available_locked()) {
      throw std::out_of_range(dir_ + ": document " + std::to_string(row) + " lies past the end of the cache (" +
                              std::to_string(rows_available_locked()) + " documents)");
    }
    k = static_cast<size_t>(std::upper_bound(row_start_.begin(), row_start_.begin() + prefix_ + 1, row) -
                            row_start_.begin()) -
        1;
    while (row - row_start_[k] >= shards_[k].rows) ++k;  // skip empty shards
    local = row - row_start_[k];
    base = token_start_[k];
    open_files_locked(k);
    offsets_map = files_[k].offsets_map;
    offsets_file = &files_[k].offsets;
  }
  auto offset = [&](int64_t r) -> int64_t {
    if (r < 0) return 0;
    if (offsets_map) return offsets_map[r];
    int64_t v;
    read_committed(*offsets_file, &v, sizeof(v), static_cast<uint64_t>(r) * 8);
    return v;
  };
  return {base + offset(local - 1), base + offset(local)};
}

// --- builder notifications -----------------------------------------------------------------------------------

void TokenCache::on_commit(size_t shard, int64_t rows, int64_t tokens, bool finished) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    shards_[shard] = {rows, tokens, finished};
    advance_prefix_locked();
  }
  cv_.notify_all();
}

void TokenCache::on_failure(const std::string& message) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = message;
  }
  cv_.notify_all();
}

void TokenCache::on_finished() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    builder_running_ = false;
    advance_prefix_locked();
  }
  cv_.notify_all();
}

}  // namespace levanter::data
