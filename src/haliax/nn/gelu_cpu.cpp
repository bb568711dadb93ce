#include "haliax/nn/gelu_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <atomic>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "haliax/nn/bf16_bits.h"

#ifndef _OPENMP
#error \
    "gelu_cpu.cpp needs -fopenmp (LEVANTER_OPENMP_KERNELS in src/CMakeLists.txt): at::parallel_for would run on one thread"
#endif

#if defined(__x86_64__) || defined(__i386__)
#define HALIAX_GELU_X86 1
// Compiled for AVX2 + FMA whatever the project's flags; run only where the CPU has them (gelu_tanh_supported).
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
inline __m256 load8(const float* x) { return _mm256_loadu_ps(x); }
inline void store8(uint16_t* out, __m256 v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(out), round8(v)); }
inline void store8(float* out, __m256 v) { _mm256_storeu_ps(out, v); }

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

// out[i] = f(in...) over n elements (bf16 bits or f32), 8 at a time; the tail through zero-padded vectors (the same
// formulas).
template <class T, class F>
void map8(int64_t n, T* out, const T* a, const T* b, F&& f) {
  at::parallel_for(0, (n + 7) / 8, 2048, [&](int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) {
      const int64_t i = v * 8;
      if (i + 8 <= n) {
        store8(out + i, f(load8(a + i), b ? load8(b + i) : __m256()));
      } else {
        T pa[8] = {}, pb[8] = {}, po[8];
        std::memcpy(pa, a + i, size_t(n - i) * sizeof(T));
        if (b) std::memcpy(pb, b + i, size_t(n - i) * sizeof(T));
        store8(po, f(load8(pa), load8(pb)));
        std::memcpy(out + i, po, size_t(n - i) * sizeof(T));
      }
    }
  });
}

template <class T>
void gelu_avx2(int64_t n, T* y, const T* x) {
  const Consts c;
  map8<T>(n, y, x, nullptr, [&](__m256 v, __m256) { return gelu8(v, c); });
}

template <class T>
void gelu_grad_avx2(int64_t n, T* dx, const T* dy, const T* x) {
  const Consts c;
  map8<T>(n, dx, dy, x, [&](__m256 d, __m256 v) { return gelu_grad8(d, v, c); });
}

// Instantiated here, under this region's target and fp-contract options.
template void gelu_avx2<uint16_t>(int64_t, uint16_t*, const uint16_t*);
template void gelu_avx2<float>(int64_t, float*, const float*);
template void gelu_grad_avx2<uint16_t>(int64_t, uint16_t*, const uint16_t*, const uint16_t*);
template void gelu_grad_avx2<float>(int64_t, float*, const float*, const float*);

}  // namespace

}  // namespace haliax::nn::kernels

#pragma GCC pop_options

// The same formulas 16 lanes at a time with AVX-512F: Sleef's 16-wide tanhf gives the 8-wide one's bits for every
// f32 input (checked over all 2^32), and each lane's multiplies, adds and FMAs are the 8-lane path's, so both paths
// give identical bits (tests/haliax/test_dtypes.cpp compares them); the 16-wide tanhf takes 55% of the 8-wide's time.
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#pragma GCC optimize("fp-contract=off")
// GCC 12 warns of the undefined pass-through operand inside its own AVX-512 intrinsics (avx512fintrin.h).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

extern "C" __m512 Sleef_tanhf16_u35avx512f(__m512);

