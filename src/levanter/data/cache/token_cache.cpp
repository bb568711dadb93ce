#include "levanter/data/cache/token_cache.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <iostream>
#include <stdexcept>
#include <thread>

#include "levanter/data/cache/builder.h"
#include "levanter/runtime/file_io.h"
#include "levanter/runtime/process.h"

namespace levanter::data {

namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(200);
constexpr auto kWaitReportInterval = std::chrono::seconds(30);

// The pid a builder wrote into its lock file (0 if none).
long lock_holder_pid(const std::string& dir, int rank = 0) {
  try {
    return std::strtol(runtime::read_small_file(build_lock_path(dir, rank)).c_str(), nullptr, 10);
  } catch (const runtime::IoError&) {
    return 0;
  }
}

// Whether process `pid` is stopped (SIGSTOP, or a debugger): state T or t.
bool process_stopped(long pid) {
  const char state = runtime::process_state(pid);
  return state == 'T' || state == 't';
}

}  // namespace

std::shared_ptr<TokenCache> TokenCache::open(const std::string& dir, const std::optional<Processing>& expected,
                                             const CacheReadOptions& options) {
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
  auto cache = std::make_shared<TokenCache>(dir, std::move(*m), options);
  std::lock_guard<std::mutex> lock(cache->mu_);
  cache->refresh_from_disk_locked();
  if (cache->manifest_.finished && cache->prefix_ < cache->shards_.size()) {
    size_t k = cache->prefix_;
    throw DataError(manifest_path(dir) + ": the manifest says the cache is complete, but shard " + std::to_string(k) +
                    (read_ledger(dir, k) ? " is not finished" : " has no ledger") + ". The cache is corrupt: delete " +
                    shard_dir(dir, k) + " (or all of " + dir +
                    ") and rebuild it with `levanter cache --config ...` (training rebuilds it too)");
  }
  return cache;
}

TokenCache::TokenCache(std::string dir, CacheManifest manifest, CacheReadOptions options)
    : dir_(std::move(dir)), manifest_(std::move(manifest)), options_(options) {
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
  std::shared_ptr<CacheBuilder> b;
  {
    std::lock_guard<std::mutex> lock(mu_);
    b = builder_;
  }
  if (b) b->stop();
}

CacheBuilder* TokenCache::builder() const {
  std::lock_guard<std::mutex> lock(mu_);
  return builder_.get();
}

void TokenCache::attach_builder(std::shared_ptr<CacheBuilder> builder) {
  std::lock_guard<std::mutex> lock(mu_);
  builder_ = std::move(builder);
  builder_running_ = true;
}

void TokenCache::set_joint_build(int rank, int processes) {
  std::lock_guard<std::mutex> lock(mu_);
  joint_rank_ = rank;
  joint_processes_ = processes;
  refresh_from_disk_locked();
}

void TokenCache::set_takeover(Takeover takeover) {
  std::lock_guard<std::mutex> lock(mu_);
  takeover_ = std::move(takeover);
}

// --- integrity -----------------------------------------------------------------------------------------------

std::string TokenCache::file_path(size_t shard, Kind kind) const {
  return kind == Kind::kTokens ? tokens_path(dir_, shard) : offsets_path(dir_, shard);
}

void TokenCache::corrupt(size_t shard, Kind kind, const std::string& what) const {
  throw DataError(file_path(shard, kind) + " (shard " + std::to_string(shard) + " of the token cache " + dir_ +
                  "): " + what + ". The cache is corrupt: delete " + shard_dir(dir_, shard) + " (or all of " + dir_ +
                  ") and rebuild it with `levanter cache --config ...` (training rebuilds it too)");
}

int64_t TokenCache::block_bytes(size_t shard) const {
  int64_t b = shards_[shard].checksum_block_bytes;
  return b > 0 ? b : kChecksumBlockBytes;
}

void TokenCache::open_files_locked(size_t shard) {
  ShardFiles& f = files_[shard];
  if (f.tokens.is_open()) return;
  runtime::File tokens, offsets;
  for (Kind kind : {Kind::kTokens, Kind::kOffsets}) {
    try {
      (kind == Kind::kTokens ? tokens : offsets) = runtime::File::open(file_path(shard, kind), O_RDONLY);
    } catch (const runtime::IoError& e) {
      corrupt(shard, kind, std::string("its ledger says it is committed, but it cannot be opened (") + e.what() + ")");
    }
  }
  f.offsets = std::move(offsets);
  f.tokens = std::move(tokens);  // last: an open tokens file means both are open
}

