#include "levanter/runtime/file_io.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <set>

namespace levanter::runtime {
namespace {

// Large sequential chunks: few syscalls, and a chunk's CRC is computed while it is still in cache.
constexpr size_t kChunk = size_t(8) << 20;
constexpr const char* kTemporaryMarker = ".tmp-";

[[noreturn]] void fail_errno(const std::string& path, const std::string& what, int err) {
  throw IoError(path + ": " + what + ": " + std::strerror(err));
}

std::string parent_of(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Runs a read/write-like syscall until all of `n` bytes are done, retrying EINTR. `call(p, left, done)`
// returns what the syscall returned; 0 means the end of the file (reads) or no progress (writes).
template <typename Call>
void transfer_all(const std::string& path, const char* verb, size_t n, Call call) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = call(done, n - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      fail_errno(path, std::string(verb) + " failed after " + std::to_string(done) + " bytes", errno);
    }
    if (r == 0) {
      throw IoError(path + ": " + verb + " stopped after " + std::to_string(done) + " of " + std::to_string(n) +
                    " bytes (" + (verb[0] == 'r' ? "the file ends early" : "no progress") + ")");
    }
    done += static_cast<size_t>(r);
  }
}

}  // namespace

// --- File ------------------------------------------------------------------------------------------------------

File File::open(const std::string& path, int flags, mode_t mode) {
  File f;
  f.path_ = path;
  // Reads open without blocking and must find a regular file (or a directory, for fsync): a FIFO or a device given
  // as a data, tokenizer or checkpoint file would otherwise block forever or stream without end.
  const bool reading = (flags & O_ACCMODE) == O_RDONLY && !(flags & O_CREAT);
  do {
    f.fd_ = ::open(path.c_str(), flags | O_CLOEXEC | (reading ? O_NONBLOCK : 0), mode);
  } while (f.fd_ < 0 && errno == EINTR);
  if (f.fd_ < 0) fail_errno(path, (flags & O_CREAT) ? "cannot create" : "cannot open", errno);
  if (reading) {
    struct stat st {};
    if (::fstat(f.fd_, &st) != 0) fail_errno(path, "cannot stat", errno);
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
      throw IoError(path + ": not a regular file (a FIFO, socket or device); give a file");
    }
    if (!(flags & O_NONBLOCK)) ::fcntl(f.fd_, F_SETFL, ::fcntl(f.fd_, F_GETFL) & ~O_NONBLOCK);
  }
  return f;
}

File& File::operator=(File&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(o.path_);
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}

File::~File() {
  if (fd_ >= 0) ::close(fd_);
}

size_t File::read_some(void* buf, size_t n) {
  while (true) {
    ssize_t r = ::read(fd_, buf, n);
    if (r >= 0) return static_cast<size_t>(r);
    if (errno != EINTR) fail_errno(path_, "read failed", errno);
  }
}

void File::read_exact_at(void* buf, size_t n, uint64_t offset) const {
  char* p = static_cast<char*>(buf);
  transfer_all(path_, "read", n, [&](size_t done, size_t left) {
    return ::pread(fd_, p + done, left, static_cast<off_t>(offset + done));
  });
}

void File::write_all(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  transfer_all(path_, "write", n, [&](size_t done, size_t left) { return ::write(fd_, p + done, left); });
}

void File::write_all_at(const void* data, size_t n, uint64_t offset) {
  const char* p = static_cast<const char*>(data);
  transfer_all(path_, "write", n, [&](size_t done, size_t left) {
    return ::pwrite(fd_, p + done, left, static_cast<off_t>(offset + done));
  });
}

void File::sync() {
  // Some file systems refuse fsync on directories (EINVAL); there is nothing more to do on those.
  if (::fsync(fd_) != 0 && errno != EINVAL) fail_errno(path_, "fsync failed", errno);
}

void File::sync_data() {
  if (::fdatasync(fd_) != 0 && errno != EINVAL) fail_errno(path_, "fdatasync failed", errno);
}

uint64_t File::size() const {
  struct stat st;
  if (::fstat(fd_, &st) != 0) fail_errno(path_, "cannot stat", errno);
  if (!S_ISREG(st.st_mode)) throw IoError(path_ + ": not a regular file");
  return static_cast<uint64_t>(st.st_size);
}

void File::close() {
  int fd = std::exchange(fd_, -1);
  // close can report a deferred write error (NFS); EINTR leaves the descriptor closed on Linux.
  if (fd >= 0 && ::close(fd) != 0 && errno != EINTR) fail_errno(path_, "close failed", errno);
}

// --- Buffer, Crc32, BackgroundCrc ------------------------------------------------------------------------------

