#include "levanter/models/hf_adapter.h"

#include <ATen/ATen.h>

#include <stdexcept>

namespace levanter::models {

namespace {

std::string shape_text(at::IntArrayRef s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + ")";
}

}  // namespace

haliax::StateDict take_hf_parameters(LmHeadModel& model, std::map<std::string, at::Tensor>& given,
                                     const HfShapeFn& hf_shape, const std::string& source) {
  haliax::StateDict ours;
  for (auto& [key, t] : haliax::nn::to_state_dict(model)) {
    const std::vector<int64_t> want = hf_shape(key, t.sizes());
    auto it = given.find(key);
    if (it == given.end()) {
      throw std::invalid_argument(source + ": tensor " + key + " is missing (expected shape " + shape_text(want) + ")");
    }
    if (it->second.sizes().vec() != want) {
      throw std::invalid_argument(source + ": tensor " + key + " has shape " + shape_text(it->second.sizes()) +
                                  ", expected " + shape_text(want));
    }
    ours.emplace_back(key, it->second.reshape(t.sizes()).to(t.scalar_type()));
    given.erase(it);
  }
  return ours;
}

}  // namespace levanter::models
