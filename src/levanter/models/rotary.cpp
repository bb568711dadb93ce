#include "levanter/models/rotary.h"

#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>

namespace levanter::models {

namespace hax = haliax;

void RopeConfig::validate(const std::string& prefix) const {
  auto bad = [&](const std::string& key, const std::string& why) {
    throw std::invalid_argument(prefix + "." + key + ": " + why);
  };
  if (type != "default" && type != "linear" && type != "llama3") {
    bad("type", "unknown rotary embedding '" + type + "' (supported: default, linear, llama3)");
  }
  if (resolved_theta() <= 0) bad("theta", "must be positive");
  if (resolved_factor() <= 0) bad("factor", "must be positive");
  if (type == "llama3") {
    if (high_freq_factor <= low_freq_factor) bad("high_freq_factor", "must be greater than low_freq_factor");
    if (low_freq_factor <= 0) bad("low_freq_factor", "must be positive");
    if (original_max_position_embeddings <= 0) bad("original_max_position_embeddings", "must be positive");
  }
}

nlohmann::json RopeConfig::hf_scaling() const {
  if (type == "llama3") {
    return {{"factor", resolved_factor()},
            {"low_freq_factor", low_freq_factor},
            {"high_freq_factor", high_freq_factor},
            {"original_max_position_embeddings", original_max_position_embeddings},
            {"rope_type", "llama3"}};
  }
  if (resolved_factor() == 1.0) return nullptr;
  return {{"factor", resolved_factor()}, {"rope_type", "linear"}};
}

RopeConfig RopeConfig::from_hf(double rope_theta, const nlohmann::json& s, const std::string& source) {
  RopeConfig c;
  c.theta = rope_theta;
  if (s.is_null()) return c;
  if (!s.is_object()) throw std::invalid_argument(source + ": \"rope_scaling\" must be an object or null");
  std::string t = s.value("rope_type", s.value("type", std::string("default")));
  auto num = [&](const char* key, double fallback) {
    if (!s.contains(key) || s[key].is_null()) return fallback;
    if (!s[key].is_number()) throw std::invalid_argument(source + ": \"rope_scaling." + key + "\" must be a number");
    return s[key].get<double>();
  };
  if (t == "default" || t == "linear") {
    c.type = t;
    c.factor = num("factor", 1.0);
  } else if (t == "llama3") {
    c.type = t;
    c.factor = num("factor", 8.0);
    c.low_freq_factor = num("low_freq_factor", 1.0);
    c.high_freq_factor = num("high_freq_factor", 4.0);
    c.original_max_position_embeddings = static_cast<int64_t>(num("original_max_position_embeddings", 8192));
  } else {
    throw std::invalid_argument(source + ": rope_scaling type '" + t +
                                "' is not supported (supported: default, linear, llama3)");
  }
  return c;
}

// transformers' _compute_default_rope_parameters / _compute_linear_scaling_rope_parameters /
// _compute_llama3_parameters, op for op in f32.
RotaryEmbedding::RotaryEmbedding(const RopeConfig& c, const hax::Axis& HeadSize) : head_size_(HeadSize) {
  const int64_t dim = HeadSize.size;
  if (dim % 2 != 0) throw std::invalid_argument("rotary embeddings need an even head size, got " + std::to_string(dim));
  at::Tensor exponent = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);
  at::Tensor inv_freq = at::reciprocal(at::pow(c.resolved_theta(), exponent));
  const double factor = c.resolved_factor();
  if (c.type == "linear" || (c.type == "default" && factor != 1.0)) {
    inv_freq = inv_freq / factor;
  } else if (c.type == "llama3") {
    const double old_len = static_cast<double>(c.original_max_position_embeddings);
    const double low_freq_wavelen = old_len / c.low_freq_factor, high_freq_wavelen = old_len / c.high_freq_factor;
    // Python's `scalar / tensor` is reciprocal(tensor) * scalar: the same here, for the same bits.
    at::Tensor wavelen = at::reciprocal(inv_freq) * (2 * M_PI);
    at::Tensor llama = at::where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq);
    at::Tensor smooth =
        (at::reciprocal(wavelen) * old_len - c.low_freq_factor) / (c.high_freq_factor - c.low_freq_factor);
    at::Tensor smoothed = (1 - smooth) * llama / factor + smooth * llama;
    at::Tensor medium = at::logical_not(wavelen < high_freq_wavelen) * at::logical_not(wavelen > low_freq_wavelen);
    inv_freq = at::where(medium, smoothed, llama);
  }
  inv_freq_ = inv_freq.contiguous();
}

RopeTables RotaryEmbedding::tables(const hax::Axis& Pos, int64_t start, at::ScalarType dtype) const {
  at::Tensor positions = at::arange(start, start + Pos.size, at::kLong).to(at::kFloat);
  at::Tensor freqs = positions.unsqueeze(1) * inv_freq_.unsqueeze(0);  // (position, head_size / 2), one rounding
  at::Tensor emb = at::cat({freqs, freqs}, 1);
  return {hax::NamedArray(emb.cos().to(dtype), {Pos, head_size_}),
          hax::NamedArray(emb.sin().to(dtype), {Pos, head_size_})};
}

hax::NamedArray RotaryEmbedding::apply(const hax::NamedArray& x, const RopeTables& t) const {
  const int64_t half = head_size_.size / 2;
  hax::NamedArray x1 = hax::slice(x, head_size_.name, 0, half);
  hax::NamedArray x2 = hax::slice(x, head_size_.name, half, half);
  hax::NamedArray rotated = hax::concatenate(head_size_.name, {-x2, x1});
  return x * t.cos + rotated * t.sin;
}

}  // namespace levanter::models
