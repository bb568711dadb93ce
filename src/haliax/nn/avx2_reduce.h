// Horizontal sum and max of 8 f32 lanes in a fixed order, for the CPU kernels (haliax/nn/attention_cpu.cpp,
// levanter/models/lm_loss_kernel.cpp): lanes (0+4, 1+5, 2+6, 3+7), then pairs, then the last two, so a row's result
// depends only on its values. The functions carry their AVX2 target, so this header can be included anywhere; call
// them only where the CPU has AVX2.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

namespace haliax::nn::avx2 {

__attribute__((target("avx2"))) inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx2"))) inline float hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace haliax::nn::avx2

#endif
