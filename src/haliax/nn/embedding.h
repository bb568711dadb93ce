// Embedding: a (Vocab, Embed) table; embed() gathers rows, unembed() projects back onto the vocabulary.
#pragma once

#include "haliax/named_array.h"
#include "haliax/nn/module.h"
#include "haliax/random.h"

namespace haliax::nn {

// The gradient embed() gives the table.
//   kDense  a (Vocab, Embed) gradient: zeros with the looked-up rows added (Haliax's, through take()).
//   kRows   only the looked-up rows, as a sparse COO tensor (PyTorch's Embedding(sparse=True)), each row once (summed
//           in the order of the ids, as kDense sums them). For a table that gets a dense gradient in the same backward
//           pass, a tied LM head: autograd adds the rows into that one in place, where kDense would fill a
//           (Vocab, Embed) tensor with zeros and add the two. The same values (a -0 in the dense gradient's other
//           rows stays -0, where adding zeros made it +0). Used alone, the table's .grad is sparse.
//           Under create_graph (higher-order gradients) the gradient is kDense's, differentiable.
enum class EmbedGradient { kDense, kRows };

struct Embedding {
  Axis Vocab;
  AxisSpec Embed;
  NamedArray weight;  // (Vocab, Embed...)

  // weight ~ truncated_normal(-3, 3) * init_scale / |Embed| (Haliax's standard parameterisation).
  static Embedding init(const Axis& Vocab, const AxisSpec& Embed, const random::Key& key, double init_scale = 1.0,
                        at::ScalarType dtype = at::kFloat);
  // ids (any axes, integer) -> ids' axes + Embed.
  NamedArray embed(const NamedArray& ids, EmbedGradient gradient = EmbedGradient::kDense) const;
  NamedArray operator()(const NamedArray& ids) const { return embed(ids); }
  // x (with Embed) -> logits over Vocab (a tied LM head).
  NamedArray unembed(const NamedArray& x) const;
  void visit(ParamVisitor& v) { v("weight", weight, ParamKind::kEmbedding); }
};

}  // namespace haliax::nn
