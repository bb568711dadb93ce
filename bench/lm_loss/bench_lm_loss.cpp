// The fused LM head + next-token loss (levanter::models::fused_next_token_loss) against the three GEMMs it cannot
// avoid (logits = h w^T, d h = g w, d w = g^T h), for one shape: time per call of the value and both gradients,
// median of N calls after W warm-up calls. The difference is the loss's own work (softmax, its gradient, memory
// passes over the logits). The GEMMs are timed as the fused loss runs them (gemm_ms: for f32 oneDNN's sgemm) and as
// at::mm runs them (gemm_aten_ms: for f32 OpenBLAS).
//
//   build/bench/bench_lm_loss [--positions N] [--embed E] [--vocab V] [--dtype f32|bf16] [--steps S] [--warmup W]
//                             [--threads T] [--block B]
//
// Prints `fused_ms=X gemm_ms=Y gemm_aten_ms=Z` and one `RESULT {json}` line.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "haliax/haliax.h"
#include "levanter/models/lm_loss.h"
#include "levanter/models/lm_loss_kernel.h"
#include "levanter/runtime/cpu_allocator.h"

#include "../timing.h"

namespace hax = haliax;

namespace {

using bench::median;
using bench::now_ms;

template <class F>
double time_ms(int steps, int warmup, F&& f) {
  std::vector<double> t;
  for (int i = 0; i < warmup + steps; ++i) {
    double t0 = now_ms();
    f();
    if (i >= warmup) t.push_back(now_ms() - t0);
  }
  return median(t);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t N = 1024, E = 128, V = 50257, block = 0;
  std::string dtype = "f32";
  int steps = 10, warmup = 2, threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--positions")
      N = std::stoll(v);
    else if (k == "--embed")
      E = std::stoll(v);
    else if (k == "--vocab")
      V = std::stoll(v);
    else if (k == "--dtype")
      dtype = v;
    else if (k == "--steps")
      steps = std::stoi(v);
    else if (k == "--warmup")
      warmup = std::stoi(v);
    else if (k == "--threads")
      threads = std::stoi(v);
    else if (k == "--block")
      block = std::stoll(v);
    else {
      std::fprintf(stderr, "bench_lm_loss: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (dtype != "f32" && dtype != "bf16") {
    std::fprintf(stderr, "bench_lm_loss: --dtype must be f32 or bf16, got %s\n", dtype.c_str());
    return 2;
  }
  levanter::runtime::install_caching_cpu_allocator();  // as the CLI does
  at::set_num_threads(threads);
  const at::ScalarType st = dtype == "f32" ? at::kFloat : at::kBFloat16;
  at::Generator gen = at::detail::createCPUGenerator(0);
  at::Tensor h0 = at::randn({N, E}, gen, at::TensorOptions().dtype(at::kFloat)).to(st);
  at::Tensor w0 = (at::randn({V, E}, gen, at::TensorOptions().dtype(at::kFloat)) * 0.02).to(st);
  at::Tensor ids0 = at::randint(V, {N}, gen, at::TensorOptions().dtype(at::kLong));

  hax::Axis Pos{"position", N}, Embed{"embed", E}, Vocab{"vocab", V};
  levanter::models::LossOptions opts;
  opts.block_size = block;
  double fused = time_ms(steps, warmup, [&] {
    at::Tensor h = h0.detach().requires_grad_(true), w = w0.detach().requires_grad_(true);
    hax::NamedArray loss =
        levanter::models::fused_next_token_loss(hax::NamedArray(h, {Pos, Embed}), hax::NamedArray(w, {Vocab, Embed}),
                                                hax::NamedArray(ids0, {Pos}), std::nullopt, opts);
    loss.array().backward();
    if (!h.grad().defined() || !w.grad().defined()) std::abort();
  });
  at::Tensor g = at::randn({N, V}, gen, at::TensorOptions().dtype(at::kFloat)).to(st);
  // The three GEMMs as at::mm computes them (OpenBLAS for f32, oneDNN for bf16)...
  double gemm_aten = time_ms(steps, warmup, [&] {
    at::Tensor logits = at::mm(h0, w0.t());
    at::Tensor dh = at::mm(g, w0);
    at::Tensor dw = at::mm(g.t(), h0);
  });
  // ...and as the fused loss computes them (f32: oneDNN's sgemm, lm_loss_kernel.h; one block of rows).
  double gemm = gemm_aten;
  if (st == at::kFloat && levanter::models::kernels::head_gemms_supported(h0, w0)) {
    gemm = time_ms(steps, warmup, [&] {
      at::Tensor logits = at::empty({N, V}), dh = at::empty({N, E});
      levanter::models::kernels::head_logits(h0, w0, logits);
      levanter::models::kernels::head_hidden_grad(g, w0, dh);
      levanter::models::kernels::HeadGradAccumulator dw(V, E, N, w0.options());
      dw.add(g, h0);
      at::Tensor d_head = dw.result();
    });
  }
  const double flops = 3.0 * 2.0 * double(N) * double(E) * double(V);
  std::printf(
      "fused_ms=%.2f gemm_ms=%.2f (gemm %.1f GFLOP/s) gemm_aten_ms=%.2f N=%lld E=%lld V=%lld %s threads %d block "
      "%lld\n",
      fused, gemm, flops / gemm / 1e6, gemm_aten, (long long)N, (long long)E, (long long)V, dtype.c_str(), threads,
      (long long)levanter::models::fused_loss_block_rows(block, N, V));
  std::printf(
      "RESULT {\"bench\": \"lm_loss\", \"positions\": %lld, \"embed\": %lld, \"vocab\": %lld, \"dtype\": \"%s\", "
      "\"threads\": %d, \"fused_ms\": %.3f, \"gemm_ms\": %.3f, \"gemm_gflops\": %.1f, \"gemm_aten_ms\": %.3f, "
      "\"fused_gflops\": %.1f}\n",
      (long long)N, (long long)E, (long long)V, dtype.c_str(), threads, fused, gemm, flops / gemm / 1e6, gemm_aten,
      flops / fused / 1e6);
  return 0;
}
