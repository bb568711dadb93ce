// The fused LM head + loss's per-row work on CPU (internal to lm_loss.cpp): for each row of a block of logits, the
// log-sum-exp, the loss and, when asked, d loss / d logits written over the logits, in one pass per row while the
// row is in cache (ATen ops would make about nine passes over the whole block in memory).
#pragma once

#include <ATen/core/Tensor.h>

namespace levanter::models::kernels {

// Whether softmax_xent_rows can take these logits: a contiguous f32 or bf16 CPU tensor [n, V] on a machine with
// AVX2 and FMA. Otherwise the caller computes with ATen ops.
bool softmax_xent_rows_supported(const at::Tensor& logits);

// logits [n, V] (f32 or bf16, contiguous, CPU), targets [n] int64 in [0, V), weights [n] f32 (used with
// with_grad). Writes per_token[i] = lse_i - logits[i, t_i] (+ z * lse_i^2), with lse_i = m_i + log(sum_j exp(x_ij -
// m_i)) and m_i the row's max, into per_token [n] f32. With with_grad, also overwrites each row with
// w_i * (1 + 2 z lse_i) * softmax_i - w_i * onehot(t_i), computed in f32 and, for bf16 logits, rounded to nearest
// even. The exponentials are Sleef's expf (the function ATen's exp uses); each row's sum is taken by one thread in a
// fixed order, so the result does not depend on the number of threads. A target outside [0, V) throws
// std::invalid_argument naming it.
void softmax_xent_rows(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& weights,
                       double z_loss_weight, bool with_grad, const at::Tensor& per_token);

// The fused loss's three f32 GEMMs on CPU through oneDNN's sgemm (Debian's libdnnl, the library libtorch's CPU build
// already links) rather than at::mm's OpenBLAS: on the LM head's shapes, where one side of each GEMM is the embedding
// (K = embed for the logits, N = embed for both gradients), oneDNN ran 20-35% faster at embed 128 and no slower at
// 768 (bench/lm_loss). oneDNN's results are deterministic for a thread count and a block's shape (a block of fewer
// than 16 rows takes another of its kernels, which rounds differently).
//
// Whether the f32 GEMMs below can take h [n, E] and w [V, E]: contiguous f32 CPU tensors.
bool head_gemms_supported(const at::Tensor& h, const at::Tensor& w);
// out [n, V] = h [n, E] w^T (out contiguous).
void head_logits(const at::Tensor& h, const at::Tensor& w, const at::Tensor& out);
// out [n, E] = g [n, V] w (out: rows of a contiguous tensor).
void head_hidden_grad(const at::Tensor& g, const at::Tensor& w, const at::Tensor& out);
// The head's gradient g^T h [V, E], accumulated over blocks of rows. Where oneDNN is faster writing it transposed
// ([E, V] = h^T g: embed <= 128, or <= 256 with 1024 rows or more per block) it is held so and turned at the end.
class HeadGradAccumulator {
 public:
  HeadGradAccumulator(int64_t V, int64_t E, int64_t block_rows, const at::TensorOptions& options);
  // acc (+)= g [n, V]^T h [n, E]: the first block writes, the others add.
  void add(const at::Tensor& g, const at::Tensor& h);
  // The sum [V, E], contiguous.
  at::Tensor result() const;
  bool transposed() const { return transposed_; }

 private:
  at::Tensor acc_;  // [V, E], or [E, V] when transposed_
  bool transposed_;
  bool first_ = true;
};

}  // namespace levanter::models::kernels
