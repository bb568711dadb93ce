#include "levanter/data/documents.h"

#include <zlib.h>
#include <zstd.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

namespace levanter::data {

namespace {

enum class Compression { kNone, kGzip, kZstd };

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Compression detect_compression(const std::string& path) {
  if (ends_with(path, ".gz")) return Compression::kGzip;
  if (ends_with(path, ".zst") || ends_with(path, ".zstd")) return Compression::kZstd;
  return Compression::kNone;
}

std::string strip_compression(const std::string& path) {
  for (const char* ext : {".gz", ".zst", ".zstd"}) {
    if (ends_with(path, ext)) return path.substr(0, path.size() - std::strlen(ext));
  }
  return path;
}

}  // namespace

InputFormat detect_format(const std::string& path) {
  std::string base = strip_compression(path);
  if (ends_with(base, ".jsonl") || ends_with(base, ".json")) return InputFormat::kJsonl;
  if (ends_with(base, ".txt")) return InputFormat::kText;
  throw DataError(path + ": unknown input format; expected .jsonl, .jsonl.gz, .jsonl.zst or .txt (optionally .gz/.zst)");
}

// Raw bytes -> decompressed bytes, counting and hashing the raw bytes.
struct RecordReader::Impl {
  std::string path;
  Compression compression;
  std::unique_ptr<InputStream> in;
  std::vector<char> raw;        // compressed input buffer
  size_t raw_pos = 0, raw_len = 0;
  bool raw_eof = false;
  int64_t raw_total = 0;
  ContentHash hash;
  z_stream z{};
  bool z_init = false;
  bool z_stream_end = false;
  ZSTD_DStream* zstd = nullptr;
  std::vector<char> out;        // decompressed bytes not yet consumed
  size_t out_pos = 0, out_len = 0;
  bool eof = false;

  Impl(const std::string& p) : path(p), compression(detect_compression(p)), raw(1 << 20), out(1 << 20) {
    in = filesystem_for(p).open(p);
    if (compression == Compression::kGzip) {
      // 15 + 32: zlib or gzip header, detected automatically.
      if (inflateInit2(&z, 15 + 32) != Z_OK) throw DataError(path + ": cannot initialise gzip decoder");
      z_init = true;
    } else if (compression == Compression::kZstd) {
      zstd = ZSTD_createDStream();
      if (!zstd) throw DataError(path + ": cannot initialise zstd decoder");
      ZSTD_initDStream(zstd);
    }
  }
  ~Impl() {
    if (z_init) inflateEnd(&z);
    if (zstd) ZSTD_freeDStream(zstd);
  }

  void fill_raw() {
    if (raw_pos < raw_len || raw_eof) return;
    raw_pos = 0;
    raw_len = in->read(raw.data(), raw.size());
    if (raw_len == 0) {
      raw_eof = true;
    } else {
      raw_total += static_cast<int64_t>(raw_len);
      hash.update(raw.data(), raw_len);
    }
  }

  // Refills `out` with the next decompressed bytes; false at the end of the data.
  bool fill_out() {
    out_pos = out_len = 0;
    while (out_len == 0) {
      fill_raw();
      if (compression == Compression::kNone) {
        if (raw_eof) return false;
        std::swap(raw, out);
        out_len = raw_len;
        raw_pos = raw_len = 0;
        if (raw.size() < out.size()) raw.resize(out.size());
        return true;
      }
      if (compression == Compression::kGzip) {
        if (raw_eof) {
          if (!z_stream_end) throw DataError(path + ": truncated gzip data (unexpected end of file)");
          return false;
        }
        if (z_stream_end) {
          // Concatenated gzip members (as `cat a.gz b.gz` makes): start the next one.
          inflateReset(&z);
          z_stream_end = false;
        }
        z.next_in = reinterpret_cast<Bytef*>(raw.data() + raw_pos);
        z.avail_in = static_cast<uInt>(raw_len - raw_pos);
        z.next_out = reinterpret_cast<Bytef*>(out.data());
        z.avail_out = static_cast<uInt>(out.size());
        int rc = inflate(&z, Z_NO_FLUSH);
        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
          throw DataError(path + ": corrupt gzip data (" + std::string(z.msg ? z.msg : "inflate failed") + ")");
        }
        if (rc == Z_STREAM_END) z_stream_end = true;
        raw_pos = raw_len - z.avail_in;
        out_len = out.size() - z.avail_out;
      } else {
        if (raw_eof) return false;
        ZSTD_inBuffer ib{raw.data(), raw_len, raw_pos};
        ZSTD_outBuffer ob{out.data(), out.size(), 0};
        size_t rc = ZSTD_decompressStream(zstd, &ob, &ib);
        if (ZSTD_isError(rc)) throw DataError(path + ": corrupt zstd data (" + ZSTD_getErrorName(rc) + ")");
        raw_pos = ib.pos;
        out_len = ob.pos;
      }
    }
    return true;
  }

