// Llama, written in haliax: token embeddings without positions, pre-RMSNorm blocks, rotary position
// embeddings, SwiGLU MLP, and one attention function for multi-head, grouped-query and multi-query attention.
// Configuration keys and semantics are Levanter's (levanter/models/llama.py, `model: {type: llama}`).
//
// Attention by name: queries are (kv_heads, q_heads_per_group, position, head_size) and keys/values
// (kv_heads, key_position, head_size). The attention call contracts head_size and attends over key_position;
// q_heads_per_group is simply carried through, so the same code is MHA (num_kv_heads = num_heads), GQA and MQA
// (num_kv_heads = 1). Query head h uses key/value head h / (num_heads / num_kv_heads), as transformers does.
//
// Parameter paths are Hugging Face's: model.embed_tokens.weight, model.layers.0.self_attn.q_proj.weight,
// model.layers.0.mlp.gate_proj.weight, model.layers.0.input_layernorm.weight, model.norm.weight, lm_head.weight
// (absent when tie_word_embeddings). Linear weights are stored (Out, In) as torch.nn.Linear, so export to
// Hugging Face is a reshape per tensor.
#pragma once

#include <optional>
#include <string>

#include "haliax/haliax.h"
#include "levanter/models/lm_model.h"
#include "levanter/models/rotary.h"

namespace levanter::models {

namespace hax = haliax;

struct LlamaConfig : LmConfigBase<LlamaConfig> {
  int64_t seq_len = 2048;
  int64_t hidden_dim = 4096;
  int64_t intermediate_dim = 11008;
  int64_t num_layers = 32;
  int64_t num_heads = 32;
  int64_t num_kv_heads = 32;
  std::optional<int64_t> head_dim;  // null: hidden_dim / num_heads
  std::string activation_function = "silu";
  double initializer_range = 0.02;
  double layer_norm_epsilon = 1e-5;
  bool tie_word_embeddings = false;
  bool upcast_attn = false;
  bool gradient_checkpointing = true;
  bool scan_layers = true;
  bool use_bias = false;
  bool use_layer_norm_weight = true;
  RopeConfig rope;
  // Recorded only (one attention implementation here; the reference checkpoint and tokenizer are hub names).
  std::optional<bool> use_flash_attention;
  std::optional<std::string> attn_backend;
  std::optional<int64_t> flash_attention_block_size;
  std::optional<std::string> reference_checkpoint;
  std::optional<std::string> tokenizer;
  std::optional<int64_t> cross_entropy_block_size;

  template <typename V>
  void fields(V& v) {
    v("seq_len", seq_len, "Maximum sequence length; also the training sequence length");
    v("hidden_dim", hidden_dim, "Width of the residual stream (embed axis)");
    v("intermediate_dim", intermediate_dim, "Width of the SwiGLU MLP (mlp axis)");
    v("num_layers", num_layers, "Number of decoder layers");
    v("num_heads", num_heads, "Query heads");
    v("num_kv_heads", num_kv_heads,
      "Key/value heads: num_heads is multi-head, 1 is multi-query, otherwise grouped-query; must divide num_heads");
    v("head_dim", head_dim, "Size of each head (null: hidden_dim / num_heads)");
    v("activation_function", activation_function, "Gate activation of the MLP: silu, gelu, gelu_new, relu, ...");
    v("initializer_range", initializer_range, "Recorded for Hugging Face export (config.json initializer_range)");
    v("layer_norm_epsilon", layer_norm_epsilon, "RMSNorm epsilon (HF rms_norm_eps)");
    v("tie_word_embeddings", tie_word_embeddings, "Use the token embeddings as the LM head (no lm_head.weight)");
    v("upcast_attn", upcast_attn, "Compute attention scores and softmax in f32 under mixed precision");
    v("gradient_checkpointing", gradient_checkpointing,
      "Recompute each layer's activations in backward to save memory");
    v("scan_layers", scan_layers, "Levanter: scan over stacked layers; layers are always stacked here; recorded only");
    v("use_bias", use_bias, "Biases in the Linear and RMSNorm layers");
    v("use_layer_norm_weight", use_layer_norm_weight, "A learned scale in each RMSNorm");
    v("rope", rope, "Rotary position embeddings");
    v("use_flash_attention", use_flash_attention, "Levanter's flash-attention switch; recorded only");
    v("attn_backend", attn_backend, "Levanter attention backend; all compute the same; recorded only");
    v("flash_attention_block_size", flash_attention_block_size, "Levanter's flash block size; recorded only");
    v("reference_checkpoint", reference_checkpoint, "Levanter's hub checkpoint name for HF conversion; recorded only");
    v("tokenizer", tokenizer, "Levanter's hub tokenizer name for HF conversion; recorded only");
    v("cross_entropy_block_size", cross_entropy_block_size,
      "Positions per block of the fused LM head + cross-entropy (null: automatic; 0: the full logits)");
  }

