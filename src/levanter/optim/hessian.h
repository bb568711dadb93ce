// Hessian-vector products through libtorch's autograd, for second-order optimizers (Sophia-H).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace levanter::optim {

// H v, where H is the Hessian of the scalar `loss` with respect to `params` (leaf tensors that require grad) and v
// one tensor per parameter (float32, the parameter's shape): the gradient of <grad loss, v>, by double backward.
// `loss` must be differentiable twice: no fused kernels whose backward is opaque, no activation checkpointing
// (haliax::nn::NoCheckpointing). Parameters the loss does not depend on get an undefined tensor. Consumes the
// graph of `loss`.
std::vector<at::Tensor> hessian_vector_product(const at::Tensor& loss, const std::vector<at::Tensor>& params,
                                               const std::vector<at::Tensor>& v);

}  // namespace levanter::optim