  // Appends bytes up to and excluding the next '\n' to `line`; false if there are no bytes left at all.
  bool read_line(std::string& line) {
    line.clear();
    bool any = false;
    while (true) {
      if (out_pos == out_len) {
        if (eof || !fill_out()) {
          eof = true;
          return any;
        }
      }
      any = true;
      const char* start = out.data() + out_pos;
      const char* nl = static_cast<const char*>(std::memchr(start, '\n', out_len - out_pos));
      if (nl) {
        line.append(start, nl - start);
        out_pos += (nl - start) + 1;
        return true;
      }
      line.append(start, out_len - out_pos);
      out_pos = out_len;
    }
  }

  void read_all(std::string& s) {
    s.clear();
    while (true) {
      if (out_pos == out_len && (eof || !fill_out())) {
        eof = true;
        return;
      }
      s.append(out.data() + out_pos, out_len - out_pos);
      out_pos = out_len;
    }
  }
};

RecordReader::RecordReader(const std::string& path)
    : path_(path), format_(detect_format(path)), impl_(std::make_unique<Impl>(path)) {}

RecordReader::~RecordReader() = default;

bool RecordReader::next(Record& record) {
  if (format_ == InputFormat::kText) {
    if (records_ > 0) return false;
    impl_->read_all(record.bytes);
    record.line = 1;
    ++records_;
    return true;
  }
  if (!impl_->read_line(record.bytes)) return false;
  if (!record.bytes.empty() && record.bytes.back() == '\r') record.bytes.pop_back();
  record.line = ++records_;
  return true;
}

void RecordReader::skip(int64_t n) {
  Record r;
  for (int64_t i = 0; i < n; ++i) {
    if (!next(r)) {
      throw DataError(path_ + ": has " + std::to_string(records_) + " records, fewer than the " + std::to_string(n) +
                      " the cache ledger says were already read (the file changed?)");
    }
  }
}

int64_t RecordReader::bytes_read() const { return impl_->raw_total; }

uint64_t RecordReader::content_hash() const { return impl_->hash.digest(); }

bool valid_utf8(const std::string& s, size_t* bad_offset) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    if (i + len > n) {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) {
        if (bad_offset) *bad_offset = i;
        return false;
      }
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    // Overlong forms, surrogates, and code points above U+10FFFF.
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF)) {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    i += len;
  }
  return true;
}

std::optional<std::string> document_text(const Record& record, const std::string& path, InputFormat format,
                                          const std::string& text_key) {
  std::string where = path + ":" + std::to_string(record.line);
  size_t bad = 0;
  if (!valid_utf8(record.bytes, &bad)) {
    throw DataError(where + ": invalid UTF-8 at byte " + std::to_string(bad + 1) + " of the " +
                    (format == InputFormat::kText ? "file" : "line"));
  }
  if (format == InputFormat::kText) return record.bytes;

  if (record.bytes.find_first_not_of(" \t\r\f\v") == std::string::npos) return std::nullopt;  // blank line
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(record.bytes);
  } catch (const nlohmann::json::parse_error& e) {
    // nlohmann's text: "[json.exception.parse_error.101] parse error at line 1, column 5: syntax error ...".
    std::string msg = e.what();
    size_t col = msg.find("column ");
    std::string detail = col != std::string::npos ? msg.substr(col) : msg;
    throw DataError(where + ": malformed JSON at " + detail);
  }
  if (!j.is_object()) throw DataError(where + ": expected a JSON object with a \"" + text_key + "\" field, got " + j.type_name());
  auto it = j.find(text_key);
  if (it == j.end()) {
    std::string keys;
    for (auto& kv : j.items()) keys += (keys.empty() ? "" : ", ") + kv.key();
    throw DataError(where + ": no \"" + text_key + "\" field (keys: " + (keys.empty() ? "none" : keys) +
                    "); set data.text_key to the field that holds the text");
  }
  if (!it->is_string()) throw DataError(where + ": field \"" + text_key + "\" is a " + it->type_name() + ", not a string");
  return it->get<std::string>();
}

}  // namespace levanter::data
