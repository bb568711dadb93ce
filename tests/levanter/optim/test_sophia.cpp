// Sophia-H (optimizer.type: sophia-h): against Sophia written out in PyTorch from the paper's algorithm, Levanter's
// defaults, the Hessian-estimate schedule and probes, bit-identity across threads and SIMD paths, save/load/continue,
// and the Hessian-vector product through double backward against finite differences of gradients on a real model.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include "haliax/nn/checkpoint.h"
#include "haliax/random.h"
#include "levanter/config/config.h"
#include "levanter/models/gpt2/gpt2.h"
#include "levanter/models/lm_loss.h"
#include "levanter/optim/hessian.h"
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

OptimizerConfig sophia_config() {
  OptimizerConfig c = levanter::config::parse_string<OptimizerConfig>("type: sophia-h\n", "opt.yaml");
  c.learning_rate = 1e-3;
  c.warmup = 0.2;
  c.weight_decay = 0.2;
  c.beta2 = 0.5;  // the estimates move h quickly, so updates fall both inside and outside the clip
  c.update_interval = 3;
  return c;
}

std::vector<at::Tensor> step_grads(const Params& params, int k) { return grads_for(params, 500 + k, 1e-2); }

// Stand-ins for Hessian-diagonal estimates: mostly positive, some negative (as Hutchinson's can be).
std::vector<at::Tensor> estimates(const Params& params, int k) {
  std::vector<at::Tensor> out = grads_for(params, 900 + k, 3.0);
  for (auto& t : out) t = t + 1.0f;
  return out;
}

// Runs updates first..last-1, giving an estimate whenever the optimizer asks for one.
void run(Optimizer& opt, const Params& params, int first, int last, int64_t total) {
  for (int k = first; k < last; ++k) {
    std::vector<at::Tensor> est;
    if (opt.needs_hessian()) est = estimates(params, k);
    opt.step(step_grads(params, k), learning_rate_at(opt.config(), k, total), opt.needs_hessian() ? &est : nullptr);
  }
}

}  // namespace

