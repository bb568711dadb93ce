// Throughput of levanter-cpp's tokenizer on JSONL corpora; bench/tokenizer/run compares it with HF tokenizers.
//
//   bench_tokenizer [--tokenizer PATH (default: data/gpt2/tokenizer.json of this checkout)] [--reps N] [--threads 1,2]
//                   [--roundtrip] FILE.jsonl[.gz|.zst] ...
//
// Like shared/tools/reftok/bench.js, only tokenisation is timed (the files are read and parsed first), the
// first pass over the data (empty word caches: a freshly loaded tokenizer) is reported apart from the median
// of --reps warm passes, and MB = 10^6 bytes of UTF-8 text. For each thread count T: T = 1 encodes one
// document at a time with encode_into() ("sequential") and with encode_batch(1024 documents at a time, 1 thread)
// ("batch", like HF's encodeBatch with RAYON_NUM_THREADS=1); T > 1: encode_batch on T threads.
// cpu = user+system seconds of the process per MB (steadier than wall time on a busy machine).
// Each configuration ends with one line: "ours mode=M threads=T cold_mbps=... warm_mbps=... cpu_s_per_mb=...
// tokens=...".
// --roundtrip also checks decode(encode(text)) == text for every document and prints the number of failures.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "levanter/data/jsonl_reader.h"
#include "levanter/data/tokenizer/tokenizer.h"

using levanter::data::TokenId;
using levanter::data::Tokenizer;

namespace {

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

// threads == 0: one document at a time with encode_into() on this thread ("sequential");
// else encode_batch() on `threads` threads, 1024 documents per call ("batch").
std::size_t pass(const Tokenizer& tok, const std::vector<std::string>& docs, int threads) {
  std::size_t n = 0;
  if (threads == 0) {
    std::vector<TokenId> ids;
    for (const std::string& d : docs) {
      ids.clear();
      tok.encode_into(d, ids);
      n += ids.size();
    }
    return n;
  }
  for (std::size_t i = 0; i < docs.size(); i += 1024) {
    std::vector<std::string_view> batch(docs.begin() + i, docs.begin() + std::min(docs.size(), i + 1024));
    for (const auto& ids : tok.encode_batch(batch, threads)) n += ids.size();
  }
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  // Default: the bundled tokenizer of the checkout that holds the build directory (build*/bench/bench_tokenizer).
  std::error_code ec;
  std::string tok_path =
      (std::filesystem::read_symlink("/proc/self/exe", ec).parent_path() / "../../data/gpt2/tokenizer.json")
          .lexically_normal()
          .string();
  int reps = 3;
  bool roundtrip = false;
  std::vector<int> thread_counts = {1, 2};
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--tokenizer" && i + 1 < argc) {
      tok_path = argv[++i];
    } else if (a == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--threads" && i + 1 < argc) {
      thread_counts.clear();
      std::stringstream ss(argv[++i]);
      for (std::string t; std::getline(ss, t, ',');) thread_counts.push_back(std::max(1, std::atoi(t.c_str())));
    } else if (a == "--roundtrip") {
      roundtrip = true;
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr,
                   "usage: bench_tokenizer [--tokenizer PATH] [--reps N] [--threads 1,2] [--roundtrip] FILES...\n");
      return 2;
    } else {
      files.push_back(a);
    }
  }
  if (files.empty()) {
    std::fprintf(stderr, "bench_tokenizer: no input files\n");
    return 2;
  }
  std::vector<std::string> docs;
  std::size_t bytes = 0;
  for (const std::string& f : files) {
    levanter::data::JsonlTextReader r(levanter::data::open_lines(f));
    levanter::data::TextRecord rec;
    while (r.next(rec)) {
      bytes += rec.text.size();
      docs.push_back(std::move(rec.text));
    }
  }
  const double mb = bytes / 1e6;
  std::printf("docs=%zu bytes=%zu cpus=%u tokenizer=%s\n", docs.size(), bytes, std::thread::hardware_concurrency(),
              tok_path.c_str());
  if (roundtrip) {
    Tokenizer tok = Tokenizer::from_file(tok_path);
    std::size_t failures = 0;
    for (const std::string& d : docs) failures += tok.decode(tok.encode(d)) != d;
    std::printf("roundtrip documents=%zu failures=%zu\n", docs.size(), failures);
  }
  std::vector<int> runs;  // 0 = sequential on one thread
  for (int t : thread_counts) {
    if (t == 1) runs.push_back(0);
    runs.push_back(t);
  }
  for (int threads : runs) {
    const char* mode = threads == 0 ? "sequential" : "batch";
    const int nthreads = std::max(threads, 1);
    Tokenizer tok = Tokenizer::from_file(tok_path);  // fresh: empty word caches
    auto t0 = std::chrono::steady_clock::now();
    std::size_t ntok = pass(tok, docs, threads);
    double cold = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::vector<double> walls, cpus;
    for (int r = 0; r < reps; ++r) {
      double c0 = cpu_seconds();
      t0 = std::chrono::steady_clock::now();
      if (pass(tok, docs, threads) != ntok) {
        std::fprintf(stderr, "bench_tokenizer: token count changed between passes\n");
        return 1;
      }
      walls.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      cpus.push_back(cpu_seconds() - c0);
    }
    std::sort(walls.begin(), walls.end());
    std::sort(cpus.begin(), cpus.end());
    double warm = walls[walls.size() / 2], cpu = cpus[cpus.size() / 2];
    std::printf(
        "%-10s threads=%d tokens=%zu cold: %.3f s = %.2f MB/s | warm median of %d: %.3f s = %.2f MB/s (%.2f Mtok/s) | "
        "cpu %.4f s/MB\n",
        mode, nthreads, ntok, cold, mb / cold, reps, warm, mb / warm, ntok / warm / 1e6, cpu / mb);
    std::printf("ours mode=%s threads=%d cold_mbps=%.3f warm_mbps=%.3f cpu_s_per_mb=%.5f tokens=%zu\n", mode, nthreads,
                mb / cold, mb / warm, cpu / mb, ntok);
  }
  return 0;
}
