// Test helper: whether an autograd graph runs a given node (a custom kernel's function, by its name).
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>

#include <deque>
#include <memory>
#include <set>
#include <string>

namespace haliax::testing {

// Whether a node whose name contains `name` is in the graph behind t (t's grad_fn and everything it reaches).
inline bool graph_runs(const at::Tensor& t, const std::string& name) {
  std::deque<std::shared_ptr<torch::autograd::Node>> todo{t.grad_fn()};
  std::set<torch::autograd::Node*> seen;
  while (!todo.empty()) {
    auto n = todo.front();
    todo.pop_front();
    if (!n || !seen.insert(n.get()).second) continue;
    if (n->name().find(name) != std::string::npos) return true;
    for (const auto& e : n->next_edges()) todo.push_back(e.function);
  }
  return false;
}

}  // namespace haliax::testing
