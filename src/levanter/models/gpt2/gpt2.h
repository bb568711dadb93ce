// GPT-2, written in haliax: learned positions, pre-LayerNorm blocks, fused qkv attention, GELU(tanh) MLP,
// tied LM head, biases. Configuration keys and semantics are Levanter's (levanter/models/gpt2.py), including
// the Mistral stability tricks (scale_attn_by_inverse_layer_idx, upcast_attn) and activation recompute
// (gradient_checkpointing). The modules mirror Levanter's: Gpt2Attention, Gpt2Mlp and Gpt2Block each have a
// static init(config, key) and a call operator; the block is four named steps.
//
// Parameter paths are Hugging Face GPT-2's: transformer.wte.weight, transformer.h.0.attn.c_attn.weight, ...
// Linear weights are stored (In, Out) like HF's Conv1D, so export to HF is a reshape per tensor.
#pragma once

#include <optional>
#include <string>

#include "haliax/haliax.h"
#include "levanter/models/lm_model.h"

namespace levanter::models {

namespace hax = haliax;

struct Gpt2Config : LmConfigBase<Gpt2Config> {
  int64_t seq_len = 1024;
  int64_t hidden_dim = 768;
  int64_t num_layers = 12;
  int64_t num_heads = 12;
  int64_t mlp_scale = 4;
  double initializer_range = 0.02;
  double embed_pdrop = 0.0;
  double resid_pdrop = 0.0;
  double attn_pdrop = 0.0;
  double layer_norm_epsilon = 1e-5;
  std::string activation_function = "gelu_new";
  bool scale_attn_by_inverse_layer_idx = false;
  bool upcast_attn = false;
  bool gradient_checkpointing = true;
  bool use_bias = true;
  // Levanter's attention implementation choice. Every backend computes the same function; here there is one
  // implementation (ATen kernels on CPU), so the value is validated and recorded but selects nothing.
  std::optional<std::string> attn_backend;
  std::optional<bool> use_flash_attention;
  std::optional<int64_t> flash_attention_block_size;
  // Positions per block of the fused LM head + loss (null: automatic; 0: materialise the full logits).
  std::optional<int64_t> cross_entropy_block_size;

  template <typename V>
  void fields(V& v) {
    v("seq_len", seq_len, "Maximum sequence length (number of learned positions); also the training sequence length");
    v("hidden_dim", hidden_dim, "Width of the residual stream (embed axis)");
    v("num_layers", num_layers, "Number of transformer blocks");
    v("num_heads", num_heads, "Attention heads; hidden_dim must be divisible by it");
    v("mlp_scale", mlp_scale, "MLP width as a multiple of hidden_dim");
    v("initializer_range", initializer_range, "Std of the normal init of embeddings (positions use half)");
    v("embed_pdrop", embed_pdrop, "Dropout on the embeddings");
    v("resid_pdrop", resid_pdrop, "Dropout on each residual branch");
    v("attn_pdrop", attn_pdrop, "Dropout on the attention weights");
    v("layer_norm_epsilon", layer_norm_epsilon, "LayerNorm epsilon");
    v("activation_function", activation_function, "MLP activation: gelu_new (tanh GELU), gelu, relu, silu, quick_gelu");
    v("scale_attn_by_inverse_layer_idx", scale_attn_by_inverse_layer_idx, "Mistral: divide queries by layer index + 1");
    v("upcast_attn", upcast_attn, "Mistral: compute attention scores and softmax in f32 under mixed precision");
    v("gradient_checkpointing", gradient_checkpointing,
      "Recompute each block's activations in backward to save memory");
    v("use_bias", use_bias, "Biases in Linear and LayerNorm layers");
    v("attn_backend", attn_backend,
      "Levanter attention backend (default, jax_flash, splash, vanilla, ...): all compute the same; recorded only");
    v("use_flash_attention", use_flash_attention, "Levanter's older flash-attention switch; recorded only");
    v("flash_attention_block_size", flash_attention_block_size, "Levanter's flash block size; recorded only");
    v("cross_entropy_block_size", cross_entropy_block_size,
      "Positions per block of the fused LM head + cross-entropy (null: automatic, ~256 MB of f32 logits per block; "
      "0: compute the full logits, as Levanter's null)");
  }