// A finished shard: its files must be exactly as long as its ledger says, its checksums must cover them, and
// its last document must end at its last token. Then its blocks can be verified on first read.
void TokenCache::check_finished_locked(size_t shard) {
  const ShardState& s = shards_[shard];
  ShardFiles& f = files_[shard];
  if (f.tokens_ok) return;
  open_files_locked(shard);
  const int64_t want[2] = {s.tokens * 4, s.rows * 8};
  const char* what[2] = {" tokens", " documents"};
  const int64_t count[2] = {s.tokens, s.rows};
  for (Kind kind : {Kind::kTokens, Kind::kOffsets}) {
    const int i = kind == Kind::kTokens ? 0 : 1;
    const runtime::File& file = kind == Kind::kTokens ? f.tokens : f.offsets;
    int64_t size = static_cast<int64_t>(runtime::rethrow_io_errors_as<DataError>([&] { return file.size(); }));
    if (size != want[i]) {
      corrupt(shard, kind,
              "the file has " + std::to_string(size) + " bytes, but the shard's ledger (ledger.json) says " +
                  std::to_string(count[i]) + what[i] + " (" + std::to_string(want[i]) + " bytes)" +
                  (size < want[i] ? ": the file was truncated" : ": the ledger or the file was replaced"));
    }
    if (s.checksum_block_bytes > 0) {
      size_t blocks = static_cast<size_t>((want[i] + s.checksum_block_bytes - 1) / s.checksum_block_bytes);
      size_t listed = (kind == Kind::kTokens ? s.tokens_crc32 : s.offsets_crc32).size();
      if (listed != blocks) {
        corrupt(shard, kind,
                "its ledger lists " + std::to_string(listed) + " block checksums for " + std::to_string(blocks) +
                    " blocks");
      }
    }
  }
  if (s.rows > 0) {
    int64_t last = read_offset(shard, s.rows - 1);
    if (last != s.tokens) {
      corrupt(shard, Kind::kOffsets,
              "its last document ends at token " + std::to_string(last) + ", but the ledger says the shard holds " +
                  std::to_string(s.tokens) + " tokens");
    }
  }
  const int64_t bb = block_bytes(shard);
  auto flags = [&](int64_t bytes) {
    size_t n = static_cast<size_t>((bytes + bb - 1) / bb);
    auto a = std::make_unique<std::atomic<uint8_t>[]>(std::max<size_t>(n, 1));
    for (size_t b = 0; b < n; ++b) a[b].store(0, std::memory_order_relaxed);
    return a;
  };
  f.offsets_ok = flags(want[1]);
  f.tokens_ok = flags(want[0]);
}

void TokenCache::check_ids(size_t shard, const int32_t* ids, int64_t n, int64_t first_index) const {
  const int64_t vocab = options_.vocab_size;
  if (vocab <= 0) return;
  // One pass without branches (vectorised); the culprit is looked for only when there is one.
  const auto limit = static_cast<uint32_t>(vocab);
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) bad |= static_cast<uint32_t>(static_cast<uint32_t>(ids[i]) >= limit);
  if (!bad) return;
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      corrupt(shard, Kind::kTokens,
              "token " + std::to_string(first_index + i) + " of the shard has id " + std::to_string(ids[i]) +
                  ", outside the vocabulary [0, " + std::to_string(vocab) +
                  ") of the tokenizer (a cache of another tokenizer, or corrupt bytes)");
    }
  }
}

int64_t TokenCache::read_offset(size_t shard, int64_t local_row) {
  int64_t v;
  try {
    files_[shard].offsets.read_exact_at(&v, sizeof(v), static_cast<uint64_t>(local_row) * 8);
  } catch (const runtime::IoError& e) {
    corrupt(shard, Kind::kOffsets,
            std::string("cannot read document ") + std::to_string(local_row) + "'s offset, committed in its ledger (" +
                e.what() + ")");
  }
  return v;
}

