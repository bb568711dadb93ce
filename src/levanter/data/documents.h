// Documents from input files.
//
// Formats, by extension:
//   .jsonl  .jsonl.gz  .jsonl.zst (.zstd)   one JSON object per line; the document is the string at `text_key`
//   .txt    .txt.gz    .txt.zst  (.zstd)    the whole file is one document
// (.json.gz / .json are accepted as JSON Lines too, as Hugging Face names them.)
//
// Compression is recognised by magic bytes (gzip, zstd), and lines and JSON fields are read with
// jsonl_reader.h. Bad input is an error naming the file and line: a malformed JSON line, a line that is not
// an object, a missing or non-string text key, invalid UTF-8 (in JSON or in a text file), corrupt
// compressed data. Blank lines in a JSON Lines file are skipped (they are not documents and not errors).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "levanter/data/files.h"
#include "levanter/data/jsonl_reader.h"

namespace levanter::data {

enum class InputFormat { kJsonl, kText };

// The format of `path` from its extension; DataError naming the supported ones otherwise.
InputFormat detect_format(const std::string& path);

// One record of an input file: a line of a JSON Lines file, or the whole of a text file. `line` is 1-based.
struct Record {
  std::string bytes;
  int64_t line = 0;
};

// Reads the records of one file in order, decompressing as it goes. Also counts and hashes the raw bytes it
// reads, which identify the file in the cache ledger.
class RecordReader {
 public:
  // A document (a JSONL line, a whole .txt file) longer than max_document_bytes is a DataError naming the file, the
  // line and `limit_key`.
  explicit RecordReader(const std::string& path, int64_t max_document_bytes = kDefaultMaxLineBytes,
                        const std::string& limit_key = "data.cache_options.max_document_bytes");
  ~RecordReader();
  RecordReader(const RecordReader&) = delete;
  RecordReader& operator=(const RecordReader&) = delete;

  const std::string& path() const { return path_; }
  InputFormat format() const { return format_; }
  bool next(Record& record);  // false at the end of the file
  // Skips `n` records without parsing them (resuming a cache shard). DataError if the file has fewer.
  void skip(int64_t n);
  int64_t records_read() const { return records_; }
  int64_t bytes_read() const;     // raw (compressed) bytes read so far
  uint64_t content_hash() const;  // hash of the raw bytes read so far: the whole file's once next() is false

 private:
  struct Impl;
  std::string path_;
  InputFormat format_;
  std::unique_ptr<Impl> impl_;
  int64_t records_ = 0;
  int64_t max_document_bytes_;
  std::string limit_key_;
};

// The text of a record, or nullopt for a blank line. DataError "path:line: ..." for bad input.
std::optional<std::string> document_text(const Record& record, const std::string& path, InputFormat format,
                                         const std::string& text_key);

// True if `s` is well-formed UTF-8; otherwise sets `bad_offset` to the first bad byte.
bool valid_utf8(const std::string& s, size_t* bad_offset = nullptr);

}  // namespace levanter::data