namespace haliax::nn::kernels {

namespace {

struct Consts16 {
  __m512 beta, kappa, one, three, half;
  Consts16()
      : beta(_mm512_set1_ps(float(M_SQRT2 * M_2_SQRTPI * 0.5))),
        kappa(_mm512_set1_ps(0.044715f)),
        one(_mm512_set1_ps(1.0f)),
        three(_mm512_set1_ps(3.0f)),
        half(_mm512_set1_ps(0.5f)) {}
};

inline __m512 load16(const uint16_t* x) {
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline __m512 load16(const float* x) { return _mm512_loadu_ps(x); }

// As bf16_bits::round8, 16 lanes.
inline __m256i round16(__m512 f) {
  const __m512i u = _mm512_castps_si512(f);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
  r = _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(f, f, _CMP_ORD_Q), _mm512_set1_epi32(0x7FC0), r);
  return _mm512_cvtepi32_epi16(r);  // values below 2^16: the truncating narrowing is exact
}
inline void store16(uint16_t* out, __m512 v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), round16(v)); }
inline void store16(float* out, __m512 v) { _mm512_storeu_ps(out, v); }

inline __m512 gelu16(__m512 x, const Consts16& c) {
  __m512 x_cube = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
  __m512 inner = _mm512_mul_ps(c.beta, _mm512_add_ps(x, _mm512_mul_ps(c.kappa, x_cube)));
  return _mm512_mul_ps(_mm512_mul_ps(c.half, x), _mm512_add_ps(c.one, Sleef_tanhf16_u35avx512f(inner)));
}

inline __m512 gelu_grad16(__m512 dy, __m512 x, const Consts16& c) {
  __m512 x_sq = _mm512_mul_ps(x, x);
  __m512 x_cube = _mm512_mul_ps(x, x_sq);
  __m512 inner = _mm512_mul_ps(c.beta, _mm512_add_ps(x, _mm512_mul_ps(c.kappa, x_cube)));
  __m512 t = Sleef_tanhf16_u35avx512f(inner);
  __m512 left = _mm512_mul_ps(c.half, x);
  __m512 right = _mm512_add_ps(c.one, t);
  __m512 left_derivative = _mm512_mul_ps(c.half, right);
  __m512 tanh_derivative = _mm512_fnmadd_ps(t, t, c.one);
  __m512 inner_derivative = _mm512_mul_ps(c.beta, _mm512_fmadd_ps(_mm512_mul_ps(c.three, c.kappa), x_sq, c.one));
  __m512 right_derivative = _mm512_mul_ps(_mm512_mul_ps(left, tanh_derivative), inner_derivative);
  return _mm512_mul_ps(dy, _mm512_add_ps(left_derivative, right_derivative));
}

// As map8, 16 lanes at a time.
template <class T, class F>
void map16(int64_t n, T* out, const T* a, const T* b, F&& f) {
  at::parallel_for(0, (n + 15) / 16, 1024, [&](int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) {
      const int64_t i = v * 16;
      if (i + 16 <= n) {
        store16(out + i, f(load16(a + i), b ? load16(b + i) : __m512()));
      } else {
        T pa[16] = {}, pb[16] = {}, po[16];
        std::memcpy(pa, a + i, size_t(n - i) * sizeof(T));
        if (b) std::memcpy(pb, b + i, size_t(n - i) * sizeof(T));
        store16(po, f(load16(pa), load16(pb)));
        std::memcpy(out + i, po, size_t(n - i) * sizeof(T));
      }
    }
  });
}

template <class T>
void gelu_avx512(int64_t n, T* y, const T* x) {
  const Consts16 c;
  map16<T>(n, y, x, nullptr, [&](__m512 v, __m512) { return gelu16(v, c); });
}

template <class T>
void gelu_grad_avx512(int64_t n, T* dx, const T* dy, const T* x) {
  const Consts16 c;
  map16<T>(n, dx, dy, x, [&](__m512 d, __m512 v) { return gelu_grad16(d, v, c); });
}

// Instantiated here, under this region's target and fp-contract options.
template void gelu_avx512<uint16_t>(int64_t, uint16_t*, const uint16_t*);
template void gelu_avx512<float>(int64_t, float*, const float*);
template void gelu_grad_avx512<uint16_t>(int64_t, uint16_t*, const uint16_t*, const uint16_t*);
template void gelu_grad_avx512<float>(int64_t, float*, const float*, const float*);

}  // namespace

}  // namespace haliax::nn::kernels

