// Lion (optimizer.type: lion): against Lion written out in PyTorch from the paper's algorithm (10 steps with a
// weight-decay mask, clipping and a cosine schedule, float32 and bfloat16 gradients), against the formulas in
// double, bit-identity across thread counts and SIMD paths, and its state (save, load, continue; refusing Adam's).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
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

OptimizerConfig lion_config() {
  OptimizerConfig c;
  c.type.name = "lion";
  c.learning_rate = 1e-3;
  c.warmup = 0.2;
  c.weight_decay = 0.5;
  c.max_grad_norm = 1.0;
  return c;
}

// Alternately large (clipped) and small (not clipped) gradients, as in test_adamw.cpp.
std::vector<at::Tensor> step_grads(const Params& params, int k, at::ScalarType dtype = at::kFloat) {
  std::vector<at::Tensor> g = grads_for(params, 300 + k, k % 2 == 0 ? 1e-2 : 1e-3);
  for (auto& t : g) t = t.to(dtype);
  return g;
}

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
  OptimizerConfig config = lion_config();
  Params params = small_model(2);
  Params initial = clone_params(params);
  Optimizer opt(config, params);

  fs::path dir = fs::temp_directory_path() /
                 ("levanter_lion_torch_" + std::to_string(::getpid()) + "_" + std::string(c10::toString(grad_dtype)));
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
  spec["weight_decay"] = config.weight_decay;
  spec["max_grad_norm"] = *config.max_grad_norm;
  std::ofstream(dir / "spec.json") << spec.dump();
  {
    std::ofstream p(dir / "params.bin", std::ios::binary);
    for (const auto& [info, t] : initial) write_floats(p, t);
    std::ofstream g(dir / "grads.bin", std::ios::binary);
    for (int k = 0; k < steps; ++k) {
      for (const auto& t : step_grads(params, k, grad_dtype)) write_floats(g, t);
    }
  }
  std::vector<StepStats> stats = run(opt, params, 0, steps, steps, grad_dtype);
  int clipped = 0;
  for (const auto& s : stats) clipped += s.clip_scale < 1.0;
  EXPECT_EQ(clipped, steps / 2);

  const fs::path script = fs::path(LEVANTER_SOURCE_DIR) / "tests/levanter/optim/torch_lion_reference.py";
  std::string cmd = "OMP_NUM_THREADS=1 " + py + " " + script.string() + " " + dir.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

  // The reference performs the same float32 operations in the paper's order; each is commutative with ours
  // (b1 m + (1 - b1) g against (1 - b1) g + b1 m), so the signs agree exactly and the parameters agree to a few
  // ulps of the parameter: 1e-6 relative plus 1e-3 of one step's movement (lr). A sign that differed would move an
  // element by 2 lr: 2000 times the tolerance.
  std::ifstream out(dir / "out.bin", std::ios::binary);
  std::ifstream mom(dir / "momentum.bin", std::ios::binary);
  const at::Tensor ours_m_all = [&] {
    std::vector<at::Tensor> ms;
    for (const auto& [k, t] : opt.state_dict()) {
      if (k.rfind("opt.m.", 0) == 0) ms.push_back(t.flatten());
    }
    return at::cat(ms);
  }();
  int64_t m_offset = 0;
  double worst = 0;
  std::string worst_at;
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& ours = params[i].second;
    std::vector<float> ref(ours.numel()), ref_m(ours.numel());
    out.read(reinterpret_cast<char*>(ref.data()), ref.size() * sizeof(float));
    mom.read(reinterpret_cast<char*>(ref_m.data()), ref_m.size() * sizeof(float));
    ASSERT_TRUE(out.good() && mom.good());
    const float* o = ours.data_ptr<float>();
    const float* om = ours_m_all.data_ptr<float>() + m_offset;
    m_offset += ours.numel();
    const float* p0 = initial[i].second.data_ptr<float>();
    bool moved = false;
    for (int64_t j = 0; j < ours.numel(); ++j) {
      double err = std::abs(double(o[j]) - double(ref[j]));
      double ratio = err / (1e-6 * std::abs(double(ref[j])) + 1e-3 * config.learning_rate);
      if (ratio > worst) {
        worst = ratio;
        worst_at = params[i].first.path + "[" + std::to_string(j) + "]: ours " + std::to_string(o[j]) + ", torch " +
                   std::to_string(ref[j]);
      }
      ASSERT_NEAR(om[j], ref_m[j], 1e-6 * std::abs(ref_m[j]) + 1e-12) << params[i].first.path << "[" << j << "]";
      moved = moved || o[j] != p0[j];
    }
    EXPECT_TRUE(moved) << params[i].first.path;
  }
  EXPECT_LE(worst, 1.0) << "worst element (error / tolerance " << worst << "): " << worst_at;
  std::printf("[ torch Lion, %s grads ] worst error / tolerance = %.3g at %s\n", c10::toString(grad_dtype), worst,
              worst_at.c_str());
  fs::remove_all(dir);
}

