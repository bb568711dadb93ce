#include "levanter/data/jsonl_reader.h"

#include <zlib.h>
#include <zstd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace levanter::data {

DataSourceError::DataSourceError(const std::string& source, std::uint64_t line, const std::string& message)
    : DataError(source + (line ? ":" + std::to_string(line) : std::string()) + ": " + message),
      source_(source),
      line_(line),
      message_(message) {}

namespace {

class StdinStream : public InputStream {
 public:
  std::size_t read(char* buf, std::size_t n) override {
    std::size_t got = std::fread(buf, 1, n, stdin);
    if (got == 0 && std::ferror(stdin))
      throw DataSourceError("<stdin>", 0, std::string("read error: ") + std::strerror(errno));
    return got;
  }
};

// Reads the raw source in chunks and decodes it; the format is fixed by the first bytes.
class DecompressingStream : public InputStream {
 public:
  DecompressingStream(std::unique_ptr<InputStream> raw, std::string name)
      : raw_(std::move(raw)), name_(std::move(name)), in_(kChunk) {
    // Enough bytes for the magic numbers (gzip 1F 8B, zstd 28 B5 2F FD).
    while (in_end_ < 4) {
      std::size_t got = raw_->read(in_.data() + in_end_, in_.size() - in_end_);
      if (got == 0) break;
      in_end_ += got;
    }
    const auto* m = reinterpret_cast<const unsigned char*>(in_.data());
    if (in_end_ >= 2 && m[0] == 0x1F && m[1] == 0x8B) {
      mode_ = kGzip;
      std::memset(&z_, 0, sizeof z_);
      if (inflateInit2(&z_, 15 + 32) != Z_OK) fail("cannot initialise zlib");
    } else if (in_end_ >= 4 && m[0] == 0x28 && m[1] == 0xB5 && m[2] == 0x2F && m[3] == 0xFD) {
      mode_ = kZstd;
      zstd_ = ZSTD_createDCtx();
      if (!zstd_) fail("cannot initialise zstd");
    }
  }
  ~DecompressingStream() override {
    if (mode_ == kGzip) inflateEnd(&z_);
    if (zstd_) ZSTD_freeDCtx(zstd_);
  }
  std::size_t read(char* buf, std::size_t n) override {
    if (mode_ == kPlain) {
      if (in_begin_ < in_end_) {
        std::size_t take = std::min(n, in_end_ - in_begin_);
        std::memcpy(buf, in_.data() + in_begin_, take);
        in_begin_ += take;
        return take;
      }
      return raw_->read(buf, n);
    }
    while (true) {
      if (in_begin_ == in_end_ && !raw_eof_) refill();
      const bool no_input = in_begin_ == in_end_;
      // At the end of a stream with no input left there is nothing more; otherwise the decoder may still hold
      // output (a full buffer last time) or needs more input.
      std::size_t produced = 0;
      if (!(no_input && stream_done_)) produced = mode_ == kGzip ? inflate_some(buf, n) : zstd_some(buf, n);
      if (produced > 0) return produced;
      if (no_input && raw_eof_) {
        if (!stream_done_) fail(mode_ == kGzip ? "truncated gzip stream" : "truncated zstd stream");
        return 0;
      }
    }
  }

 private:
  enum Mode { kPlain, kGzip, kZstd };
  static constexpr std::size_t kChunk = 1 << 18;

  [[noreturn]] void fail(const std::string& what) const { throw DataSourceError(name_, 0, what); }

  void refill() {
    in_begin_ = 0;
    in_end_ = raw_->read(in_.data(), in_.size());
    if (in_end_ == 0) raw_eof_ = true;
  }

