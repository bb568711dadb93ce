// Data loader throughput: how fast shuffled batches are assembled from a token cache, against how fast
// training consumes them.
//
//   bench_data_loader --cache-dir DIR --seq-len 1024 --batch-size 8 --seconds 2 FILES...
//
// Builds (or reuses) a GPT-2 token cache of FILES in DIR (one source) and DIR/mix/<i> (one source per file,
// for the mixture), then measures, single-threaded unless said otherwise:
//   batch_at        random-access batch assembly, full Feistel shuffle (what any step costs, e.g. on resume)
//   era             the same with era shuffling (era = 4096 sequences)
//   mixture         a 3-way shuffled mixture (block 2048), the same weights as Levanter's example configs use
//   loader          DataLoader::next() with prefetch on 1 worker thread, consumer doing nothing
//   verify          TokenCache::verify_all on a fresh open: the integrity checks of every block at once
// and the cache build rate (tokenization, all threads) when the cache had to be built.
// Prints one `RESULT {json}` line.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "levanter/data/permutation.h"
#include "levanter/data/text.h"

using namespace levanter::data;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Runs `step(s)` for s = 0, 1, ... for at least `min_seconds`; returns steps per second.
template <typename F>
double rate(double min_seconds, F step) {
  auto t0 = Clock::now();
  int64_t s = 0;
  uint64_t sink = 0;
  while (true) {
    for (int k = 0; k < 16; ++k) sink += step(s++);
    if (seconds_since(t0) >= min_seconds) break;
  }
  double per_s = s / seconds_since(t0);
  if (sink == 42) std::cerr << "";  // keep the work observable
  return per_s;
}

}  // namespace

