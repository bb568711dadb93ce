#include "haliax/nn/sgemm_cpu.h"

#include <oneapi/dnnl/dnnl.h>

#include <stdexcept>
#include <string>

namespace haliax::nn::kernels {

void sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
           int64_t ldb, float beta, float* C, int64_t ldc, const char* who) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // C = beta C, without asking oneDNN (C may be uninitialised memory when beta is 0)
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    }
    return;
  }
  const dnnl_status_t st = dnnl_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  if (st != dnnl_success) {
    throw std::runtime_error(std::string(who) + ": oneDNN's sgemm failed (status " + std::to_string(st) + ") for " +
                             std::to_string(M) + " x " + std::to_string(N) + " x " + std::to_string(K));
  }
}

}  // namespace haliax::nn::kernels
