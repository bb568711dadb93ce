// Helpers for the optimizer tests: deterministic data without any RNG library, and a GPT-2-shaped parameter list.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "haliax/nn/module.h"

namespace optim_testing {

// splitmix64: the same numbers on every platform.
inline uint64_t splitmix(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Approximately standard normal float32 values (Box-Muller on splitmix uniforms).
inline at::Tensor normal(at::IntArrayRef shape, uint64_t seed, double scale = 1.0) {
  at::Tensor t = at::empty(shape, at::kFloat);
  float* d = t.data_ptr<float>();
  uint64_t s = seed * 0x2545F4914F6CDD1Dull + 1;
  for (int64_t i = 0; i < t.numel(); ++i) {
    double u1 = (static_cast<double>(splitmix(s) >> 11) + 0.5) / 9007199254740992.0;
    double u2 = static_cast<double>(splitmix(s) >> 11) / 9007199254740992.0;
    d[i] = static_cast<float>(scale * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
  }
  return t;
}

using haliax::nn::ParamInfo;
using haliax::nn::ParamKind;

// Levanter's GPT-2 parameter paths (as in its test_weight_decay_mask.py), with this project's kinds.
inline std::vector<ParamInfo> gpt2_like_infos() {
  return {
      {"embeddings.token_embeddings.weight", ParamKind::kEmbedding},
      {"embeddings.position_embeddings.weight", ParamKind::kEmbedding},
      {"transformer.blocks.ln_1.weight", ParamKind::kNormWeight},
      {"transformer.blocks.ln_1.bias", ParamKind::kBias},
      {"transformer.blocks.attn.c_attn.weight", ParamKind::kLinearWeight},
      {"transformer.blocks.attn.c_attn.bias", ParamKind::kBias},
      {"transformer.blocks.attn.c_proj.weight", ParamKind::kLinearWeight},
      {"transformer.blocks.attn.c_proj.bias", ParamKind::kBias},
      {"transformer.blocks.ln_2.weight", ParamKind::kNormWeight},
      {"transformer.blocks.ln_2.bias", ParamKind::kBias},
      {"transformer.blocks.mlp.c_fc.weight", ParamKind::kLinearWeight},
      {"transformer.blocks.mlp.c_fc.bias", ParamKind::kBias},
      {"transformer.blocks.mlp.c_proj.weight", ParamKind::kLinearWeight},
      {"transformer.blocks.mlp.c_proj.bias", ParamKind::kBias},
      {"transformer.ln_f.weight", ParamKind::kNormWeight},
      {"transformer.ln_f.bias", ParamKind::kBias},
  };
}

// A small model with those paths; sizes are chosen to leave partial vectors and several 64Ki blocks.
inline std::vector<std::pair<ParamInfo, at::Tensor>> small_model(uint64_t seed) {
  const int64_t V = 101, P = 17, E = 24, L = 2, M = 4 * 24;
  std::vector<std::vector<int64_t>> shapes = {{V, E},    {P, E}, {L, E}, {L, E}, {L, E, 3 * E}, {L, 3 * E},
                                              {L, E, E}, {L, E}, {L, E}, {L, E}, {L, E, M},     {L, M},
                                              {L, M, E}, {L, E}, {E},    {E}};
  std::vector<std::pair<ParamInfo, at::Tensor>> out;
  auto infos = gpt2_like_infos();
  for (size_t i = 0; i < infos.size(); ++i) {
    at::Tensor t = normal(shapes[i], seed * 1000 + i, 0.02);
    if (infos[i].kind == ParamKind::kNormWeight) t = t + 1.0f;
    out.emplace_back(infos[i], t.contiguous());
  }
  // One large tensor: several norm blocks and thread ranges.
  out.emplace_back(ParamInfo{"lm_head.weight", ParamKind::kLinearWeight}, normal({3, 70001}, seed * 1000 + 99, 0.02));
  return out;
}

inline std::vector<std::pair<ParamInfo, at::Tensor>> clone_params(
    const std::vector<std::pair<ParamInfo, at::Tensor>>& params) {
  std::vector<std::pair<ParamInfo, at::Tensor>> out;
  for (const auto& [info, t] : params) out.emplace_back(info, t.clone());
  return out;
}

inline std::vector<at::Tensor> grads_for(const std::vector<std::pair<ParamInfo, at::Tensor>>& params, uint64_t seed,
                                         double scale) {
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < params.size(); ++i) out.push_back(normal(params[i].second.sizes(), seed * 7919 + i, scale));
  return out;
}

inline bool bit_equal(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes().equals(b.sizes()) && a.scalar_type() == b.scalar_type() &&
         std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(), a.numel() * a.element_size()) == 0;
}

// A python3 that has torch (Debian's python3-torch lives under /usr/bin/python3; a pyenv python3 may not).
inline std::string python_with_torch() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("LEVANTER_PYTHON")) candidates.push_back(env);
#ifdef LEVANTER_PYTHON
  candidates.push_back(LEVANTER_PYTHON);  // the build's choice, when the tests target defines one
#endif
  candidates.push_back("/usr/bin/python3");
  candidates.push_back("python3");
  for (const auto& py : candidates) {
    std::string cmd = py + " -c 'import torch, numpy' >/dev/null 2>&1";
    if (std::system(cmd.c_str()) == 0) return py;
  }
  return "";
}

inline void write_floats(std::ofstream& out, const at::Tensor& t) {
  at::Tensor c = t.to(at::kFloat).contiguous();
  out.write(reinterpret_cast<const char*>(c.data_ptr<float>()), c.numel() * sizeof(float));
}

}  // namespace optim_testing
