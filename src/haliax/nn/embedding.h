// Embedding: a (Vocab, Embed) table; embed() gathers rows, unembed() projects back onto the vocabulary.
#pragma once

#include "haliax/named_array.h"
#include "haliax/nn/module.h"
#include "haliax/random.h"

namespace haliax::nn {

struct Embedding {
  Axis Vocab;
  AxisSpec Embed;
  NamedArray weight;  // (Vocab, Embed...)

  // weight ~ truncated_normal(-3, 3) * init_scale / |Embed| (Haliax's standard parameterisation).
  static Embedding init(const Axis& Vocab, const AxisSpec& Embed, const random::Key& key, double init_scale = 1.0,
                        at::ScalarType dtype = at::kFloat);
  // ids (any axes, integer) -> ids' axes + Embed.
  NamedArray embed(const NamedArray& ids) const;
  NamedArray operator()(const NamedArray& ids) const { return embed(ids); }
  // x (with Embed) -> logits over Vocab (a tied LM head).
  NamedArray unembed(const NamedArray& x) const;
  void visit(ParamVisitor& v) { v("weight", weight, ParamKind::kEmbedding); }
};

}  // namespace haliax::nn
