#include "levanter/data/text_writer.h"

#include <zlib.h>
#include <zstd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <vector>

#include "levanter/data/jsonl_reader.h"
#include "levanter/runtime/file_io.h"

namespace levanter::data {
namespace {

bool ends_with(const std::string& s, const char* suffix) {
  std::size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// Bytes gathered before a write to the file: few syscalls for many small lines.
constexpr std::size_t kFlushBytes = std::size_t(1) << 20;

class FileWriter : public TextWriter {
 public:
  explicit FileWriter(const std::string& path) {
    if (path == "-") {
      name_ = "<stdout>";
    } else {
      name_ = path;
      // A temporary beside `path` until commit().
      runtime::rethrow_io_errors_as<DataError>([&] { file_.emplace(path); });
      if (ends_with(path, ".gz")) {
        mode_ = kGzip;
        std::memset(&z_, 0, sizeof z_);
        if (deflateInit2(&z_, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
          fail("cannot initialise zlib");
      } else if (ends_with(path, ".zst")) {
        mode_ = kZstd;
        zstd_ = ZSTD_createCCtx();
        if (!zstd_) fail("cannot initialise zstd");
        ZSTD_CCtx_setParameter(zstd_, ZSTD_c_compressionLevel, 3);
      }
    }
    out_.resize(1 << 18);
  }

  ~FileWriter() override {  // without commit(), file_ removes the temporary
    if (mode_ == kGzip) deflateEnd(&z_);
    if (zstd_) ZSTD_freeCCtx(zstd_);
  }

  const std::string& name() const override { return name_; }

  void write(std::string_view data) override {
    if (mode_ == kPlain) {
      put(data.data(), data.size());
    } else if (mode_ == kGzip) {
      deflate_all(data, Z_NO_FLUSH);
    } else {
      zstd_all(data, ZSTD_e_continue);
    }
  }

  void commit() override {
    if (committed_) return;
    if (mode_ == kGzip) deflate_all({}, Z_FINISH);
    if (mode_ == kZstd) zstd_all({}, ZSTD_e_end);
    if (file_) {
      runtime::rethrow_io_errors_as<DataError>([&] {
        flush_pending();
        file_->commit();
      });
    } else if (std::fflush(stdout) != 0) {
      fail(std::string("write error: ") + std::strerror(errno));
    }
    committed_ = true;
  }

 private:
  enum Mode { kPlain, kGzip, kZstd };

  [[noreturn]] void fail(const std::string& what) const { throw DataSourceError(name_, 0, what); }

  void put(const char* p, std::size_t n) {
    if (n == 0) return;
    if (!file_) {
      if (std::fwrite(p, 1, n, stdout) != n) fail(std::string("write error: ") + std::strerror(errno));
      return;
    }
    pending_.append(p, n);
    if (pending_.size() >= kFlushBytes) runtime::rethrow_io_errors_as<DataError>([&] { flush_pending(); });
  }

  void flush_pending() {
    file_->write(pending_.data(), pending_.size());
    pending_.clear();
  }

  void deflate_all(std::string_view data, int flush) {
    z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    z_.avail_in = static_cast<uInt>(data.size());
    int rc;
    do {
      z_.next_out = reinterpret_cast<Bytef*>(out_.data());
      z_.avail_out = static_cast<uInt>(out_.size());
      rc = deflate(&z_, flush);
      if (rc == Z_STREAM_ERROR) fail("zlib deflate failed");
      put(out_.data(), out_.size() - z_.avail_out);
    } while (z_.avail_out == 0 || (flush == Z_FINISH && rc != Z_STREAM_END));
  }

  void zstd_all(std::string_view data, ZSTD_EndDirective mode) {
    ZSTD_inBuffer in{data.data(), data.size(), 0};
    while (true) {
      ZSTD_outBuffer out{out_.data(), out_.size(), 0};
      std::size_t rc = ZSTD_compressStream2(zstd_, &out, &in, mode);
      if (ZSTD_isError(rc)) fail(std::string("zstd failed: ") + ZSTD_getErrorName(rc));
      put(out_.data(), out.pos);
      if (mode == ZSTD_e_end ? rc == 0 : in.pos == in.size) break;
    }
  }

  std::string name_;
  std::optional<runtime::AtomicFile> file_;  // empty for stdout
  std::string pending_;
  Mode mode_ = kPlain;
  z_stream z_;
  ZSTD_CCtx* zstd_ = nullptr;
  std::vector<char> out_;
  bool committed_ = false;
};

}  // namespace

std::unique_ptr<TextWriter> open_text_writer(const std::string& path) { return std::make_unique<FileWriter>(path); }

}  // namespace levanter::data
