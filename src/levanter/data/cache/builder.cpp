#include "levanter/data/cache/builder.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <thread>

#include "levanter/data/documents.h"
#include "levanter/runtime/file_io.h"
#include "levanter/runtime/thread_pool.h"

namespace levanter::data {

namespace fs = std::filesystem;

namespace {

constexpr int kMaxWarnings = 10;  // bad lines printed per build; the rest are only counted

std::string rebuild_hint() {
  return "Set data.rebuild_cache: true (or pass --rebuild to `levanter cache`) to rebuild it, or use another cache_dir";
}

int64_t file_size(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return -1;
  return st.st_size;
}

// Removes leftovers of interrupted atomic writes (runtime::AtomicFile's temporaries).
void remove_temp_files(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (runtime::is_temporary_name(e.path().filename().string())) fs::remove(e.path(), ec);
  }
}

bool is_shard_dir_name(const std::string& name) {
  return name.size() == 5 && std::all_of(name.begin(), name.end(), ::isdigit);
}

// Removes what a cache consists of (the manifest first, so that it is never valid half-removed), and
// nothing else: cache_dir may be shared with other files.
void wipe_cache(const std::string& dir) {
  std::error_code ec;
  fs::remove(manifest_path(dir), ec);
  runtime::fsync_path(dir);
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (e.is_directory() && is_shard_dir_name(name)) fs::remove_all(e.path(), ec);
  }
  remove_temp_files(dir);
}

// Empties a shard: no ledger (nothing committed) and empty data files.
void reset_shard(const std::string& dir, size_t shard) {
  std::error_code ec;
  fs::remove_all(shard_dir(dir, shard), ec);
  fs::create_directories(shard_dir(dir, shard));
  runtime::File::open(tokens_path(dir, shard), O_WRONLY | O_CREAT | O_TRUNC);
  runtime::File::open(offsets_path(dir, shard), O_WRONLY | O_CREAT | O_TRUNC);
  runtime::fsync_path(shard_dir(dir, shard));
}

// Whether a finished shard still matches its input file: same path and size, and the same mtime or, when the
// mtime changed (a copy), the same content.
std::string source_change(const SourceFile& recorded, const std::string& path, const FileInfo& now) {
  if (recorded.path != path) return "shard was built from " + recorded.path + ", not " + path;
  if (recorded.size != now.size) {
    return path + " changed since it was cached (" + std::to_string(recorded.size) + " bytes then, " +
           std::to_string(now.size) + " now)";
  }
  if (recorded.mtime_ns == now.mtime_ns) return "";
  if (!recorded.hash.empty() && ContentHash::hex(hash_file(path)) == recorded.hash) return "";
  return path + " changed since it was cached (same size, different content)";
}

// CRC32 of each kChecksumBlockBytes block of a file written by appending; the last block may be partial.
class BlockChecksums {
 public:
  void append(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      size_t take = std::min<size_t>(n, static_cast<size_t>(kChecksumBlockBytes - bytes_ % kChecksumBlockBytes));
      current_.update(p, take);
      p += take;
      n -= take;
      bytes_ += static_cast<int64_t>(take);
      if (bytes_ % kChecksumBlockBytes == 0) {
        full_.push_back(current_.value());
        current_ = runtime::Crc32();
      }
    }
  }
  // The first `bytes` bytes of `path`, read back (a resumed shard's committed part).
  void append_file(const std::string& path, int64_t bytes) {
    runtime::File f = runtime::File::open(path, O_RDONLY);
    std::vector<char> buf(static_cast<size_t>(std::min<int64_t>(bytes, kChecksumBlockBytes)));
    for (int64_t done = 0; done < bytes;) {
      size_t n = static_cast<size_t>(std::min<int64_t>(bytes - done, kChecksumBlockBytes));
      f.read_exact_at(buf.data(), n, static_cast<uint64_t>(done));
      append(buf.data(), n);
      done += static_cast<int64_t>(n);
    }
  }
  std::vector<uint32_t> list() const {
    std::vector<uint32_t> out = full_;
    if (bytes_ % kChecksumBlockBytes != 0) out.push_back(current_.value());
    return out;
  }

 private:
  int64_t bytes_ = 0;
  std::vector<uint32_t> full_;
  runtime::Crc32 current_;
};

struct ShardChecksums {
  BlockChecksums tokens, offsets;
};