  std::size_t inflate_some(char* buf, std::size_t n) {
    if (stream_done_) {  // another gzip member follows
      if (inflateReset(&z_) != Z_OK) fail("zlib reset failed");
      stream_done_ = false;
    }
    z_.next_in = reinterpret_cast<Bytef*>(in_.data() + in_begin_);
    z_.avail_in = static_cast<uInt>(in_end_ - in_begin_);
    z_.next_out = reinterpret_cast<Bytef*>(buf);
    z_.avail_out = static_cast<uInt>(std::min<std::size_t>(n, 1u << 30));
    int rc = inflate(&z_, Z_NO_FLUSH);
    in_begin_ = in_end_ - z_.avail_in;
    std::size_t produced = reinterpret_cast<char*>(z_.next_out) - buf;
    if (rc == Z_STREAM_END) {
      stream_done_ = true;
    } else if (rc != Z_OK && !(rc == Z_BUF_ERROR && produced == 0)) {
      fail(std::string("corrupt gzip data (") + (z_.msg ? z_.msg : zError(rc)) + ")");
    }
    return produced;
  }

  std::size_t zstd_some(char* buf, std::size_t n) {
    ZSTD_inBuffer in{in_.data() + in_begin_, in_end_ - in_begin_, 0};
    ZSTD_outBuffer out{buf, n, 0};
    std::size_t rc = ZSTD_decompressStream(zstd_, &out, &in);
    if (ZSTD_isError(rc)) fail(std::string("corrupt zstd data (") + ZSTD_getErrorName(rc) + ")");
    in_begin_ += in.pos;
    stream_done_ = rc == 0;  // a frame ended exactly here
    return out.pos;
  }

  std::unique_ptr<InputStream> raw_;
  std::string name_;
  std::vector<char> in_;
  std::size_t in_begin_ = 0, in_end_ = 0;
  bool raw_eof_ = false, stream_done_ = false;
  Mode mode_ = kPlain;
  z_stream z_;
  ZSTD_DCtx* zstd_ = nullptr;
};

}  // namespace

std::unique_ptr<InputStream> open_input(const std::string& url) {
  if (url == "-") return std::make_unique<StdinStream>();
  return filesystem_for(url).open(url);
}

std::unique_ptr<InputStream> open_decompressed(std::unique_ptr<InputStream> raw, const std::string& name) {
  return std::make_unique<DecompressingStream>(std::move(raw), name);
}

// ---- LineReader --------------------------------------------------------------------------------------------

LineReader::LineReader(std::unique_ptr<InputStream> stream, std::string name, std::size_t max_line_bytes,
                       std::string limit_key)
    : source_(std::move(stream)),
      name_(std::move(name)),
      max_line_bytes_(std::max<std::size_t>(max_line_bytes, 1)),
      limit_key_(std::move(limit_key)),
      buf_(std::min<std::size_t>(std::size_t{1} << 20, max_line_bytes_ + 2)) {}

std::string describe_bytes(std::uint64_t bytes) {
  char buf[64];
  if (bytes >= (1ull << 20) && bytes % (1ull << 20) == 0) {
    std::snprintf(buf, sizeof buf, "%llu bytes (%llu MiB)", (unsigned long long)bytes,
                  (unsigned long long)(bytes >> 20));
  } else {
    std::snprintf(buf, sizeof buf, "%llu bytes", (unsigned long long)bytes);
  }
  return buf;
}
LineReader::~LineReader() = default;

