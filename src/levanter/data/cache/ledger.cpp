#include "levanter/data/cache/ledger.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "levanter/runtime/file_io.h"

namespace levanter::data {

using nlohmann::json;

namespace {

json optional_id(const std::optional<int32_t>& v) { return v ? json(*v) : json(nullptr); }
std::optional<int32_t> read_optional_id(const json& j) {
  if (j.is_null()) return std::nullopt;
  return j.get<int32_t>();
}
std::string id_text(const std::optional<int32_t>& v) { return v ? std::to_string(*v) : std::string("none"); }

json processing_json(const Processing& p) {
  return json{{"tokenizer", p.tokenizer},
              {"tokenizer_fingerprint", p.tokenizer_fingerprint},
              {"text_key", p.text_key},
              {"bos_id", optional_id(p.bos_id)},
              {"eos_id", optional_id(p.eos_id)}};
}

Processing processing_from(const json& j) {
  Processing p;
  p.tokenizer = j.at("tokenizer").get<std::string>();
  p.tokenizer_fingerprint = j.at("tokenizer_fingerprint").get<std::string>();
  p.text_key = j.at("text_key").get<std::string>();
  p.bos_id = read_optional_id(j.at("bos_id"));
  p.eos_id = read_optional_id(j.at("eos_id"));
  return p;
}

json parse_json(const std::string& text, const std::string& where) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw DataError(where + ": corrupt cache metadata (" + e.what() + "); delete the cache directory to rebuild it");
  }
}

std::vector<uint32_t> crc_list(const json& j, const std::string& where) {
  std::vector<uint32_t> out;
  for (const json& e : j) {
    const std::string hex = e.get<std::string>();
    char* end = nullptr;
    unsigned long v = std::strtoul(hex.c_str(), &end, 16);
    if (hex.size() != 8 || *end != '\0') {
      throw DataError(where + ": corrupt shard ledger (checksum \"" + hex + "\" is not 8 hex digits)");
    }
    out.push_back(static_cast<uint32_t>(v));
  }
  return out;
}

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

}  // namespace

bool Processing::operator==(const Processing& o) const {
  // The tokenizer's name is only a label: the same tokenizer.json under another path is the same tokenizer.
  return tokenizer_fingerprint == o.tokenizer_fingerprint && text_key == o.text_key && bos_id == o.bos_id &&
         eos_id == o.eos_id;
}

std::string Processing::difference(const Processing& wanted) const {
  if (tokenizer_fingerprint != wanted.tokenizer_fingerprint) {
    return "it was built with another tokenizer (" + tokenizer + ", fingerprint " + tokenizer_fingerprint +
           ") than the one configured (" + wanted.tokenizer + ", fingerprint " + wanted.tokenizer_fingerprint + ")";
  }
  if (text_key != wanted.text_key) {
    return "it was built from the field \"" + text_key + "\", not \"" + wanted.text_key + "\" (data.text_key)";
  }
  if (bos_id != wanted.bos_id || eos_id != wanted.eos_id) {
    return "it was built with BOS " + id_text(bos_id) + " / EOS " + id_text(eos_id) + ", not BOS " +
           id_text(wanted.bos_id) + " / EOS " + id_text(wanted.eos_id) + " (data.enforce_bos, data.enforce_eos)";
  }
  return "";
}

std::string ShardLedger::to_json() const {
  json j{{"format_version", format_version},
         {"source",
          json{{"path", source.path}, {"size", source.size}, {"mtime_ns", source.mtime_ns}, {"hash", source.hash}}},
         {"rows", rows},
         {"tokens", tokens},
         {"lines", lines},
         {"bad_lines", bad_lines},
         {"chunks", chunks},
         {"finished", finished}};
  if (checksum_block_bytes > 0) {
    json t = json::array(), o = json::array();
    for (uint32_t c : tokens_crc32) t.push_back(runtime::Crc32::hex(c));
    for (uint32_t c : offsets_crc32) o.push_back(runtime::Crc32::hex(c));
    j["checksums"] = json{{"block_bytes", checksum_block_bytes}, {"tokens_crc32", t}, {"offsets_crc32", o}};
  }
  return j.dump(2) + "\n";
}