std::vector<double> to_vec(const at::Tensor& t) {
  at::Tensor d = t.to(at::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

}  // namespace

TEST(OptimLion, MatchesTorchReferenceOfThePaper) { compare_with_torch(at::kFloat); }
TEST(OptimLion, MatchesTorchReferenceOfThePaperWithBf16Grads) { compare_with_torch(at::kBFloat16); }

TEST(OptimLion, MatchesFormulasInDouble) {
  // Without clipping, 5 steps: the double-precision recurrence, with every sign taken from our own momentum
  // history in double (the momentum is far from 0 here, so signs cannot differ), within float32 rounding.
  OptimizerConfig c = lion_config();
  c.max_grad_norm = std::nullopt;
  Params params = {{ParamInfo{"w", haliax::nn::ParamKind::kLinearWeight}, normal({1000}, 5, 0.1)},
                   {ParamInfo{"b", haliax::nn::ParamKind::kBias}, normal({37}, 6, 0.1)}};
  std::vector<std::vector<double>> p = {to_vec(params[0].second), to_vec(params[1].second)};
  std::vector<std::vector<double>> m = {std::vector<double>(1000, 0.0), std::vector<double>(37, 0.0)};
  Optimizer opt(c, params);
  for (int k = 0; k < 5; ++k) {
    std::vector<at::Tensor> g = {normal({1000}, 50 + k, 1.0), normal({37}, 60 + k, 1.0)};
    const double lr = 1e-3 * (k + 1);
    opt.step(g, lr);
    for (size_t t = 0; t < 2; ++t) {
      std::vector<double> gd = to_vec(g[t]);
      const double wd = t == 0 ? c.weight_decay : 0.0;  // biases do not decay
      for (size_t i = 0; i < gd.size(); ++i) {
        double cc = (1 - c.beta1) * gd[i] + c.beta1 * m[t][i];
        double u = (cc > 0) - (cc < 0) + wd * p[t][i];
        p[t][i] -= lr * u;
        m[t][i] = (1 - c.beta2) * gd[i] + c.beta2 * m[t][i];
      }
    }
  }
  for (size_t t = 0; t < 2; ++t) {
    std::vector<double> ours = to_vec(params[t].second);
    for (size_t i = 0; i < ours.size(); ++i) ASSERT_NEAR(ours[i], p[t][i], 1e-6) << t << "[" << i << "]";
  }
}

TEST(OptimLion, FirstStepIsSignOfTheGradient) {
  // m = 0: the first update is lr * (sign(g) + wd p), |movement| = lr for a parameter that does not decay.
  OptimizerConfig c = lion_config();
  c.max_grad_norm = std::nullopt;
  at::Tensor b = normal({64}, 7, 1.0), b0 = b.clone();
  at::Tensor g = normal({64}, 8, 1e-6);
  g[3] = 0.0f;  // sign(0) = 0: does not move
  Optimizer opt(c, {{ParamInfo{"x.bias", haliax::nn::ParamKind::kBias}, b}});
  opt.step({g}, 0.25);
  for (int64_t i = 0; i < 64; ++i) {
    float gi = g[i].item<float>();
    float want = b0[i].item<float>() - 0.25f * (gi > 0 ? 1.0f : (gi < 0 ? -1.0f : 0.0f));
    EXPECT_EQ(b[i].item<float>(), want) << i;
  }
}

TEST(OptimLion, BitsDoNotDependOnThreadsOrSimdPath) {
  Params reference;
  for (int variant = 0; variant < 3; ++variant) {
    const int threads = variant == 1 ? 1 : 2;
    at::set_num_threads(threads);
    kernels::force_scalar(variant == 2);
    Params params = small_model(4);
    Optimizer opt(lion_config(), params);
    run(opt, params, 0, 6, 6, variant == 0 ? at::kFloat : at::kFloat);
    run(opt, params, 6, 8, 8, at::kBFloat16);
    kernels::force_scalar(false);
    if (variant == 0) {
      reference = params;
      continue;
    }
    for (size_t i = 0; i < params.size(); ++i) {
      EXPECT_TRUE(bit_equal(params[i].second, reference[i].second))
          << params[i].first.path << " differs with " << threads << " threads, scalar=" << (variant == 2);
    }
  }
  at::set_num_threads(2);
}

TEST(OptimLion, AtenKernelAgreesWithFused) {
  Params a = small_model(5), b = clone_params(a);
  Optimizer fused(lion_config(), a, Optimizer::Kernel::kFused);
  Optimizer aten(lion_config(), b, Optimizer::Kernel::kATen);
  run(fused, a, 0, 6, 6);
  run(aten, b, 0, 6, 6);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(at::allclose(a[i].second, b[i].second, 1e-6, 1e-7)) << a[i].first.path;
  }
}

