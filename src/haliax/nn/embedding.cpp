#include "haliax/nn/embedding.h"

#include "haliax/core.h"
#include "haliax/ops.h"

namespace haliax::nn {

Embedding Embedding::init(const Axis& Vocab, const AxisSpec& Embed, const random::Key& key, double init_scale,
                          at::ScalarType dtype) {
  // Haliax's standard parameterisation scales the init by 1 / |Embed| (EmbeddingStandardParam.init_scale).
  NamedArray w = random::truncated_normal(key, concat_axes({Vocab}, Embed), -3.0, 3.0) *
                 (init_scale / static_cast<double>(axis_size(Embed)));
  return Embedding{Vocab, Embed, astype(w, dtype)};
}

NamedArray Embedding::embed(const NamedArray& ids) const { return take(weight, Vocab, ids); }

NamedArray Embedding::unembed(const NamedArray& x) const { return dot(x, weight, AxisSelection(Embed)); }

}  // namespace haliax::nn