ShardLedger ShardLedger::from_json(const std::string& text, const std::string& where) {
  json j = parse_json(text, where);
  ShardLedger l;
  try {
    l.format_version = j.at("format_version").get<int>();
    if (l.format_version != kCacheFormatVersion) return l;  // the caller refuses it with a message
    const json& s = j.at("source");
    l.source.path = s.at("path").get<std::string>();
    l.source.size = s.at("size").get<int64_t>();
    l.source.mtime_ns = s.at("mtime_ns").get<int64_t>();
    l.source.hash = s.at("hash").get<std::string>();
    l.rows = j.at("rows").get<int64_t>();
    l.tokens = j.at("tokens").get<int64_t>();
    l.lines = j.at("lines").get<int64_t>();
    l.bad_lines = j.at("bad_lines").get<int64_t>();
    l.chunks = j.at("chunks").get<int64_t>();
    l.finished = j.at("finished").get<bool>();
    if (j.contains("checksums")) {  // absent in ledgers written before checksums existed
      const json& c = j.at("checksums");
      l.checksum_block_bytes = c.at("block_bytes").get<int64_t>();
      if (l.checksum_block_bytes <= 0)
        throw DataError(where + ": corrupt shard ledger (checksum block size " +
                        std::to_string(l.checksum_block_bytes) + ")");
      l.tokens_crc32 = crc_list(c.at("tokens_crc32"), where);
      l.offsets_crc32 = crc_list(c.at("offsets_crc32"), where);
    }
  } catch (const json::exception& e) {
    throw DataError(where + ": corrupt shard ledger (" + e.what() + "); delete the cache directory to rebuild it");
  }
  return l;
}

std::string CacheManifest::to_json() const {
  json j{{"format_version", format_version},
         {"processing", processing_json(processing)},
         {"files", files},
         {"finished", finished},
         {"rows", rows},
         {"tokens", tokens},
         {"bad_lines", bad_lines}};
  return j.dump(2) + "\n";
}

CacheManifest CacheManifest::from_json(const std::string& text, const std::string& where) {
  json j = parse_json(text, where);
  CacheManifest m;
  try {
    m.format_version = j.at("format_version").get<int>();
    if (m.format_version != kCacheFormatVersion) return m;  // the caller refuses it with a message
    m.processing = processing_from(j.at("processing"));
    m.files = j.at("files").get<std::vector<std::string>>();
    m.finished = j.at("finished").get<bool>();
    m.rows = j.at("rows").get<int64_t>();
    m.tokens = j.at("tokens").get<int64_t>();
    m.bad_lines = j.at("bad_lines").get<int64_t>();
  } catch (const json::exception& e) {
    throw DataError(where + ": corrupt cache manifest (" + e.what() + "); delete the cache directory to rebuild it");
  }
  return m;
}

std::string manifest_path(const std::string& cache_dir) { return cache_dir + "/manifest.json"; }
std::string build_lock_path(const std::string& cache_dir, int rank) {
  return cache_dir + "/.lock" + (rank == 0 ? std::string() : "-" + std::to_string(rank));
}

bool joint_builders_alive(const std::string& cache_dir) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(cache_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(".lock-", 0) != 0 || name.size() == 6 ||
        !std::all_of(name.begin() + 6, name.end(), [](unsigned char c) { return std::isdigit(c); }))
      continue;
    if (!runtime::FileLock::try_lock(e.path().string()).locked()) return true;
  }
  return false;
}

std::string shard_dir(const std::string& cache_dir, size_t shard) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%05zu", shard);
  return cache_dir + "/" + buf;
}
std::string ledger_path(const std::string& cache_dir, size_t shard) {
  return shard_dir(cache_dir, shard) + "/ledger.json";
}
std::string tokens_path(const std::string& cache_dir, size_t shard) {
  return shard_dir(cache_dir, shard) + "/tokens.i32";
}
std::string offsets_path(const std::string& cache_dir, size_t shard) {
  return shard_dir(cache_dir, shard) + "/offsets.i64";
}

std::optional<ShardLedger> read_ledger(const std::string& cache_dir, size_t shard) {
  std::string p = ledger_path(cache_dir, shard);
  if (!file_exists(p)) return std::nullopt;
  return ShardLedger::from_json(runtime::rethrow_io_errors_as<DataError>([&] { return runtime::read_small_file(p); }),
                                p);
}

std::optional<CacheManifest> read_manifest(const std::string& cache_dir) {
  std::string p = manifest_path(cache_dir);
  if (!file_exists(p)) return std::nullopt;
  return CacheManifest::from_json(runtime::rethrow_io_errors_as<DataError>([&] { return runtime::read_small_file(p); }),
                                  p);
}

}  // namespace levanter::data
