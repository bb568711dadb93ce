// AdamW: against torch.optim.AdamW (10 steps with a weight-decay mask, clipping and a cosine schedule), against
// formulas written out here, bit-identity across thread counts and SIMD paths, clipping, and save/load/continue.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include "levanter/optim/kernels.h"
#include "levanter/optim/optimizer.h"
#include "levanter/optim/schedule.h"
#include "optim_testing.h"

using namespace levanter::optim;
using namespace optim_testing;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

using Params = std::vector<std::pair<ParamInfo, at::Tensor>>;

OptimizerConfig test_config() {
  OptimizerConfig c;
  c.learning_rate = 1e-2;
  c.warmup = 0.2;
  c.weight_decay = 0.1;
  c.max_grad_norm = 1.0;
  return c;
}

// The gradients of step k: alternately large (clipped: norm ~4.8) and small (norm ~0.48, not clipped).
std::vector<at::Tensor> step_grads(const Params& params, int k, at::ScalarType dtype = at::kFloat) {
  std::vector<at::Tensor> g = grads_for(params, 100 + k, k % 2 == 0 ? 1e-2 : 1e-3);
  for (auto& t : g) t = t.to(dtype);
  return g;
}

// Runs `steps` updates with the schedule of `c` over `steps` training steps.
std::vector<StepStats> run(Optimizer& opt, const Params& params, int first, int last, int64_t total,
                           at::ScalarType dtype = at::kFloat) {
  std::vector<StepStats> stats;
  for (int k = first; k < last; ++k) {
    stats.push_back(opt.step(step_grads(params, k, dtype), learning_rate_at(opt.config(), k, total)));
  }
  return stats;
}

void compare_with_torch(at::ScalarType grad_dtype) {
  const std::string py = python_with_torch();
  if (py.empty()) GTEST_SKIP() << "no python3 with torch (install python3-torch, or set LEVANTER_PYTHON)";
  const int steps = 10;
  OptimizerConfig config = test_config();
  Params params = small_model(1);
  Params initial = clone_params(params);
  Optimizer opt(config, params);

  fs::path dir = fs::temp_directory_path() /
                 ("levanter_optim_torch_" + std::to_string(::getpid()) + "_" + std::string(c10::toString(grad_dtype)));
  fs::create_directories(dir);
  nlohmann::json spec;
  spec["shapes"] = nlohmann::json::array();
  for (const auto& [info, t] : params) spec["shapes"].push_back(t.sizes().vec());
  spec["decay"] = opt.decay_mask();
  std::vector<double> lrs;
  for (int k = 0; k < steps; ++k) lrs.push_back(learning_rate_at(config, k, steps));
  spec["lrs"] = lrs;
  spec["beta1"] = config.beta1;
  spec["beta2"] = config.beta2;
  spec["eps"] = config.epsilon;
  spec["weight_decay"] = config.weight_decay;
  spec["max_grad_norm"] = *config.max_grad_norm;
  std::ofstream(dir / "spec.json") << spec.dump();
  {
    std::ofstream p(dir / "params.bin", std::ios::binary);
    for (const auto& [info, t] : initial) write_floats(p, t);
    std::ofstream g(dir / "grads.bin", std::ios::binary);
    for (int k = 0; k < steps; ++k) {
      for (const auto& t : step_grads(params, k, grad_dtype)) write_floats(g, t);  // bf16 widens exactly
    }
  }
  std::vector<StepStats> stats = run(opt, params, 0, steps, steps, grad_dtype);

  const fs::path script = fs::path(LEVANTER_SOURCE_DIR) / "tests/levanter/optim/torch_adamw_reference.py";
  std::string cmd = "OMP_NUM_THREADS=1 " + py + " " + script.string() + " " + dir.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

  nlohmann::json norms = nlohmann::json::parse(std::ifstream(dir / "norms.json"));
  int clipped = 0;
  for (int k = 0; k < steps; ++k) {
    EXPECT_NEAR(stats[k].grad_norm, norms[k].get<double>(), 1e-12 * stats[k].grad_norm) << "step " << k;
    clipped += stats[k].clip_scale < 1.0;
  }
  EXPECT_EQ(clipped, steps / 2);  // the clipping path ran, and so did the unclipped one

  std::ifstream out(dir / "out.bin", std::ios::binary);
  // Tolerance: torch applies the decay as p * (1 - lr wd) before the Adam step and divides by
  // sqrt(v) / sqrt(bc2) + eps with step size lr / bc1; optax (and we) add wd * p to m_hat / (sqrt(v_hat) + eps)
  // and multiply by lr. Same math, different float32 roundings, of the parameter (a few ulps of |p|) and of each
  // step's Adam direction (a few ulps of a value of size ~1, times lr). Hence 1e-6 relative to the parameter plus
  // 1e-6 relative to the distance the updates can move it (the sum of the learning rates).
  double sum_lr = 0;
  for (double lr : lrs) sum_lr += lr;
  const double rtol = 1e-6, atol = 1e-6 * sum_lr;
  double worst = 0;
  std::string worst_at;
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& ours = params[i].second;
    std::vector<float> ref(ours.numel());
    out.read(reinterpret_cast<char*>(ref.data()), ref.size() * sizeof(float));
    ASSERT_TRUE(out.good());
    const float* o = ours.data_ptr<float>();
    const float* p0 = initial[i].second.data_ptr<float>();
    bool moved = false;
    for (int64_t j = 0; j < ours.numel(); ++j) {
      double err = std::abs(double(o[j]) - double(ref[j]));
      double ratio = err / (rtol * std::abs(double(ref[j])) + atol);
      if (ratio > worst) {
        worst = ratio;
        worst_at = params[i].first.path + "[" + std::to_string(j) + "]: ours " + std::to_string(o[j]) + ", torch " +
                   std::to_string(ref[j]);
      }
      moved = moved || o[j] != p0[j];
    }
    EXPECT_TRUE(moved) << params[i].first.path;
  }
  EXPECT_LE(worst, 1.0) << "worst element (error / tolerance " << worst << "): " << worst_at;
  std::printf("[ torch AdamW, %s grads ] worst error / tolerance = %.3g at %s\n", c10::toString(grad_dtype), worst,
              worst_at.c_str());
  fs::remove_all(dir);
}

