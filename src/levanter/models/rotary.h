// Rotary position embeddings (RoPE), Levanter's `rope` config section (levanter/layers/rotary.py) and the
// arithmetic of Hugging Face transformers' LlamaRotaryEmbedding, so that imported models give transformers'
// logits: inverse frequencies and angles in f32, cos/sin cast to the activations' dtype, and
// x * cos + rotate_half(x) * sin with rotate_half = concat(-x2, x1) over the head axis.
//
//   rope: {type: default, theta: 10000}                                   (Levanter's default)
//   rope: {type: linear, theta: 10000, factor: 2}                          positions / factor
//   rope: {type: llama3, theta: 500000, factor: 8, low_freq_factor: 1, high_freq_factor: 4,
//          original_max_position_embeddings: 8192}
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "haliax/haliax.h"

namespace levanter::models {

struct RopeConfig {
  std::string type = "default";
  std::optional<double> theta;   // default: 10000 (llama3: 500000)
  std::optional<double> factor;  // default: 1 (default, linear); 8 (llama3)
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;

  template <typename V>
  void fields(V& v) {
    v("type", type, "default, linear (positions divided by factor) or llama3 (Llama 3's frequency scaling)");
    v("theta", theta, "Base of the frequencies (null: 10000, or 500000 for llama3)");
    v("factor", factor, "Scaling factor (null: 1, or 8 for llama3)");
    v("low_freq_factor", low_freq_factor, "llama3: low-frequency factor");
    v("high_freq_factor", high_freq_factor, "llama3: high-frequency factor");
    v("original_max_position_embeddings", original_max_position_embeddings,
      "llama3: the context length the frequencies were trained for");
  }

  double resolved_theta() const { return theta.value_or(type == "llama3" ? 500000.0 : 10000.0); }
  double resolved_factor() const { return factor.value_or(type == "llama3" ? 8.0 : 1.0); }
  // Throws std::invalid_argument naming `prefix`.key.
  void validate(const std::string& prefix) const;

  // Hugging Face: rope_theta and rope_scaling (null for plain RoPE), as transformers' LlamaConfig has them.
  double hf_theta() const { return resolved_theta(); }
  nlohmann::json hf_scaling() const;
  // From config.json's rope_theta and rope_scaling ("rope_type" or the older "type"); an unsupported type
  // (dynamic, yarn, longrope, ...) is an error naming it.
  static RopeConfig from_hf(double rope_theta, const nlohmann::json& rope_scaling, const std::string& source);
};

// cos and sin of every (position, head_size) angle, in the activations' dtype: computed once per forward pass
// and shared by every layer.
struct RopeTables {
  haliax::NamedArray cos, sin;  // (position, head_size)
};

// The rotation of queries and keys for one head size (precomputed inverse frequencies).
class RotaryEmbedding {
 public:
  RotaryEmbedding() = default;
  RotaryEmbedding(const RopeConfig& config, const haliax::Axis& HeadSize);
  // The tables for positions start, start + 1, ... of axis Pos.
  RopeTables tables(const haliax::Axis& Pos, int64_t start, at::ScalarType dtype) const;
  // x (..., position, head_size) rotated: x * cos + rotate_half(x) * sin, by name.
  haliax::NamedArray apply(const haliax::NamedArray& x, const RopeTables& t) const;
  // (head_size / 2) f32.
  const at::Tensor& inv_freq() const { return inv_freq_; }
  const haliax::Axis& HeadSize() const { return head_size_; }

 private:
  haliax::Axis head_size_{"head_size", 0};
  at::Tensor inv_freq_;
};

}  // namespace levanter::models