bool LineReader::fill() {
  if (eof_) return false;
  if (begin_ > 0) {  // keep the partial line at the front
    std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (end_ == buf_.size()) buf_.resize(std::min(buf_.size() * 2, max_line_bytes_ + 2 + (std::size_t{1} << 16)));
  std::size_t got = source_->read(buf_.data() + end_, buf_.size() - end_);
  if (got == 0) {
    eof_ = true;
    return false;
  }
  end_ += got;
  return true;
}

void LineReader::too_long() const {
  throw DataSourceError(name_, line_number_ + 1,
                        "a line longer than " + describe_bytes(max_line_bytes_) + ", the longest document read" +
                            (limit_key_.empty() ? std::string() : " (" + limit_key_ + ")") +
                            ": raise the limit if the document is real, or split it");
}

bool LineReader::next(std::string_view& line) {
  std::size_t scanned = begin_;
  while (true) {
    const void* nl = std::memchr(buf_.data() + scanned, '\n', end_ - scanned);
    if (nl) {
      std::size_t pos = static_cast<const char*>(nl) - buf_.data();
      std::size_t len = pos - begin_;
      line = std::string_view(buf_.data() + begin_, len > 0 && buf_[pos - 1] == '\r' ? len - 1 : len);
      if (line.size() > max_line_bytes_) too_long();
      bytes_read_ += pos + 1 - begin_;
      begin_ = pos + 1;
      ++line_number_;
      return true;
    }
    std::size_t offset = end_ - begin_;
    // A line (with its '\r') longer than the limit: stop before the buffer grows past it.
    if (offset > max_line_bytes_ + 1) too_long();
    if (!fill()) break;
    scanned = begin_ + offset;
  }
  if (begin_ == end_) return false;
  // The last line has no '\n'.
  std::size_t len = end_ - begin_;
  line = std::string_view(buf_.data() + begin_, len > 0 && buf_[end_ - 1] == '\r' ? len - 1 : len);
  if (line.size() > max_line_bytes_) too_long();
  bytes_read_ += len;
  begin_ = end_;
  ++line_number_;
  return true;
}

std::unique_ptr<LineReader> open_lines(const std::string& url, std::size_t max_line_bytes,
                                       const std::string& limit_key) {
  std::string name = url == "-" ? "<stdin>" : url;
  return std::make_unique<LineReader>(open_decompressed(open_input(url), name), name, max_line_bytes, limit_key);
}

// ---- JSONL -------------------------------------------------------------------------------------------------

bool is_blank(std::string_view line) {
  for (char c : line)
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n' && c != '\f' && c != '\v') return false;
  return true;
}

namespace {

// Offset of the first byte that is not well-formed UTF-8, or npos.
std::size_t first_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  std::size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + len > n || p[i + 1] < lo || p[i + 1] > hi) return i;
    for (int k = 2; k < len; ++k)
      if ((p[i + k] & 0xC0) != 0x80) return i;
    i += len;
  }
  return std::string_view::npos;
}

}  // namespace

std::string jsonl_text_field(std::string_view line, const std::string& key, const std::string& source,
                             std::uint64_t line_number) {
  std::size_t bad = first_invalid_utf8(line);
  if (bad != std::string_view::npos) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(line[bad]));
    throw DataSourceError(source, line_number,
                          "invalid UTF-8 (byte " + std::string(hex) + " at column " + std::to_string(bad + 1) + ")");
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line.begin(), line.end());
  } catch (const nlohmann::json::exception& e) {
    // Not only parse_error: a number too large for a double (1e400) is an out_of_range.
    std::string msg = e.what();
    auto p = msg.find("] ");  // drop nlohmann's "[json.exception.parse_error.101] " prefix
    throw DataSourceError(source, line_number, "malformed JSON: " + (p == std::string::npos ? msg : msg.substr(p + 2)));
  }
  if (!j.is_object())
    throw DataSourceError(source, line_number, std::string("expected a JSON object, got ") + j.type_name());
  auto it = j.find(key);
  if (it == j.end()) throw DataSourceError(source, line_number, "no field \"" + key + "\"");
  if (!it->is_string())
    throw DataSourceError(source, line_number, "field \"" + key + "\" is " + it->type_name() + ", not a string");
  return std::move(it->get_ref<std::string&>());
}

JsonlTextReader::JsonlTextReader(std::unique_ptr<LineReader> lines, std::string key)
    : lines_(std::move(lines)), key_(std::move(key)) {}

bool JsonlTextReader::next(TextRecord& out) {
  std::string_view line;
  while (lines_->next(line)) {
    if (is_blank(line)) continue;
    out.line = lines_->line_number();
    out.text = jsonl_text_field(line, key_, lines_->name(), out.line);
    return true;
  }
  return false;
}

}  // namespace levanter::data
