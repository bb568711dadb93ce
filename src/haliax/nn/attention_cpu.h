// Dot-product attention in f32 on CPU in one pass each way (internal to attention.cpp): for each (batch, head) problem
// and each block of query rows, the logits scale * q k^T of the block's keys are made in a cache-sized buffer, masked,
// turned into softmax weights row by row and multiplied by v there, so the [queries, keys] weights are never written to
// memory, and a key range that the mask hides from a whole block is never computed (half the work of a causal mask).
// The backward recomputes the weights from the saved row log-sum-exps (the flash-attention scheme), so the forward
// keeps only those. The products are oneDNN's sgemm, one thread per problem; each problem is computed by one thread in
// a fixed order, so the results do not depend on the number of threads or on which other problems are in the batch.
//
// Semantics are those of the unfused ATen ops in attention.cpp (softmax over where(mask, scale * q.k, -1e9)): a masked
// logit contributes exactly 0 (its -1e9 underflows to 0 there too, unless every attended logit of the row is below
// -1e9 + 88), and a row with no attended key gets uniform weights, as softmax over equal -1e9 logits gives.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>
#include <utility>

namespace haliax::nn::kernels {

// A CPU with AVX2 and FMA (the exponentials are Sleef's 8-wide expf).
bool attention_f32_supported();

// q [N, Q, C], k [N, K, C], v [N, K, D]: contiguous f32 CPU tensors; mask: contiguous bool [Q, K] (true = attend),
// or undefined for none. Returns out [N, Q, D] = softmax(scale q k^T, masked) v and lse [N, Q], each row's
// log-sum-exp of its attended logits (-inf for a row with no attended key).
std::pair<at::Tensor, at::Tensor> attention_f32_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                        const at::Tensor& mask, double scale);

// The gradients (dq, dk, dv) of out for dout [N, Q, D], from the forward's inputs and lse.
std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_f32_backward(const at::Tensor& dout, const at::Tensor& q,
                                                                      const at::Tensor& k, const at::Tensor& v,
                                                                      const at::Tensor& mask, const at::Tensor& lse,
                                                                      double scale);

// The weights alone, for attention the fused kernel above does not take (bf16 operands where bf16 GEMMs are native,
// bf16 scores of f32 operands, a bias, dropout, a mask over batch axes): softmax over the last axis of the scores x [R,
// K] (contiguous f32 or bf16 CPU), where the mask allows, in one pass per row (ATen's where and softmax take four over
// memory, with mixed-dtype where the slowest), computed in f32 and, for bf16, rounded once. The mask is given by rows:
// row r's entry j is mask_data[row_offsets[r] + j * key_stride] (mask: contiguous bool, any shape; row_offsets: int64
// [R]; key_stride 0 or 1), or mask undefined for none. Semantics of where(mask, x, -1e9) then softmax: masked entries
// get 0, a row with no attended entry uniform weights 1/K. Each row is computed by one thread in a fixed order: the
// bits do not depend on the thread count.
struct MaskRows {
  at::Tensor mask;         // undefined: no mask
  at::Tensor row_offsets;  // int64 [R]
  int64_t key_stride = 1;
};
bool masked_softmax_supported(const at::Tensor& x);
at::Tensor masked_softmax_forward(const at::Tensor& x, const MaskRows& m);
// dx = p * (dy - sum_j dy_j p_j) where the mask allows, 0 where it does not (dy, p [R, K] of x's dtype).
at::Tensor masked_softmax_backward(const at::Tensor& dy, const at::Tensor& p, const MaskRows& m);

}  // namespace haliax::nn::kernels