// Plain double-precision AdamW (optax's formulas) for one tensor.
struct RefAdam {
  std::vector<double> p, m, v;
  void step(const std::vector<double>& g, double lr, double b1, double b2, double eps, double wd, int t,
            bool nesterov) {
    for (size_t i = 0; i < p.size(); ++i) {
      m[i] = (1 - b1) * g[i] + b1 * m[i];
      v[i] = (1 - b2) * g[i] * g[i] + b2 * v[i];
      double m_hat = nesterov ? b1 * m[i] / (1 - std::pow(b1, t + 1)) + (1 - b1) * g[i] / (1 - std::pow(b1, t))
                              : m[i] / (1 - std::pow(b1, t));
      double v_hat = v[i] / (1 - std::pow(b2, t));
      p[i] -= lr * (m_hat / (std::sqrt(v_hat) + eps) + wd * p[i]);
    }
  }
};

std::vector<double> to_vec(const at::Tensor& t) {
  at::Tensor d = t.to(at::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

}  // namespace

TEST(OptimAdamW, MatchesTorchAdamW) { compare_with_torch(at::kFloat); }
TEST(OptimAdamW, MatchesTorchAdamWWithBf16Grads) { compare_with_torch(at::kBFloat16); }

TEST(OptimAdamW, MatchesOptaxFormulasInDouble) {
  for (bool nesterov : {false, true}) {
    OptimizerConfig c = test_config();
    c.nesterov = nesterov;
    c.max_grad_norm = std::nullopt;
    at::Tensor w = normal({1000}, 5, 0.5);
    Optimizer opt(c, {{ParamInfo{"w", haliax::nn::ParamKind::kLinearWeight}, w}});
    RefAdam ref{to_vec(w), std::vector<double>(1000, 0.0), std::vector<double>(1000, 0.0)};
    for (int k = 0; k < 5; ++k) {
      at::Tensor g = normal({1000}, 50 + k, 0.1);
      opt.step({g}, 1e-2);
      ref.step(to_vec(g), 1e-2, c.beta1, c.beta2, c.epsilon, c.weight_decay, k + 1, nesterov);
    }
    std::vector<double> ours = to_vec(w);
    for (size_t i = 0; i < ours.size(); ++i) {
      // 1e-6 of the parameter and of the distance 5 updates of lr 1e-2 can move it (see compare_with_torch).
      ASSERT_NEAR(ours[i], ref.p[i], 1e-6 * std::abs(ref.p[i]) + 1e-6 * 5e-2) << "nesterov=" << nesterov << " i=" << i;
    }
  }
}

TEST(OptimAdamW, FirstStepIsSignedLearningRatePlusDecay) {
  // t = 1: m_hat = g, v_hat = g^2, so the Adam direction is g / (|g| + eps).
  OptimizerConfig c = test_config();
  at::Tensor w = normal({64}, 3, 1.0), b = normal({64}, 4, 1.0);
  at::Tensor w0 = w.clone(), b0 = b.clone();
  Optimizer opt(c, {{ParamInfo{"fc.weight", haliax::nn::ParamKind::kLinearWeight}, w},
                    {ParamInfo{"fc.bias", haliax::nn::ParamKind::kBias}, b}});
  at::Tensor gw = normal({64}, 7, 1e-3), gb = normal({64}, 8, 1e-3);
  StepStats s = opt.step({gw, gb}, 0.5);
  EXPECT_EQ(s.clip_scale, 1.0);
  EXPECT_EQ(opt.step_count(), 1);
  for (int64_t i = 0; i < 64; ++i) {
    double g = gw[i].item<double>(), p = w0[i].item<double>();
    EXPECT_NEAR(w[i].item<double>(), p - 0.5 * (g / (std::abs(g) + 1e-8) + 0.1 * p), 1e-6);
    double gbi = gb[i].item<double>();
    EXPECT_NEAR(b[i].item<double>(), b0[i].item<double>() - 0.5 * gbi / (std::abs(gbi) + 1e-8), 1e-6);  // no decay
  }
}

TEST(OptimAdamW, BitsDoNotDependOnThreadsOrSimdPath) {
  auto run_with = [](int threads, bool scalar, at::ScalarType dtype, bool nesterov) {
    const int saved = at::get_num_threads();
    at::set_num_threads(threads);
    kernels::force_scalar(scalar);
    Params params = small_model(2);
    OptimizerConfig config = test_config();
    config.nesterov = nesterov;
    Optimizer opt(config, params);
    std::vector<StepStats> stats = run(opt, params, 0, 4, 10, dtype);
    kernels::force_scalar(false);
    at::set_num_threads(saved);
    return std::make_pair(params, stats);
  };
  for (bool nesterov : {false, true}) {
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      auto [p1, s1] = run_with(1, false, dtype, nesterov);
      auto [p2, s2] = run_with(2, false, dtype, nesterov);
      auto [p3, s3] = run_with(3, true, dtype, nesterov);
      for (size_t i = 0; i < p1.size(); ++i) {
        EXPECT_TRUE(bit_equal(p1[i].second, p2[i].second)) << p1[i].first.path << " nesterov=" << nesterov;
        EXPECT_TRUE(bit_equal(p1[i].second, p3[i].second))
            << p1[i].first.path << " (scalar path) nesterov=" << nesterov;
      }
      for (size_t k = 0; k < s1.size(); ++k) {
        EXPECT_EQ(s1[k].grad_norm, s2[k].grad_norm);
        EXPECT_EQ(s1[k].grad_norm, s3[k].grad_norm);
      }
    }
  }
}

