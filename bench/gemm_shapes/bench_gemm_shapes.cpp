// The f32 GEMMs of one GPT-2 layer (c_attn, attention's c_proj, the MLP's c_fc and c_proj; forward x w, and backward
// dx = dy w^T and dw = x^T dy, with w laid out (In, Out) as GPT-2's Conv1D) and of a torch-layout (Out, In) layer's
// forward x w^T, for M rows: at::mm (OpenBLAS in Debian's libtorch, what PyTorch's f32 CPU training runs) against
// haliax's kernels::sgemm (oneDNN), which nn::Linear, the fused attention and the LM head use in f32. Best of S timed
// calls after W warm-up calls of each, after a 300 ms pause (each library's idle threads spin for a while after a call
// and slow the other's), 2 threads by default.
//
//   build/bench/bench_gemm_shapes [--rows M] [--embed E] [--steps S] [--warmup W] [--threads T]
//
// Prints one line per GEMM and one `RESULT {json}` line with both sides' GFLOP/s.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "haliax/nn/sgemm_cpu.h"

#include "../timing.h"

namespace {

struct Gemm {
  std::string name;
  char ta, tb;
  int64_t M, N, K;
};

}  // namespace

int main(int argc, char** argv) {
  int64_t M = 256, E = 768;
  int steps = 10, warmup = 2, threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--rows") {
      M = std::stoll(v);
    } else if (k == "--embed") {
      E = std::stoll(v);
    } else if (k == "--steps") {
      steps = std::stoi(v);
    } else if (k == "--warmup") {
      warmup = std::stoi(v);
    } else if (k == "--threads") {
      threads = std::stoi(v);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  at::set_num_threads(threads);
  std::vector<Gemm> gemms;
  for (auto [name, in, out] : std::vector<std::tuple<std::string, int64_t, int64_t>>{
           {"c_attn", E, 3 * E}, {"attn.c_proj", E, E}, {"c_fc", E, 4 * E}, {"mlp.c_proj", 4 * E, E}}) {
    gemms.push_back({name + " x w", 'N', 'N', M, out, in});
    gemms.push_back({name + " dy w^T", 'N', 'T', M, in, out});
    gemms.push_back({name + " x^T dy", 'T', 'N', in, out, M});
  }
  gemms.push_back({"c_attn x w^T (Out, In)", 'N', 'T', M, 3 * E, E});
  std::string json;
  double flops_total = 0, aten_total = 0, ours_total = 0;
  for (const Gemm& g : gemms) {
    // Row-major operands as stored: op(A) [M, K], op(B) [K, N].
    at::Tensor A = g.ta == 'N' ? at::randn({g.M, g.K}) : at::randn({g.K, g.M});
    at::Tensor B = g.tb == 'N' ? at::randn({g.K, g.N}) : at::randn({g.N, g.K});
    at::Tensor C = at::empty({g.M, g.N});
    const at::Tensor opA = g.ta == 'N' ? A : A.t(), opB = g.tb == 'N' ? B : B.t();
    auto best = [&](auto&& f) {
      // Let the other library's idle threads stop spinning first (OpenBLAS's pthreads spin for a while after a
      // call and would take a core from oneDNN's OpenMP threads, and the other way round).
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      double b = 1e30;
      for (int i = 0; i < warmup + steps; ++i) {
        const double t0 = bench::now_ms();
        f();
        if (i >= warmup) b = std::min(b, bench::now_ms() - t0);
      }
      return b;
    };
    const double aten = best([&] { at::mm_out(C, opA, opB); });
    const double ours = best([&] {
      haliax::nn::kernels::sgemm(g.ta, g.tb, g.M, g.N, g.K, 1.0f, A.data_ptr<float>(), A.size(1), B.data_ptr<float>(),
                                 B.size(1), 0.0f, C.data_ptr<float>(), g.N, "bench_gemm_shapes");
    });
    const double flops = 2.0 * g.M * g.N * g.K;
    flops_total += flops;
    aten_total += aten;
    ours_total += ours;
    std::printf("%-26s %5lld x %5lld x %5lld  at::mm %7.3f ms (%4.0f GFLOP/s)  oneDNN %7.3f ms (%4.0f GFLOP/s)\n",
                g.name.c_str(), static_cast<long long>(g.M), static_cast<long long>(g.N), static_cast<long long>(g.K),
                aten, flops / aten / 1e6, ours, flops / ours / 1e6);
    json += std::string(json.empty() ? "" : ", ") + "{\"gemm\": \"" + g.name +
            "\", \"aten_gflops\": " + std::to_string(flops / aten / 1e6) +
            ", \"ours_gflops\": " + std::to_string(flops / ours / 1e6) + "}";
  }
  std::printf("all: at::mm %.2f ms, oneDNN %.2f ms -> %.2fx\n", aten_total, ours_total, aten_total / ours_total);
  std::printf(
      "RESULT {\"bench\": \"gemm_shapes\", \"rows\": %lld, \"embed\": %lld, \"threads\": %d, \"ratio\": %.3f, "
      "\"gemms\": [%s]}\n",
      static_cast<long long>(M), static_cast<long long>(E), threads, aten_total / ours_total, json.c_str());
  return 0;
}