TEST(OptimSophia, DefaultsAreLevanters) {
  OptimizerConfig c = levanter::config::parse_string<OptimizerConfig>("type: sophia-h\n", "opt.yaml");
  EXPECT_EQ(c.beta1, 0.96);
  EXPECT_EQ(c.beta2, 0.99);
  EXPECT_EQ(c.epsilon, 1e-12);
  EXPECT_FALSE(c.max_grad_norm.has_value());  // BaseSophiaConfig has no gradient clipping
  EXPECT_EQ(c.weight_decay, 0.1);
  EXPECT_EQ(c.sophia_gamma(), 0.01);
  EXPECT_EQ(c.clip_threshold, std::optional<double>(1.0));
  EXPECT_EQ(c.update_interval, 10);
  EXPECT_EQ(c.rng_seed, 0);
  // Keys given in the file win over the type's defaults, in any order.
  OptimizerConfig d =
      levanter::config::parse_string<OptimizerConfig>("beta1: 0.9\ntype: sophia-h\ngamma: 0.05\n", "opt.yaml");
  EXPECT_EQ(d.beta1, 0.9);
  EXPECT_EQ(d.beta2, 0.99);
  EXPECT_EQ(d.sophia_gamma(), 0.05);
  auto error_of = [](const std::string& yaml) -> std::string {
    try {
      levanter::config::parse_string<OptimizerConfig>(yaml, "opt.yaml");
    } catch (const std::exception& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_THAT(error_of("type: adam\ngamma: 0.05\n"),
              HasSubstr("optimizer.gamma: is a Sophia key; optimizer.type is adam"));
  EXPECT_THAT(error_of("type: lion\nupdate_interval: 5\n"), HasSubstr("optimizer.update_interval: is a Sophia key"));
  EXPECT_THAT(error_of("type: sophia-h\nupdate_interval: 0\n"), HasSubstr("optimizer.update_interval: must be >= 1"));
  EXPECT_EQ(error_of("type: sophia-g\n"), "(no error)");
}

TEST(OptimSophia, MatchesTorchReferenceOfThePaper) {
  const std::string py = python_with_torch();
  if (py.empty()) GTEST_SKIP() << "no python3 with torch (install python3-torch, or set LEVANTER_PYTHON)";
  const int steps = 10;
  OptimizerConfig config = sophia_config();
  Params params = small_model(8);
  Params initial = clone_params(params);
  Optimizer opt(config, params);
  fs::path dir = fs::temp_directory_path() / ("levanter_sophia_torch_" + std::to_string(::getpid()));
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
  spec["gamma"] = config.sophia_gamma();
  spec["clip_threshold"] = *config.clip_threshold;
  spec["update_interval"] = config.update_interval;
  spec["weight_decay"] = config.weight_decay;
  std::ofstream(dir / "spec.json") << spec.dump();
  {
    std::ofstream p(dir / "params.bin", std::ios::binary);
    for (const auto& [info, t] : initial) write_floats(p, t);
    std::ofstream g(dir / "grads.bin", std::ios::binary), h(dir / "hess.bin", std::ios::binary);
    for (int k = 0; k < steps; ++k) {
      for (const auto& t : step_grads(params, k)) write_floats(g, t);
      if ((k + 1) % config.update_interval == 0) {
        for (const auto& t : estimates(params, k)) write_floats(h, t);
      }
    }
  }
  run(opt, params, 0, steps, steps);
  const fs::path script = fs::path(LEVANTER_SOURCE_DIR) / "tests/levanter/optim/torch_sophia_reference.py";
  std::string cmd = "OMP_NUM_THREADS=1 " + py + " " + script.string() + " " + dir.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

  // The reference computes in double from the same float32 inputs; ours is float32 (and multiplies by the bias
  // correction's reciprocal). Tolerance: 1e-6 of the parameter plus 1e-5 of the distance the updates can move it.
  double sum_lr = 0;
  for (double lr : lrs) sum_lr += lr;
  std::ifstream out(dir / "out.bin", std::ios::binary), hf(dir / "h.bin", std::ios::binary);
  std::map<std::string, at::Tensor> state;
  for (const auto& [k, t] : opt.state_dict()) state[k] = t;
  EXPECT_EQ(state["opt.hessian_step"].item<int64_t>(), steps / config.update_interval);
  double worst = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& ours = params[i].second;
    std::vector<float> ref(ours.numel()), ref_h(ours.numel());
    out.read(reinterpret_cast<char*>(ref.data()), ref.size() * sizeof(float));
    hf.read(reinterpret_cast<char*>(ref_h.data()), ref_h.size() * sizeof(float));
    ASSERT_TRUE(out.good() && hf.good());
    const float* o = ours.data_ptr<float>();
    const float* oh = state["opt.h." + params[i].first.path].data_ptr<float>();
    const float* p0 = initial[i].second.data_ptr<float>();
    for (int64_t j = 0; j < ours.numel(); ++j) {
      worst = std::max(worst, std::abs(double(o[j]) - ref[j]) / (1e-6 * std::abs(double(ref[j])) + 1e-5 * sum_lr));
      // f32 EMA of estimates of size ~3: cancellation leaves absolute errors of a few 1e-8
      ASSERT_NEAR(oh[j], ref_h[j], 1e-6 * std::abs(ref_h[j]) + 5e-7) << params[i].first.path << "[" << j << "]";
      ASSERT_NE(o[j], p0[j]) << params[i].first.path << "[" << j << "] did not move";
    }
  }
  EXPECT_LE(worst, 1.0) << "worst error / tolerance";
  std::printf("[ torch Sophia ] worst error / tolerance = %.3g\n", worst);
  fs::remove_all(dir);
}

TEST(OptimSophia, AsksForAnEstimateEveryIntervalAndRefusesWithout) {
  OptimizerConfig c = sophia_config();
  Params params = small_model(9);
  Optimizer opt(c, params);
  std::vector<int> asked;
  for (int k = 0; k < 9; ++k) {
    if (opt.needs_hessian()) {
      asked.push_back(k + 1);
      EXPECT_THROW(opt.step(step_grads(params, k), 1e-3), std::invalid_argument);
      std::vector<at::Tensor> est = estimates(params, k);
      opt.step(step_grads(params, k), 1e-3, &est);
    } else {
      opt.step(step_grads(params, k), 1e-3);
    }
  }
  EXPECT_EQ(asked, (std::vector<int>{3, 6, 9}));  // updates 3, 6, 9 refresh h
}

TEST(OptimSophia, ProbesAreGaussianAndAFunctionOfSeedAndEstimateCount) {
  OptimizerConfig c = sophia_config();
  Params params = small_model(10);
  Optimizer a(c, clone_params(params)), b(c, clone_params(params));
  c.rng_seed = 7;
  Optimizer other(c, clone_params(params));
  std::vector<at::Tensor> za = a.hessian_probes(), zb = b.hessian_probes(), zo = other.hessian_probes();
  ASSERT_EQ(za.size(), params.size());
  for (size_t i = 0; i < za.size(); ++i) {
    EXPECT_TRUE(bit_equal(za[i], zb[i]));
    EXPECT_FALSE(at::equal(za[i], zo[i]));
    EXPECT_TRUE(za[i].sizes().equals(params[i].second.sizes()));
  }
  at::Tensor big = za.back();  // 210,003 values
  EXPECT_NEAR(big.mean().item<double>(), 0.0, 0.01);
  EXPECT_NEAR(big.var().item<double>(), 1.0, 0.01);
  run(a, params, 0, 3, 10);  // one estimate made: the next probes differ
  EXPECT_FALSE(at::equal(a.hessian_probes().back(), za.back()));
}

TEST(OptimSophia, BitsDoNotDependOnThreadsOrSimdPath) {
  Params reference;
  for (int variant = 0; variant < 3; ++variant) {
    at::set_num_threads(variant == 1 ? 1 : 2);
    kernels::force_scalar(variant == 2);
    Params params = small_model(11);
    Optimizer opt(sophia_config(), params);
    run(opt, params, 0, 8, 8);
    kernels::force_scalar(false);
    if (variant == 0) {
      reference = params;
      continue;
    }
    for (size_t i = 0; i < params.size(); ++i) {
      EXPECT_TRUE(bit_equal(params[i].second, reference[i].second)) << params[i].first.path << " variant " << variant;
    }
  }
  at::set_num_threads(2);
}

TEST(OptimSophia, SaveLoadContinueIsBitIdentical) {
  Params straight = small_model(12), first = clone_params(straight), resumed = clone_params(straight);
  Optimizer a(sophia_config(), straight);
  run(a, straight, 0, 10, 10);
  Optimizer b(sophia_config(), first);
  run(b, first, 0, 4, 10);  // after one estimate, between two
  haliax::nn::StateDict saved;
  for (const auto& [k, t] : b.state_dict()) saved.emplace_back(k, t.clone());
  for (size_t i = 0; i < first.size(); ++i) resumed[i].second.copy_(first[i].second);
  Optimizer c(sophia_config(), resumed);
  c.load_state_dict(saved);
  EXPECT_EQ(c.step_count(), 4);
  for (size_t i = 0; i < b.hessian_probes().size(); ++i) {
    EXPECT_TRUE(bit_equal(b.hessian_probes()[i], c.hessian_probes()[i]));  // the estimate count came back too
  }
  run(c, resumed, 4, 10, 10);
  for (size_t i = 0; i < straight.size(); ++i) {
    EXPECT_TRUE(bit_equal(straight[i].second, resumed[i].second)) << straight[i].first.path;
  }
  // Adam's state is refused by name.
  OptimizerConfig adam;
  Optimizer adam_opt(adam, clone_params(straight));
  try {
    c.load_state_dict(adam_opt.state_dict());
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("written by adam but optimizer.type is sophia-h"));
  }
}

