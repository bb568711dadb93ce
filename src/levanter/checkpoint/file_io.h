// POSIX file primitives for checkpoints, with every return value checked: exclusive creation, full writes,
// fsync, one-pass reads into an aligned buffer (with a CRC32 computed while the bytes are still in cache),
// and advisory locks on directories. Internal to src/levanter/checkpoint/; errors are CheckpointError naming
// the path.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "levanter/checkpoint/error.h"

namespace levanter::checkpoint::io {

// A file's bytes in one 64-byte-aligned allocation (tensors may alias it; see safetensors.cpp).
class Buffer {
 public:
  explicit Buffer(size_t size);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  char* data() { return data_; }
  const char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  char* data_ = nullptr;
  size_t size_ = 0;
};

// Running CRC-32 (zlib's polynomial, the same value as Python's zlib.crc32).
class Crc32 {
 public:
  void update(const void* data, size_t n);
  uint32_t value() const { return crc_; }
  static std::string hex(uint32_t crc);  // 8 lowercase hex digits

 private:
  uint32_t crc_ = 0;
};

// CRC32 of bytes in memory (segments, in order), computed on a second thread while the caller does I/O:
// the checksum then costs no time on the I/O path (2 GB/s for zlib's crc32 alone is the bottleneck of a
// cached read otherwise). The caller declares how many bytes are ready (a read in progress) with
// available(); finish() waits and returns the CRC. Small inputs are checksummed on the caller's thread.
class BackgroundCrc {
 public:
  using Segments = std::vector<std::pair<const char*, size_t>>;
  explicit BackgroundCrc(Segments segments);
  ~BackgroundCrc();  // abandons the computation (after an error) and joins
  BackgroundCrc(const BackgroundCrc&) = delete;
  BackgroundCrc& operator=(const BackgroundCrc&) = delete;
  void available(uint64_t bytes);  // the first `bytes` bytes (across segments) may be read
  uint32_t finish();               // all bytes must have been made available

 private:
  void run();
  Segments segments_;
  uint64_t total_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t ready_ = 0;
  bool abort_ = false;
  uint32_t crc_ = 0;
  std::thread thread_;
};

// A file opened for writing with O_CREAT|O_EXCL (never clobbers: a leftover means a bug or a race).
// With `checksum`, every byte written goes through the running CRC. close() fsyncs first; the destructor
// closes without fsync (after an error, the caller removes the file or its directory).
class ExclusiveFile {
 public:
  explicit ExclusiveFile(std::string path, bool checksum = true);
  ~ExclusiveFile();
  ExclusiveFile(const ExclusiveFile&) = delete;
  ExclusiveFile& operator=(const ExclusiveFile&) = delete;
  void write(const void* data, size_t n);
  void fsync_and_close();
  uint64_t bytes_written() const { return written_; }
  uint32_t crc() const { return crc_.value(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t written_ = 0;
  bool checksum_ = true;
  Crc32 crc_;
};

// The whole file in one buffer, read sequentially in large chunks. If `crc` is given, the CRC of the bytes
// is computed chunk by chunk as they arrive. If expected_size >= 0 and the file's size differs, throws.
std::shared_ptr<Buffer> read_file(const std::string& path, int64_t expected_size = -1, uint32_t* crc = nullptr);
// CRC32 and size of a file without keeping its bytes.
void checksum_file(const std::string& path, int64_t* size, uint32_t* crc);

// Write `contents` to `path` via `path.tmp-<pid>` (O_EXCL), fsync, rename, fsync the directory.
void write_file_atomic(const std::string& path, const std::string& contents);
// Whole (small) file as a string.
std::string read_small_file(const std::string& path);

void fsync_path(const std::string& path);  // a file or a directory
void fsync_parent(const std::string& path);
void rename_path(const std::string& from, const std::string& to);

// An exclusive advisory lock (flock) on a directory, held while this object lives. It follows the directory
// through renames. try_lock returns an unlocked object when another open file description holds the lock.
class DirLock {
 public:
  DirLock() = default;
  static DirLock lock(const std::string& dir);      // blocks
  static DirLock try_lock(const std::string& dir);  // never blocks
  DirLock(DirLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  DirLock& operator=(DirLock&& o) noexcept;
  ~DirLock();
  bool locked() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

}  // namespace levanter::checkpoint::io
