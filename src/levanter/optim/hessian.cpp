#include "levanter/optim/hessian.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <stdexcept>
#include <string>

namespace levanter::optim {

std::vector<at::Tensor> hessian_vector_product(const at::Tensor& loss, const std::vector<at::Tensor>& params,
                                               const std::vector<at::Tensor>& v) {
  if (v.size() != params.size()) {
    throw std::invalid_argument("hessian_vector_product: " + std::to_string(v.size()) + " vectors for " +
                                std::to_string(params.size()) + " parameters");
  }
  std::vector<at::Tensor> g = torch::autograd::grad({loss}, params, {}, /*retain_graph=*/true,
                                                    /*create_graph=*/true, /*allow_unused=*/true);
  at::Tensor dot;
  for (size_t i = 0; i < params.size(); ++i) {
    if (!g[i].defined() || !g[i].requires_grad()) continue;  // no second-order dependence on anything
    at::Tensor term = (g[i] * v[i].to(g[i].scalar_type())).sum();
    dot = dot.defined() ? dot + term : term;
  }
  if (!dot.defined()) return std::vector<at::Tensor>(params.size());
  return torch::autograd::grad({dot}, params, {}, /*retain_graph=*/false, /*create_graph=*/false,
                               /*allow_unused=*/true);
}

std::vector<at::Tensor> sampled_label_gradient(const at::Tensor& logits, const std::vector<at::Tensor>& params,
                                               const haliax::random::Key& key) {
  const int64_t V = logits.size(-1);
  at::Tensor rows = logits.reshape({-1, V}).to(at::kFloat);
  at::Tensor labels;
  {
    at::NoGradGuard no_grad;
    haliax::NamedArray l(rows.detach(), {haliax::Axis("row", rows.size(0)), haliax::Axis("vocab", V)});
    labels = haliax::random::categorical(key, l, "vocab").array().to(at::kLong);
  }
  at::Tensor loss = at::cross_entropy_loss(rows, labels);  // mean over rows
  return torch::autograd::grad({loss}, params, {}, /*retain_graph=*/false, /*create_graph=*/false,
                               /*allow_unused=*/true);
}

}  // namespace levanter::optim
