// The machine's f32 multiply-add peak: T threads, each running 12 independent chains of vector FMAs with nothing to
// load or store, best of R timed runs of about 0.3 s, with AVX-512 and with AVX2 + FMA where the CPU has them (the
// larger is the peak: a CPU with one 512-bit FMA unit can be as fast with AVX2). No f32 GEMM can run faster than
// this (bf16 can, where the CPU has AMX or full-rate bf16 dot products), so bench/train_gpt2/run prints what a ratio
// would take against it, and the GEMM ceiling's share of it says how much a GEMM library leaves. Build with
// optimisation: at -O0 the chains live in memory and the figure means nothing.
//
//   build/bench/bench_fma_peak [--threads T] [--runs R]
//
// Prints `fma_peak isa=I threads=T gflops=X` and one `RESULT {json}` line.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace {

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

#if defined(__x86_64__)
__attribute__((target("avx512f"))) float chains_avx512(long iters) {
  __m512 a[12];
  for (int k = 0; k < 12; ++k) a[k] = _mm512_set1_ps(0.001f * static_cast<float>(k));
  const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-4f);
  for (long i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int k = 0; k < 12; ++k) a[k] = _mm512_fmadd_ps(a[k], x, y);
  }
  __m512 s = a[0];
  for (int k = 1; k < 12; ++k) s = _mm512_add_ps(s, a[k]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  float t = 0;
  for (float l : lanes) t += l;
  return t;
}

__attribute__((target("avx2,fma"))) float chains_avx2(long iters) {
  __m256 a[12];
  for (int k = 0; k < 12; ++k) a[k] = _mm256_set1_ps(0.001f * static_cast<float>(k));
  const __m256 x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(1e-4f);
  for (long i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int k = 0; k < 12; ++k) a[k] = _mm256_fmadd_ps(a[k], x, y);
  }
  __m256 s = a[0];
  for (int k = 1; k < 12; ++k) s = _mm256_add_ps(s, a[k]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  float t = 0;
  for (float l : lanes) t += l;
  return t;
}
#endif

float chains_scalar(long iters) {
  float a[12];
  for (int k = 0; k < 12; ++k) a[k] = 0.001f * static_cast<float>(k);
  for (long i = 0; i < iters; ++i) {
    for (int k = 0; k < 12; ++k) a[k] = a[k] * 0.999f + 1e-4f;
  }
  float t = 0;
  for (float v : a) t += v;
  return t;
}

struct Isa {
  std::string name;
  int lanes;
  float (*run)(long);
};

// The vector ISAs this CPU runs; scalar where it has neither (a figure that bounds nothing then).
std::vector<Isa> isas() {
  std::vector<Isa> out;
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f")) out.push_back({"avx512", 16, chains_avx512});
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) out.push_back({"avx2", 8, chains_avx2});
#endif
  if (out.empty()) out.push_back({"scalar", 1, chains_scalar});
  return out;
}

// A positive integer argument, at most `most`; 0 when it is not one.
int parse_count(const char* s, int most) {
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  return end != s && *end == '\0' && v >= 1 && v <= most ? static_cast<int>(v) : 0;
}

// Seconds for `threads` threads to run `iters` iterations each.
double timed(const Isa& isa, int threads, long iters) {
  std::vector<float> sink(threads);
  std::vector<std::thread> pool;
  const double t0 = now_s();
  for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { sink[t] = isa.run(iters); });
  for (auto& th : pool) th.join();
  const double dt = now_s() - t0;
  volatile float keep = sink[0];
  (void)keep;
  return dt;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, runs = 5;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) {
      threads = parse_count(argv[++i], 1024);
    } else if (a == "--runs" && i + 1 < argc) {
      runs = parse_count(argv[++i], 1000);
    } else {
      std::fprintf(stderr, "usage: bench_fma_peak [--threads T] [--runs R]\n");
      return 2;
    }
    if (threads == 0 || runs == 0) {
      std::fprintf(stderr, "bench_fma_peak: %s takes a whole number from 1 (threads up to 1024, runs up to 1000)\n",
                   a.c_str());
      return 2;
    }
  }
  std::string best_isa;
  double best_gflops = 0;
  for (const Isa& isa : isas()) {
    // Iterations for about 0.3 s a run, from a short calibration.
    long iters = 1 << 20;
    const double cal = timed(isa, threads, iters);
    iters = std::max<long>(iters, static_cast<long>(static_cast<double>(iters) * 0.3 / std::max(cal, 1e-6)));
    double best = 1e300;
    for (int r = 0; r < runs; ++r) best = std::min(best, timed(isa, threads, iters));
    // 12 FMAs of `lanes` floats, 2 FLOPs each, per iteration and thread.
    const double gflops =
        static_cast<double>(threads) * static_cast<double>(iters) * 12.0 * isa.lanes * 2.0 / best / 1e9;
    std::fprintf(stderr, "bench_fma_peak: %s %.1f GFLOP/s\n", isa.name.c_str(), gflops);
    if (gflops > best_gflops) best_gflops = gflops, best_isa = isa.name;
  }
  std::printf("fma_peak isa=%s threads=%d gflops=%.1f\n", best_isa.c_str(), threads, best_gflops);
  std::printf("RESULT {\"bench\":\"fma_peak\",\"isa\":\"%s\",\"threads\":%d,\"gflops\":%.2f}\n", best_isa.c_str(),
              threads, best_gflops);
  return 0;
}