// Reads block `block` of a finished shard's file whole: CRC against the ledger, then its contents (token ids
// in the vocabulary; offsets non-decreasing and within the shard). Several threads may verify one block at
// once: they reach the same verdict.
void TokenCache::verify_block(size_t shard, Kind kind, int64_t block) {
  const ShardState& s = shards_[shard];  // finished: immutable
  const ShardFiles& f = files_[shard];
  const int64_t bb = block_bytes(shard);
  const int64_t total = kind == Kind::kTokens ? s.tokens * 4 : s.rows * 8;
  const int64_t begin = block * bb, n = std::min(bb, total - begin);
  thread_local std::vector<char> buf;
  buf.resize(static_cast<size_t>(n));
  try {
    (kind == Kind::kTokens ? f.tokens : f.offsets).read_exact_at(buf.data(), buf.size(), static_cast<uint64_t>(begin));
  } catch (const runtime::IoError& e) {
    corrupt(shard, kind, std::string("cannot read bytes committed in its ledger (") + e.what() + ")");
  }
  if (s.checksum_block_bytes > 0) {
    runtime::Crc32 crc;
    crc.update(buf.data(), buf.size());
    uint32_t want = (kind == Kind::kTokens ? s.tokens_crc32 : s.offsets_crc32)[static_cast<size_t>(block)];
    if (crc.value() != want) {
      corrupt(shard, kind,
              "block " + std::to_string(block) + " (bytes " + std::to_string(begin) + " to " +
                  std::to_string(begin + n) + ") fails its checksum: CRC32 " + runtime::Crc32::hex(crc.value()) +
                  ", the ledger says " + runtime::Crc32::hex(want));
    }
  }
  if (kind == Kind::kTokens) {
    check_ids(shard, reinterpret_cast<const int32_t*>(buf.data()), n / 4, begin / 4);
  } else {
    const auto* offs = reinterpret_cast<const int64_t*>(buf.data());
    const int64_t first_row = begin / 8;
    int64_t prev = first_row == 0 ? 0 : read_offset(shard, first_row - 1);
    for (int64_t i = 0; i < n / 8; ++i) {
      if (offs[i] < prev || offs[i] > s.tokens) {
        corrupt(shard, kind,
                "document " + std::to_string(first_row + i) + " ends at token " + std::to_string(offs[i]) +
                    ", outside [" + std::to_string(prev) + ", " + std::to_string(s.tokens) + "]");
      }
      prev = offs[i];
    }
  }
  (kind == Kind::kTokens ? f.tokens_ok : f.offsets_ok)[block].store(1, std::memory_order_release);
}

void TokenCache::ensure_verified(size_t shard, Kind kind, int64_t first_byte, int64_t end_byte) {
  if (end_byte <= first_byte) return;
  // Token blocks need reading only for something to check; offsets are always checked (cheap: 1 per row).
  if (kind == Kind::kTokens && options_.vocab_size <= 0 && shards_[shard].checksum_block_bytes == 0) return;
  const ShardFiles& f = files_[shard];
  const std::atomic<uint8_t>* ok = (kind == Kind::kTokens ? f.tokens_ok : f.offsets_ok).get();
  const int64_t bb = block_bytes(shard);
  for (int64_t b = first_byte / bb; b <= (end_byte - 1) / bb; ++b) {
    if (!ok[b].load(std::memory_order_acquire)) verify_block(shard, kind, b);
  }
}

void TokenCache::verify_all() {
  wait_finished();
  for (size_t k = 0; k < shards_.size(); ++k) {
    ensure_verified(k, Kind::kTokens, 0, shards_[k].tokens * 4);
    ensure_verified(k, Kind::kOffsets, 0, shards_[k].rows * 8);
  }
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
    shards_[i] = {l->rows, l->tokens, l->finished, l->checksum_block_bytes, l->tokens_crc32, l->offsets_crc32};
  }
  advance_prefix_locked();
}

