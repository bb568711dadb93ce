// Row-major f32 GEMM on the CPU through oneDNN's sgemm (Debian's libdnnl, the library libtorch's CPU build already
// links), for the kernels that choose it over at::mm's OpenBLAS: the fused attention, the f32 Linear layer and the
// fused LM head. On the f32 GEMMs of GPT-2's layers on a 2-core Xeon (bench/gemm_shapes) oneDNN ran 1.53x faster at
// embed 128 and 1.11-1.16x at embed 768 (all of a layer's GEMMs together), and each library's threads, idle after a
// call, spin long enough to slow the other's next call many times over, so f32 training's GEMMs keep to one of them.
//
// oneDNN's results are deterministic for a thread count and a shape (it picks its kernel and its split of the work
// from both; a product of fewer than 16 rows takes another kernel, which rounds differently). Called outside a parallel
// region it runs on the OpenMP threads (at::set_num_threads); inside at::parallel_for, on the calling thread alone.
#pragma once

#include <cstdint>

namespace haliax::nn::kernels {

// C [M, N] = alpha op(A) op(B) + beta C, all row-major: op(A) is [M, K] (A [K, M] when ta == 'T'), op(B) [K, N] (B
// [N, K] when tb == 'T'). `who` names the caller in the error thrown when oneDNN fails.
void sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
           int64_t ldb, float beta, float* C, int64_t ldc, const char* who);

}  // namespace haliax::nn::kernels