Buffer::Buffer(size_t size) : size_(size) {
  // 64-byte alignment: every tensor whose offset is a multiple of its element size is aligned for ATen's
  // vectorised kernels when aliased in place.
  size_t alloc = std::max<size_t>(64, (size + 63) / 64 * 64);
  data_ = static_cast<char*>(std::aligned_alloc(64, alloc));
  if (!data_) throw std::bad_alloc();
}

Buffer::~Buffer() { std::free(data_); }

void Crc32::update(const void* data, size_t n) {
  if (n == 0) return;  // zlib's crc32 returns 0 for a null buffer: an empty tensor's data_ptr() would reset it
  const unsigned char* p = static_cast<const unsigned char*>(data);
  crc_ = static_cast<uint32_t>(crc32_z(crc_, p, n));
}

std::string Crc32::hex(uint32_t crc) {
  char buf[9];
  std::snprintf(buf, sizeof(buf), "%08x", crc);
  return buf;
}

namespace {
// Below this, a thread costs more than it saves.
constexpr uint64_t kThreadedCrcMin = uint64_t(16) << 20;
}  // namespace

BackgroundCrc::BackgroundCrc(Segments segments) : segments_(std::move(segments)) {
  for (const auto& s : segments_) total_ += s.second;
  if (total_ >= kThreadedCrcMin) thread_ = std::thread([this] { run(); });
}

BackgroundCrc::~BackgroundCrc() {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> l(mu_);
      abort_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
}

void BackgroundCrc::available(uint64_t bytes) {
  {
    std::lock_guard<std::mutex> l(mu_);
    ready_ = bytes;
  }
  cv_.notify_one();
}

void BackgroundCrc::run() {
  Crc32 c;
  uint64_t pos = 0;  // bytes checksummed so far, across segments
  size_t seg = 0, seg_pos = 0;
  while (pos < total_) {
    uint64_t ready;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return ready_ > pos || abort_; });
      if (abort_) return;
      ready = ready_;
    }
    while (pos < ready) {
      const auto& [ptr, len] = segments_[seg];
      size_t n = static_cast<size_t>(std::min<uint64_t>(len - seg_pos, ready - pos));
      c.update(ptr + seg_pos, n);
      pos += n;
      seg_pos += n;
      if (seg_pos == len) {
        ++seg;
        seg_pos = 0;
      }
    }
  }
  crc_ = c.value();
}

uint32_t BackgroundCrc::finish() {
  if (thread_.joinable()) {
    available(total_);
    thread_.join();
    return crc_;
  }
  Crc32 c;
  for (const auto& [ptr, len] : segments_) c.update(ptr, len);
  return c.value();
}

// --- ExclusiveFile, AtomicFile ---------------------------------------------------------------------------------

ExclusiveFile::ExclusiveFile(std::string path, bool checksum)
    : file_(File::open(path, O_WRONLY | O_CREAT | O_EXCL, 0644)), checksum_(checksum) {}

void ExclusiveFile::write(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    size_t piece = std::min(n, kChunk);
    if (checksum_) crc_.update(p, piece);
    file_.write_all(p, piece);
    written_ += piece;
    p += piece;
    n -= piece;
  }
}

void ExclusiveFile::fsync_and_close() {
  file_.sync();
  file_.close();
}

namespace {

// The temporaries this process is writing now. A name in the set is never reused, so that removing a
// leftover of the same name (from a dead process that had our pid) can never hit a live writer's file.
std::mutex g_temporaries_mu;
std::set<std::string> g_temporaries;

std::string claim_temporary(const std::string& path) {
  const std::string base = path + kTemporaryMarker + std::to_string(::getpid());
  std::lock_guard<std::mutex> lock(g_temporaries_mu);
  for (int n = 0;; ++n) {
    std::string name = n == 0 ? base : base + "-" + std::to_string(n);
    if (g_temporaries.insert(name).second) return name;
  }
}

void release_temporary(const std::string& name) {
  std::lock_guard<std::mutex> lock(g_temporaries_mu);
  g_temporaries.erase(name);
}

}  // namespace

AtomicFile::AtomicFile(std::string path, bool checksum) : path_(std::move(path)), tmp_(claim_temporary(path_)) {
  ::unlink(tmp_.c_str());  // a leftover of this name can only be from a dead process or an earlier failure
  try {
    file_.emplace(tmp_, checksum);
  } catch (...) {
    release_temporary(tmp_);
    throw;
  }
}

AtomicFile::~AtomicFile() {
  if (!committed_) {
    file_.reset();
    ::unlink(tmp_.c_str());
  }
  release_temporary(tmp_);
}

void AtomicFile::commit() {
  file_->fsync_and_close();
  rename_path(tmp_, path_);
  committed_ = true;
  fsync_parent(path_);
}

bool is_temporary_name(std::string_view name) { return name.find(kTemporaryMarker) != std::string_view::npos; }

void write_file_atomic(const std::string& path, std::string_view contents) {
  AtomicFile f(path, /*checksum=*/false);
  f.write(contents.data(), contents.size());
  f.commit();
}