  void validate() const override;
  std::string model_type() const override { return "llama"; }
  int64_t max_seq_len() const override { return seq_len; }
  std::optional<int64_t> loss_block_size() const override { return cross_entropy_block_size; }
  std::vector<std::string> tensor_parallel_axes() const override { return {"heads", "kv_heads", "mlp", kVocabAxis}; }
  std::unique_ptr<LmHeadModel> build(const hax::Axis& Vocab, const hax::random::Key& key) const override;
  std::unique_ptr<HfAdapter> hf_adapter() const override;  // llama_hf.cpp: LlamaForCausalLM
  double flops_per_token(int64_t vocab_size) const override;
  std::optional<int64_t> parameter_count(int64_t vocab_size) const override;
  std::optional<double> activation_elements_per_token() const override;

  hax::Axis Pos() const { return {"position", seq_len}; }
  hax::Axis KeyPos() const { return Pos().alias("key_position"); }
  hax::Axis Embed() const { return {"embed", hidden_dim}; }
  hax::Axis Heads() const { return {"heads", num_heads}; }
  hax::Axis KVHeads() const { return {"kv_heads", num_kv_heads}; }
  hax::Axis QHeadsPerGroup() const { return {"q_heads_per_group", num_heads / num_kv_heads}; }
  hax::Axis HeadSize() const { return {"head_size", head_dim.value_or(hidden_dim / num_heads)}; }
  hax::Axis Layers() const { return {"layers", num_layers}; }
  hax::Axis Mlp() const { return {"mlp", intermediate_dim}; }
};

// x (..., position, embed) -> (..., position, embed).
struct LlamaAttention {
  hax::nn::Linear q_proj;  // embed -> (kv_heads, q_heads_per_group, head_size)
  hax::nn::Linear k_proj;  // embed -> (kv_heads, head_size)
  hax::nn::Linear v_proj;  // embed -> (kv_heads, head_size)
  hax::nn::Linear o_proj;  // (heads, head_size) -> embed
  RotaryEmbedding rotary;
  hax::Axis Heads{"heads", 0};
  std::optional<at::ScalarType> attention_dtype;  // f32 with upcast_attn

  static LlamaAttention init(const LlamaConfig& config, const hax::random::Key& key);
  // mask (position, key_position), true = attend; rope: the tables of x's positions.
  hax::NamedArray operator()(const hax::NamedArray& x, const hax::NamedArray& mask, const RopeTables& rope) const;
  // Decoding: x (batch, position, embed) at positions [start, start + |position|); their rotated keys and values
  // go into k_cache, v_cache (batch, kv_heads, capacity, head_size) and are attended to with everything before.
  hax::NamedArray decode(const hax::NamedArray& x, const RopeTables& rope, at::Tensor& k_cache, at::Tensor& v_cache,
                         int64_t start) const;
  void visit(hax::nn::ParamVisitor& v) {
    v("q_proj", q_proj);
    v("k_proj", k_proj);
    v("v_proj", v_proj);
    v("o_proj", o_proj);
  }

