// Hessian-vector products through libtorch's autograd, for second-order optimizers (Sophia-H).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "haliax/random.h"

namespace levanter::optim {

// H v, where H is the Hessian of the scalar `loss` with respect to `params` (leaf tensors that require grad) and v
// one tensor per parameter (float32, the parameter's shape): the gradient of <grad loss, v>, by double backward.
// `loss` must be differentiable twice: no fused kernels whose backward is opaque, no activation checkpointing
// (haliax::nn::NoCheckpointing). Parameters the loss does not depend on get an undefined tensor. Consumes the
// graph of `loss`.
std::vector<at::Tensor> hessian_vector_product(const at::Tensor& loss, const std::vector<at::Tensor>& params,
                                               const std::vector<at::Tensor>& v);

// Sophia-G's ingredient (Liu et al. 2023, Algorithm 2, Gauss-Newton-Bartlett): the gradient with respect to
// `params` of the mean cross-entropy of `logits` (rows x vocab, the last dimension the vocabulary; differentiable
// with respect to params) against labels drawn from softmax(logits) with `key` (Gumbel-max, the draw itself not
// differentiated). For a batch of N rows, N * g * g estimates the diagonal of the Gauss-Newton matrix of the loss
// (unbiased: for one row, E[g_ij^2] = p_i (1 - p_i) h_j^2 for a softmax over z = W h). Consumes the graph.
std::vector<at::Tensor> sampled_label_gradient(const at::Tensor& logits, const std::vector<at::Tensor>& params,
                                               const haliax::random::Key& key);

}  // namespace levanter::optim
