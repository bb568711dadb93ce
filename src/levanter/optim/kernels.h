// The fused inner loops of AdamW, Lion and of the global gradient norm, over raw contiguous float32 / bfloat16 data.
// Internal to the optimizer (optimizer.cpp); exposed for tests and the benchmark.
//
// Each loop has an AVX2 path (chosen at run time when the CPU has it) and a portable scalar path that performs
// the same IEEE operations in the same order without fused multiply-adds, so both give identical bits.
#pragma once

#include <cstdint>

namespace levanter::optim::kernels {

// Scalars of one AdamW update, as float32 (what optax computes with).
struct AdamScalars {
  float b1, one_minus_b1, b2, one_minus_b2;
  float inv_bc1;       // 1 / (1 - b1^t), rounded to float32 once
  float inv_bc1_next;  // 1 / (1 - b1^(t+1)) (Nesterov only)
  float inv_bc2;       // 1 / (1 - b2^t)
  float eps;
  float lr;
  float wd;          // 0 when the parameter is not decayed
  float grad_scale;  // gradient clipping factor (1: none)
  bool nesterov;
};

// p, m, v: n float32 each, updated in place. g: n gradients (float32, or bfloat16 as raw uint16 bits).
void adamw_update(float* p, float* m, float* v, const float* g, int64_t n, const AdamScalars& s);
void adamw_update(float* p, float* m, float* v, const uint16_t* g_bf16, int64_t n, const AdamScalars& s);

// Scalars of one Lion update, as float32.
struct LionScalars {
  float b1, one_minus_b1, b2, one_minus_b2;
  float lr;
  float wd;          // 0 when the parameter is not decayed
  float grad_scale;  // gradient clipping factor (1: none)
};

// p, m: n float32 each, updated in place; g as for adamw_update.
void lion_update(float* p, float* m, const float* g, int64_t n, const LionScalars& s);
void lion_update(float* p, float* m, const uint16_t* g_bf16, int64_t n, const LionScalars& s);

// Scalars of one Sophia-H update, as float32.
struct SophiaScalars {
  float b1, one_minus_b1;
  float inv_bc1;  // 1 / (1 - b1^t)
  float gamma, eps;
  float clip;  // clip_threshold; +inf: none
  float lr;
  float wd;          // 0 when the parameter is not decayed
  float grad_scale;  // gradient clipping factor (1: none)
};

// p, m: n float32 each, updated in place; h (the Hessian-diagonal estimate) read; g as for adamw_update:
//   m = (1 - b1) g + b1 m;  u = clip((m / bc1) / max(gamma h, eps), -clip, clip);  p = p - lr (u + wd p)
// (max and clip as the AVX max/min instructions: a NaN gamma h gives eps, a NaN u gives +clip.)
void sophia_update(float* p, float* m, const float* h, const float* g, int64_t n, const SophiaScalars& s);
void sophia_update(float* p, float* m, const float* h, const uint16_t* g_bf16, int64_t n, const SophiaScalars& s);
// h = (1 - b2) est + b2 h, elementwise (the same bits for any split of the range).
void hessian_ema(float* h, const float* est, int64_t n, float b2, float one_minus_b2);

// Sum of squares of n <= kNormBlock values in double, with a fixed order: element i goes to lane i % 16, the
// lanes are summed 0..15. Products of float32 values are exact in double, so the result depends only on n and x.
constexpr int64_t kNormBlock = 1 << 16;
double sum_squares(const float* x, int64_t n);
double sum_squares(const uint16_t* x_bf16, int64_t n);

// out[i] = x[i] rounded to bfloat16 (raw bits) to nearest, ties to even: the bits of at::Tensor::to(kBFloat16) for
// every value but NaN (a NaN gives the quiet NaN 0x7FC0, as c10::BFloat16 does; ATen's vectorised copy gives 0xFFFF).
void round_to_bf16(const float* x, uint16_t* out, int64_t n);

// Whether the AVX2 paths are used (tests force the scalar path to compare bits).
bool using_avx2();
void force_scalar(bool on);

}  // namespace levanter::optim::kernels