TEST(OptimSophia, HessianVectorProductOfGpt2MatchesFiniteDifferencesOfGradients) {
  // A tiny GPT-2 in double, with activation checkpointing on (turned off by NoCheckpointing for the double
  // backward): H v by double backward against (grad(theta + e v) - grad(theta - e v)) / 2e.
  levanter::models::Gpt2Config cfg;
  cfg.hidden_dim = 16;
  cfg.num_heads = 2;
  cfg.num_layers = 2;
  cfg.seq_len = 12;
  cfg.gradient_checkpointing = true;
  auto model = cfg.build(haliax::Axis("vocab", 37), haliax::random::Key(1));
  std::vector<at::Tensor> params;
  haliax::nn::for_each_parameter(*model, [&](const haliax::nn::ParamInfo& info, haliax::NamedArray& p) {
    at::Tensor t = p.array().detach().to(at::kDouble);
    t = t +
        haliax::random::normal(haliax::random::Key(std::hash<std::string>{}(info.path) % 997), p.axes(), at::kDouble)
                .array() *
            0.1;
    t.requires_grad_(true);
    p = haliax::NamedArray(t, p.axes());
    params.push_back(t);
  });
  at::Tensor tokens = at::arange(24, at::kLong).remainder(37).mul(7).remainder(37).reshape({2, 12});
  haliax::NamedArray ids(tokens, {haliax::Axis("batch", 2), haliax::Axis("position", 12)});
  levanter::models::LossOptions lo;
  lo.differentiable_twice = true;
  auto loss_fn = [&] { return model->compute_next_token_loss(ids, {}, lo).array(); };
  std::vector<at::Tensor> v;
  for (size_t i = 0; i < params.size(); ++i) {
    v.push_back(
        haliax::random::normal(haliax::random::Key(100 + i), {haliax::Axis("n", params[i].numel())}, at::kDouble)
            .array()
            .reshape(params[i].sizes()));
  }
  std::vector<at::Tensor> hv;
  {
    haliax::nn::NoCheckpointing guard;
    hv = hessian_vector_product(loss_fn(), params, v);
  }
  auto grads_at = [&](double e) {
    {
      at::NoGradGuard ng;
      for (size_t i = 0; i < params.size(); ++i) params[i].add_(v[i], e);
    }
    std::vector<at::Tensor> g = torch::autograd::grad({loss_fn()}, params, {}, false, false, true);
    {
      at::NoGradGuard ng;
      for (size_t i = 0; i < params.size(); ++i) params[i].sub_(v[i], e);
    }
    return g;
  };
  const double e = 1e-5;
  std::vector<at::Tensor> gp = grads_at(e), gm = grads_at(-e);
  double scale = 0, worst = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    ASSERT_TRUE(hv[i].defined()) << i;
    scale = std::max(scale, hv[i].abs().max().item<double>());
  }
  for (size_t i = 0; i < params.size(); ++i) {
    at::Tensor fd = (gp[i] - gm[i]) / (2 * e);
    worst = std::max(worst, (hv[i] - fd).abs().max().item<double>());
  }
  EXPECT_GT(scale, 1e-3);
  EXPECT_LE(worst, 1e-5 * scale) << "max |Hv - finite difference| " << worst << " against max |Hv| " << scale;
  std::printf("[ Hv ] max |Hv| %.3g, max |Hv - FD| %.3g\n", scale, worst);
}

