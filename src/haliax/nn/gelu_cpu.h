// GELU with the tanh approximation on bf16 and f32 CPU tensors in one pass (internal to activations.cpp): each element
// (bf16 widened to f32) is put through the formulas of libtorch's f32 GELU kernels (the same operations in the same
// order) with Sleef's 3.5-ulp tanhf (libtorch's is the 1-ulp one, 3.6x slower, and was most of a GPT-2 step's GELU
// time), and bf16 results are rounded to nearest even once. bf16: within one bf16 step of the f64 formula; on every
// bf16 input below 1e6 in magnitude the values equal those of at::gelu(x.to(kFloat), "tanh").to(kBFloat16), and 8 of
// 861652 gradients differ by a step. f32: within 2 units of 2^-23 |value| of libtorch's values (6 for gradients) where
// x >= 0; where x < 0, 1 + tanh cancels in both, and the two may differ by up to 2^-21 |x| (2^-14 |dy| for gradients)
// more (tests/haliax/test_dtypes.cpp).
#pragma once

#include <ATen/core/Tensor.h>

namespace haliax::nn::kernels {

// A contiguous bf16 or f32 CPU tensor on a CPU with AVX2 and FMA.
bool gelu_tanh_supported(const at::Tensor& x);

// y = 0.5 x (1 + tanh(b (x + k x^3))), b = sqrt(2/pi), k = 0.044715, in x's dtype.
at::Tensor gelu_tanh(const at::Tensor& x);

// dx = dy * dy/dx, dy and x of one dtype and shape (dy made contiguous).
at::Tensor gelu_tanh_backward(const at::Tensor& dy, const at::Tensor& x);

// Both run 16 lanes at a time where the CPU has AVX-512F, else 8 (AVX2); the two give identical bits. Tests force the
// 8-lane path to compare them.
bool gelu_tanh_uses_avx512();
void gelu_tanh_force_avx2(bool on);

}  // namespace haliax::nn::kernels