// The update and norm loops at every length from 0 to 40 and at unaligned starts (the 16-element prefetching loop, the
// 8-element one, the padded partial vector, each alone and together): the vector path's bits equal the scalar
// path's, and nothing past the range changes. Gradients in f32 and bf16; AdamW with and without Nesterov, Lion,
// Sophia-H and the sum of squares.
TEST(OptimKernels, EveryLengthAndStartGivesTheScalarPathsBitsAndWritesNothingPast) {
  if (!kernels::using_avx2()) GTEST_SKIP() << "no AVX2 path on this CPU: only the scalar path runs";
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto uniform = [&state] {  // splitmix64 -> [-1, 1)
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return static_cast<float>(static_cast<double>(z >> 11) / 4503599627370496.0 - 1.0);
  };
  auto bits = [](float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
  };
  constexpr int64_t kCap = 64;  // start + n + guard elements
  kernels::AdamScalars adam{0.9f, 0.1f, 0.95f, 0.05f, 1.3f, 1.2f, 7.5f, 1e-8f, 1e-2f, 0.1f, 0.7f, false};
  kernels::LionScalars lion{0.9f, 0.1f, 0.99f, 0.01f, 1e-2f, 0.1f, 0.7f};
  kernels::SophiaScalars sophia{0.96f, 0.04f, 1.5f, 0.01f, 1e-12f, 1.0f, 1e-2f, 0.1f, 0.7f};
  for (int64_t start = 0; start < 4; ++start) {
    for (int64_t n = 0; n <= 40; ++n) {
      std::vector<float> p(kCap), m(kCap), v(kCap), h(kCap), g(kCap);
      std::vector<uint16_t> gb(kCap);
      for (int64_t i = 0; i < kCap; ++i) {
        p[i] = uniform(), m[i] = 0.1f * uniform(), v[i] = 0.01f * (uniform() + 1.0f), h[i] = uniform() + 1.0f;
        g[i] = uniform();
        gb[i] = static_cast<uint16_t>(bits(g[i]) >> 16);
      }
      // Runs `update` on copies of p, m, v from `start` for n elements, on one path; returns the three arrays whole.
      auto run = [&](bool scalar, auto&& update) {
        std::vector<float> P = p, M = m, V = v;
        kernels::force_scalar(scalar);
        update(P.data() + start, M.data() + start, V.data() + start);
        kernels::force_scalar(false);
        return std::vector<std::vector<float>>{P, M, V};
      };
      auto same_bits = [&](const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b,
                           const char* what) {
        for (size_t k = 0; k < a.size(); ++k) {
          EXPECT_EQ(std::memcmp(a[k].data(), b[k].data(), kCap * sizeof(float)), 0)
              << what << ": array " << k << ", start " << start << ", n " << n;
          // Outside [start, start + n) nothing moved.
          const std::vector<float>& orig = k == 0 ? p : k == 1 ? m : v;
          for (int64_t i = 0; i < kCap; ++i) {
            if (i >= start && i < start + n) continue;
            EXPECT_EQ(bits(a[k][i]), bits(orig[i]))
                << what << ": element " << i << " outside the range changed (start " << start << ", n " << n << ")";
          }
        }
      };
      for (bool nesterov : {false, true}) {
        kernels::AdamScalars s = adam;
        s.nesterov = nesterov;
        auto f32 = [&](float* P, float* M, float* V) { kernels::adamw_update(P, M, V, g.data() + start, n, s); };
        auto bf16 = [&](float* P, float* M, float* V) { kernels::adamw_update(P, M, V, gb.data() + start, n, s); };
        same_bits(run(false, f32), run(true, f32), nesterov ? "adamw nesterov f32" : "adamw f32");
        same_bits(run(false, bf16), run(true, bf16), nesterov ? "adamw nesterov bf16" : "adamw bf16");
      }
      auto lion32 = [&](float* P, float* M, float*) { kernels::lion_update(P, M, g.data() + start, n, lion); };
      auto lion16 = [&](float* P, float* M, float*) { kernels::lion_update(P, M, gb.data() + start, n, lion); };
      same_bits(run(false, lion32), run(true, lion32), "lion f32");
      same_bits(run(false, lion16), run(true, lion16), "lion bf16");
      auto so32 = [&](float* P, float* M, float*) {
        kernels::sophia_update(P, M, h.data() + start, g.data() + start, n, sophia);
      };
      auto so16 = [&](float* P, float* M, float*) {
        kernels::sophia_update(P, M, h.data() + start, gb.data() + start, n, sophia);
      };
      same_bits(run(false, so32), run(true, so32), "sophia f32");
      same_bits(run(false, so16), run(true, so16), "sophia bf16");
      for (bool bf : {false, true}) {
        auto norm = [&](bool scalar) {
          kernels::force_scalar(scalar);
          const double r = bf ? kernels::sum_squares(gb.data() + start, n) : kernels::sum_squares(g.data() + start, n);
          kernels::force_scalar(false);
          return r;
        };
        EXPECT_EQ(norm(false), norm(true))
            << "sum_squares " << (bf ? "bf16" : "f32") << ", start " << start << ", n " << n;
      }
    }
  }
}

