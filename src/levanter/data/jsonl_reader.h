// Reading JSON Lines corpora: bytes -> (decompressed) bytes -> numbered lines -> documents.
//
//   InputStream      a stream of bytes (files.h): opened through filesystem_for(url), so a remote store
//                    (gs://, s3://, http) added there works here too; "-" is stdin.
//   open_decompressed  gzip (multi-member too) or zstd, recognised by their magic bytes, else passed through,
//                    so the file name does not have to say (and stdin works).
//   LineReader       '\n'-separated lines with their numbers (1-based); a trailing '\r' is dropped.
//   JsonlTextReader  one document per non-blank line: the string field `text` (or another key).
// Problems with the data throw DataSourceError (a DataError, files.h), which names the source and the line
// ("corpus.jsonl.gz:17: ...").
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "levanter/data/files.h"

namespace levanter::data {

// A DataError about one source, with the parts of the message apart: what() is "source:line: message".
class DataSourceError : public DataError {
 public:
  // line 0: the problem is not on one line (an unreadable file, a corrupt gzip stream).
  DataSourceError(const std::string& source, std::uint64_t line, const std::string& message);
  const std::string& source() const { return source_; }
  std::uint64_t line() const { return line_; }
  const std::string& message() const { return message_; }

 private:
  std::string source_;
  std::uint64_t line_;
  std::string message_;
};

// A file through its FileSystem (filesystem_for); "-" is stdin. Throws DataError if it cannot be opened.
std::unique_ptr<InputStream> open_input(const std::string& url);

// Decompresses gzip or zstd (by magic bytes); other data passes through unchanged. `name` is for errors.
std::unique_ptr<InputStream> open_decompressed(std::unique_ptr<InputStream> raw, const std::string& name);

// The longest line (document) read by default: 64 MiB. A longer one is an error naming the source, the line and
// `limit_key` (the setting that raises it) instead of growing the buffer without bound (a 94 KB .zst can expand
// to one 3 GB line).
constexpr std::size_t kDefaultMaxLineBytes = std::size_t{64} << 20;

class LineReader {
 public:
  // `name` is the source in error messages and line_number() context.
  LineReader(std::unique_ptr<InputStream> stream, std::string name, std::size_t max_line_bytes = kDefaultMaxLineBytes,
             std::string limit_key = "");
  ~LineReader();
  // The next line without its '\n' (and '\r'); the view stays valid until the next call. false at the end.
  bool next(std::string_view& line);
  std::uint64_t line_number() const { return line_number_; }  // of the line last returned
  const std::string& name() const { return name_; }
  std::uint64_t bytes_read() const { return bytes_read_; }  // decompressed bytes consumed so far

 private:
  bool fill();
  [[noreturn]] void too_long() const;
  std::unique_ptr<InputStream> source_;
  std::string name_;
  std::size_t max_line_bytes_;
  std::string limit_key_;
  std::vector<char> buf_;
  std::size_t begin_ = 0, end_ = 0;
  std::uint64_t line_number_ = 0, bytes_read_ = 0;
  bool eof_ = false;
};

// open_decompressed(open_input(url)) as lines; the name is the url ("<stdin>" for "-").
std::unique_ptr<LineReader> open_lines(const std::string& path, std::size_t max_line_bytes = kDefaultMaxLineBytes,
                                       const std::string& limit_key = "");

// "67108864 bytes (64 MiB)" for messages about size limits.
std::string describe_bytes(std::uint64_t bytes);

// True when the line holds only ASCII whitespace (such lines are skipped, as by reftok.js).
bool is_blank(std::string_view line);

// The string field `key` of one JSONL line. Throws DataSourceError(source, line_number, ...) when the line is not
// valid UTF-8, not valid JSON, not an object, or has no string field `key`.
std::string jsonl_text_field(std::string_view line, const std::string& key, const std::string& source,
                             std::uint64_t line_number);

struct TextRecord {
  std::string text;
  std::uint64_t line = 0;
};

class JsonlTextReader {
 public:
  explicit JsonlTextReader(std::unique_ptr<LineReader> lines, std::string key = "text");
  // The next document (blank lines skipped); false at the end. Throws DataError (DataSourceError with a line).
  bool next(TextRecord& out);
  const std::string& name() const { return lines_->name(); }

 private:
  std::unique_ptr<LineReader> lines_;
  std::string key_;
};

}  // namespace levanter::data