 private:
  // (..., position, embed) -> q (..., kv_heads, q_heads_per_group, position, head_size), k and v
  // (..., kv_heads, position, head_size), q and k rotated.
  std::tuple<hax::NamedArray, hax::NamedArray, hax::NamedArray> qkv(const hax::NamedArray& x,
                                                                    const RopeTables& rope) const;
  hax::NamedArray attend(const hax::NamedArray& q, const hax::NamedArray& k, const hax::NamedArray& v,
                         const hax::NamedArray& mask, at::ScalarType dtype) const;
};

// SwiGLU: down_proj(act(gate_proj(x)) * up_proj(x)).
struct LlamaMlp {
  hax::nn::Linear gate_proj;  // embed -> mlp
  hax::nn::Linear up_proj;    // embed -> mlp
  hax::nn::Linear down_proj;  // mlp -> embed
  hax::nn::ActivationFunction act = nullptr;

  static LlamaMlp init(const LlamaConfig& config, const hax::random::Key& key);
  hax::NamedArray operator()(const hax::NamedArray& x) const { return down_proj(act(gate_proj(x)) * up_proj(x)); }
  void visit(hax::nn::ParamVisitor& v) {
    v("gate_proj", gate_proj);
    v("up_proj", up_proj);
    v("down_proj", down_proj);
  }
};

struct LlamaDecoderLayer {
  LlamaAttention self_attn;
  LlamaMlp mlp;
  hax::nn::RmsNorm input_layernorm;
  hax::nn::RmsNorm post_attention_layernorm;

  static LlamaDecoderLayer init(const LlamaConfig& config, const hax::random::Key& key);
  hax::NamedArray operator()(const hax::NamedArray& x, const hax::NamedArray& mask, const RopeTables& rope) const {
    hax::NamedArray h = x + self_attn(input_layernorm(x), mask, rope);
    return h + mlp(post_attention_layernorm(h));
  }
  hax::NamedArray decode(const hax::NamedArray& x, const RopeTables& rope, at::Tensor& k_cache, at::Tensor& v_cache,
                         int64_t start) const {
    hax::NamedArray h = x + self_attn.decode(input_layernorm(x), rope, k_cache, v_cache, start);
    return h + mlp(post_attention_layernorm(h));
  }
  void visit(hax::nn::ParamVisitor& v) {
    v("self_attn", self_attn);
    v("mlp", mlp);
    v("input_layernorm", input_layernorm);
    v("post_attention_layernorm", post_attention_layernorm);
  }
};

class LlamaLMHeadModel : public LmHeadModel {
 public:
  LlamaConfig config_;
  hax::Axis vocab;
  hax::nn::Embedding embed_tokens;  // (vocab, embed)
  hax::nn::Stacked<LlamaDecoderLayer> layers;
  hax::nn::RmsNorm norm;
  std::optional<hax::nn::Linear> lm_head_;  // embed -> vocab; absent when tied
  RotaryEmbedding rotary;                   // the tables of a forward pass (no parameters)

  LlamaLMHeadModel(LlamaConfig config, hax::Axis Vocab, hax::nn::Embedding embed_tokens,
                   hax::nn::Stacked<LlamaDecoderLayer> layers, hax::nn::RmsNorm norm,
                   std::optional<hax::nn::Linear> lm_head);

  // Levanter's init: Linear weights ~ truncated normal / sqrt(fan_in), embeddings Haliax's default, norms 1.
  static LlamaLMHeadModel init(const hax::Axis& Vocab, const LlamaConfig& config, const hax::random::Key& key);

  const LmConfig& config() const override { return config_; }
  hax::Axis Vocab() const override { return vocab; }
  hax::Axis Pos() const override { return config_.Pos(); }
  hax::Axis Embed() const override { return config_.Embed(); }
  hax::NamedArray activations(const hax::NamedArray& input_ids, const ForwardOptions& opts = {}) const override;
  const hax::NamedArray& lm_head() const override { return lm_head_ ? lm_head_->weight : embed_tokens.weight; }
  std::unique_ptr<LmHeadModel> clone() const override { return std::make_unique<LlamaLMHeadModel>(*this); }
  std::unique_ptr<DecodeCache> start_decode(int64_t batch, int64_t max_len) const override;
  hax::NamedArray decode(const hax::NamedArray& input_ids, DecodeCache& cache) const override;
  void visit(hax::nn::ParamVisitor& v) override {
    hax::nn::ParamVisitor m = v.scope("model");
    m("embed_tokens", embed_tokens);
    m("layers", layers);
    m("norm", norm);
    v("lm_head", lm_head_);
  }
};

}  // namespace levanter::models
