// Checked POSIX file primitives, shared by every layer that writes to disk (checkpoint/, data/).
//
// Every return value is checked, EINTR is retried, and every error is an IoError whose message starts with
// the path it concerns ("<path>: cannot create: File exists"). Layers with their own error type
// (checkpoint::CheckpointError, data::DataError) convert at their boundary with rethrow_io_errors_as<E>().
//
// Crash safety rests on one discipline: a file that must appear whole or not at all is written to a
// temporary beside it (AtomicFile: "<path>.tmp-<pid>", created with O_EXCL so that nothing is ever
// clobbered), fsynced, renamed over the final name, and the directory is fsynced so that the rename itself
// survives a power loss. Readers therefore see the old file or the whole new one, never a mix. Temporaries
// that a killed process leaves behind are recognised by is_temporary_name().
//
// No libtorch here: data/ uses this and must build without it.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace levanter::runtime {

// An I/O failure. The message starts with the path it concerns.
class IoError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Calls fn(); an IoError leaving it is rethrown as E (a layer's own error type) with the same message.
template <typename E, typename F>
decltype(auto) rethrow_io_errors_as(F&& fn) {
  try {
    return fn();
  } catch (const IoError& e) {
    throw E(e.what());
  }
}

// An open file descriptor, closed on destruction (unchecked there: use close() where a deferred write error
// matters). Move-only.
class File {
 public:
  File() = default;
  // open(2) with O_CLOEXEC added. IoError "<path>: cannot open|create: <reason>".
  static File open(const std::string& path, int flags, mode_t mode = 0644);
  File(File&& o) noexcept : path_(std::move(o.path_)), fd_(std::exchange(o.fd_, -1)) {}
  File& operator=(File&& o) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File();

  bool is_open() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }

  // Up to n bytes at the current offset; 0 only at the end of the file.
  size_t read_some(void* buf, size_t n);
  // Exactly n bytes at `offset`; IoError if the file ends first.
  void read_exact_at(void* buf, size_t n, uint64_t offset) const;
  void write_all(const void* data, size_t n);
  void write_all_at(const void* data, size_t n, uint64_t offset);
  void sync();            // fsync: data and metadata
  void sync_data();       // fdatasync: data (and the size), enough for appended bytes
  uint64_t size() const;  // IoError unless a regular file
  // Closes and reports a deferred write error (NFS). The file is closed afterwards whatever happens.
  void close();

 private:
  std::string path_;
  int fd_ = -1;
};

// A file's bytes in one 64-byte-aligned allocation (tensors may alias it; see checkpoint/safetensors.cpp).
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
// (Its own thread, not a pool's: it blocks waiting for the I/O, which would starve a compute pool.)
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

// A new file opened for writing with O_CREAT|O_EXCL (never clobbers: a leftover means a bug or a race).
// With `checksum`, every byte written goes through the running CRC. fsync_and_close() fsyncs first; the
// destructor closes without fsync (after an error, the caller removes the file or its directory).
class ExclusiveFile {
 public:
  explicit ExclusiveFile(std::string path, bool checksum = true);
  ExclusiveFile(const ExclusiveFile&) = delete;
  ExclusiveFile& operator=(const ExclusiveFile&) = delete;
  void write(const void* data, size_t n);
  void fsync_and_close();
  uint64_t bytes_written() const { return written_; }
  uint32_t crc() const { return crc_.value(); }
  const std::string& path() const { return file_.path(); }

 private:
  File file_;
  uint64_t written_ = 0;
  bool checksum_ = true;
  Crc32 crc_;
};

// A file that appears at `path` whole or not at all. The bytes go to a temporary beside it
// ("<path>.tmp-<pid>", or "<path>.tmp-<pid>-<n>" while this process already writes that one); commit()
// fsyncs it, renames it over `path` and fsyncs the directory. Destroyed without commit(), it removes the
// temporary. Several AtomicFiles for one path may be open at once: each commit replaces the file whole.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path, bool checksum = false);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  void write(const void* data, size_t n) { file_->write(data, n); }
  ExclusiveFile& file() { return *file_; }  // the temporary, for writers that stream into an ExclusiveFile
  void commit();
  const std::string& path() const { return path_; }
  const std::string& temporary_path() const { return tmp_; }

 private:
  std::string path_, tmp_;
  std::optional<ExclusiveFile> file_;
  bool committed_ = false;
};

// Whether a directory entry's name is an AtomicFile temporary (a leftover, if its writer is gone).
bool is_temporary_name(std::string_view name);

// write `contents` through an AtomicFile.
void write_file_atomic(const std::string& path, std::string_view contents);

// The whole file in one buffer, read sequentially in large chunks. If `crc` is given, the CRC of the bytes
// is computed as they arrive. If expected_size >= 0 and the file's size differs, throws.
std::shared_ptr<Buffer> read_file(const std::string& path, int64_t expected_size = -1, uint32_t* crc = nullptr);
// The file opened, its size checked as read_file checks it, and its CRC32 computed in a streaming pass that keeps
// nothing: what is read from the returned file afterwards (File::read_exact_at) is the file that was checked.
File open_checksummed(const std::string& path, int64_t expected_size, uint32_t* crc);
// CRC32 and size of a file without keeping its bytes.
void checksum_file(const std::string& path, int64_t* size, uint32_t* crc);
// A whole (small: at most 64 MiB, e.g. JSON) file as a string.
std::string read_small_file(const std::string& path);

void fsync_path(const std::string& path);    // a file or a directory; EINVAL (no fsync on this fs) is fine
void fsync_parent(const std::string& path);  // the directory holding `path`
void rename_path(const std::string& from, const std::string& to);

// An exclusive advisory lock (flock) on a directory or a lock file, held while this object lives. On a
// directory it follows the directory through renames. Two FileLocks on one path exclude each other even in
// one process (each opens its own file description).
class FileLock {
 public:
  enum class IfMissing { kFail, kCreateFile };
  FileLock() = default;
  static FileLock lock(const std::string& path, IfMissing if_missing = IfMissing::kFail);  // blocks
  // Never blocks: an unlocked FileLock when someone else holds the lock; IoError for any other failure.
  static FileLock try_lock(const std::string& path, IfMissing if_missing = IfMissing::kFail);
  FileLock(FileLock&&) noexcept = default;
  FileLock& operator=(FileLock&&) noexcept = default;
  bool locked() const { return file_.is_open(); }

 private:
  File file_;  // closing the last descriptor releases the flock
};

}  // namespace levanter::runtime
