// The contraction engine behind dot and einsum: contract every axis of `arrays` that is not in `output`
// (batching axes shared by several operands), and return the result with exactly the axes `output`.
#pragma once

#include <vector>

#include "haliax/named_array.h"

namespace haliax::detail {

NamedArray contract(const std::vector<NamedArray>& arrays, const AxisSpec& output);
// Throws "Axis x has multiple sizes: a and b" if two operands disagree on an axis's size.
void ensure_no_mismatched_axes(const std::vector<NamedArray>& arrays);

}  // namespace haliax::detail
