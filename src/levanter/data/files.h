// File access for the data pipeline: URL expansion (braces, globs), file identity and sequential reads. (The
// atomic writes and fsyncs the cache relies on are runtime/file_io.h's; data code converts its IoError to
// DataError.)
//
// Everything that touches an input file goes through `FileSystem`, so that a remote store (gs://, s3://, http://)
// is one more implementation of this interface, chosen by the URL's scheme in `filesystem_for`. Only local paths
// (plain or file://) exist today; any other scheme is an error that says so.
//
// Expansion order is deterministic: braces expand in the order written (`{b,a}` gives b then a, `{1..10}` counts
// up), and the files matched by each resulting glob are sorted bytewise. Patterns in a list keep their order;
// a file matched twice is kept at its first position.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace levanter::data {

// Bad input, unreadable files, refused caches: anything a user must fix. Messages name the file (and line).
class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What identifies an input file cheaply. `mtime_ns` changes on copy; the cache falls back to a content hash.
struct FileInfo {
  int64_t size = 0;
  int64_t mtime_ns = 0;
};

// A sequential byte stream. read() returns 0 only at the end; I/O errors throw DataError naming the file.
class InputStream {
 public:
  virtual ~InputStream() = default;
  virtual size_t read(char* buf, size_t n) = 0;
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;
  // Files matched by one glob (no braces): `*`, `?`, `[...]` within a path component, `**` for any number of
  // directories. Sorted. A pattern without magic characters is returned as is if it exists.
  virtual std::vector<std::string> glob(const std::string& pattern) = 0;
  virtual FileInfo stat(const std::string& path) = 0;  // throws DataError if missing or unreadable
  virtual std::unique_ptr<InputStream> open(const std::string& path) = 0;
};

// The store for a URL: local for plain paths and file://; DataError for any other scheme.
FileSystem& filesystem_for(const std::string& url);

// `a{b,c}d` -> abd, acd; `x{1..3}` -> x1, x2, x3; `{01..10}` keeps the zero padding; nesting works.
// An unbalanced brace is an error.
std::vector<std::string> expand_braces(const std::string& pattern);

// Expands each pattern (braces, then globs). A pattern that matches nothing is a DataError naming it.
std::vector<std::string> expand_urls(const std::vector<std::string>& patterns);

// A 64-bit content hash (not cryptographic): identifies a file's bytes when its mtime has changed.
class ContentHash {
 public:
  void update(const char* data, size_t n);
  uint64_t digest() const;
  static std::string hex(uint64_t h);

 private:
  uint64_t state_ = 0x9E3779B97F4A7C15ull;
  uint64_t length_ = 0;
  unsigned char tail_[8];
  size_t tail_n_ = 0;
};

// Hash of a whole file's bytes, read through its FileSystem.
uint64_t hash_file(const std::string& path);

}  // namespace levanter::data
