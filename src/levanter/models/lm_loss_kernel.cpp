#include "levanter/models/lm_loss_kernel.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "haliax/nn/bf16_bits.h"

#ifndef _OPENMP
#error \
    "lm_loss_kernel.cpp needs -fopenmp (LEVANTER_OPENMP_KERNELS in src/CMakeLists.txt): at::parallel_for would run on one thread"
#endif

#if defined(__x86_64__) || defined(__i386__)
#define LEVANTER_LOSS_X86 1
// The AVX2 code below is compiled for AVX2 + FMA whatever the project's flags; it runs only where the CPU has them
// (softmax_xent_rows_supported). No multiply-add is contracted, so the per-row scalars (lse, loss, the gradient's
// coefficient) round operation by operation as the ATen ops do.
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#pragma GCC optimize("fp-contract=off")
#include <immintrin.h>

#include "haliax/nn/avx2_reduce.h"

// Sleef's 8-wide expf (1-ulp; what ATen's exp calls with AVX2), declared here: sleef.h declares it only when __AVX__
// was defined at its first inclusion, which the precompiled ATen header may have made without it.
extern "C" __m256 Sleef_expf8_u10(__m256);

namespace levanter::models::kernels {

namespace {

inline __m256 load8(const float* x) { return _mm256_loadu_ps(x); }
inline __m256 load8(const uint16_t* x) { return haliax::nn::bf16_bits::widen8(x); }
inline float load1(const float* x) { return *x; }
inline float load1(const uint16_t* x) { return haliax::nn::bf16_bits::widen1(*x); }
using haliax::nn::bf16_bits::round1;
using haliax::nn::bf16_bits::round8;

using haliax::nn::avx2::hmax8;
using haliax::nn::avx2::hsum8;

// One row: x [V] (f32 or bf16), e [V] f32 scratch (may alias x for f32). Returns the row's max and the sum of
// exp(x - max), and leaves exp(x - max) in e when `store`.
template <class T>
void row_stats(const T* x, float* e, int64_t V, bool store, float& max_out, float& sum_out) {
  __m256 mv = _mm256_set1_ps(-INFINITY);
  int64_t j = 0;
  for (; j + 8 <= V; j += 8) mv = _mm256_max_ps(mv, load8(x + j));
  float m = hmax8(mv);
  for (; j < V; ++j) m = std::max(m, load1(x + j));
  // A NaN the max skipped still makes the sum, and so the loss, NaN, as with ATen's ops.
  const __m256 M = _mm256_set1_ps(m);
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  j = 0;
  for (; j + 16 <= V; j += 16) {
    __m256 a = Sleef_expf8_u10(_mm256_sub_ps(load8(x + j), M));
    __m256 b = Sleef_expf8_u10(_mm256_sub_ps(load8(x + j + 8), M));
    if (store) {
      _mm256_storeu_ps(e + j, a);
      _mm256_storeu_ps(e + j + 8, b);
    }
    s0 = _mm256_add_ps(s0, a);
    s1 = _mm256_add_ps(s1, b);
  }
  if (j < V) {
    // The tail through a padded vector (the padding's exponentials are not added).
    alignas(32) float buf[16];
    const int64_t r = V - j;
    for (int64_t k = 0; k < 16; ++k) buf[k] = k < r ? load1(x + j + k) : m;
    __m256 a = Sleef_expf8_u10(_mm256_sub_ps(_mm256_load_ps(buf), M));
    __m256 b = Sleef_expf8_u10(_mm256_sub_ps(_mm256_load_ps(buf + 8), M));
    _mm256_store_ps(buf, a);
    _mm256_store_ps(buf + 8, b);
    for (int64_t k = r; k < 16; ++k) buf[k] = 0.0f;
    if (store) std::memcpy(e + j, buf, size_t(r) * sizeof(float));
    s0 = _mm256_add_ps(s0, _mm256_load_ps(buf));
    s1 = _mm256_add_ps(s1, _mm256_load_ps(buf + 8));
  }
  max_out = m;
  sum_out = hsum8(_mm256_add_ps(s0, s1));
}

// g = e * c over the row, f32 in place.
void scale_row(float* e, int64_t V, float c) {
  const __m256 C = _mm256_set1_ps(c);
  int64_t j = 0;
  for (; j + 8 <= V; j += 8) _mm256_storeu_ps(e + j, _mm256_mul_ps(_mm256_loadu_ps(e + j), C));
  for (; j < V; ++j) e[j] *= c;
}

// out = round_bf16(e * c) over the row.
void scale_row_bf16(const float* e, uint16_t* out, int64_t V, float c) {
  const __m256 C = _mm256_set1_ps(c);
  int64_t j = 0;
  for (; j + 8 <= V; j += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), round8(_mm256_mul_ps(_mm256_loadu_ps(e + j), C)));
  }
  for (; j < V; ++j) out[j] = round1(e[j] * c);
}

