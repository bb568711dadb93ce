// Dropout with an explicit key. With inference = true (or p = 0) it is the identity.
#pragma once

#include <optional>

#include "haliax/named_array.h"
#include "haliax/nn/module.h"
#include "haliax/random.h"

namespace haliax::nn {

struct Dropout {
  double pdrop = 0.0;
  // Axes along which the same mask is shared (e.g. {Pos} for "spatial" dropout).
  AxisSpec broadcast_axes;
  bool inference = false;

  // Zero each element with probability pdrop and scale the rest by 1 / (1 - pdrop). `inference` overrides the
  // module's flag when given. A key is required unless dropout is inactive.
  NamedArray operator()(const NamedArray& x, const std::optional<random::Key>& key,
                        std::optional<bool> inference_override = std::nullopt) const;
  void visit(ParamVisitor&) {}
};

}  // namespace haliax::nn