void TokenCache::advance_prefix_locked() {
  while (prefix_ < shards_.size() && shards_[prefix_].finished) {
    check_finished_locked(prefix_);
    token_start_.push_back(token_start_.back() + shards_[prefix_].tokens);
    row_start_.push_back(row_start_.back() + shards_[prefix_].rows);
    ++prefix_;
  }
  if (prefix_ == shards_.size() && manifest_.finished && !complete_.load(std::memory_order_relaxed) &&
      (token_start_.back() != manifest_.tokens || row_start_.back() != manifest_.rows)) {
    throw DataError(manifest_path(dir_) + ": the manifest says the cache holds " + std::to_string(manifest_.rows) +
                    " documents and " + std::to_string(manifest_.tokens) + " tokens, but its shard ledgers add up to " +
                    std::to_string(row_start_.back()) + " documents and " + std::to_string(token_start_.back()) +
                    " tokens. The cache is corrupt: delete " + dir_ +
                    " and rebuild it with `levanter cache --config ...` (training rebuilds it too)");
  }
  // With a builder here, the cache is complete once the builder has also written the manifest (on_finished).
  if (prefix_ == shards_.size() && !builder_running_ && !complete_.load(std::memory_order_relaxed)) {
    complete_.store(true, std::memory_order_release);
    cv_.notify_all();
  }
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
void TokenCache::wait_locked(std::unique_lock<std::mutex>& lock, const std::string& what, Pred ready) {
  while (true) {
    if (ready() || complete_.load(std::memory_order_relaxed)) return;
    if (!error_.empty()) throw DataError(error_);
    cv_.wait_for(lock, kPollInterval);
    if (!builder_ || joint_processes_ > 1) {
      // Another process builds it, or did until it died: read its ledgers, then check that it is still there.
      refresh_from_disk_locked();
      if (ready() || complete_.load(std::memory_order_relaxed)) return;
      check_builder_locked(lock, what);
    }
  }
}

// Called while waiting for another process's build. Its build lock (an flock, released by the kernel when
// the process dies however it dies) tells whether it is still there: if we can take the lock, nobody
// builds, and we resume the build here (takeover_) or fail. Otherwise we say what we wait for, now and then.
bool TokenCache::report_wait_now_locked() {
  const auto now = std::chrono::steady_clock::now();
  if (!options_.log_waits || (wait_announced_ && now - wait_reported_ < kWaitReportInterval)) return false;
  wait_announced_ = true;
  wait_reported_ = now;
  return true;
}

void TokenCache::check_builder_locked(std::unique_lock<std::mutex>& lock, const std::string& what) {
  if (joint_processes_ > 1) {
    // Built together: the first unfinished shard's builder is process prefix_ % processes of the job. (With every
    // shard finished, what is left is process 0's manifest, written by its builder.)
    if (prefix_ >= shards_.size()) return;
    const int owner = static_cast<int>(prefix_ % static_cast<size_t>(joint_processes_));
    if (owner == joint_rank_ && builder_) return;  // this process builds it (and commits through on_commit)
    const std::string path = build_lock_path(dir_, owner);
    runtime::FileLock probe = runtime::rethrow_io_errors_as<DataError>(
        [&] { return runtime::FileLock::try_lock(path, runtime::FileLock::IfMissing::kCreateFile); });
    const long pid = lock_holder_pid(dir_, owner);
    if (probe.locked()) {
      refresh_from_disk_locked();
      if (complete_.load(std::memory_order_relaxed) ||
          prefix_ % static_cast<size_t>(joint_processes_) != static_cast<size_t>(owner))
        return;
      throw DataError(dir_ + ": shard " + std::to_string(prefix_) + " of the token cache is built by process " +
                      std::to_string(owner) + " of this job" + (pid > 0 ? " (pid " + std::to_string(pid) + ")" : "") +
                      ", which is gone (" + path + " is free); launch the job again to resume the build");
    }
    if (report_wait_now_locked()) {
      std::cerr << "levanter: waiting for process " << owner << " of this job"
                << (pid > 0 ? " (pid " + std::to_string(pid) + ")" : "") << " to build shard " << prefix_
                << " of the token cache " << dir_ << ": " << prefix_ << " of " << shards_.size() << " shards finished, "
                << tokens_available_locked() << " tokens so far; this reader needs " << what << std::endl;
    }
    return;
  }
  runtime::FileLock build_lock = runtime::rethrow_io_errors_as<DataError>(
      [&] { return runtime::FileLock::try_lock(build_lock_path(dir_), runtime::FileLock::IfMissing::kCreateFile); });
  // A joint build's other processes may still write their shards after its process 0 has gone: wait for them.
  if (build_lock.locked() && joint_builders_alive(dir_)) build_lock = runtime::FileLock();
  const long pid = lock_holder_pid(dir_);
  const std::string who = pid > 0 ? "process " + std::to_string(pid) : std::string("another process");
  if (!build_lock.locked()) {
    if (report_wait_now_locked()) {
      std::cerr << "levanter: waiting for " << who << " (holding " << build_lock_path(dir_)
                << ") to build the token cache " << dir_ << ": " << prefix_ << " of " << shards_.size()
                << " shards finished, " << tokens_available_locked() << " tokens so far; this reader needs " << what;
      if (pid > 0 && process_stopped(pid)) {
        std::cerr << ". That process is stopped: resume it (kill -CONT " << pid << ") or end it (kill " << pid
                  << "), and this reader takes the build over";
      }
      std::cerr << std::endl;
    }
    return;
  }
  // Nobody builds. The build may have ended just before the lock was released: look again.
  refresh_from_disk_locked();
  if (complete_.load(std::memory_order_relaxed)) return;
  if (!takeover_) {
    throw DataError(dir_ + ": the token cache is incomplete (" + std::to_string(prefix_) + " of " +
                    std::to_string(shards_.size()) + " shards finished) and no process is building it" +
                    (pid > 0 ? " (" + who + ", which was, is gone)" : std::string()) +
                    ". Finish it with `levanter cache --config ...` (training builds it too)");
  }
  Takeover takeover = std::move(takeover_);
  takeover_ = nullptr;  // once
  if (options_.log_waits) {
    std::cerr << "levanter: " << dir_ << ": the process that was building this token cache (" << who
              << ") is gone; resuming the build in this process (pid " << ::getpid() << ")" << std::endl;
  }
  lock.unlock();  // the takeover attaches a builder and replays the ledgers (on_commit), which lock
  try {
    takeover(*this, std::move(build_lock));
  } catch (...) {
    lock.lock();
    throw;
  }
  lock.lock();
}

int64_t TokenCache::wait_for_tokens(int64_t n) {
  if (complete_.load(std::memory_order_acquire)) return token_start_[shards_.size()];
  std::unique_lock<std::mutex> lock(mu_);
  wait_locked(lock, std::to_string(n) + " tokens", [&] { return tokens_available_locked() >= n; });
  return tokens_available_locked();
}

int64_t TokenCache::wait_for_rows(int64_t n) {
  if (complete_.load(std::memory_order_acquire)) return row_start_[shards_.size()];
  std::unique_lock<std::mutex> lock(mu_);
  wait_locked(lock, std::to_string(n) + " documents", [&] { return rows_available_locked() >= n; });
  return rows_available_locked();
}

void TokenCache::wait_finished() {
  if (complete_.load(std::memory_order_acquire)) return;
  std::unique_lock<std::mutex> lock(mu_);
  wait_locked(lock, "the whole cache", [] { return false; });
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
  const int64_t first_byte = p.local_start * 4, nbytes = p.count * 4;
  if (p.finished) ensure_verified(p.shard, Kind::kTokens, first_byte, first_byte + nbytes);
  int32_t* dst = out + p.out_offset;
  try {
    files_[p.shard].tokens.read_exact_at(dst, static_cast<size_t>(nbytes), static_cast<uint64_t>(first_byte));
  } catch (const runtime::IoError& e) {
    corrupt(p.shard, Kind::kTokens, std::string("cannot read tokens committed in its ledger (") + e.what() + ")");
  }
  if (!p.finished) check_ids(p.shard, dst, p.count, p.local_start);
}

void TokenCache::read_tokens(int64_t start, int64_t n, int32_t* out) {
  if (n <= 0) return;
  if (start < 0) throw std::out_of_range("TokenCache::read_tokens: negative start " + std::to_string(start));
  const int64_t end = start + n;
  size_t num = shards_.size();
  if (complete_.load(std::memory_order_acquire)) {
    // Lock-free: every shard is finished and checked, its files open, and token_start_ is final.
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
      copy_piece({k, true, pos - token_start_[k], take, pos - start}, out);
      pos += take;
    }
    return;
  }
  std::vector<Piece> pieces;
  {
    std::unique_lock<std::mutex> lock(mu_);
    wait_locked(lock, "tokens " + std::to_string(start) + " to " + std::to_string(end),
                [&] { return tokens_available_locked() >= end; });
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
      pieces.push_back({k, k < prefix_, pos - shard_start, take, pos - start});
      pos += take;
    }
  }
  for (const Piece& p : pieces) copy_piece(p, out);
}