TEST(OptimLion, StateIsOneMomentAndSaveLoadContinueIsBitIdentical) {
  Params straight = small_model(6), first = clone_params(straight), resumed = clone_params(straight);
  Optimizer a(lion_config(), straight);
  run(a, straight, 0, 8, 8);

  Optimizer b(lion_config(), first);
  run(b, first, 0, 5, 8);
  haliax::nn::StateDict saved;
  for (const auto& [k, t] : b.state_dict()) {
    EXPECT_TRUE(k == "opt.step" || k.rfind("opt.m.", 0) == 0) << k << ": Lion keeps one moment";
    saved.emplace_back(k, t.clone());
  }
  EXPECT_EQ(saved.size(), 1 + first.size());
  for (size_t i = 0; i < first.size(); ++i) resumed[i].second.copy_(first[i].second);
  Optimizer c(lion_config(), resumed);
  c.load_state_dict(saved);
  EXPECT_EQ(c.step_count(), 5);
  run(c, resumed, 5, 8, 8);
  for (size_t i = 0; i < straight.size(); ++i) {
    EXPECT_TRUE(bit_equal(straight[i].second, resumed[i].second)) << straight[i].first.path;
  }
}

TEST(OptimLion, StateOfTheOtherOptimizerIsRefusedByName) {
  Params p = small_model(7), q = clone_params(p);
  OptimizerConfig adam = lion_config();
  adam.type.name = "adam";
  Optimizer adam_opt(adam, p), lion_opt(lion_config(), q);
  try {
    lion_opt.load_state_dict(adam_opt.state_dict());
    FAIL() << "Adam's state loaded into Lion";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("written by adam but optimizer.type is lion"));
  }
  try {
    adam_opt.load_state_dict(lion_opt.state_dict());
    FAIL() << "Lion's state loaded into Adam";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("written by lion but optimizer.type is adam"));
  }
}

TEST(OptimLion, AdamOnlyKeysAreRefused) {
  OptimizerConfig c = lion_config();
  c.nesterov = true;
  try {
    c.validate();
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("optimizer.nesterov: is an Adam key; optimizer.type is lion"));
  }
}
