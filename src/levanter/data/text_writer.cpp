#include "levanter/data/text_writer.h"

#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "levanter/data/jsonl_reader.h"

namespace levanter::data {
namespace {

bool ends_with(const std::string& s, const char* suffix) {
  std::size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

class FileWriter : public TextWriter {
 public:
  explicit FileWriter(const std::string& path) : path_(path) {
    if (path == "-") {
      name_ = "<stdout>";
      f_ = stdout;
    } else {
      static std::atomic<int> counter{0};
      name_ = path;
      tmp_ = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
      f_ = std::fopen(tmp_.c_str(), "wb");
      if (!f_) throw DataSourceError(path, 0, std::string("cannot create output: ") + std::strerror(errno));
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

  ~FileWriter() override {
    if (mode_ == kGzip) deflateEnd(&z_);
    if (zstd_) ZSTD_freeCCtx(zstd_);
    if (f_ && f_ != stdout) {
      std::fclose(f_);
      if (!committed_) std::remove(tmp_.c_str());
    }
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
    if (std::fflush(f_) != 0) fail(std::string("write error: ") + std::strerror(errno));
    if (f_ != stdout) {
      if (::fsync(::fileno(f_)) != 0 && errno != EINVAL) fail(std::string("fsync failed: ") + std::strerror(errno));
      std::FILE* f = f_;
      f_ = nullptr;
      if (std::fclose(f) != 0) {
        std::remove(tmp_.c_str());
        fail(std::string("close failed: ") + std::strerror(errno));
      }
      if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
        int e = errno;
        std::remove(tmp_.c_str());
        fail(std::string("cannot rename the finished output into place: ") + std::strerror(e));
      }
    }
    committed_ = true;
  }

 private:
  enum Mode { kPlain, kGzip, kZstd };

  [[noreturn]] void fail(const std::string& what) const { throw DataSourceError(name_, 0, what); }

  void put(const char* p, std::size_t n) {
    if (n && std::fwrite(p, 1, n, f_) != n) fail(std::string("write error: ") + std::strerror(errno));
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

  std::string path_, tmp_, name_;
  std::FILE* f_ = nullptr;
  Mode mode_ = kPlain;
  z_stream z_;
  ZSTD_CCtx* zstd_ = nullptr;
  std::vector<char> out_;
  bool committed_ = false;
};

}  // namespace

std::unique_ptr<TextWriter> open_text_writer(const std::string& path) { return std::make_unique<FileWriter>(path); }

}  // namespace levanter::data