// Mixed precision's bf16 copy, written by the update chunk by chunk: the bits of copy_ from the parameter, for AdamW,
// Lion and Sophia-H (each from a fresh zero copy every step, so a stale chunk would show), on the fused and the ATen
// paths; and the rounding itself on the values where rounding is hard.
TEST(OptimAdamW, Bf16CopiesWrittenByTheUpdateEqualTheCastParameters) {
  const float specials[] = {
      0.0f,   -0.0f,   1.0f,     1.00390625f, 1.0078125f, 1.01171875f, 3.0e38f,   -3.4e38f,
      1e-40f, -1e-45f, INFINITY, -INFINITY,   65504.0f,   0.1f,        -2.5e-20f, 1.0f + 1.0f / 256 + 1.0f / 65536};
  at::Tensor x = at::cat({at::from_blob(const_cast<float*>(specials), {16}, at::kFloat),
                          at::randn({4099}, at::TensorOptions().dtype(at::kFloat)) * 1e3});
  for (bool scalar : {false, true}) {
    // Outputs at every alignment (the vector path's scalar prologue up to 32 bytes) and lengths with tails.
    for (int64_t k = 0; k < 17; ++k) {
      kernels::force_scalar(scalar);
      at::Tensor got = at::zeros(x.sizes(), x.options().dtype(at::kBFloat16));
      const int64_t n = x.numel() - k - 3;
      kernels::round_to_bf16(x.data_ptr<float>() + k, reinterpret_cast<uint16_t*>(got.data_ptr<at::BFloat16>()) + k, n);
      kernels::force_scalar(false);
      EXPECT_TRUE(bit_equal(got.narrow(0, k, n), x.narrow(0, k, n).to(at::kBFloat16)))
          << (scalar ? "scalar path" : "vector path") << ", offset " << k;
      EXPECT_TRUE(at::all(got.narrow(0, 0, k) == 0).item<bool>() && at::all(got.narrow(0, k + n, 3) == 0).item<bool>());
    }
  }
  const float nan = NAN;
  uint16_t bits = 0;
  kernels::round_to_bf16(&nan, &bits, 1);
  EXPECT_EQ(bits, 0x7FC0);

  for (const char* type : {"adam", "lion", "sophia-h"}) {
    for (Optimizer::Kernel kernel : {Optimizer::Kernel::kFused, Optimizer::Kernel::kATen}) {
      SCOPED_TRACE(std::string(type) + (kernel == Optimizer::Kernel::kFused ? " fused" : " aten"));
      OptimizerConfig c = test_config();
      c.type.name = type;
      if (c.type.name == "sophia-h") c.update_interval = 1000;  // no estimate in these steps (h stays 0)
      Params params = small_model(4);
      Optimizer opt(c, params, kernel);
      std::vector<at::Tensor> copies;
      for (const auto& [info, p] : params) copies.push_back(at::zeros(p.sizes(), p.options().dtype(at::kBFloat16)));
      opt.set_bf16_copies(copies);
      for (int k = 0; k < 3; ++k) {
        for (at::Tensor& cp : copies) cp.zero_();
        run(opt, params, k, k + 1, 10);
        for (size_t i = 0; i < params.size(); ++i) {
          EXPECT_TRUE(bit_equal(copies[i], params[i].second.to(at::kBFloat16)))
              << params[i].first.path << " step " << k;
        }
      }
    }
  }
  Params params = small_model(1);
  Optimizer opt(test_config(), params);
  EXPECT_THROW(opt.set_bf16_copies({at::zeros({1}, at::kBFloat16)}), std::invalid_argument);
  std::vector<at::Tensor> some(params.size());  // a copy of the first parameter only: not the whole copy
  some[0] = at::zeros(params[0].second.sizes(), at::kBFloat16);
  opt.set_bf16_copies(some);
  EXPECT_FALSE(opt.has_bf16_copies());
}

