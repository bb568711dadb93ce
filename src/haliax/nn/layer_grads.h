// The stacked layers' parameter gradients written in place (internal to Stacked and the Linear layer).
//
// Stacked takes each layer's view of a stacked parameter [L, ...] with one unbind, whose backward stacks the L layer
// gradients into a new [L, ...] tensor: a copy of every stacked gradient each step (34 ms of an 850 ms step of GPT-2
// 124M in f32). unbind_layers does the same unbind as an autograd function whose backward returns one buffer, and a
// layer's gradient that was computed straight into its place in that buffer is not copied again. The Linear layer's
// own backward (f32, and bf16 where bf16 GEMMs are widened: gemm_bf16.h) asks for that place (LayerGradSlot) for its
// weight's gradient and writes its GEMM's result there.
// The values are those of unbind + stack, bit for bit; where no place was taken (other layers, dtypes, devices, a
// layer gathered by FSDP, a backward that is differentiated again), the backward copies as stack does.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>
#include <c10/util/intrusive_ptr.h>

#include <vector>

namespace haliax::nn {

// The L views stacked[i] (i < L = stacked.size(0)), as at::unbind(stacked, 0); through the function above when the
// stacked parameter is contiguous, requires grad and grad mode is on.
std::vector<at::Tensor> unbind_layers(const at::Tensor& stacked);

struct LayerGradSlots;

// Where the gradient of w may be written: w is one layer's view from unbind_layers, or a reshape or view of it that
// covers its whole memory in order (the Linear layer's 2-D weight).
class LayerGradSlot : public torch::CustomClassHolder {
 public:
  // Null unless w is such a view.
  static c10::intrusive_ptr<LayerGradSlot> find(const at::Tensor& w);
  // The place for w's gradient (w's sizes, contiguous), in the buffer the unbind's backward will return; undefined
  // if another gradient of this layer took the place in this backward pass (the caller then allocates its own).
  // Call in backward only: each backward pass gets a new buffer.
  at::Tensor claim(at::IntArrayRef sizes) const;

  LayerGradSlot(c10::intrusive_ptr<LayerGradSlots> slots, int64_t layer);
  ~LayerGradSlot() override;

 private:
  c10::intrusive_ptr<LayerGradSlots> slots_;
  int64_t layer_;
};

}  // namespace haliax::nn
