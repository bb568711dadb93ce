#include "levanter/models/lm_loss.h"

#include <ATen/ATen.h>

namespace levanter::models {

using hax::NamedArray;

std::pair<NamedArray, NamedArray> next_token_targets(const NamedArray& input_ids, const std::optional<NamedArray>& loss_mask) {
  hax::Axis Pos = input_ids.resolve_axis("position");
  int64_t p = static_cast<int64_t>(*input_ids.axis_index("position"));
  NamedArray targets(at::roll(input_ids.array(), {-1}, {p}), input_ids.axes());
  NamedArray not_last = hax::arange(Pos) < (Pos.size - 1);
  NamedArray mask = loss_mask ? (hax::astype(*loss_mask, at::kBool) & not_last) : not_last;
  return {targets, hax::broadcast_to(mask, input_ids.axes())};
}

NamedArray next_token_loss(const NamedArray& logits, const NamedArray& input_ids, const std::optional<NamedArray>& loss_mask,
                           const LossOptions& options) {
  auto [targets, mask] = next_token_targets(input_ids, loss_mask);
  NamedArray lse = hax::logsumexp(logits, "vocab");
  NamedArray loss = lse - hax::take(logits, "vocab", targets);
  if (options.z_loss_weight != 0.0) loss = loss + options.z_loss_weight * hax::square(lse);
  return hax::nn::reduce_loss(loss, options.reduction, std::nullopt, mask);
}

}  // namespace levanter::models