TEST(OptimAdamW, AtenKernelAgreesWithFused) {
  Params a = small_model(3), b = clone_params(a);
  Optimizer fused(test_config(), a, Optimizer::Kernel::kFused);
  Optimizer aten(test_config(), b, Optimizer::Kernel::kATen);
  run(fused, a, 0, 6, 10);
  run(aten, b, 0, 6, 10);
  double sum_lr = 0;
  for (int k = 0; k < 6; ++k) sum_lr += learning_rate_at(test_config(), k, 10);
  for (size_t i = 0; i < a.size(); ++i) {  // the tolerance of compare_with_torch
    EXPECT_TRUE(at::allclose(a[i].second, b[i].second, 1e-6, 1e-6 * sum_lr)) << a[i].first.path;
  }
}

TEST(OptimAdamW, GlobalNormAndClipping) {
  Params params = small_model(4);
  std::vector<at::Tensor> g = grads_for(params, 9, 1e-2);
  double want = 0;
  for (const auto& t : g) want += t.to(at::kDouble).pow(2).sum().item<double>();
  want = std::sqrt(want);
  EXPECT_NEAR(global_norm(g), want, 1e-13 * want);
  std::vector<at::Tensor> bf;
  for (const auto& t : g) bf.push_back(t.to(at::kBFloat16));
  double want_bf = 0;
  for (const auto& t : bf) want_bf += t.to(at::kDouble).pow(2).sum().item<double>();
  EXPECT_NEAR(global_norm(bf), std::sqrt(want_bf), 1e-13 * want);

  // Above max_norm: scaled to it; below: untouched (optax.clip_by_global_norm).
  std::vector<at::Tensor> c = g;
  for (auto& t : c) t = t.clone();
  EXPECT_EQ(clip_by_global_norm_(c, 1.0), global_norm(g));
  EXPECT_NEAR(global_norm(c), 1.0, 1e-6);
  EXPECT_EQ(clip_by_global_norm_(c, 10.0), global_norm(c));
  EXPECT_NEAR(global_norm(c), 1.0, 1e-6);

  // Inside step: the pre-clip norm is reported, the gradients are not modified, and clipping equals pre-scaling.
  Params a = small_model(5), b = clone_params(a);
  OptimizerConfig clip = test_config();
  OptimizerConfig none = test_config();
  none.max_grad_norm = std::nullopt;
  Optimizer with_clip(clip, a), prescaled(none, b);
  std::vector<at::Tensor> g2 = grads_for(a, 10, 1e-2);
  std::vector<at::Tensor> g2_copy;
  for (const auto& t : g2) g2_copy.push_back(t.clone());
  StepStats s = with_clip.step(g2, 1e-2);
  EXPECT_EQ(s.grad_norm, global_norm(g2));
  EXPECT_GT(s.grad_norm, 1.0);
  EXPECT_DOUBLE_EQ(s.clip_scale, 1.0 / s.grad_norm);
  for (size_t i = 0; i < g2.size(); ++i) EXPECT_TRUE(bit_equal(g2[i], g2_copy[i]));
  for (auto& t : g2_copy) t.mul_(static_cast<float>(s.clip_scale));
  StepStats s2 = prescaled.step(g2_copy, 1e-2);
  EXPECT_EQ(s2.clip_scale, 1.0);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(bit_equal(a[i].second, b[i].second)) << a[i].first.path;
}