TEST(OptimSophia, SampledLabelGradientSquaredIsUnbiasedForGaussNewton) {
  // One row of a softmax over z = W h: E[g_ij^2] = p_i (1 - p_i) h_j^2 over labels drawn from p (Sophia-G's
  // Gauss-Newton-Bartlett estimate with N = 1). The mean of 20,000 estimates is within 4% of it, entry by entry.
  at::Tensor W =
      at::tensor({0.5f, -1.0f, 0.2f, 1.5f, 0.3f, -0.4f, 0.0f, 0.8f, -1.2f, 0.6f, -0.7f, 0.9f}).reshape({4, 3});
  at::Tensor h = at::tensor({0.7f, -1.3f, 0.4f});
  W.requires_grad_(true);
  at::Tensor p = at::softmax(at::matmul(W, h), 0).detach();
  at::Tensor expected = (p * (1 - p)).unsqueeze(1) * (h * h).unsqueeze(0);
  at::Tensor sum = at::zeros_like(W);
  const int draws = 20000;
  for (int k = 0; k < draws; ++k) {
    at::Tensor logits = at::matmul(W, h).unsqueeze(0);  // (1 row, 4 classes)
    std::vector<at::Tensor> g = sampled_label_gradient(logits, {W}, haliax::random::Key(k));
    sum += g[0] * g[0];
  }
  at::Tensor mean = sum / draws;
  EXPECT_TRUE(at::allclose(mean, expected, 0.04, 1e-4)) << "mean\n" << mean << "\nexpected\n" << expected;
}

TEST(OptimSophia, SophiaGDefaultsAreLevanters) {  // (Resume.SophiaG* trains with it)
  OptimizerConfig c = levanter::config::parse_string<OptimizerConfig>("type: sophia-g\n", "opt.yaml");
  EXPECT_EQ(c.sophia_gamma(), 0.05);  // Levanter's GAMMA_SOPHIA_G
  EXPECT_EQ(c.beta1, 0.96);
  EXPECT_FALSE(c.max_grad_norm.has_value());
}