  // Checks divisibility and ranges; throws with the key name.
  void validate() const override;
  std::string model_type() const override { return "gpt2"; }
  int64_t max_seq_len() const override { return seq_len; }
  bool uses_dropout() const override { return embed_pdrop > 0 || resid_pdrop > 0 || attn_pdrop > 0; }
  std::vector<std::string> tensor_parallel_axes() const override { return {"heads", "mlp", kVocabAxis}; }
  std::optional<int64_t> loss_block_size() const override { return cross_entropy_block_size; }
  std::unique_ptr<LmHeadModel> build(const hax::Axis& Vocab, const hax::random::Key& key) const override;
  std::unique_ptr<HfAdapter> hf_adapter() const override;  // gpt2_hf.cpp: GPT2LMHeadModel

  hax::Axis Pos() const { return {"position", seq_len}; }
  hax::Axis KeyPos() const { return Pos().alias("key_position"); }
  hax::Axis Embed() const { return {"embed", hidden_dim}; }
  hax::Axis Heads() const { return {"heads", num_heads}; }
  hax::Axis HeadSize() const { return {"head_size", hidden_dim / num_heads}; }
  hax::Axis Layers() const { return {"layers", num_layers}; }
  hax::Axis Mlp() const { return {"mlp", hidden_dim * mlp_scale}; }

  // Training FLOPs per token are 3x this (Levanter's lm_flops_per_token: forward matmul FLOPs per token).
  double flops_per_token(int64_t vocab_size) const override;
  std::optional<int64_t> parameter_count(int64_t vocab_size) const override;
  std::optional<double> activation_elements_per_token() const override;
  double block_activation_elements_per_token() const;  // one block's share of the above (Backpack reuses it)
};

// Causal self-attention: x (..., position, embed) -> (..., position, embed).
struct Gpt2Attention {
  hax::nn::Linear c_attn;  // embed -> (qkv, heads, head_size)
  hax::nn::Linear c_proj;  // (heads, head_size) -> embed
  // Resolved from the config at init.
  double attn_pdrop = 0.0;
  bool scale_attn_by_inverse_layer_idx = false;
  std::optional<at::ScalarType> attention_dtype;  // f32 with upcast_attn

  static Gpt2Attention init(const Gpt2Config& config, const hax::random::Key& key);
  // mask (position, key_position), true = attend; layer_idx for the Mistral scaling; key: dropout (absent = none).
  hax::NamedArray operator()(const hax::NamedArray& x, const hax::NamedArray& mask, int64_t layer_idx,
                             const std::optional<hax::random::Key>& key) const;
  // Decoding: x (batch, position, embed) at positions [start, start + |position|); their keys and values are
  // written into k_cache, v_cache (batch, heads, capacity, head_size) and attended to with everything before.
  hax::NamedArray decode(const hax::NamedArray& x, at::Tensor& k_cache, at::Tensor& v_cache, int64_t start,
                         int64_t layer_idx) const;
  void visit(hax::nn::ParamVisitor& v) {
    v("c_attn", c_attn);
    v("c_proj", c_proj);
  }
};

// x (..., embed) -> act(x . c_fc) . c_proj (..., embed).
struct Gpt2Mlp {
  hax::nn::Linear c_fc;                       // embed -> mlp
  hax::nn::Linear c_proj;                     // mlp -> embed
  hax::nn::ActivationFunction act = nullptr;  // resolved from activation_function at init

  static Gpt2Mlp init(const Gpt2Config& config, const hax::random::Key& key);
  hax::NamedArray operator()(const hax::NamedArray& x) const { return c_proj(act(c_fc(x))); }
  void visit(hax::nn::ParamVisitor& v) {
    v("c_fc", c_fc);
    v("c_proj", c_proj);
  }
};

// One pre-LayerNorm transformer block.
struct Gpt2Block {
  hax::nn::LayerNorm ln_1;
  Gpt2Attention attn;
  hax::nn::LayerNorm ln_2;
  Gpt2Mlp mlp;
  hax::nn::Dropout resid_dropout;