#pragma GCC diagnostic pop
#pragma GCC pop_options

namespace haliax::nn::kernels {

namespace {

std::atomic<bool> force_avx2{false};

bool use_avx512() {
  static const bool cpu_has = __builtin_cpu_supports("avx512f");
  return cpu_has && !force_avx2.load(std::memory_order_relaxed);
}

// The tensor's elements as the kernels take them: bf16 bits or f32.
template <class T>
T* elems(const at::Tensor& t) {
  if constexpr (std::is_same_v<T, float>) {
    return t.data_ptr<float>();
  } else {
    return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>());
  }
}

template <class T>
void gelu_forward(const at::Tensor& x, const at::Tensor& y) {
  (use_avx512() ? gelu_avx512<T> : gelu_avx2<T>)(x.numel(), elems<T>(y), elems<T>(x));
}
template <class T>
void gelu_backward(const at::Tensor& g, const at::Tensor& x, const at::Tensor& dx) {
  (use_avx512() ? gelu_grad_avx512<T> : gelu_grad_avx2<T>)(x.numel(), elems<T>(dx), elems<T>(g), elems<T>(x));
}

}  // namespace

void gelu_tanh_force_avx2(bool on) { force_avx2.store(on); }
bool gelu_tanh_uses_avx512() { return use_avx512(); }

at::Tensor gelu_tanh(const at::Tensor& x) {
  if (!gelu_tanh_supported(x)) throw std::invalid_argument("gelu_tanh: needs a contiguous bf16 or f32 CPU tensor");
  const bool f32 = x.scalar_type() == at::kFloat;
  RECORD_FUNCTION(f32 ? "haliax::gelu_tanh_f32" : "haliax::gelu_tanh_bf16", std::vector<c10::IValue>());
  at::Tensor y = at::empty_like(x);
  f32 ? gelu_forward<float>(x, y) : gelu_forward<uint16_t>(x, y);
  return y;
}

at::Tensor gelu_tanh_backward(const at::Tensor& dy, const at::Tensor& x) {
  if (!gelu_tanh_supported(x) || dy.scalar_type() != x.scalar_type() || !dy.sizes().equals(x.sizes())) {
    throw std::invalid_argument("gelu_tanh_backward: needs dy and x of one dtype (bf16 or f32) and shape on the CPU");
  }
  const bool f32 = x.scalar_type() == at::kFloat;
  RECORD_FUNCTION(f32 ? "haliax::gelu_tanh_f32_backward" : "haliax::gelu_tanh_bf16_backward",
                  std::vector<c10::IValue>());
  at::Tensor g = dy.contiguous();
  at::Tensor dx = at::empty_like(x);
  f32 ? gelu_backward<float>(g, x, dx) : gelu_backward<uint16_t>(g, x, dx);
  return dx;
}

}  // namespace haliax::nn::kernels
#else  // not x86: never supported (activations.cpp keeps libtorch's path)
namespace haliax::nn::kernels {
at::Tensor gelu_tanh(const at::Tensor&) { throw std::invalid_argument("gelu_tanh: x86 only"); }
at::Tensor gelu_tanh_backward(const at::Tensor&, const at::Tensor&) {
  throw std::invalid_argument("gelu_tanh_backward: x86 only");
}
void gelu_tanh_force_avx2(bool) {}
bool gelu_tanh_uses_avx512() { return false; }
}  // namespace haliax::nn::kernels
#endif

namespace haliax::nn::kernels {

bool gelu_tanh_supported(const at::Tensor& x) {
#ifdef HALIAX_GELU_X86
  static const bool cpu_has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  const bool cpu_has = false;
#endif
  return cpu_has && x.device().is_cpu() && (x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kFloat) &&
         x.is_contiguous();
}

}  // namespace haliax::nn::kernels
