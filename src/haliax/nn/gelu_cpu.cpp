#include "haliax/nn/gelu_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "haliax/nn/bf16_bits.h"

#ifndef _OPENMP
#error \
    "gelu_cpu.cpp needs -fopenmp (LEVANTER_OPENMP_KERNELS in src/CMakeLists.txt): at::parallel_for would run on one thread"
#endif

#if defined(__x86_64__) || defined(__i386__)
#define HALIAX_GELU_X86 1
// Compiled for AVX2 + FMA whatever the project's flags; run only where the CPU has them (gelu_tanh_bf16_supported).
// Contraction into FMA is off so that each multiply and add rounds as libtorch's Vectorized<float> operators do, except
// the two multiply-adds of the backward formula that Debian's libtorch build fuses (written as FMAs below).
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#pragma GCC optimize("fp-contract=off")
#include <immintrin.h>

// Sleef's 8-wide tanhf with a 3.5-ulp bound (Vectorized<float>::tanh calls the 1-ulp Sleef_tanhf8_u10); declared here
// because sleef.h declares it only when __AVX__ was defined at its first inclusion.
extern "C" __m256 Sleef_tanhf8_u35(__m256);

namespace haliax::nn::kernels {

namespace {

using bf16_bits::round8;
inline __m256 load8(const uint16_t* x) { return bf16_bits::widen8(x); }

struct Consts {
  __m256 beta, kappa, one, three, half;
  Consts()
      : beta(_mm256_set1_ps(float(M_SQRT2 * M_2_SQRTPI * 0.5))),
        kappa(_mm256_set1_ps(0.044715f)),
        one(_mm256_set1_ps(1.0f)),
        three(_mm256_set1_ps(3.0f)),
        half(_mm256_set1_ps(0.5f)) {}
};

inline __m256 gelu8(__m256 x, const Consts& c) {
  __m256 x_cube = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
  __m256 inner = _mm256_mul_ps(c.beta, _mm256_add_ps(x, _mm256_mul_ps(c.kappa, x_cube)));
  return _mm256_mul_ps(_mm256_mul_ps(c.half, x), _mm256_add_ps(c.one, Sleef_tanhf8_u35(inner)));
}

inline __m256 gelu_grad8(__m256 dy, __m256 x, const Consts& c) {
  __m256 x_sq = _mm256_mul_ps(x, x);
  __m256 x_cube = _mm256_mul_ps(x, x_sq);
  __m256 inner = _mm256_mul_ps(c.beta, _mm256_add_ps(x, _mm256_mul_ps(c.kappa, x_cube)));
  __m256 t = Sleef_tanhf8_u35(inner);
  __m256 left = _mm256_mul_ps(c.half, x);
  __m256 right = _mm256_add_ps(c.one, t);
  __m256 left_derivative = _mm256_mul_ps(c.half, right);
  __m256 tanh_derivative = _mm256_fnmadd_ps(t, t, c.one);
  __m256 inner_derivative = _mm256_mul_ps(c.beta, _mm256_fmadd_ps(_mm256_mul_ps(c.three, c.kappa), x_sq, c.one));
  __m256 right_derivative = _mm256_mul_ps(_mm256_mul_ps(left, tanh_derivative), inner_derivative);
  return _mm256_mul_ps(dy, _mm256_add_ps(left_derivative, right_derivative));
}

// out[i] = f(in...) over n elements, 8 at a time; the tail through zero-padded vectors (the same formulas).
template <class F>
void map8(int64_t n, uint16_t* out, const uint16_t* a, const uint16_t* b, F&& f) {
  at::parallel_for(0, (n + 7) / 8, 2048, [&](int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) {
      const int64_t i = v * 8;
      if (i + 8 <= n) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), round8(f(load8(a + i), b ? load8(b + i) : __m256())));
      } else {
        alignas(16) uint16_t pa[8] = {}, pb[8] = {}, po[8];
        std::memcpy(pa, a + i, size_t(n - i) * 2);
        if (b) std::memcpy(pb, b + i, size_t(n - i) * 2);
        _mm_store_si128(reinterpret_cast<__m128i*>(po), round8(f(load8(pa), load8(pb))));
        std::memcpy(out + i, po, size_t(n - i) * 2);
      }
    }
  });
}

uint16_t* bits(const at::Tensor& t) { return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>()); }

}  // namespace

at::Tensor gelu_tanh_bf16(const at::Tensor& x) {
  if (!gelu_tanh_bf16_supported(x)) throw std::invalid_argument("gelu_tanh_bf16: needs a contiguous bf16 CPU tensor");
  at::Tensor y = at::empty_like(x);
  const Consts c;
  map8(x.numel(), bits(y), bits(x), nullptr, [&](__m256 v, __m256) { return gelu8(v, c); });
  return y;
}

at::Tensor gelu_tanh_backward_bf16(const at::Tensor& dy, const at::Tensor& x) {
  if (!gelu_tanh_bf16_supported(x) || dy.scalar_type() != at::kBFloat16 || !dy.sizes().equals(x.sizes())) {
    throw std::invalid_argument("gelu_tanh_backward_bf16: needs bf16 dy and x of one shape on the CPU");
  }
  at::Tensor g = dy.contiguous();
  at::Tensor dx = at::empty_like(x);
  const Consts c;
  map8(x.numel(), bits(dx), bits(g), bits(x), [&](__m256 d, __m256 v) { return gelu_grad8(d, v, c); });
  return dx;
}

}  // namespace haliax::nn::kernels

#pragma GCC pop_options
#else  // not x86: never supported (activations.cpp keeps libtorch's path)
namespace haliax::nn::kernels {
at::Tensor gelu_tanh_bf16(const at::Tensor&) { throw std::invalid_argument("gelu_tanh_bf16: x86 only"); }
at::Tensor gelu_tanh_backward_bf16(const at::Tensor&, const at::Tensor&) {
  throw std::invalid_argument("gelu_tanh_backward_bf16: x86 only");
}
}  // namespace haliax::nn::kernels
#endif

namespace haliax::nn::kernels {

bool gelu_tanh_bf16_supported(const at::Tensor& x) {
#ifdef HALIAX_GELU_X86
  static const bool cpu_has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  const bool cpu_has = false;
#endif
  return cpu_has && x.device().is_cpu() && x.scalar_type() == at::kBFloat16 && x.is_contiguous();
}

}  // namespace haliax::nn::kernels