  static Gpt2Block init(const Gpt2Config& config, const hax::random::Key& key);
  // x (..., position, embed) -> (..., position, embed).
  hax::NamedArray operator()(const hax::NamedArray& x, const hax::NamedArray& mask, int64_t layer_idx,
                             const std::optional<hax::random::Key>& key) const;
  hax::NamedArray decode(const hax::NamedArray& x, at::Tensor& k_cache, at::Tensor& v_cache, int64_t start,
                         int64_t layer_idx) const;
  void visit(hax::nn::ParamVisitor& v) {
    v("ln_1", ln_1);
    v("attn", attn);
    v("ln_2", ln_2);
    v("mlp", mlp);
  }
};

// Token and position embeddings (wte is also the tied LM head).
struct Gpt2Embeddings {
  hax::nn::Embedding wte;  // (vocab, embed)
  hax::nn::Embedding wpe;  // (position, embed)
  hax::nn::Dropout dropout;

  static Gpt2Embeddings init(const hax::Axis& Vocab, const Gpt2Config& config, const hax::random::Key& key);
  // input_ids (..., position) -> (..., position, embed).
  // Positions start at `start` (decoding continues a sequence).
  hax::NamedArray embed(const hax::NamedArray& input_ids, const std::optional<hax::random::Key>& key,
                        int64_t start = 0) const;
  void visit(hax::nn::ParamVisitor& v) {
    v("wte", wte);
    v("wpe", wpe);
  }
};

// The stack of blocks and the final LayerNorm.
struct Gpt2Transformer {
  hax::nn::Stacked<Gpt2Block> h;
  hax::nn::LayerNorm ln_f;

  static Gpt2Transformer init(const Gpt2Config& config, const hax::random::Key& key);
  hax::NamedArray operator()(const hax::NamedArray& x, const hax::NamedArray& mask,
                             const std::optional<hax::random::Key>& key) const;
  void visit(hax::nn::ParamVisitor& v) {
    v("h", h);
    v("ln_f", ln_f);
  }
};

class Gpt2LMHeadModel : public LmHeadModel {
 public:
  Gpt2Config config_;
  hax::Axis vocab;
  Gpt2Embeddings embeddings;
  Gpt2Transformer transformer;

  Gpt2LMHeadModel(Gpt2Config config, hax::Axis Vocab, Gpt2Embeddings embeddings, Gpt2Transformer transformer);
  // Levanter's init: Linear weights ~ truncated normal / sqrt(fan_in), token embeddings ~ truncated normal *
  // initializer_range, positions * initializer_range / 2, norms = 1 and biases = 0.
  static Gpt2LMHeadModel init(const hax::Axis& Vocab, const Gpt2Config& config, const hax::random::Key& key);

  const LmConfig& config() const override { return config_; }
  hax::Axis Vocab() const override { return vocab; }
  hax::Axis Pos() const override { return config_.Pos(); }
  hax::Axis Embed() const override { return config_.Embed(); }
  hax::NamedArray activations(const hax::NamedArray& input_ids, const ForwardOptions& opts = {}) const override;
  const hax::NamedArray& lm_head() const override { return embeddings.wte.weight; }
  std::unique_ptr<LmHeadModel> clone() const override { return std::make_unique<Gpt2LMHeadModel>(*this); }
  std::unique_ptr<DecodeCache> start_decode(int64_t batch, int64_t max_len) const override;
  hax::NamedArray decode(const hax::NamedArray& input_ids, DecodeCache& cache) const override;
  // Hugging Face's paths: transformer.wte, transformer.wpe, transformer.h.<i>.*, transformer.ln_f.
  void visit(hax::nn::ParamVisitor& v) override {
    hax::nn::ParamVisitor t = v.scope("transformer");
    embeddings.visit(t);
    transformer.visit(t);
  }
};

}  // namespace levanter::models
