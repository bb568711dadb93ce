// bf16 <-> f32 on raw bits, for the CPU kernels (haliax/nn/gelu_cpu.cpp, levanter/models/lm_loss_kernel.cpp,
// levanter/optim/kernels.cpp): one value at a time everywhere, 8 lanes with AVX2 on x86. Widening is exact; narrowing
// rounds to nearest, ties to even, the bits of at::Tensor::to(kBFloat16) for every value but NaN, which gives the
// quiet NaN 0x7FC0 as c10::BFloat16 does (ATen's vectorised copy gives 0xFFFF). The 8-lane functions carry their AVX2
// target, so this header can be included anywhere; call them only where the CPU has AVX2.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace haliax::nn::bf16_bits {

inline float widen1(uint16_t x) {
  uint32_t u = uint32_t(x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t round1(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t{0x7FC0};
  return uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2"))) inline __m256 widen8(const uint16_t* x) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// Eight values rounded as round1, packed in order.
__attribute__((target("avx2"))) inline __m128i round8(__m256 f) {
  const __m256i u = _mm256_castps_si256(f);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
  const __m256i ordered = _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_ORD_Q));
  r = _mm256_blendv_epi8(_mm256_set1_epi32(0x7FC0), r, ordered);
  // Eight 32-bit values below 2^16 -> eight 16-bit values (the unsigned-saturating pack is exact).
  return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}
#endif

}  // namespace haliax::nn::bf16_bits
