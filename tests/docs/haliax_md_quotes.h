// Outputs that docs/haliax.md quotes verbatim (error messages, printed listings). The tutorial tests check
// that the code really produces them; test_docs_sync.cpp checks that the markdown quotes them exactly, each
// as a whole ```text block.
#pragma once

#include <string>
#include <vector>

namespace haliax_md {

inline const std::string kShapeMismatch =
    "Shape of underlying array (2, 5) does not match shape of axes {'position': 5, 'batch': 2}";

inline const std::string kNoSubset =
    "Cannot broadcast NamedArray(dtype=float32, axes={'batch': 2, 'position': 5}) and "
    "NamedArray(dtype=float32, axes={'batch': 2, 'embed': 4}): no subset relationship. If you want to broadcast "
    "anyway, use the broadcast_axis function to explicitly add axes";

inline const std::string kParameterListing =
    "ln.weight {'embed': 4}\n"
    "ln.bias {'embed': 4}\n"
    "up.weight {'hidden': 16, 'embed': 4}\n"
    "up.bias {'hidden': 16}\n"
    "down.weight {'embed': 4, 'hidden': 16}\n"
    "down.bias {'embed': 4}\n";

inline const std::vector<std::string> kAll = {kShapeMismatch, kNoSubset, kParameterListing};

}  // namespace haliax_md