// --- reading ---------------------------------------------------------------------------------------------------

namespace {

// Reads `size` bytes of `f` into `dst`, or (dst == nullptr) through a scratch buffer.
void read_all(File& f, char* dst, uint64_t size, uint32_t* crc) {
  std::unique_ptr<char[]> scratch;
  if (!dst) scratch.reset(new char[kChunk]);
  // Reading into memory that stays: checksum behind the reads on another thread.
  std::unique_ptr<BackgroundCrc> behind;
  if (dst && crc) behind = std::make_unique<BackgroundCrc>(BackgroundCrc::Segments{{dst, static_cast<size_t>(size)}});
  Crc32 c;
  uint64_t done = 0;
  while (done < size) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, size - done));
    char* p = dst ? dst + done : scratch.get();
    size_t got = 0;
    while (got < want) {
      size_t r = f.read_some(p + got, want - got);
      if (r == 0) {
        throw IoError(f.path() + ": file shrank while being read (got " + std::to_string(done + got) + " of " +
                      std::to_string(size) + " bytes)");
      }
      got += r;
    }
    done += want;
    if (behind) {
      behind->available(done);
    } else if (crc) {
      c.update(p, want);
    }
  }
  if (crc) *crc = behind ? behind->finish() : c.value();
}

}  // namespace

namespace {

// `path` opened for a sequential read, its size checked against expected_size (>= 0).
File open_sequential(const std::string& path, int64_t expected_size, uint64_t* size) {
  File f = File::open(path, O_RDONLY);
  *size = f.size();
  if (expected_size >= 0 && *size != static_cast<uint64_t>(expected_size)) {
    throw IoError(path + ": size is " + std::to_string(*size) + " bytes, the manifest says " +
                  std::to_string(expected_size) + " (truncated or modified)");
  }
  ::posix_fadvise(f.fd(), 0, 0, POSIX_FADV_SEQUENTIAL);
  return f;
}

}  // namespace

std::shared_ptr<Buffer> read_file(const std::string& path, int64_t expected_size, uint32_t* crc) {
  uint64_t size = 0;
  File f = open_sequential(path, expected_size, &size);
  auto buf = std::make_shared<Buffer>(static_cast<size_t>(size));
  read_all(f, buf->data(), size, crc);
  return buf;
}

File open_checksummed(const std::string& path, int64_t expected_size, uint32_t* crc) {
  uint64_t size = 0;
  File f = open_sequential(path, expected_size, &size);
  read_all(f, nullptr, size, crc);
  return f;
}

void checksum_file(const std::string& path, int64_t* size, uint32_t* crc) {
  File f = File::open(path, O_RDONLY);
  uint64_t n = f.size();
  ::posix_fadvise(f.fd(), 0, 0, POSIX_FADV_SEQUENTIAL);
  read_all(f, nullptr, n, crc);
  *size = static_cast<int64_t>(n);
}

std::string read_small_file(const std::string& path) {
  File f = File::open(path, O_RDONLY);
  uint64_t size = f.size();
  if (size > (uint64_t(64) << 20)) throw IoError(path + ": unexpectedly large (" + std::to_string(size) + " bytes)");
  std::string out(static_cast<size_t>(size), '\0');
  read_all(f, out.data(), size, nullptr);
  return out;
}

// --- directories -----------------------------------------------------------------------------------------------

void fsync_path(const std::string& path) { File::open(path, O_RDONLY).sync(); }

void fsync_parent(const std::string& path) { fsync_path(parent_of(path)); }

void rename_path(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) fail_errno(to, "cannot rename " + from + " to this path", errno);
}

namespace {

File open_for_lock(const std::string& path, FileLock::IfMissing if_missing) {
  if (if_missing == FileLock::IfMissing::kCreateFile) return File::open(path, O_RDONLY | O_CREAT, 0644);
  return File::open(path, O_RDONLY);
}

}  // namespace

FileLock FileLock::lock(const std::string& path, IfMissing if_missing) {
  FileLock l;
  l.file_ = open_for_lock(path, if_missing);
  int r;
  do {
    r = ::flock(l.file_.fd(), LOCK_EX);
  } while (r != 0 && errno == EINTR);
  if (r != 0) fail_errno(path, "cannot lock", errno);
  return l;
}

FileLock FileLock::try_lock(const std::string& path, IfMissing if_missing) {
  File f = open_for_lock(path, if_missing);
  int r;
  do {
    r = ::flock(f.fd(), LOCK_EX | LOCK_NB);
  } while (r != 0 && errno == EINTR);
  FileLock l;
  if (r == 0) {
    l.file_ = std::move(f);
  } else if (errno != EWOULDBLOCK) {
    fail_errno(path, "cannot lock", errno);
  }
  return l;
}

}  // namespace levanter::runtime