TEST(OptimAdamW, MaskDecidesWhatDecays) {
  // Zero gradients: the Adam direction is 0 / (0 + eps) = 0, so only decay moves a parameter.
  Params params = {{ParamInfo{"fc.weight", haliax::nn::ParamKind::kLinearWeight}, normal({3, 5}, 1)},
                   {ParamInfo{"fc.bias", haliax::nn::ParamKind::kBias}, normal({5}, 2)},
                   {ParamInfo{"ln.weight", haliax::nn::ParamKind::kNormWeight}, normal({5}, 3)},
                   {ParamInfo{"wte.weight", haliax::nn::ParamKind::kEmbedding}, normal({7, 5}, 4)}};
  Params before = clone_params(params);
  Optimizer opt(test_config(), params);
  EXPECT_EQ(opt.decayed_paths(), std::vector<std::string>{"fc.weight"});
  opt.step({at::zeros({3, 5}), at::Tensor(), at::Tensor(), at::zeros({7, 5})}, 0.5);  // undefined = zero
  at::Tensor w0 = before[0].second;
  EXPECT_TRUE(bit_equal(params[0].second, w0 - 0.5f * (0.1f * w0)));
  for (size_t i = 1; i < params.size(); ++i) EXPECT_TRUE(bit_equal(params[i].second, before[i].second));

  // AdamC: the decay is scaled by lr / learning_rate.
  OptimizerConfig c = test_config();
  c.adamc_weight_decay = true;
  Params q = clone_params(before);
  Optimizer adamc(c, q);
  adamc.step({at::zeros({3, 5}), at::Tensor(), at::Tensor(), at::Tensor()}, 5e-3);
  float wd = static_cast<float>(0.1 * (5e-3 / 1e-2));
  EXPECT_TRUE(bit_equal(q[0].second, w0 - 5e-3f * (wd * w0)));
}

