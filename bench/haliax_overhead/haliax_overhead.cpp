// The cost of haliax's naming layer over raw ATen: per op, and on a GPT-2-small-sized transformer block
// forward + backward. Both sides run the same ATen kernels; the difference is name resolution, broadcasting
// checks, permutes/views and the extra C++ objects. Runs are interleaved (named, raw, named, raw, ...) so
// that machine noise hits both sides alike; we report medians and the ratio named/raw.
// Also: Stacked::scan against Stacked::fold plus stacking the per-layer outputs by hand, on a stack of `--layers`
// such blocks (fwd+bwd): scan must cost no more than that (field "stacked_scan" in the RESULT).
//
//   build/bench/bench_haliax_overhead [--reps N] [--batch B] [--seq T] [--layers L] [--dtype f32|bf16]
// Prints a table and one line `RESULT {json}`.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "haliax/haliax.h"
#include "haliax/hof.h"

#include "../timing.h"

namespace hax = haliax;
using hax::Axis;
using hax::NamedArray;

namespace {

using bench::median;
using bench::now_ms;

struct Pair {
  std::string name;
  double named_ms, raw_ms;
  double ratio() const { return named_ms / raw_ms; }
};

// Interleaved timing of two closures: warmup, then `reps` alternating runs each.
Pair time_pair(const std::string& name, int reps, const std::function<void()>& named,
               const std::function<void()>& raw) {
  for (int i = 0; i < 3; ++i) {
    named();
    raw();
  }
  std::vector<double> a, b;
  for (int i = 0; i < reps; ++i) {
    double t0 = now_ms();
    named();
    double t1 = now_ms();
    raw();
    double t2 = now_ms();
    a.push_back(t1 - t0);
    b.push_back(t2 - t1);
  }
  return {name, median(a), median(b)};
}

// --- a GPT-2 block, named -------------------------------------------------------------------------------------

struct NamedBlock {
  Axis Embed, Heads, HeadSize, Mlp, Qkv, Pos, KPos;
  hax::nn::LayerNorm ln_1, ln_2;
  hax::nn::Linear c_attn, c_proj, c_fc, mlp_proj;

  NamedArray operator()(const NamedArray& x, const NamedArray& mask) const {
    // x: (batch, position, embed)
    NamedArray h = ln_1(x);
    NamedArray qkv = c_attn(h);  // (batch, position, qkv, heads, head_size)
    NamedArray q = hax::take(qkv, Qkv, 0);
    NamedArray k = hax::rename(hax::take(qkv, Qkv, 1), {{Pos.name, KPos.name}});
    NamedArray v = hax::rename(hax::take(qkv, Qkv, 2), {{Pos.name, KPos.name}});
    NamedArray scores = hax::dot(q, k, HeadSize) * (1.0 / std::sqrt(double(HeadSize.size)));
    scores = hax::where(mask, scores, -INFINITY);
    NamedArray weights = hax::nn::softmax(scores, KPos);
    NamedArray attn = hax::dot(weights, v, KPos);  // (batch, position, heads, head_size)
    NamedArray y = x + c_proj(attn);
    NamedArray m = mlp_proj(hax::nn::gelu(c_fc(ln_2(y)), /*approximate=*/true));
    return y + m;
  }
  void visit(hax::nn::ParamVisitor& v) {
    v("ln_1", ln_1);
    v("c_attn", c_attn);
    v("c_proj", c_proj);
    v("ln_2", ln_2);
    v("c_fc", c_fc);
    v("mlp_proj", mlp_proj);
  }
};

// --- the same block, positional (PyTorch eager style, as in shared/peers/torch_gpt2_bench.py) --------------

struct RawBlock {
  int64_t C, NH;
  at::Tensor ln1_w, ln1_b, attn_w, attn_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, fcp_w, fcp_b;
  at::Tensor operator()(const at::Tensor& x, const at::Tensor& mask) const {
    int64_t B = x.size(0), T = x.size(1), hs = C / NH;
    at::Tensor h = at::layer_norm(x, {C}, ln1_w, ln1_b, 1e-5);
    at::Tensor qkv = at::linear(h, attn_w, attn_b);  // (B, T, 3C)
    auto parts = qkv.split(C, 2);
    at::Tensor q = parts[0].view({B, T, NH, hs}).transpose(1, 2);
    at::Tensor k = parts[1].view({B, T, NH, hs}).transpose(1, 2);
    at::Tensor v = parts[2].view({B, T, NH, hs}).transpose(1, 2);
    at::Tensor att = at::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(hs)));
    att = att.masked_fill(mask.logical_not(), -INFINITY);
    att = at::softmax(att, -1);
    at::Tensor y = at::matmul(att, v).transpose(1, 2).contiguous().view({B, T, C});
    at::Tensor x1 = x + at::linear(y, proj_w, proj_b);
    at::Tensor m =
        at::linear(at::gelu(at::linear(at::layer_norm(x1, {C}, ln2_w, ln2_b, 1e-5), fc_w, fc_b), "tanh"), fcp_w, fcp_b);
    return x1 + m;
  }
};