int main(int argc, char** argv) {
  std::string cache_dir = "bench/out/data_loader_cache";
  int64_t seq_len = 1024, batch_size = 8;
  double seconds = 2.0, train_tokens_per_s = 50000;
  int threads = 0;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--cache-dir")
      cache_dir = next();
    else if (a == "--seq-len")
      seq_len = std::stoll(next());
    else if (a == "--batch-size")
      batch_size = std::stoll(next());
    else if (a == "--seconds")
      seconds = std::stod(next());
    else if (a == "--threads")
      threads = std::stoi(next());
    else if (a == "--train-tokens-per-s")
      train_tokens_per_s = std::stod(next());
    else
      files.push_back(a);
  }
  if (files.empty()) {
    std::cerr << "usage: bench_data_loader [--cache-dir D] [--seq-len L] [--batch-size B] [--seconds S] FILES...\n";
    return 2;
  }

  // One source over all files; and a mixture with one source per file.
  DataConfig single;
  single.train_urls = files;
  single.cache_dir = cache_dir;
  single.shuffle.mode = ShuffleMode::kFull;
  single.cache_options.num_threads = threads;
  TextData data(single);
  auto t0 = Clock::now();
  auto cache = data.cache("", Split::kTrain);
  bool built = cache->builder() != nullptr;
  int64_t total_tokens = cache->total_tokens();  // waits for the build
  double build_s = seconds_since(t0);
  std::cerr << "cache: " << total_tokens << " tokens in " << cache->num_shards() << " shards"
            << (built ? " (built in " + std::to_string(build_s) + " s)" : " (reused)") << "\n";

  const double tokens_per_batch = static_cast<double>(seq_len * batch_size);
  auto full = data.train_set(seq_len, 0, batch_size);
  double full_bps = rate(seconds, [&](int64_t s) { return batch_at(*full, batch_size, s).tokens[0]; });

  DataConfig era_cfg = single;
  era_cfg.shuffle.mode = ShuffleMode::kEra;
  era_cfg.shuffle.era_length = 4096;
  TextData era_data(era_cfg, data.encoder());
  auto era = era_data.train_set(seq_len, 0, batch_size);
  double era_bps = rate(seconds, [&](int64_t s) { return batch_at(*era, batch_size, s).tokens[0]; });

  DataConfig mix_cfg;
  mix_cfg.cache_dir = cache_dir + "/mix";
  mix_cfg.shuffle.mode = ShuffleMode::kFull;
  mix_cfg.cache_options.num_threads = threads;
  std::map<std::string, double> weights;
  for (size_t i = 0; i < files.size(); ++i) {
    std::string name = "s" + std::to_string(i);
    mix_cfg.configs[name].train_urls = {files[i]};
    weights[name] = 1.0 / static_cast<double>(files.size());
  }
  mix_cfg.train_weights.stages = {{0, weights}};
  TextData mix_data(mix_cfg, data.encoder());
  auto mix = mix_data.train_set(seq_len, 0, batch_size);
  for (const auto& name : mix_data.source_names()) mix_data.cache(name, Split::kTrain)->wait_finished();
  double mix_bps = rate(seconds, [&](int64_t s) { return batch_at(*mix, batch_size, s).tokens[0]; });

  double loader_bps;
  {
    DataLoader loader(full, {batch_size, 0, 8, 1});
    loader_bps = rate(seconds, [&](int64_t) { return loader.next().tokens[0]; });
  }

  // Verifying a whole cache (what the first reads of each block cost, all at once): every block's CRC32 and
  // token ids, read with pread from the page cache. Best of three fresh opens.
  double verify_tps = 0;
  for (int k = 0; k < 3; ++k) {
    CacheReadOptions ro;
    ro.vocab_size = data.vocab_size();
    auto fresh = TokenCache::open(cache->dir(), std::nullopt, ro);
    auto v0 = Clock::now();
    fresh->verify_all();
    verify_tps = std::max(verify_tps, static_cast<double>(total_tokens) / seconds_since(v0));
  }

  // The permutation alone, at a length just above a power of 4 (short walks) and well below the next one.
  double perm_ns[2];
  int64_t perm_n[2] = {int64_t{1} << 20, 3 * (int64_t{1} << 19)};
  for (int k = 0; k < 2; ++k) {
    FeistelPermutation perm(perm_n[k], 123);
    perm_ns[k] = 1e9 / rate(seconds / 2, [&](int64_t i) { return static_cast<int32_t>(perm(i % perm_n[k])); });
  }

  double full_tps = full_bps * tokens_per_batch, era_tps = era_bps * tokens_per_batch,
         mix_tps = mix_bps * tokens_per_batch, loader_tps = loader_bps * tokens_per_batch;
  std::printf("batch assembly, seq_len %lld, batch %lld, one thread:\n", static_cast<long long>(seq_len),
              static_cast<long long>(batch_size));
  std::printf("  full shuffle (batch_at)   %12.0f tokens/s  (%.0f batches/s)\n", full_tps, full_bps);
  std::printf("  era shuffle               %12.0f tokens/s\n", era_tps);
  std::printf("  3-way mixture, shuffled   %12.0f tokens/s\n", mix_tps);
  std::printf("  DataLoader (prefetch)     %12.0f tokens/s\n", loader_tps);
  std::printf("  verify a whole cache      %12.0f tokens/s  (CRC32 + vocabulary, once per block)\n", verify_tps);
  std::printf("  Feistel permutation alone: %.0f ns/index (n = 2^20), %.0f ns/index (n = 1.5 * 2^20)\n", perm_ns[0],
              perm_ns[1]);
  std::printf("training consumes at most   %12.0f tokens/s  -> loader is %.0fx faster\n", train_tokens_per_s,
              loader_tps / train_tokens_per_s);
  std::printf(
      "RESULT {\"bench\": \"data_loader\", \"seq_len\": %lld, \"batch_size\": %lld, \"cache_tokens\": %lld, "
      "\"cache_build_tokens_per_s\": %s, \"full_shuffle_tokens_per_s\": %.0f, \"era_shuffle_tokens_per_s\": %.0f, "
      "\"mixture_tokens_per_s\": %.0f, \"loader_tokens_per_s\": %.0f, \"verify_tokens_per_s\": %.0f, "
      "\"feistel_ns_per_index\": [%.1f, %.1f], "
      "\"train_tokens_per_s\": %.0f, \"ratio_loader_over_train\": %.1f}\n",
      static_cast<long long>(seq_len), static_cast<long long>(batch_size), static_cast<long long>(total_tokens),
      built ? std::to_string(static_cast<long long>(total_tokens / build_s)).c_str() : "null", full_tps, era_tps,
      mix_tps, loader_tps, verify_tps, perm_ns[0], perm_ns[1], train_tokens_per_s, loader_tps / train_tokens_per_s);
  return 0;
}
