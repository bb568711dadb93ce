// The JSONL reader: open_decompressed (gzip, multi-member gzip, zstd or plain, by magic bytes) -> LineReader ->
// JsonlTextReader, the path every data.train_urls file takes (documents.cpp).
//
// Input: the raw file, as it would be on disk. It is served in reads of irregular sizes (1, 2, 3, 5, 8, ... bytes,
// then large ones), so that magic-byte detection, decompressor refills and line splitting meet chunk boundaries
// everywhere a slow disk or a pipe could put them.
// Expected: DataError (DataSourceError names the source and line). Checked: each line number grows, each text
// is valid UTF-8 as promised (JSON strings decode to UTF-8).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "fuzz_common.h"
#include "levanter/data/jsonl_reader.h"
#include "levanter/data/tokenizer/unicode.h"

namespace {

class ChunkedStream : public levanter::data::InputStream {
 public:
  explicit ChunkedStream(std::string_view bytes) : bytes_(bytes) {}
  size_t read(char* buf, size_t n) override {
    static constexpr size_t kSizes[] = {1, 2, 3, 5, 8, 13, 21, 34, 4096, 1, 65536};
    const size_t take = std::min({n, bytes_.size() - pos_, kSizes[reads_++ % std::size(kSizes)]});
    std::memcpy(buf, bytes_.data() + pos_, take);
    pos_ += take;
    return take;
  }

 private:
  std::string_view bytes_;
  size_t pos_ = 0, reads_ = 0;
};

// Decompressed output past this many bytes reads as the end of the file: a few KB of zstd can declare gigabytes
// (one 4-byte RLE block is 128 KB), and a document that size is a resource limit of the machine, not a parser bug
// (fuzz/README.md). Without the cap the fuzzer's memory limit would stop every run at the first such input.
constexpr size_t kMaxDecompressed = size_t(64) << 20;

class CappedStream : public levanter::data::InputStream {
 public:
  explicit CappedStream(std::unique_ptr<levanter::data::InputStream> inner) : inner_(std::move(inner)) {}
  size_t read(char* buf, size_t n) override {
    const size_t got = inner_->read(buf, std::min(n, kMaxDecompressed - total_));
    total_ += got;
    return got;
  }

 private:
  std::unique_ptr<levanter::data::InputStream> inner_;
  size_t total_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace levanter::data;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    auto decompressed = open_decompressed(std::make_unique<ChunkedStream>(bytes), "fuzz.jsonl");
    JsonlTextReader reader(
        std::make_unique<LineReader>(std::make_unique<CappedStream>(std::move(decompressed)), "fuzz.jsonl"));
    TextRecord record;
    uint64_t last_line = 0;
    while (reader.next(record)) {
      LEVANTER_FUZZ_CHECK(record.line > last_line);
      last_line = record.line;
      LEVANTER_FUZZ_CHECK(unicode::find_invalid_utf8(record.text) == std::string_view::npos);
    }
  } catch (const DataError& e) {
    levanter::fuzz::expected(e);
  } catch (const std::exception& e) {
    levanter::fuzz::unexpected(e);
  }
  return 0;
}
