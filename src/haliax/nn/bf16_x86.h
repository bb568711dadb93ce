// bf16 <-> f32 for the x86 CPU kernels (haliax/nn/gelu_cpu.cpp, levanter/models/lm_loss_kernel.cpp), 8 lanes with
// AVX2 or one at a time. Widening is exact; narrowing rounds to nearest even as at::Tensor::to(kBFloat16) does, and a
// NaN stays a quiet NaN of the same sign (libtorch's own conversions give 0x7FC0 or 0xFFFF: any NaN is a NaN).
// Each function carries its AVX2 target, so this header can be included anywhere on x86; call the 8-lane ones only
// where the CPU has AVX2.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace haliax::nn::bf16_x86 {

__attribute__((target("avx2"))) inline __m256 widen8(const uint16_t* x) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

inline float widen1(uint16_t x) {
  uint32_t u = uint32_t(x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

__attribute__((target("avx2"))) inline __m128i round8(__m256 f) {
  __m256i u = _mm256_castps_si256(f);
  __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb), 16);
  __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q));
  __m256i q = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  r = _mm256_blendv_epi8(r, q, nan);
  // Eight 32-bit values below 2^16 -> eight 16-bit values.
  return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

inline uint16_t round1(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return uint16_t((u >> 16) | 0x40);
  return uint16_t((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

}  // namespace haliax::nn::bf16_x86

#endif