std::vector<at::Tensor*> raw_params(RawBlock& r) {
  return {&r.ln1_w, &r.ln1_b, &r.attn_w, &r.attn_b, &r.proj_w, &r.proj_b,
          &r.ln2_w, &r.ln2_b, &r.fc_w,   &r.fc_b,   &r.fcp_w,  &r.fcp_b};
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 30;
  int64_t B = 4, T = 64, C = 768, NH = 12, L = 4;
  std::string dtype_s = "f32";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return std::string(argv[++i]); };
    if (a == "--reps")
      reps = std::stoi(next());
    else if (a == "--batch")
      B = std::stoll(next());
    else if (a == "--seq")
      T = std::stoll(next());
    else if (a == "--layers")
      L = std::stoll(next());
    else if (a == "--dtype")
      dtype_s = next();
    else {
      std::fprintf(stderr, "usage: %s [--reps N] [--batch B] [--seq T] [--layers L] [--dtype f32|bf16]\n", argv[0]);
      return 2;
    }
  }
  at::ScalarType dtype = dtype_s == "bf16" ? at::kBFloat16 : at::kFloat;
  if (const char* t = std::getenv("OMP_NUM_THREADS")) at::set_num_threads(std::atoi(t));
  std::printf("haliax overhead: B=%lld T=%lld C=%lld heads=%lld dtype=%s threads=%d reps=%d\n", (long long)B,
              (long long)T, (long long)C, (long long)NH, dtype_s.c_str(), at::get_num_threads(), reps);

  Axis Batch("batch", B), Pos("position", T), KPos("key_position", T), Embed("embed", C), Heads("heads", NH),
      HeadSize("head_size", C / NH), Mlp("mlp", 4 * C), Qkv("qkv", 3);
  hax::random::Key key(0);
  std::vector<Pair> results;

  // --- per-op ---------------------------------------------------------------------------------------------
  NamedArray x = hax::astype(hax::random::normal(key.fold_in(1), {Batch, Pos, Embed}), dtype);
  NamedArray y = hax::astype(hax::random::normal(key.fold_in(2), {Batch, Pos, Embed}), dtype);
  NamedArray w = hax::astype(hax::random::normal(key.fold_in(3), {Mlp, Embed}), dtype);
  NamedArray bias = hax::astype(hax::random::normal(key.fold_in(4), {Embed}), dtype);
  at::Tensor xt = x.array(), yt = y.array(), wt = w.array(), bt = bias.array();
  volatile double sink = 0;
  results.push_back(time_pair(
      "add (same axes)", reps * 10, [&] { sink += (x + y).array().numel(); }, [&] { sink += (xt + yt).numel(); }));
  results.push_back(time_pair(
      "add (broadcast bias)", reps * 10, [&] { sink += (x + bias).array().numel(); },
      [&] { sink += (xt + bt).numel(); }));
  results.push_back(time_pair(
      "sum over embed", reps * 10, [&] { sink += hax::sum(x, Embed).array().numel(); },
      [&] { sink += xt.sum(2).numel(); }));
  results.push_back(time_pair(
      "softmax over embed", reps * 10, [&] { sink += hax::nn::softmax(x, Embed).array().numel(); },
      [&] { sink += at::softmax(xt, 2).numel(); }));
  results.push_back(time_pair(
      "dot (linear, contract embed)", reps, [&] { sink += hax::dot(x, w, Embed).array().numel(); },
      [&] { sink += at::matmul(xt, wt.t()).numel(); }));
  results.push_back(time_pair(
      "rearrange", reps * 10,
      [&] {
        sink += hax::rearrange(x, {Embed, Batch, Pos}).array().numel();
      },
      [&] {
        sink += xt.permute({2, 0, 1}).numel();
      }));

  // --- GPT-2 small block, forward + backward --------------------------------------------------------------
  auto keys = key.fold_in(5).split(4);
  NamedBlock nb{Embed,
                Heads,
                HeadSize,
                Mlp,
                Qkv,
                Pos,
                KPos,
                hax::nn::LayerNorm::init({Embed}),
                hax::nn::LayerNorm::init({Embed}),
                hax::nn::Linear::init({Embed}, {Qkv, Heads, HeadSize}, keys[0]),
                hax::nn::Linear::init({Heads, HeadSize}, {Embed}, keys[1]),
                hax::nn::Linear::init({Embed}, {Mlp}, keys[2]),
                hax::nn::Linear::init({Mlp}, {Embed}, keys[3])};
  nb = hax::nn::cast_floating(nb, dtype);
  hax::nn::requires_grad_(nb);
  // The raw block shares the same parameter values, flattened to PyTorch's layout.
  RawBlock rb{C, NH};
  {
    auto flat = [](const NamedArray& p, std::vector<int64_t> shape) {
      return p.array().detach().reshape(shape).clone().requires_grad_(true);
    };
    rb.ln1_w = flat(*nb.ln_1.weight, {C});
    rb.ln1_b = flat(*nb.ln_1.bias, {C});
    rb.attn_w = flat(nb.c_attn.weight, {3 * C, C});
    rb.attn_b = flat(*nb.c_attn.bias, {3 * C});
    rb.proj_w = flat(nb.c_proj.weight, {C, C});
    rb.proj_b = flat(*nb.c_proj.bias, {C});
    rb.ln2_w = flat(*nb.ln_2.weight, {C});
    rb.ln2_b = flat(*nb.ln_2.bias, {C});
    rb.fc_w = flat(nb.c_fc.weight, {4 * C, C});
    rb.fc_b = flat(*nb.c_fc.bias, {4 * C});
    rb.fcp_w = flat(nb.mlp_proj.weight, {C, 4 * C});
    rb.fcp_b = flat(*nb.mlp_proj.bias, {C});
  }
  NamedArray mask = hax::nn::causal_mask(Pos, KPos);
  at::Tensor mask_t = mask.array();
  // Same outputs (up to float rounding): the comparison is of equal work.
  {
    at::NoGradGuard ng;
    at::Tensor a = nb(x, mask).array().to(at::kFloat), b = rb(xt, mask_t).to(at::kFloat);
    double diff = (a - b).abs().max().item<double>();
    std::printf("block outputs agree: max |named - raw| = %.3g\n", diff);
    if (diff > (dtype == at::kFloat ? 1e-3 : 0.5)) {
      std::fprintf(stderr, "named and raw blocks disagree; the benchmark would compare different work\n");
      return 1;
    }
  }
  auto zero_named = [&] {
    hax::nn::for_each_parameter(
        nb, [](const hax::nn::ParamInfo&, NamedArray& p) { p.array().mutable_grad() = at::Tensor(); });
  };
  auto zero_raw = [&] {
    for (at::Tensor* p : raw_params(rb)) p->mutable_grad() = at::Tensor();
  };
  results.push_back(time_pair(
      "GPT-2 small block fwd+bwd", reps,
      [&] {
        zero_named();
        hax::sum(nb(x, mask)).array().to(at::kFloat).backward();
      },
      [&] {
        zero_raw();
        rb(xt, mask_t).sum().to(at::kFloat).backward();
      }));
  results.push_back(time_pair(
      "GPT-2 small block fwd", reps,
      [&] {
        at::NoGradGuard ng;
        sink += nb(x, mask).array().numel();
      },
      [&] {
        at::NoGradGuard ng;
        sink += rb(xt, mask_t).numel();
      }));

  // --- Stacked::scan vs Stacked::fold + stack, L blocks, forward + backward ----------------------------------
  Axis Layers("layers", L);
  auto stacked = hax::nn::Stacked<NamedBlock>::init(Layers, key.fold_in(6), [&](const hax::random::Key& k) {
    auto ks = k.split(4);
    NamedBlock b = nb;
    b.c_attn = hax::nn::Linear::init({Embed}, {Qkv, Heads, HeadSize}, ks[0]);
    b.c_proj = hax::nn::Linear::init({Heads, HeadSize}, {Embed}, ks[1]);
    b.c_fc = hax::nn::Linear::init({Embed}, {Mlp}, ks[2]);
    b.mlp_proj = hax::nn::Linear::init({Mlp}, {Embed}, ks[3]);
    return hax::nn::cast_floating(b, dtype);
  });
  hax::nn::requires_grad_(stacked);
  auto zero_stacked = [&] {
    hax::nn::for_each_parameter(
        stacked, [](const hax::nn::ParamInfo&, NamedArray& p) { p.array().mutable_grad() = at::Tensor(); });
  };
  // Both sides compute the same loss, sum(carry) + sum(ys), where y_i is layer i's output.
  Pair stacked_scan = time_pair(
      "Stacked scan vs fold+stack", reps,
      [&] {
        zero_stacked();
        auto [carry, ys] = stacked.scan(x, [&mask](const NamedBlock& b, const NamedArray& c, int64_t) {
          NamedArray out = b(c, mask);
          return std::make_pair(out, out);
        });
        (hax::sum(carry) + hax::sum(ys)).array().to(at::kFloat).backward();
      },
      [&] {
        zero_stacked();
        std::vector<NamedArray> outs;
        NamedArray carry = stacked.fold(x, [&](const NamedBlock& b, const NamedArray& c, int64_t) {
          outs.push_back(b(c, mask));
          return outs.back();
        });
        NamedArray ys = hax::stack(Layers, outs);
        (hax::sum(carry) + hax::sum(ys)).array().to(at::kFloat).backward();
      });

  std::printf("%-32s %12s %12s %8s\n", "case", "named ms", "raw ms", "ratio");
  for (const Pair& p : results)
    std::printf("%-32s %12.4f %12.4f %8.3f\n", p.name.c_str(), p.named_ms, p.raw_ms, p.ratio());
  const Pair& block = results[results.size() - 2];
  std::printf("GPT-2 small block fwd+bwd overhead: %+.1f%%\n", (block.ratio() - 1) * 100);
  std::printf("%-32s %12s %12s %8s\n", ("L=" + std::to_string(L) + " blocks, fwd+bwd").c_str(), "scan ms",
              "fold+stack ms", "ratio");
  std::printf("%-32s %12.4f %12.4f %8.3f\n", stacked_scan.name.c_str(), stacked_scan.named_ms, stacked_scan.raw_ms,
              stacked_scan.ratio());
  std::printf("RESULT {\"bench\":\"haliax_overhead\",\"dtype\":\"%s\",\"B\":%lld,\"T\":%lld,\"threads\":%d,\"cases\":{",
              dtype_s.c_str(), (long long)B, (long long)T, at::get_num_threads());
  for (size_t i = 0; i < results.size(); ++i) {
    std::printf("%s\"%s\":{\"named_ms\":%.5f,\"raw_ms\":%.5f,\"ratio\":%.4f}", i ? "," : "", results[i].name.c_str(),
                results[i].named_ms, results[i].raw_ms, results[i].ratio());
  }
  std::printf("},\"block_fwd_bwd_ratio\":%.4f", block.ratio());
  std::printf(",\"stacked_scan\":{\"layers\":%lld,\"scan_ms\":%.5f,\"fold_stack_ms\":%.5f,\"ratio\":%.4f}}\n",
              (long long)L, stacked_scan.named_ms, stacked_scan.raw_ms, stacked_scan.ratio());
  return 0;
}
