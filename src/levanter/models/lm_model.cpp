#include "levanter/models/lm_model.h"

#include <ATen/ATen.h>

#include "levanter/models/hf_adapter.h"

namespace levanter::models {

std::unique_ptr<HfAdapter> LmConfig::hf_adapter() const { return nullptr; }

std::unique_ptr<DecodeCache> LmHeadModel::start_decode(int64_t, int64_t) const {
  throw std::logic_error("model type '" + config().model_type() + "' has no incremental decoding (sampling)");
}

hax::NamedArray LmHeadModel::decode(const hax::NamedArray&, DecodeCache&) const {
  throw std::logic_error("model type '" + config().model_type() + "' has no incremental decoding (sampling)");
}

hax::NamedArray LmHeadModel::logits(const hax::NamedArray& input_ids, const ForwardOptions& options) const {
  return hax::dot(activations(input_ids, options), lm_head(), hax::AxisSelection(Embed()));
}

hax::NamedArray LmHeadModel::compute_next_token_loss(const hax::NamedArray& input_ids, const ForwardOptions& options,
                                                     LossOptions loss) const {
  const std::optional<int64_t> block = config().loss_block_size();
  if ((block && *block == 0) || loss.differentiable_twice) {
    hax::NamedArray l = logits(input_ids, options);
    // The loss in f32 at least (bf16 logits are widened; f64 logits, as in tests, stay f64).
    if (l.dtype() != at::kDouble) l = hax::astype(l, at::kFloat);
    return next_token_loss(l, input_ids, std::nullopt, loss);
  }
  loss.block_size = block.value_or(0);
  return fused_next_token_loss(activations(input_ids, options), lm_head(), input_ids, std::nullopt, loss);
}

std::unique_ptr<LmHeadModel> cast_floating(const LmHeadModel& model, at::ScalarType dtype) {
  std::unique_ptr<LmHeadModel> out = model.clone();
  hax::nn::for_each_parameter(*out, [&](const hax::nn::ParamInfo&, hax::NamedArray& p) {
    if (at::isFloatingType(p.dtype()) && p.dtype() != dtype) p = hax::NamedArray(p.array().to(dtype), p.axes());
  });
  return out;
}

}  // namespace levanter::models