// Writes this process's pid into the lock file it holds, for the messages of processes waiting on it.
void record_lock_holder(const std::string& dir, int rank) {
  std::string pid = std::to_string(::getpid()) + "\n";
  runtime::File f = runtime::File::open(build_lock_path(dir, rank), O_WRONLY | O_TRUNC);
  f.write_all(pid.data(), pid.size());
}

struct RecordResult {
  enum Kind { kDocument, kBlank, kBad } kind = kBlank;
  std::vector<int32_t> ids;
  std::string error;
};

}  // namespace

struct CacheBuilder::Impl {
  std::string dir;
  std::vector<std::string> files;
  DocumentEncoder encoder;
  CacheBuildOptions options;
  CacheManifest manifest;
  TokenCache* cache = nullptr;  // owns this builder and stops it before it goes away
  runtime::FileLock lock;       // <dir>/.lock: one builder per cache directory

  std::vector<ShardLedger> ledgers;       // per shard: the state at the start, then the final ledger
  std::vector<ShardChecksums> checksums;  // per shard being built: its blocks' CRCs so far
  std::vector<size_t> todo;               // shards to build, in order
  // Building together with other processes (options.processes > 1): this process's shards are i % processes == rank.
  bool owns(size_t shard) const {
    return options.processes <= 1 || static_cast<int>(shard % static_cast<size_t>(options.processes)) == options.rank;
  }
  size_t owned = 0;  // how many shards are this process's
  std::atomic<size_t> next_todo{0};

  std::atomic<bool> stopping{false}, killed{false};
  std::atomic<int64_t> commits{0};
  std::atomic<int> warnings{0};

  std::atomic<int64_t> documents{0}, tokens{0}, bad_lines{0}, bytes_read{0}, bytes_done_base{0};
  std::atomic<size_t> shards_finished{0};
  int64_t bytes_total = 0;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();

  mutable std::mutex state_mu;
  std::condition_variable done_cv;
  bool done = false;
  int running = 0;  // shard owners still running; guarded by state_mu
  std::string error;
  // Last: destroyed (its workers joined) before anything they use.
  std::unique_ptr<runtime::ThreadPool> pool;

  // One shard owner per thread. An owner that finds no shard left ends, and its thread then helps the
  // others tokenize their chunks (the pool's workers help any parallel_for).
  void start(int num_threads) {
    running = num_threads;
    pool = std::make_unique<runtime::ThreadPool>(num_threads);
    for (int i = 0; i < num_threads; ++i) pool->submit([this] { owner(); });
  }

  void owner() {
    while (!stopping.load() && !killed.load()) {
      size_t t = next_todo.fetch_add(1);
      if (t >= todo.size()) break;
      size_t shard = todo[t];
      try {
        build_shard(shard);
      } catch (const std::exception& e) {
        fail(shard, e.what());
      }
    }
    owner_exit();
  }

  void owner_exit() {
    bool last;
    {
      std::lock_guard<std::mutex> lock(state_mu);
      last = --running == 0;
    }
    if (!last) return;
    // Stopping only means starting no more work: if every shard is done, the cache is finished all the same.
    bool stopped = false;
    if (error.empty() && !killed.load() && shards_finished.load() == owned) {
      try {
        // Together with other processes: process 0 writes the manifest once every shard is finished; the others
        // are done with their part (their readers see the rest in the ledgers).
        if (options.processes > 1 && options.rank != 0) {
          cache->on_finished();
        } else if (options.processes <= 1 || wait_for_other_shards()) {
          finalize();
        } else {
          stopped = true;
        }
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(state_mu);
        error = e.what();
        cache->on_failure(error);
      }
    } else if (error.empty()) {
      stopped = true;
    }
    if (stopped) {
      cache->on_failure(
          killed.load()
              ? dir + ": the cache build was killed (simulated); resume it by opening the cache again"
              : dir + ": the cache build was stopped before it finished; resume it by opening the cache again");
    }
    {
      std::lock_guard<std::mutex> lock(state_mu);
      done = true;
    }
    done_cv.notify_all();
  }