std::pair<int64_t, int64_t> TokenCache::document(int64_t row) {
  if (row < 0) throw std::out_of_range("TokenCache::document: negative row");
  size_t k;
  int64_t local, base, shard_tokens;
  bool finished;
  {
    std::unique_lock<std::mutex> lock(mu_);
    wait_locked(lock, "document " + std::to_string(row), [&] { return rows_available_locked() > row; });
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
    shard_tokens = shards_[k].tokens;
    finished = k < prefix_;
    open_files_locked(k);
  }
  if (finished) ensure_verified(k, Kind::kOffsets, std::max<int64_t>(local - 1, 0) * 8, (local + 1) * 8);
  int64_t begin = local > 0 ? read_offset(k, local - 1) : 0;
  int64_t end = read_offset(k, local);
  if (begin > end || end > shard_tokens) {
    corrupt(k, Kind::kOffsets,
            "document " + std::to_string(local) + " spans tokens " + std::to_string(begin) + " to " +
                std::to_string(end) + ", outside the " + std::to_string(shard_tokens) + " committed tokens");
  }
  return {base + begin, base + end};
}

// --- builder notifications -----------------------------------------------------------------------------------

void TokenCache::on_commit(size_t shard, const ShardLedger& l) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shards_[shard].finished) return;  // final; readers use its state without the lock
    shards_[shard] = {l.rows, l.tokens, l.finished, l.checksum_block_bytes, l.tokens_crc32, l.offsets_crc32};
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
