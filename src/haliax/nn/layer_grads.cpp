#include "haliax/nn/layer_grads.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <mutex>
#include <string>
#include <utility>

namespace haliax::nn {

// One unbind's buffer for the backward pass under way: allocated by the first claim, taken by the unbind's backward.
struct LayerGradSlots : public torch::CustomClassHolder {
  std::vector<int64_t> sizes;  // the stacked parameter's
  at::TensorOptions options;
  const char* data = nullptr;  // the stacked parameter's memory, and one layer's bytes in it
  int64_t layer_bytes = 0;
  std::mutex mutex;
  at::Tensor buffer;
  std::vector<bool> claimed;

  at::Tensor claim(int64_t layer, at::IntArrayRef view_sizes) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!buffer.defined()) {
      buffer = at::empty(sizes, options);
      claimed.assign(static_cast<size_t>(sizes[0]), false);
    }
    if (claimed[static_cast<size_t>(layer)]) return {};
    claimed[static_cast<size_t>(layer)] = true;
    return buffer.select(0, layer).view(view_sizes);
  }
  // The buffer (undefined if nothing was claimed) and which places were claimed; the next claim starts a new one.
  std::pair<at::Tensor, std::vector<bool>> take() {
    std::lock_guard<std::mutex> lock(mutex);
    return {std::exchange(buffer, at::Tensor()), std::exchange(claimed, {})};
  }
};

namespace {

struct UnbindLayers : public torch::autograd::Function<UnbindLayers> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& stacked) {
    auto slots = c10::make_intrusive<LayerGradSlots>();
    slots->sizes = stacked.sizes().vec();
    slots->options = stacked.options();
    slots->data = static_cast<const char*>(stacked.data_ptr());
    slots->layer_bytes = stacked.size(0) == 0 ? 0 : stacked.numel() / stacked.size(0) * stacked.element_size();
    ctx->saved_data["slots"] = c10::IValue::make_capsule(slots);
    ctx->set_materialize_grads(false);  // a layer without a gradient arrives undefined, as unbind's backward takes it
    return at::unbind(stacked, 0);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto slots = c10::static_intrusive_pointer_cast<LayerGradSlots>(ctx->saved_data["slots"].toCapsule());
    auto taken = slots->take();
    at::Tensor buffer = std::move(taken.first);
    const std::vector<bool> claimed = std::move(taken.second);
    auto in_place = [&](size_t l) {
      if (!buffer.defined()) return false;
      const at::Tensor& g = grads[l];
      const at::Tensor place = buffer.select(0, static_cast<int64_t>(l));
      return g.defined() && g.data_ptr() == place.data_ptr() && g.is_contiguous() && g.sizes().equals(place.sizes());
    };
    // The buffer is returned only if every place claimed in it arrived here as itself. Otherwise a claimed place was
    // written in a pass whose gradient went elsewhere (a grad() that stopped at the layer's view, over a retained
    // graph) and may be held by its caller, or was summed with another gradient: a new buffer, all copied.
    for (size_t l = 0; l < claimed.size() && buffer.defined(); ++l) {
      if (claimed[l] && !in_place(l)) buffer = at::Tensor();
    }
    bool any = false;
    for (const at::Tensor& g : grads) any = any || g.defined();
    if (!any) return {at::Tensor()};  // no layer got a gradient: neither does the stack (as unbind's backward)
    if (at::GradMode::is_enabled()) {
      // Differentiated again: stack, as unbind's own backward.
      std::vector<at::Tensor> parts;
      for (const at::Tensor& g : grads) {
        parts.push_back(g.defined() ? g : at::zeros(at::IntArrayRef(slots->sizes).slice(1), slots->options));
      }
      return {at::stack(parts, 0)};
    }
    if (!buffer.defined()) buffer = at::empty(slots->sizes, slots->options);
    for (size_t l = 0; l < grads.size(); ++l) {
      if (in_place(l)) continue;  // computed in its place
      at::Tensor place = buffer.select(0, static_cast<int64_t>(l));
      const at::Tensor& g = grads[l];
      if (g.defined()) {
        place.copy_(g);
      } else {
        place.zero_();
      }
    }
    return {buffer};
  }
};

}  // namespace

std::vector<at::Tensor> unbind_layers(const at::Tensor& stacked) {
  if (stacked.dim() < 1 || !stacked.requires_grad() || !at::GradMode::is_enabled() || !stacked.is_contiguous() ||
      stacked.size(0) == 0) {
    return at::unbind(stacked, 0);
  }
  return UnbindLayers::apply(stacked);
}

LayerGradSlot::LayerGradSlot(c10::intrusive_ptr<LayerGradSlots> slots, int64_t layer)
    : slots_(std::move(slots)), layer_(layer) {}
LayerGradSlot::~LayerGradSlot() = default;

c10::intrusive_ptr<LayerGradSlot> LayerGradSlot::find(const at::Tensor& w) {
  if (!w.defined() || !w.requires_grad() || !w.is_contiguous()) return {};
  std::shared_ptr<torch::autograd::Node> fn = w.grad_fn();
  uint32_t nr = w.output_nr();
  // Through the reshapes and views between the layer's view and w (each has one input).
  for (int hops = 0; fn && hops < 4; ++hops) {
    if (auto* node = dynamic_cast<torch::autograd::CppNode<UnbindLayers>*>(fn.get())) {
      auto slots = c10::static_intrusive_pointer_cast<LayerGradSlots>(node->ctx_.saved_data["slots"].toCapsule());
      const int64_t layer = nr;
      // w must be the layer's whole memory, in order.
      if (w.numel() * w.element_size() != slots->layer_bytes ||
          static_cast<const char*>(w.data_ptr()) != slots->data + layer * slots->layer_bytes ||
          w.scalar_type() != slots->options.dtype().toScalarType()) {
        return {};
      }
      return c10::make_intrusive<LayerGradSlot>(std::move(slots), layer);
    }
    const std::string name = fn->name();
    if (name != "ViewBackward0" && name != "ReshapeAliasBackward0" && name != "UnsafeViewBackward0") return {};
    if (fn->num_inputs() != 1 || fn->next_edges().size() != 1) return {};
    const torch::autograd::Edge& e = fn->next_edge(0);
    fn = e.function;
    nr = e.input_nr;
  }
  return {};
}

at::Tensor LayerGradSlot::claim(at::IntArrayRef sizes) const { return slots_->claim(layer_, sizes); }

}  // namespace haliax::nn
