#include "haliax/nn/checkpoint.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

namespace haliax::nn {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct FnHolder : torch::CustomClassHolder {
  explicit FnHolder(TensorsFn f) : fn(std::move(f)) {}
  TensorsFn fn;
};

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs, c10::intrusive_ptr<FnHolder> holder) {
    // Autograd is off inside a custom function's forward: f's intermediates are not recorded.
    std::vector<at::Tensor> in(inputs.begin(), inputs.end());
    ctx->save_for_backward(in);
    ctx->saved_data["fn"] = c10::IValue::make_capsule(holder);
    return holder->fn(in);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list saved = ctx->get_saved_variables();
    auto holder = c10::static_intrusive_pointer_cast<FnHolder>(ctx->saved_data["fn"].toCapsule());
    std::vector<at::Tensor> inputs;
    inputs.reserve(saved.size());
    for (const at::Tensor& t : saved) {
      at::Tensor d = t.detach();
      if (t.requires_grad()) d.requires_grad_(true);
      inputs.push_back(d);
    }
    std::vector<at::Tensor> outputs;
    {
      at::AutoGradMode enable(true);
      outputs = holder->fn(inputs);
    }
    variable_list outs, gouts, wrt;
    std::vector<size_t> wrt_index;
    for (size_t i = 0; i < outputs.size() && i < grad_outputs.size(); ++i) {
      if (outputs[i].requires_grad() && grad_outputs[i].defined()) {
        outs.push_back(outputs[i]);
        gouts.push_back(grad_outputs[i]);
      }
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (inputs[i].requires_grad()) {
        wrt.push_back(inputs[i]);
        wrt_index.push_back(i);
      }
    }
    variable_list result(inputs.size() + 1);  // one per input tensor, plus the (non-tensor) function
    if (outs.empty() || wrt.empty()) return result;
    variable_list grads = torch::autograd::grad(outs, wrt, gouts, /*retain_graph=*/false, /*create_graph=*/false,
                                                /*allow_unused=*/true);
    for (size_t k = 0; k < wrt_index.size(); ++k) result[wrt_index[k]] = grads[k];
    return result;
  }
};

}  // namespace

std::vector<at::Tensor> checkpoint(const TensorsFn& f, const std::vector<at::Tensor>& inputs) {
  bool any_grad = false;
  for (const at::Tensor& t : inputs) any_grad = any_grad || t.requires_grad();
  if (!any_grad || !at::GradMode::is_enabled()) return f(inputs);  // nothing to save memory for
  auto holder = c10::make_intrusive<FnHolder>(f);
  return CheckpointFunction::apply(at::TensorList(inputs), holder);
}

namespace {
thread_local bool g_checkpointing = true;
}  // namespace

bool checkpointing_enabled() { return g_checkpointing; }
NoCheckpointing::NoCheckpointing() : previous_(g_checkpointing) { g_checkpointing = false; }
NoCheckpointing::~NoCheckpointing() { g_checkpointing = previous_; }

}  // namespace haliax::nn
