// Writing text outputs (JSONL token ids, manifests) so that a failed run leaves nothing half-written.
//
// open_text_writer(path): the data go to a temporary file beside `path` (a runtime::AtomicFile) and commit()
// fsyncs it and renames it onto `path`; destroying the writer without commit() removes the temporary file. A path
// ending in .gz is gzip-compressed (mtime 0, so the bytes are reproducible), .zst is zstd-compressed; "-" is stdout
// (uncompressed, not atomic).
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace levanter::data {

class TextWriter {
 public:
  virtual ~TextWriter() = default;
  virtual void write(std::string_view data) = 0;  // throws DataError on I/O errors
  virtual void commit() = 0;                      // flush, close, rename into place
  virtual const std::string& name() const = 0;
};

std::unique_ptr<TextWriter> open_text_writer(const std::string& path);

}  // namespace levanter::data