TEST(OptimAdamW, SaveLoadContinueIsBitIdentical) {
  const int total = 10, cut = 4;
  Params straight = small_model(6);
  Optimizer a(test_config(), straight);
  run(a, straight, 0, total, total);

  Params first = small_model(6);
  Optimizer b(test_config(), first);
  run(b, first, 0, cut, total);
  // "Checkpoint": copies of the parameters and the optimizer state, then a fresh process's worth of objects.
  haliax::nn::StateDict saved;
  for (const auto& [key, t] : b.state_dict()) saved.emplace_back(key, t.clone());
  Params resumed = clone_params(first);
  for (auto& [info, t] : first) t.fill_(0);  // the old objects are gone
  Optimizer c(test_config(), resumed);
  c.load_state_dict(saved);
  EXPECT_EQ(c.step_count(), cut);
  run(c, resumed, cut, total, total);
  for (size_t i = 0; i < straight.size(); ++i) {
    EXPECT_TRUE(bit_equal(straight[i].second, resumed[i].second)) << straight[i].first.path;
  }
  // The state's keys.
  haliax::nn::StateDict sd = c.state_dict();
  ASSERT_EQ(sd.size(), 1 + 2 * straight.size());
  EXPECT_EQ(sd[0].first, "opt.step");
  EXPECT_EQ(sd[0].second.item<int64_t>(), total);
  EXPECT_EQ(sd[1].first, "opt.m.embeddings.token_embeddings.weight");
  EXPECT_EQ(sd[1 + straight.size()].first, "opt.v.embeddings.token_embeddings.weight");
}

TEST(OptimAdamW, LoadStateDictIsStrict) {
  Params params = small_model(7);
  Optimizer opt(test_config(), params);
  haliax::nn::StateDict good = opt.state_dict();
  auto error_of = [&](haliax::nn::StateDict d) {
    try {
      opt.load_state_dict(d);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  haliax::nn::StateDict missing(good.begin(), good.end() - 1);
  EXPECT_THAT(error_of(missing), HasSubstr("missing entry 'opt.v.lm_head.weight'"));
  haliax::nn::StateDict extra = good;
  extra.emplace_back("opt.m.nope", at::zeros({1}));
  EXPECT_THAT(error_of(extra), HasSubstr("unexpected entries (no such parameter): opt.m.nope"));
  haliax::nn::StateDict shape = good;
  shape[1].second = at::zeros({2, 2});
  EXPECT_THAT(error_of(shape), HasSubstr("'opt.m.embeddings.token_embeddings.weight' has shape (2, 2)"));
  haliax::nn::StateDict dtype = good;
  dtype[1].second = dtype[1].second.to(at::kBFloat16);
  EXPECT_THAT(error_of(dtype), HasSubstr("expected Float"));
  haliax::nn::StateDict with_model = good;
  with_model.emplace_back("transformer.h.0.attn.c_attn.weight", at::zeros({1}));  // not ours: ignored
  EXPECT_EQ(error_of(with_model), "(no error)");
}

TEST(OptimAdamW, BadInputsAreErrors) {
  OptimizerConfig c = test_config();
  auto w = normal({4}, 1);
  EXPECT_THROW(Optimizer(c, {{ParamInfo{"w"}, w.to(at::kBFloat16)}}), std::invalid_argument);
  EXPECT_THROW(Optimizer(c, {{ParamInfo{"w"}, w}, {ParamInfo{"w"}, w.clone()}}), std::invalid_argument);
  Optimizer opt(c, {{ParamInfo{"w"}, w}});
  EXPECT_THROW(opt.step({}, 1e-3), std::invalid_argument);
  try {
    opt.step({at::zeros({5})}, 1e-3);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("gradient of 'w' has shape (5), the parameter (4)"));
  }
}
