#include "levanter/data/documents.h"

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "levanter/data/jsonl_reader.h"

namespace levanter::data {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string strip_compression(const std::string& path) {
  for (const char* ext : {".gz", ".zst", ".zstd"}) {
    if (ends_with(path, ext)) return path.substr(0, path.size() - std::strlen(ext));
  }
  return path;
}

// Passes the raw (compressed) bytes through, counting and hashing them: they identify the file in the ledger.
class CountingStream : public InputStream {
 public:
  CountingStream(std::unique_ptr<InputStream> in, int64_t* total, ContentHash* hash)
      : in_(std::move(in)), total_(total), hash_(hash) {}
  size_t read(char* buf, size_t n) override {
    size_t got = in_->read(buf, n);
    *total_ += static_cast<int64_t>(got);
    hash_->update(buf, got);
    return got;
  }

 private:
  std::unique_ptr<InputStream> in_;
  int64_t* total_;
  ContentHash* hash_;
};

}  // namespace

InputFormat detect_format(const std::string& path) {
  std::string base = strip_compression(path);
  if (ends_with(base, ".jsonl") || ends_with(base, ".json")) return InputFormat::kJsonl;
  if (ends_with(base, ".txt")) return InputFormat::kText;
  throw DataError(path +
                  ": unknown input format; expected .jsonl, .jsonl.gz, .jsonl.zst or .txt (optionally .gz/.zst)");
}

// Raw bytes (counted, hashed) -> decompressed (jsonl_reader.h: gzip/zstd by magic bytes) -> lines.
struct RecordReader::Impl {
  int64_t raw_total = 0;
  ContentHash hash;
  std::unique_ptr<LineReader> lines;    // JSON Lines
  std::unique_ptr<InputStream> stream;  // text: the decompressed bytes

  Impl(const std::string& path, InputFormat format, int64_t max_bytes, const std::string& limit_key) {
    auto raw = std::make_unique<CountingStream>(filesystem_for(path).open(path), &raw_total, &hash);
    auto plain = open_decompressed(std::move(raw), path);
    if (format == InputFormat::kJsonl) {
      lines = std::make_unique<LineReader>(std::move(plain), path, static_cast<size_t>(max_bytes), limit_key);
    } else {
      stream = std::move(plain);
    }
  }
};

RecordReader::RecordReader(const std::string& path, int64_t max_document_bytes, const std::string& limit_key)
    : path_(path),
      format_(detect_format(path)),
      impl_(std::make_unique<Impl>(path, format_, std::max<int64_t>(max_document_bytes, 1), limit_key)),
      max_document_bytes_(std::max<int64_t>(max_document_bytes, 1)),
      limit_key_(limit_key) {}

RecordReader::~RecordReader() = default;

bool RecordReader::next(Record& record) {
  if (format_ == InputFormat::kText) {
    if (records_ > 0) return false;
    record.bytes.clear();
    std::vector<char> buf(1 << 16);
    while (size_t n = impl_->stream->read(buf.data(), buf.size())) {
      record.bytes.append(buf.data(), n);
      if (static_cast<int64_t>(record.bytes.size()) > max_document_bytes_) {
        throw DataSourceError(path_, 0,
                              "the document (a whole .txt file) is longer than " +
                                  describe_bytes(static_cast<uint64_t>(max_document_bytes_)) +
                                  ", the longest document read (" + limit_key_ +
                                  "): raise the limit if it is real, or split the file");
      }
    }
    record.line = 1;
    ++records_;
    return true;
  }
  std::string_view line;
  if (!impl_->lines->next(line)) return false;
  record.bytes.assign(line.data(), line.size());
  record.line = ++records_;
  return true;
}

void RecordReader::skip(int64_t n) {
  if (format_ == InputFormat::kJsonl) {
    std::string_view line;
    for (; records_ < n; ++records_) {
      if (!impl_->lines->next(line)) break;
    }
  } else {
    Record r;
    while (records_ < n && next(r)) {
    }
  }
  if (records_ < n) {
    throw DataError(path_ + ": has " + std::to_string(records_) + " records, fewer than the " + std::to_string(n) +
                    " the cache ledger says were already read (the file changed?)");
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
  if (format == InputFormat::kText) {
    size_t bad = 0;
    if (!valid_utf8(record.bytes, &bad)) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(record.bytes[bad]));
      throw DataSourceError(
          path, 1,
          "invalid UTF-8 (byte " + std::string(hex) + " at offset " + std::to_string(bad + 1) + " of the file)");
    }
    return record.bytes;
  }
  if (is_blank(record.bytes)) return std::nullopt;
  try {
    return jsonl_text_field(record.bytes, text_key, path, static_cast<uint64_t>(record.line));
  } catch (const DataSourceError& e) {
    if (e.message().rfind("no field", 0) != 0) throw;
    // Say which fields there are, and which setting picks one.
    std::string keys;
    nlohmann::json j = nlohmann::json::parse(record.bytes);
    for (auto& kv : j.items()) keys += (keys.empty() ? "" : ", ") + kv.key();
    throw DataSourceError(path, static_cast<uint64_t>(record.line),
                          e.message() + " (fields: " + (keys.empty() ? "none" : keys) +
                              "); set data.text_key to the field that holds the text");
  }
}

}  // namespace levanter::data