  // Process 0 of a joint build: polls the other processes' shards until every one is finished (true), the build is
  // stopped (false), or a shard's builder is gone (fails the build, naming it).
  bool wait_for_other_shards() {
    for (size_t i = 0; i < files.size(); ++i) {
      while (!owns(i)) {
        std::optional<ShardLedger> l = read_ledger(dir, i);
        if (l && l->finished) {
          ledgers[i] = *l;
          break;
        }
        if (stopping.load()) return false;
        const int owner = static_cast<int>(i % static_cast<size_t>(options.processes));
        runtime::FileLock probe =
            runtime::FileLock::try_lock(build_lock_path(dir, owner), runtime::FileLock::IfMissing::kCreateFile);
        if (probe.locked()) {
          l = read_ledger(dir, i);
          if (l && l->finished) continue;
          throw DataError(dir + ": shard " + std::to_string(i) + " is built by process " + std::to_string(owner) +
                          " of this job, which is gone (" + build_lock_path(dir, owner) +
                          " is free); launch the job again to resume the build");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    }
    return true;
  }

  void finalize() {
    CacheManifest m = manifest;
    m.finished = true;
    m.rows = m.tokens = m.bad_lines = 0;
    for (const ShardLedger& l : ledgers) {
      m.rows += l.rows;
      m.tokens += l.tokens;
      m.bad_lines += l.bad_lines;
    }
    runtime::write_file_atomic(manifest_path(dir), m.to_json());
    cache->on_finished();
  }

  void fail(size_t shard, const std::string& message) {
    {
      std::lock_guard<std::mutex> lock(state_mu);
      if (error.empty()) error = message;
    }
    stopping = true;
    // No half-written shard: the failing shard goes entirely (it is rebuilt from scratch next time).
    std::error_code ec;
    fs::remove_all(shard_dir(dir, shard), ec);
    cache->on_failure(message);
  }

  void process(const Record& rec, const std::string& path, InputFormat format, RecordResult& r) {
    r.ids.clear();
    try {
      std::optional<std::string> text = document_text(rec, path, format, encoder.processing.text_key);
      if (!text) {
        r.kind = RecordResult::kBlank;
        return;
      }
      if (encoder.processing.bos_id) r.ids.push_back(*encoder.processing.bos_id);
      encoder.encode(*text, r.ids);
      if (encoder.processing.eos_id) r.ids.push_back(*encoder.processing.eos_id);
      r.kind = RecordResult::kDocument;
    } catch (const DataError& e) {
      r.kind = RecordResult::kBad;
      r.error = e.what();
    } catch (const std::exception& e) {
      r.kind = RecordResult::kBad;
      r.error = path + ":" + std::to_string(rec.line) + ": cannot tokenize: " + e.what();
    }
  }

  // Tokenizes a chunk with the help of idle threads (one record at a time: documents vary in length);
  // returns when every record is processed. Each result goes to its record's slot.
  void run_chunk(const std::vector<Record>& records, const std::string& path, InputFormat format,
                 std::vector<RecordResult>& results) {
    pool->parallel_for(records.size(), [&](size_t begin, size_t end, int) {
      for (size_t i = begin; i < end; ++i) process(records[i], path, format, results[i]);
    });
  }

  void warn(const std::string& message) {
    if (!options.log_warnings) return;
    int w = warnings.fetch_add(1);
    if (w < kMaxWarnings) std::cerr << "warning: " << message << "\n";
    if (w == kMaxWarnings) std::cerr << "warning: (further skipped lines are only counted)\n";
  }

  void build_shard(size_t shard) {
    const std::string& path = files[shard];
    ShardLedger l = ledgers[shard];
    RecordReader reader(path, options.max_document_bytes);
    if (l.lines > 0) reader.skip(l.lines);
    runtime::File tokens_file = runtime::File::open(tokens_path(dir, shard), O_WRONLY);
    runtime::File offsets_file = runtime::File::open(offsets_path(dir, shard), O_WRONLY);

    std::vector<Record> records;
    std::vector<RecordResult> results;
    std::vector<int32_t> toks;
    std::vector<int64_t> offs;
    int64_t last_bytes = 0;  // the reader may have read ahead already (decompressor buffers)
    bool eof = false;
    while (!eof) {
      if (stopping.load() || killed.load()) return;  // the last commit stands; resumable
      records.clear();
      int64_t text_bytes = 0;
      while (static_cast<int64_t>(records.size()) < options.chunk_documents && text_bytes < options.chunk_bytes) {
        Record r;
        if (!reader.next(r)) {
          eof = true;
          break;
        }
        text_bytes += static_cast<int64_t>(r.bytes.size());
        records.push_back(std::move(r));
      }
      bytes_read += reader.bytes_read() - last_bytes;
      last_bytes = reader.bytes_read();

      results.resize(records.size());
      run_chunk(records, path, reader.format(), results);

      toks.clear();
      offs.clear();
      int64_t end = l.tokens, docs = 0, bad = 0;
      for (const RecordResult& r : results) {
        if (r.kind == RecordResult::kDocument) {
          toks.insert(toks.end(), r.ids.begin(), r.ids.end());
          end += static_cast<int64_t>(r.ids.size());
          offs.push_back(end);
          ++docs;
        } else if (r.kind == RecordResult::kBad) {
          if (!options.skip_bad_lines) throw DataError(r.error + " (set data.skip_bad_lines: true to skip bad lines)");
          ++bad;
          warn("skipping " + r.error);
        }
      }
      if (eof && l.rows + docs == 0 && l.bad_lines + bad == 0) {
        if (!options.skip_bad_lines) throw DataError(path + ": empty file (no documents)");
        warn(path + ": empty file (no documents)");
      }
      if (killed.load()) return;

      tokens_file.write_all_at(toks.data(), toks.size() * sizeof(int32_t), static_cast<uint64_t>(l.tokens) * 4);
      offsets_file.write_all_at(offs.data(), offs.size() * sizeof(int64_t), static_cast<uint64_t>(l.rows) * 8);
      tokens_file.sync_data();
      offsets_file.sync_data();
      ShardChecksums& sums = checksums[shard];
      sums.tokens.append(toks.data(), toks.size() * sizeof(int32_t));
      sums.offsets.append(offs.data(), offs.size() * sizeof(int64_t));
      l.checksum_block_bytes = kChecksumBlockBytes;
      l.tokens_crc32 = sums.tokens.list();
      l.offsets_crc32 = sums.offsets.list();
      l.rows += docs;
      l.tokens = end;
      l.lines += static_cast<int64_t>(records.size());
      l.bad_lines += bad;
      l.chunks += 1;
      if (eof) {
        l.finished = true;
        l.source.hash = ContentHash::hex(reader.content_hash());
      }
      runtime::write_file_atomic(ledger_path(dir, shard), l.to_json());
      ledgers[shard] = l;  // only this worker touches this shard's entry until the build ends
      documents += docs;
      tokens += static_cast<int64_t>(toks.size());
      bad_lines += bad;
      if (eof) ++shards_finished;
      cache->on_commit(shard, l);

      if (options.simulate_kill_after_chunks >= 0 && ++commits == options.simulate_kill_after_chunks) {
        // What a kill in the middle of the next chunk leaves: data past the ledger, and a temporary ledger.
        if (!l.finished) {
          int32_t junk[3] = {-1, -2, -3};
          tokens_file.write_all_at(junk, sizeof(junk), static_cast<uint64_t>(l.tokens) * 4);
          offsets_file.write_all_at(junk, sizeof(junk), static_cast<uint64_t>(l.rows) * 8);
          runtime::File::open(ledger_path(dir, shard) + ".tmp-999999", O_WRONLY | O_CREAT | O_TRUNC)
              .write_all("{\"rows\": 12", 11);
        }
        killed = true;
        return;
      }
    }
  }

  CacheBuildProgress progress() const {
    CacheBuildProgress p;
    p.documents = documents.load();
    p.tokens = tokens.load();
    p.bad_lines = bad_lines.load();
    p.bytes_read_this_run = bytes_read.load();
    p.input_bytes_done = std::min(bytes_total, bytes_done_base.load() + p.bytes_read_this_run);
    p.input_bytes_total = bytes_total;
    p.shards_finished = shards_finished.load();
    p.shards_total = files.size();
    p.elapsed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::lock_guard<std::mutex> lock(state_mu);
    p.done = done;
    p.failed = !error.empty();
    return p;
  }
};

CacheBuilder::CacheBuilder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CacheBuilder::~CacheBuilder() { stop(); }

CacheBuildProgress CacheBuilder::progress() const { return impl_->progress(); }

void CacheBuilder::wait() {
  std::unique_lock<std::mutex> lock(impl_->state_mu);
  impl_->done_cv.wait(lock, [&] { return impl_->done; });
  if (!impl_->error.empty()) throw DataError(impl_->error);
}

void CacheBuilder::stop() {
  if (!impl_->pool) return;  // never started
  impl_->stopping = true;
  // Owners stop at their next chunk boundary; the last one out records how the build ended.
  std::unique_lock<std::mutex> lock(impl_->state_mu);
  impl_->done_cv.wait(lock, [&] { return impl_->done; });
}

// --- opening ---------------------------------------------------------------------------------------------------

namespace {

CacheReadOptions read_options(const CacheBuildOptions& options) {
  CacheReadOptions r;
  r.vocab_size = options.vocab_size;
  r.log_waits = options.log_warnings;
  return r;
}

// Every input must be readable and of a known format before anything is written.
std::vector<FileInfo> stat_inputs(const std::vector<std::string>& files) {
  std::vector<FileInfo> infos;
  for (const std::string& path : files) {
    detect_format(path);
    infos.push_back(filesystem_for(path).stat(path));
  }
  return infos;
}

// With the build lock held: checks that what is in `dir` is the cache wanted (or wipes it, with
// options.rebuild), writes the manifest if there is none, and works out each shard's state: finished (its
// input unchanged), resumed from its last commit (bytes past it dropped, its checksums recomputed from the
// committed bytes), or restarted. The plan is an Impl ready to start; its todo is empty when there is
// nothing to build.
std::unique_ptr<CacheBuilder::Impl> plan_build(const std::string& dir, const std::vector<std::string>& files,
                                               const std::vector<FileInfo>& infos, const DocumentEncoder& encoder,
                                               const CacheBuildOptions& options, runtime::FileLock lock) {
  auto impl = std::make_unique<CacheBuilder::Impl>();
  impl->dir = dir;
  impl->files = files;
  impl->encoder = encoder;
  impl->options = options;
  impl->lock = std::move(lock);
  record_lock_holder(dir, options.processes > 1 ? options.rank : 0);

  // Is what is there the cache we want? (Building together with other processes, process 0 has answered that.)
  std::optional<CacheManifest> m = read_manifest(dir);
  if (options.processes > 1 && options.rank != 0) {
    if (!m || !(m->processing == encoder.processing) || m->files != files)
      throw DataError(dir +
                      ": the manifest process 0 checked is not there or differs; the job's processes must "
                      "configure the same data");
  } else if (m) {
    std::string why;
    if (m->format_version != kCacheFormatVersion) {
      why = "it has format version " + std::to_string(m->format_version) + " and this build writes version " +
            std::to_string(kCacheFormatVersion);
    } else if (!(m->processing == encoder.processing)) {
      why = m->processing.difference(encoder.processing);
    } else if (m->files != files) {
      std::vector<std::string> gone, added;
      for (const auto& f : m->files) {
        if (std::find(files.begin(), files.end(), f) == files.end()) gone.push_back(f);
      }
      for (const auto& f : files) {
        if (std::find(m->files.begin(), m->files.end(), f) == m->files.end()) added.push_back(f);
      }
      why = "it was built from other input files (" + std::to_string(m->files.size()) + " then, " +
            std::to_string(files.size()) + " now";
      if (!gone.empty()) why += "; no longer configured: " + gone.front() + (gone.size() > 1 ? ", ..." : "");
      if (!added.empty()) why += "; new: " + added.front() + (added.size() > 1 ? ", ..." : "");
      if (gone.empty() && added.empty()) why += "; the same files in another order";
      why += ")";
    }
    if (!why.empty()) {
      if (!options.rebuild) throw DataError(dir + ": refusing to use this cache: " + why + ". " + rebuild_hint());
      if (options.log_warnings) std::cerr << "warning: " << dir << ": rebuilding the cache: " << why << "\n";
      wipe_cache(dir);
      m.reset();
    }
  }
  if (!m) {
    wipe_cache(dir);  // shards of an earlier cache whose manifest is gone
    CacheManifest fresh;
    fresh.processing = encoder.processing;
    fresh.files = files;
    runtime::write_file_atomic(manifest_path(dir), fresh.to_json());
    m = fresh;
  }
  impl->manifest = *m;
  if (options.processes <= 1 || options.rank == 0) remove_temp_files(dir);  // (process 0's manifest is its own)

  // Each shard: finished (check its source), partially committed (resume), or empty (start).
  impl->ledgers.resize(files.size());
  impl->checksums.resize(files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    if (!impl->owns(i)) continue;  // another process's (building together)
    ++impl->owned;
    const std::string& path = files[i];
    const FileInfo& info = infos[i];
    std::optional<ShardLedger> l = read_ledger(dir, i);
    if (l && l->format_version == kCacheFormatVersion && l->finished) {
      std::string change = source_change(l->source, path, info);
      if (change.empty()) {
        remove_temp_files(shard_dir(dir, i));
        impl->ledgers[i] = *l;
        impl->documents += l->rows;
        impl->tokens += l->tokens;
        impl->bad_lines += l->bad_lines;
        impl->bytes_done_base += info.size;
        ++impl->shards_finished;
        continue;
      }
      if (!options.rebuild) throw DataError(dir + ": refusing to use this cache: " + change + ". " + rebuild_hint());
      if (options.log_warnings) std::cerr << "warning: " << dir << ": rebuilding shard " << i << ": " << change << "\n";
      l.reset();
    }
    const bool same_input = l && l->format_version == kCacheFormatVersion && l->source.path == path &&
                            l->source.size == info.size && l->source.mtime_ns == info.mtime_ns;
    bool resumable =
        same_input && file_size(tokens_path(dir, i)) >= l->tokens * 4 && file_size(offsets_path(dir, i)) >= l->rows * 8;
    std::string restart_why = !same_input ? path + " changed" : "its files are shorter than its ledger says";
    if (resumable) {
      // Drop whatever a killed build wrote past the last commit.
      if (::truncate(tokens_path(dir, i).c_str(), l->tokens * 4) != 0 ||
          ::truncate(offsets_path(dir, i).c_str(), l->rows * 8) != 0) {
        throw DataError(shard_dir(dir, i) + ": cannot truncate to the committed size: " + std::strerror(errno));
      }
      // The checksums of the committed bytes, to continue from; they must match the ledger's.
      ShardChecksums& sums = impl->checksums[i];
      sums.tokens.append_file(tokens_path(dir, i), l->tokens * 4);
      sums.offsets.append_file(offsets_path(dir, i), l->rows * 8);
      if (l->checksum_block_bytes == kChecksumBlockBytes &&
          (sums.tokens.list() != l->tokens_crc32 || sums.offsets.list() != l->offsets_crc32)) {
        resumable = false;
        restart_why = "its committed data fail their checksums";
        sums = ShardChecksums();
      }
    }
    if (resumable) {
      remove_temp_files(shard_dir(dir, i));
      impl->ledgers[i] = *l;
      impl->documents += l->rows;
      impl->tokens += l->tokens;
      impl->bad_lines += l->bad_lines;
    } else {
      if (l && options.log_warnings)
        std::cerr << "warning: " << dir << ": restarting shard " << i << " (" << restart_why << ")\n";
      reset_shard(dir, i);
      ShardLedger fresh;
      fresh.source = {path, info.size, info.mtime_ns, ""};
      impl->ledgers[i] = fresh;
    }
    impl->todo.push_back(i);
    impl->bytes_total += info.size;
  }
  impl->bytes_total += impl->bytes_done_base;
  return impl;
}

// Hands the plan's shard states to `cache` and, if there is something to build, starts the build feeding it.
void start_build(TokenCache& cache, std::unique_ptr<CacheBuilder::Impl> impl) {
  for (size_t i = 0; i < impl->files.size(); ++i) {
    if (impl->owns(i)) cache.on_commit(i, impl->ledgers[i]);
  }
  if (impl->todo.empty() && impl->manifest.finished) return;  // complete: nothing to build, release the lock

  const int threads = impl->options.num_threads > 0 ? impl->options.num_threads : runtime::hardware_threads();
  impl->cache = &cache;
  CacheBuilder::Impl* raw = impl.get();
  auto builder = std::make_shared<CacheBuilder>(std::move(impl));
  cache.attach_builder(builder);
  raw->start(threads);
}

// Another process holds the build lock: read the cache as it grows (after checking it is the one we want),
// and take the build over if that process dies.
std::shared_ptr<TokenCache> open_built_elsewhere(const std::string& dir, const std::vector<std::string>& files,
                                                 const DocumentEncoder& encoder, const CacheBuildOptions& options) {
  auto cache = TokenCache::open(dir, encoder.processing, read_options(options));
  if (cache->manifest().files != files) {
    throw DataError(dir + ": another process is building this cache from other input files than the configured ones");
  }
  CacheBuildOptions resume = options;
  resume.rebuild = false;  // the cache was checked above; never wipe what readers may be reading
  cache->set_takeover([dir, files, encoder, resume](TokenCache& c, runtime::FileLock lock) {
    runtime::rethrow_io_errors_as<DataError>(
        [&] { start_build(c, plan_build(dir, files, stat_inputs(files), encoder, resume, std::move(lock))); });
  });
  return cache;
}

// Building together with the other processes of a job (CacheBuildOptions::processes): process 0 takes the cache's
// lock and checks or writes the manifest; then each process takes its own lock and plans its shards; only when every
// process has (an all_gather of their outcomes, which also reports any failure everywhere) do builds and reads start.
std::shared_ptr<TokenCache> build_jointly(const std::string& dir, const std::vector<std::string>& files,
                                          const std::vector<FileInfo>& infos, const DocumentEncoder& encoder,
                                          const CacheBuildOptions& options) {
  if (!options.all_gather) throw std::invalid_argument("build_or_load_cache: several processes need an all_gather");
  const std::string kFailed = "!";
  auto take_lock = [&](int rank) {
    runtime::FileLock lock =
        runtime::FileLock::try_lock(build_lock_path(dir, rank), runtime::FileLock::IfMissing::kCreateFile);
    if (!lock.locked()) {
      throw DataError(dir + ": another process holds " + build_lock_path(dir, rank) +
                      " and builds this token cache; the processes of a job build it together only when no other "
                      "process does: wait for it to finish, or stop it");
    }
    return lock;
  };
  // Every process's outcome of `step` ("" when it had nothing to do), in rank order; throws on every process if any
  // failed, naming the first that did.
  auto agree = [&](const std::function<void()>& step) {
    std::string mine;
    try {
      step();
    } catch (const std::exception& e) {
      mine = kFailed + e.what();
    }
    const std::vector<std::string> all = options.all_gather(mine);
    for (size_t r = 0; r < all.size(); ++r) {
      if (all[r].rfind(kFailed, 0) != 0) continue;
      if (static_cast<int>(r) == options.rank) throw DataError(all[r].substr(1));
      throw DataError("process " + std::to_string(r) + " could not open the token cache: " + all[r].substr(1));
    }
  };
  std::unique_ptr<CacheBuilder::Impl> impl;
  agree([&] {  // process 0: the cache's lock, the manifest, its own shards
    if (options.rank == 0) impl = plan_build(dir, files, infos, encoder, options, take_lock(0));
  });
  agree([&] {  // the others: their locks and shards
    if (options.rank != 0) impl = plan_build(dir, files, infos, encoder, options, take_lock(options.rank));
  });
  auto cache = std::make_shared<TokenCache>(dir, impl->manifest, read_options(options));
  cache->set_joint_build(options.rank, options.processes);
  start_build(*cache, std::move(impl));
  return cache;
}

std::shared_ptr<TokenCache> build_or_load_cache_unchecked(const std::string& dir, const std::vector<std::string>& files,
                                                          const DocumentEncoder& encoder,
                                                          const CacheBuildOptions& options) {
  if (!encoder.encode) throw std::invalid_argument("build_or_load_cache: the encoder has no encode function");
  std::vector<FileInfo> infos = stat_inputs(files);

  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw DataError(dir + ": cannot create the cache directory: " + ec.message());
  if (options.processes > 1) return build_jointly(dir, files, infos, encoder, options);

  runtime::FileLock lock = runtime::FileLock::try_lock(dir + "/.lock", runtime::FileLock::IfMissing::kCreateFile);
  // Another process builds it. It writes the manifest right after taking the lock: give it a moment, and
  // build here if it lets go of the lock (dies) before writing it.
  for (int i = 0; i < 300 && !lock.locked() && !read_manifest(dir); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    lock = runtime::FileLock::try_lock(dir + "/.lock", runtime::FileLock::IfMissing::kCreateFile);
  }
  if (lock.locked() && joint_builders_alive(dir)) lock = runtime::FileLock();  // a job's processes still build it
  if (!lock.locked()) return open_built_elsewhere(dir, files, encoder, options);

  std::unique_ptr<CacheBuilder::Impl> impl = plan_build(dir, files, infos, encoder, options, std::move(lock));
  auto cache = std::make_shared<TokenCache>(dir, impl->manifest, read_options(options));
  start_build(*cache, std::move(impl));
  return cache;
}

}  // namespace

std::shared_ptr<TokenCache> build_or_load_cache(const std::string& dir, const std::vector<std::string>& files,
                                                const DocumentEncoder& encoder, const CacheBuildOptions& options) {
  return runtime::rethrow_io_errors_as<DataError>(
      [&] { return build_or_load_cache_unchecked(dir, files, encoder, options); });
}

}  // namespace levanter::data
