// Causal self-attention forward + backward through haliax::nn::dot_product_attention (the fused f32 CPU kernel where
// it applies, haliax/nn/attention_cpu.h) against the same call written unfused in haliax ops (dot, where, softmax,
// dot: what dot_product_attention computes when the kernel does not apply), on GPT-2-style operands (q, k, v cut from
// one [batch, position, 3, heads, head_size] projection, as Gpt2Attention's unbind gives them). Time per call of the
// output and the gradients of q, k and v, median of S calls after W warm-up calls, and the largest difference of the
// two sides' outputs and gradients.
//
//   build/bench/bench_attention [--batch B] [--heads H] [--seq T] [--head-size D] [--steps S] [--warmup W]
//                               [--threads N]
//
// Prints `fused_ms=X unfused_ms=Y` and one `RESULT {json}` line.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdio>
#include <string>
#include <vector>

#include "haliax/haliax.h"

#include "../timing.h"

namespace hax = haliax;

namespace {

using bench::median;
using bench::now_ms;

struct Grads {
  at::Tensor out, dqkv;
};

// One forward + backward of causal attention on the [batch, position, qkv, heads, head_size] tensor x.
Grads run(const at::Tensor& x0, const at::Tensor& dout, bool fused, const hax::AxisSpec& axes) {
  at::Tensor x = x0.detach().requires_grad_(true);
  hax::NamedArray qkv = hax::rearrange(hax::NamedArray(x, axes), {"batch", "qkv", "heads", "position", "head_size"});
  std::vector<hax::NamedArray> parts = hax::unbind(qkv, "qkv");
  hax::NamedArray q = parts[0];
  hax::NamedArray k = hax::rename(parts[1], {{"position", "key_position"}});
  hax::NamedArray v = hax::rename(parts[2], {{"position", "key_position"}});
  const hax::Axis Pos = q.resolve_axis("position");
  hax::nn::AttentionOptions o;
  o.mask = hax::nn::causal_mask(Pos, Pos.alias("key_position"));
  hax::NamedArray out;
  if (fused) {
    out =
        hax::nn::dot_product_attention(hax::nn::Contract("head_size"), hax::nn::AttendOver("key_position"), q, k, v, o);
  } else {
    hax::NamedArray w = hax::nn::dot_product_attention_weights(hax::nn::Contract("head_size"),
                                                               hax::nn::AttendOver("key_position"), q, k, o);
    out = hax::dot(w, v, hax::AxisSelection("key_position"));
  }
  at::Tensor o_t = out.rearrange({"batch", "heads", "position", "head_size"}).array();
  o_t.backward(dout);
  return {o_t.detach(), x.grad()};
}

}  // namespace

int main(int argc, char** argv) {
  int64_t B = 8, H = 4, T = 128, D = 32;
  int steps = 20, warmup = 3, threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--batch")
      B = std::stoll(v);
    else if (k == "--heads")
      H = std::stoll(v);
    else if (k == "--seq")
      T = std::stoll(v);
    else if (k == "--head-size")
      D = std::stoll(v);
    else if (k == "--steps")
      steps = std::stoi(v);
    else if (k == "--warmup")
      warmup = std::stoi(v);
    else if (k == "--threads")
      threads = std::stoi(v);
    else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  at::set_num_threads(threads);
  const hax::AxisSpec axes{{"batch", B}, {"position", T}, {"qkv", 3}, {"heads", H}, {"head_size", D}};
  at::Tensor x =
      at::randn({B, T, 3, H, D}, at::TensorOptions().dtype(at::kFloat).device(at::kCPU).requires_grad(false));
  at::Tensor dout = at::randn({B, H, T, D});
  double ms[2];
  Grads g[2];
  for (int side = 0; side < 2; ++side) {
    std::vector<double> t;
    for (int i = 0; i < warmup + steps; ++i) {
      const double t0 = now_ms();
      g[side] = run(x, dout, side == 0, axes);
      if (i >= warmup) t.push_back(now_ms() - t0);
    }
    ms[side] = median(t);
  }
  const double dout_max = (g[0].out - g[1].out).abs().max().item<double>();
  const double dgrad_max = (g[0].dqkv - g[1].dqkv).abs().max().item<double>();
  std::printf("fused_ms=%.3f unfused_ms=%.3f speedup=%.2fx max|dout|=%.3g max|dgrad|=%.3g\n", ms[0], ms[1],
              ms[1] / ms[0], dout_max, dgrad_max);
  std::printf(
      "RESULT {\"bench\": \"attention\", \"batch\": %lld, \"heads\": %lld, \"seq\": %lld, \"head_size\": %lld, "
      "\"threads\": %d, \"fused_ms\": %.3f, \"unfused_ms\": %.3f, \"max_abs_diff_out\": %.3g, "
      "\"max_abs_diff_grad\": %.3g}\n",
      static_cast<long long>(B), static_cast<long long>(H), static_cast<long long>(T), static_cast<long long>(D),
      threads, ms[0], ms[1], dout_max, dgrad_max);
  return 0;
}
