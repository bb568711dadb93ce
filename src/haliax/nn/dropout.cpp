#include "haliax/nn/dropout.h"

#include "haliax/core.h"
#include "haliax/error.h"
#include "haliax/ops.h"
#include "haliax/partitioning.h"

namespace haliax::nn {

NamedArray Dropout::operator()(const NamedArray& x, const std::optional<random::Key>& key,
                               std::optional<bool> inference_override) const {
  bool infer = inference_override.value_or(inference);
  if (infer || pdrop == 0.0) return x;
  if (pdrop < 0.0 || pdrop >= 1.0) value_error("Dropout probability must be in [0, 1), got " + std::to_string(pdrop));
  if (!key) value_error("Dropout needs a random key in training mode (pass inference=true to disable it)");
  AxisSpec mask_axes = without_axes(x.axes(), AxisSelection(broadcast_axes));
  // Under tensor parallelism (partitioning.h) the bits are drawn for the whole array and cut to this process's
  // piece, so that they do not depend on the number of processes.
  NamedArray keep = local_piece(random::bernoulli(*key, whole_axes(mask_axes), 1.0 - pdrop));
  return where(keep, x / (1.0 - pdrop), 0.0);
}

}  // namespace haliax::nn
