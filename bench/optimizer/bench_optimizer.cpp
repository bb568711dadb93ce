// AdamW update time on GPT-2 small's parameters (124,439,808 float32 values in 148 tensors; Linear weights
// decayed, biases, norms and embeddings not, as Levanter's default mask), for our fused kernel and for our
// ATen-op path (what a straightforward libtorch port does, ~10 passes over memory per tensor).
//
//   build/bench/bench_optimizer [--steps N] [--warmup W] [--threads T] [--grads f32|bf16] [--cases fused,aten]
//
// Per case, two timings: `step` (AdamW alone: max_grad_norm null) and `clip_step` (global-norm clipping with
// max_grad_norm 1.0, then AdamW: Levanter's default). Median of N steps after W warmup steps. Prints one line per
// case, `ours kernel=K grads=G step_ms=X clip_step_ms=Y`, then `RESULT {json}`. bench/optimizer/run compares with
// torch.optim.AdamW on the same sizes.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "levanter/optim/kernels.h"
#include "levanter/optim/optimizer.h"

#include "../timing.h"

using namespace levanter::optim;
using haliax::nn::ParamInfo;
using haliax::nn::ParamKind;

namespace {

using bench::median;
using bench::now_ms;

// GPT-2 small (vocab 50257, 1024 positions, 768 wide, 12 layers), one tensor per parameter as in HF checkpoints.
std::vector<Optimizer::Param> gpt2_small() {
  const int64_t V = 50257, P = 1024, E = 768, L = 12;
  std::vector<std::pair<ParamInfo, std::vector<int64_t>>> spec = {{{"wte.weight", ParamKind::kEmbedding}, {V, E}},
                                                                  {{"wpe.weight", ParamKind::kEmbedding}, {P, E}}};
  for (int64_t l = 0; l < L; ++l) {
    std::string h = "h." + std::to_string(l) + ".";
    spec.push_back({{h + "ln_1.weight", ParamKind::kNormWeight}, {E}});
    spec.push_back({{h + "ln_1.bias", ParamKind::kBias}, {E}});
    spec.push_back({{h + "attn.c_attn.weight", ParamKind::kLinearWeight}, {E, 3 * E}});
    spec.push_back({{h + "attn.c_attn.bias", ParamKind::kBias}, {3 * E}});
    spec.push_back({{h + "attn.c_proj.weight", ParamKind::kLinearWeight}, {E, E}});
    spec.push_back({{h + "attn.c_proj.bias", ParamKind::kBias}, {E}});
    spec.push_back({{h + "ln_2.weight", ParamKind::kNormWeight}, {E}});
    spec.push_back({{h + "ln_2.bias", ParamKind::kBias}, {E}});
    spec.push_back({{h + "mlp.c_fc.weight", ParamKind::kLinearWeight}, {E, 4 * E}});
    spec.push_back({{h + "mlp.c_fc.bias", ParamKind::kBias}, {4 * E}});
    spec.push_back({{h + "mlp.c_proj.weight", ParamKind::kLinearWeight}, {4 * E, E}});
    spec.push_back({{h + "mlp.c_proj.bias", ParamKind::kBias}, {E}});
  }
  spec.push_back({{"ln_f.weight", ParamKind::kNormWeight}, {E}});
  spec.push_back({{"ln_f.bias", ParamKind::kBias}, {E}});
  std::vector<Optimizer::Param> out;
  for (const auto& [info, shape] : spec) out.emplace_back(info, at::randn(shape, at::kFloat).mul_(0.02));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 10, warmup = 2, threads = 0;
  std::string grads_dtype = "f32", cases = "fused,aten", optimizer = "adam";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--steps")
      steps = std::atoi(next().c_str());
    else if (a == "--warmup")
      warmup = std::atoi(next().c_str());
    else if (a == "--threads")
      threads = std::atoi(next().c_str());
    else if (a == "--grads")
      grads_dtype = next();
    else if (a == "--cases")
      cases = next();
    else if (a == "--optimizer")
      optimizer = next();
    else {
      std::fprintf(stderr,
                   "usage: bench_optimizer [--steps N] [--warmup W] [--threads T] [--grads f32|bf16] "
                   "[--cases fused,aten] [--optimizer adam|lion|sophia-h]\n");
      return 2;
    }
  }
  if (threads > 0) at::set_num_threads(threads);
  at::manual_seed(0);
  std::vector<Optimizer::Param> params = gpt2_small();
  int64_t numel = 0;
  for (const auto& [info, t] : params) numel += t.numel();
  std::vector<at::Tensor> grads;
  for (const auto& [info, t] : params) {
    grads.push_back(at::randn(t.sizes(), at::kFloat).mul_(1e-3).to(grads_dtype == "bf16" ? at::kBFloat16 : at::kFloat));
  }
  std::fprintf(stderr, "bench_optimizer: %zu tensors, %lld parameters, grads %s, %d threads, avx2 %s\n", params.size(),
               static_cast<long long>(numel), grads_dtype.c_str(), at::get_num_threads(),
               kernels::using_avx2() ? "yes" : "no");

  std::ostringstream json;
  json << "{\"bench\":\"optimizer\",\"params\":" << numel << ",\"tensors\":" << params.size()
       << ",\"threads\":" << at::get_num_threads() << ",\"grads\":\"" << grads_dtype << "\",\"optimizer\":\""
       << optimizer << "\"";
  std::stringstream list(cases);
  for (std::string kernel; std::getline(list, kernel, ',');) {
    Optimizer::Kernel k = kernel == "aten" ? Optimizer::Kernel::kATen : Optimizer::Kernel::kFused;
    double result[2];
    for (int clip = 0; clip < 2; ++clip) {
      OptimizerConfig config;
      config.type.name = optimizer;
      if (!clip) config.max_grad_norm = std::nullopt;
      Optimizer opt(config, params, k);
      std::vector<double> times;
      for (int s = 0; s < warmup + steps; ++s) {
        // sophia-h: every update_interval-th update folds an estimate into h (timed; the Hessian-vector product that
        // makes the estimate is the trainer's, not timed here).
        std::vector<at::Tensor> est;
        if (opt.needs_hessian()) {
          for (const auto& [info, t] : params) est.push_back(at::ones(t.sizes(), at::kFloat));
        }
        double t0 = now_ms();
        opt.step(grads, 6e-4, opt.needs_hessian() ? &est : nullptr);
        double t1 = now_ms();
        if (s >= warmup) times.push_back(t1 - t0);
      }
      result[clip] = median(times);
    }
    std::printf("ours optimizer=%s kernel=%s grads=%s step_ms=%.1f clip_step_ms=%.1f\n", optimizer.c_str(),
                kernel.c_str(), grads_dtype.c_str(), result[0], result[1]);
    json << ",\"" << kernel << "_step_ms\":" << result[0] << ",\"" << kernel << "_clip_step_ms\":" << result[1];
  }
  json << "}";
  std::printf("RESULT %s\n", json.str().c_str());
  return 0;
}