template <class T>
void rows_avx2(T* logits, int64_t n, int64_t V, const int64_t* targets, const float* weights, float z, bool with_grad,
               float* per_token) {
  at::parallel_for(0, n, 1, [&](int64_t r0, int64_t r1) {
    std::vector<float> scratch;
    if (std::is_same_v<T, uint16_t> && with_grad) scratch.resize(size_t(V));
    for (int64_t i = r0; i < r1; ++i) {
      T* x = logits + i * V;
      const int64_t t = targets[i];
      const float picked = load1(x + t);
      float* e = nullptr;
      if (with_grad) {
        if constexpr (std::is_same_v<T, float>) {
          e = x;
        } else {
          e = scratch.data();
        }
      }
      float m, s;
      row_stats(x, e, V, with_grad, m, s);
      // As the ATen ops compute them, in f32, one rounding per operation: lse = m + log(s) (glibc's logf, where ATen
      // takes Sleef's: the same to an ulp); loss = lse - picked (+ z * lse^2).
      const float lse = m + std::log(s);
      float loss = lse - picked;
      if (z != 0.0f) loss = loss + z * (lse * lse);
      per_token[i] = loss;
      if (!with_grad) continue;
      const float w = weights[i];
      float coef = w / s;
      if (z != 0.0f) coef = coef * (1.0f + (2.0f * z) * lse);
      if constexpr (std::is_same_v<T, float>) {
        scale_row(e, V, coef);
        e[t] = e[t] + -w;
      } else {
        const float gt = e[t] * coef + -w;
        scale_row_bf16(e, x, V, coef);
        x[t] = round1(gt);
      }
    }
  });
}

}  // namespace

}  // namespace levanter::models::kernels

#pragma GCC pop_options
#endif  // x86

namespace levanter::models::kernels {

bool softmax_xent_rows_supported(const at::Tensor& logits) {
#ifdef LEVANTER_LOSS_X86
  static const bool cpu_has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  const bool cpu_has = false;
#endif
  return cpu_has && logits.device().is_cpu() && logits.dim() == 2 && logits.is_contiguous() &&
         (logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kBFloat16);
}

void softmax_xent_rows(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& weights,
                       double z_loss_weight, bool with_grad, const at::Tensor& per_token) {
  if (!softmax_xent_rows_supported(logits)) {
    throw std::invalid_argument(
        "softmax_xent_rows: logits must be a contiguous [n, V] f32 or bf16 CPU tensor on a "
        "CPU with AVX2 and FMA, got " +
        std::string(logits.toString()));
  }
  const int64_t n = logits.size(0), V = logits.size(1);
  TORCH_CHECK(targets.scalar_type() == at::kLong && targets.is_contiguous() && targets.numel() == n,
              "softmax_xent_rows: targets must be [n] int64");
  TORCH_CHECK(per_token.scalar_type() == at::kFloat && per_token.is_contiguous() && per_token.numel() == n,
              "softmax_xent_rows: per_token must be [n] f32");
  TORCH_CHECK(!with_grad || (weights.scalar_type() == at::kFloat && weights.is_contiguous() && weights.numel() == n),
              "softmax_xent_rows: weights must be [n] f32");
  const int64_t* t = targets.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    if (t[i] < 0 || t[i] >= V) {
      throw std::invalid_argument("fused_next_token_loss: token id " + std::to_string(t[i]) +
                                  " outside the vocabulary [0, " + std::to_string(V) + ")");
    }
  }
#ifdef LEVANTER_LOSS_X86
  const float z = static_cast<float>(z_loss_weight);
  const float* w = with_grad ? weights.data_ptr<float>() : nullptr;
  if (logits.scalar_type() == at::kFloat) {
    rows_avx2<float>(logits.data_ptr<float>(), n, V, t, w, z, with_grad, per_token.data_ptr<float>());
  } else {
    rows_avx2<uint16_t>(reinterpret_cast<uint16_t*>(logits.data_ptr<at::BFloat16>()), n, V, t, w, z, with_grad,
                        per_token.data_ptr<float>());
  }
#endif
}

}  // namespace levanter::models::kernels

// --- the head's f32 GEMMs through oneDNN -------------------------------------------------------------------------

#include "haliax/nn/sgemm_cpu.h"

namespace levanter::models::kernels {

namespace {

void sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
           float beta, float* C, int64_t ldc) {
  haliax::nn::kernels::sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc, "fused_next_token_loss");
}

