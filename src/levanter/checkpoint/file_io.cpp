#include "levanter/checkpoint/file_io.h"

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

namespace levanter::checkpoint::io {
namespace {

// Large sequential chunks: few syscalls, and a chunk's CRC is computed while it is still in cache.
constexpr size_t kChunk = size_t(8) << 20;

[[noreturn]] void fail_errno(const std::string& path, const std::string& what, int err) {
  throw CheckpointError(path + ": " + what + ": " + std::strerror(err));
}

int open_checked(const std::string& path, int flags, mode_t mode = 0) {
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) fail_errno(path, (flags & O_CREAT) ? "cannot create" : "cannot open", errno);
  return fd;
}

std::string parent_of(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

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

ExclusiveFile::ExclusiveFile(std::string path, bool checksum) : path_(std::move(path)), checksum_(checksum) {
  fd_ = open_checked(path_, O_WRONLY | O_CREAT | O_EXCL, 0644);
}

ExclusiveFile::~ExclusiveFile() {
  if (fd_ >= 0) ::close(fd_);
}

void ExclusiveFile::write(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    size_t piece = std::min(n, kChunk);
    if (checksum_) crc_.update(p, piece);
    size_t left = piece;
    while (left > 0) {
      ssize_t w = ::write(fd_, p, left);
      if (w < 0) {
        if (errno == EINTR) continue;
        fail_errno(path_, "write failed after " + std::to_string(written_) + " bytes", errno);
      }
      if (w == 0) throw CheckpointError(path_ + ": write made no progress after " + std::to_string(written_) + " bytes");
      p += w;
      left -= static_cast<size_t>(w);
      written_ += static_cast<uint64_t>(w);
    }
    n -= piece;
  }
}

void ExclusiveFile::fsync_and_close() {
  if (::fsync(fd_) != 0) fail_errno(path_, "fsync failed", errno);
  int fd = fd_;
  fd_ = -1;
  // close can report a deferred write error (NFS); EINTR leaves the descriptor closed on Linux.
  if (::close(fd) != 0 && errno != EINTR) fail_errno(path_, "close failed", errno);
}

namespace {

// Reads the file behind `fd` (of `size` bytes) into `dst`, or (dst == nullptr) through a scratch buffer.
void read_all(int fd, const std::string& path, char* dst, uint64_t size, uint32_t* crc) {
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
      ssize_t r = ::read(fd, p + got, want - got);
      if (r < 0) {
        if (errno == EINTR) continue;
        fail_errno(path, "read failed at byte " + std::to_string(done + got), errno);
      }
      if (r == 0) {
        throw CheckpointError(path + ": file shrank while being read (got " + std::to_string(done + got) + " of " +
                              std::to_string(size) + " bytes)");
      }
      got += static_cast<size_t>(r);
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

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

uint64_t size_of(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) fail_errno(path, "cannot stat", errno);
  if (!S_ISREG(st.st_mode)) throw CheckpointError(path + ": not a regular file");
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace

std::shared_ptr<Buffer> read_file(const std::string& path, int64_t expected_size, uint32_t* crc) {
  Fd f{open_checked(path, O_RDONLY)};
  uint64_t size = size_of(f.fd, path);
  if (expected_size >= 0 && size != static_cast<uint64_t>(expected_size)) {
    throw CheckpointError(path + ": size is " + std::to_string(size) + " bytes, the manifest says " +
                          std::to_string(expected_size) + " (truncated or modified)");
  }
  ::posix_fadvise(f.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  auto buf = std::make_shared<Buffer>(static_cast<size_t>(size));
  read_all(f.fd, path, buf->data(), size, crc);
  return buf;
}

void checksum_file(const std::string& path, int64_t* size, uint32_t* crc) {
  Fd f{open_checked(path, O_RDONLY)};
  uint64_t n = size_of(f.fd, path);
  ::posix_fadvise(f.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  read_all(f.fd, path, nullptr, n, crc);
  *size = static_cast<int64_t>(n);
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  ::unlink(tmp.c_str());  // a leftover of this very pid can only be from an earlier failed attempt
  try {
    ExclusiveFile f(tmp);
    f.write(contents.data(), contents.size());
    f.fsync_and_close();
    rename_path(tmp, path);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_parent(path);
}

std::string read_small_file(const std::string& path) {
  Fd f{open_checked(path, O_RDONLY)};
  uint64_t size = size_of(f.fd, path);
  if (size > (uint64_t(64) << 20)) throw CheckpointError(path + ": unexpectedly large (" + std::to_string(size) + " bytes)");
  std::string out(static_cast<size_t>(size), '\0');
  read_all(f.fd, path, out.data(), size, nullptr);
  return out;
}

void fsync_path(const std::string& path) {
  Fd f{open_checked(path, O_RDONLY)};
  // Some file systems refuse fsync on directories (EINVAL); there is nothing more to do on those.
  if (::fsync(f.fd) != 0 && errno != EINVAL) fail_errno(path, "fsync failed", errno);
}

void fsync_parent(const std::string& path) { fsync_path(parent_of(path)); }

void rename_path(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) fail_errno(to, "cannot rename " + from + " to this path", errno);
}

DirLock& DirLock::operator=(DirLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the flock
}

DirLock DirLock::lock(const std::string& dir) {
  DirLock l;
  l.fd_ = open_checked(dir, O_RDONLY | O_DIRECTORY);
  int r;
  do {
    r = ::flock(l.fd_, LOCK_EX);
  } while (r != 0 && errno == EINTR);
  if (r != 0) fail_errno(dir, "cannot lock", errno);
  return l;
}

DirLock DirLock::try_lock(const std::string& dir) {
  DirLock l;
  l.fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (l.fd_ < 0) return l;
  if (::flock(l.fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(l.fd_);
    l.fd_ = -1;
  }
  return l;
}

}  // namespace levanter::checkpoint::io
