// Helpers for the data tests: temporary directories, small corpora, a trivial tokenizer, directory snapshots.
#pragma once

#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "levanter/data/cache/builder.h"
#include "levanter/data/files.h"
#include "levanter/data/tokenizer/test_util.h"  // read_file
#include "levanter/runtime/file_io.h"
#include "levanter/temp_dir.h"

namespace levanter::data::testing {

namespace fs = std::filesystem;
using levanter::runtime::write_file_atomic;

using levanter::testing::TempDir;  // a fresh directory under /tmp, removed when the test ends

inline void write_text(const std::string& path, const std::string& contents) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << contents;
}

inline void write_gz(const std::string& path, const std::string& contents) {
  fs::create_directories(fs::path(path).parent_path());
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, contents.data(), static_cast<unsigned>(contents.size()));
  gzclose(f);
}

inline std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"')
      o += "\\\"";
    else if (c == '\\')
      o += "\\\\";
    else if (c == '\n')
      o += "\\n";
    else
      o += c;
  }
  return o;
}

// Deterministic documents of varied length: "doc <file>-<i>: word word ...".
inline std::vector<std::string> make_docs(int file, int n, int seed = 0) {
  std::mt19937 rng(static_cast<unsigned>(file * 1000 + seed));
  std::vector<std::string> docs;
  for (int i = 0; i < n; ++i) {
    std::string d = "doc " + std::to_string(file) + "-" + std::to_string(i) + ":";
    int words = 1 + static_cast<int>(rng() % 30);
    for (int w = 0; w < words; ++w) d += " w" + std::to_string(rng() % 100);
    docs.push_back(d);
  }
  return docs;
}

inline std::string jsonl(const std::vector<std::string>& docs, const std::string& key = "text") {
  std::string out;
  for (const auto& d : docs) out += "{\"" + key + "\": \"" + json_escape(d) + "\", \"id\": \"x\"}\n";
  return out;
}

constexpr int32_t kByteEos = 256;

// Each byte is a token; EOS = 256. Optionally slow (to watch a build in progress).
inline DocumentEncoder byte_encoder(int sleep_us_per_doc = 0, const std::string& fingerprint = "test:bytes-v1") {
  DocumentEncoder e;
  e.processing.tokenizer = "bytes";
  e.processing.tokenizer_fingerprint = fingerprint;
  e.processing.eos_id = kByteEos;
  e.encode = [sleep_us_per_doc](std::string_view text, std::vector<int32_t>& out) {
    if (sleep_us_per_doc > 0) std::this_thread::sleep_for(std::chrono::microseconds(sleep_us_per_doc));
    for (unsigned char c : text) out.push_back(c);
  };
  return e;
}

// Every file under `dir` (relative path -> bytes), except the lock file.
inline std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::string rel = fs::relative(e.path(), dir).string();
    if (rel == ".lock") continue;
    std::ifstream in(e.path(), std::ios::binary);
    out[rel] = std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  return out;
}

// The tokens a byte-encoded cache of `docs` must hold.
inline std::vector<int32_t> expected_bytes_tokens(const std::vector<std::string>& docs) {
  std::vector<int32_t> out;
  for (const auto& d : docs) {
    for (unsigned char c : d) out.push_back(c);
    out.push_back(kByteEos);
  }
  return out;
}

}  // namespace levanter::data::testing