// out [V, E] = in [E, V] transposed, f32, a tile of 64 x 64 at a time (ATen's copy of a transposed view walks one side
// with a stride of V: 9 ms for GPT-2 nano's head, against about 2 here).
void transpose_f32(const float* in, int64_t E, int64_t V, float* out) {
  constexpr int64_t T = 64;
  at::parallel_for(0, (V + T - 1) / T, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t vb = b0; vb < b1; ++vb) {
      const int64_t v0 = vb * T, v1 = std::min(V, v0 + T);
      for (int64_t e0 = 0; e0 < E; e0 += T) {
        const int64_t e1 = std::min(E, e0 + T);
        for (int64_t v = v0; v < v1; ++v) {
          for (int64_t e = e0; e < e1; ++e) out[v * E + e] = in[e * V + v];
        }
      }
    }
  });
}

bool f32_rows(const at::Tensor& t) {
  return t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 2 && t.stride(1) == 1 &&
         t.stride(0) == t.size(1);
}

}  // namespace

bool head_gemms_supported(const at::Tensor& h, const at::Tensor& w) {
  return f32_rows(h) && f32_rows(w) && h.size(1) == w.size(1);
}

void head_logits(const at::Tensor& h, const at::Tensor& w, const at::Tensor& out) {
  TORCH_CHECK(head_gemms_supported(h, w) && f32_rows(out) && out.size(0) == h.size(0) && out.size(1) == w.size(0),
              "head_logits: h [n, E], w [V, E] and out [n, V] must be contiguous f32 CPU tensors");
  const int64_t n = h.size(0), E = h.size(1), V = w.size(0);
  sgemm('N', 'T', n, V, E, h.data_ptr<float>(), E, w.data_ptr<float>(), E, 0.0f, out.data_ptr<float>(), V);
}

void head_hidden_grad(const at::Tensor& g, const at::Tensor& w, const at::Tensor& out) {
  TORCH_CHECK(f32_rows(g) && f32_rows(w) && out.device().is_cpu() && out.scalar_type() == at::kFloat &&
                  out.dim() == 2 && out.stride(1) == 1 && out.stride(0) >= out.size(1) && out.size(0) == g.size(0) &&
                  out.size(1) == w.size(1) && g.size(1) == w.size(0),
              "head_hidden_grad: g [n, V], w [V, E] contiguous f32 CPU tensors and out [n, E] of rows");
  const int64_t n = g.size(0), V = g.size(1), E = w.size(1);
  sgemm('N', 'N', n, E, V, g.data_ptr<float>(), V, w.data_ptr<float>(), E, 0.0f, out.data_ptr<float>(), out.stride(0));
}

// Measured with oneDNN 2.6 on 2 threads (Intel Xeon), vocabulary 50257, ms for g^T h written [V, E] / written [E, V]:
// 256 rows: embed 128 19.2 / 12.7, 256 28.0 / 26.8, 384 37.7 / 41.0, 768 63.0 / 68.3; 1024 rows: embed 128 68.2 /
// 54.0, 256 116.0 / 106.3, 384 148.2 / 151.7, 768 256.5 / 265.5. Turning [E, V] round at the end is one copy.
HeadGradAccumulator::HeadGradAccumulator(int64_t V, int64_t E, int64_t block_rows, const at::TensorOptions& options)
    : transposed_(E <= 128 || (E <= 256 && block_rows >= 1024)) {
  acc_ = transposed_ ? at::empty({E, V}, options) : at::empty({V, E}, options);
}

void HeadGradAccumulator::add(const at::Tensor& g, const at::Tensor& h) {
  const int64_t V = transposed_ ? acc_.size(1) : acc_.size(0), E = transposed_ ? acc_.size(0) : acc_.size(1);
  TORCH_CHECK(f32_rows(g) && f32_rows(h) && g.size(1) == V && h.size(1) == E && g.size(0) == h.size(0),
              "HeadGradAccumulator::add: g [n, V] and h [n, E] must be contiguous f32 CPU tensors");
  const int64_t n = g.size(0);
  const float beta = first_ ? 0.0f : 1.0f;
  if (transposed_) {
    sgemm('T', 'N', E, V, n, h.data_ptr<float>(), E, g.data_ptr<float>(), V, beta, acc_.data_ptr<float>(), V);
  } else {
    sgemm('T', 'N', V, E, n, g.data_ptr<float>(), V, h.data_ptr<float>(), E, beta, acc_.data_ptr<float>(), E);
  }
  if (n > 0) first_ = false;
}

at::Tensor HeadGradAccumulator::result() const {
  if (first_) return transposed_ ? at::zeros({acc_.size(1), acc_.size(0)}, acc_.options()) : at::zeros_like(acc_);
  if (!transposed_) return acc_;
  const int64_t E = acc_.size(0), V = acc_.size(1);
  at::Tensor out = at::empty({V, E}, acc_.options());
  transpose_f32(acc_.data_ptr<float>(), E, V, out.data_ptr<float>());
  return out;
}

}  // namespace levanter::models::kernels
