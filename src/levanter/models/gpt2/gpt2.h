// GPT-2, written in haliax: learned positions, pre-LayerNorm blocks, fused qkv attention, GELU(tanh) MLP,
// tied LM head, biases. Configuration keys and semantics are Levanter's (levanter/models/gpt2.py), including
// the Mistral stability tricks (scale_attn_by_inverse_layer_idx, upcast_attn) and activation recompute
// (gradient_checkpointing).
//
// Parameter paths are Hugging Face GPT-2's: transformer.wte.weight, transformer.h.0.attn.c_attn.weight, ...
// Linear weights are stored (In, Out) like HF's Conv1D, so export to HF is a reshape per tensor.
#pragma once

#include <optional>
#include <string>

#include "haliax/haliax.h"
#include "levanter/models/lm_loss.h"

namespace levanter::models {

namespace hax = haliax;

struct Gpt2Config {
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
    v("gradient_checkpointing", gradient_checkpointing, "Recompute each block's activations in backward to save memory");
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
  void validate() const;

  hax::Axis Pos() const { return {"position", seq_len}; }
  hax::Axis KeyPos() const { return Pos().alias("key_position"); }
  hax::Axis Embed() const { return {"embed", hidden_dim}; }
  hax::Axis Heads() const { return {"heads", num_heads}; }
  hax::Axis HeadSize() const { return {"head_size", hidden_dim / num_heads}; }
  hax::Axis Layers() const { return {"layers", num_layers}; }
  hax::Axis Mlp() const { return {"mlp", hidden_dim * mlp_scale}; }

  // Training FLOPs per token are 3x this (Levanter's lm_flops_per_token: forward matmul FLOPs per token).
  double flops_per_token(int64_t vocab_size) const;
};

// Apply the configured activation function.
hax::NamedArray gpt2_activation(const std::string& name, const hax::NamedArray& x);

struct Gpt2Attention {
  hax::nn::Linear c_attn;  // embed -> (qkv, heads, head_size)
  hax::nn::Linear c_proj;  // (heads, head_size) -> embed
  void visit(hax::nn::ParamVisitor& v) {
    v("c_attn", c_attn);
    v("c_proj", c_proj);
  }
};

struct Gpt2Mlp {
  hax::nn::Linear c_fc;    // embed -> mlp
  hax::nn::Linear c_proj;  // mlp -> embed
  void visit(hax::nn::ParamVisitor& v) {
    v("c_fc", c_fc);
    v("c_proj", c_proj);
  }
};

struct Gpt2Block {
  hax::nn::LayerNorm ln_1;
  Gpt2Attention attn;
  hax::nn::LayerNorm ln_2;
  Gpt2Mlp mlp;

  static Gpt2Block init(const Gpt2Config& config, const hax::random::Key& key);
  void visit(hax::nn::ParamVisitor& v) {
    v("ln_1", ln_1);
    v("attn", attn);
    v("ln_2", ln_2);
    v("mlp", mlp);
  }
};

// Per-call options: dropout keys (absent = inference), compute dtype.
struct ForwardOptions {
  std::optional<hax::random::Key> key;  // dropout key; nullopt = no dropout
};

struct Gpt2LMHeadModel {
  Gpt2Config config;
  hax::Axis Vocab;
  hax::nn::Embedding wte;  // (vocab, embed); also the LM head (tied)
  hax::nn::Embedding wpe;  // (position, embed)
  hax::nn::Stacked<Gpt2Block> h;
  hax::nn::LayerNorm ln_f;

  // Levanter's init: Linear weights ~ truncated normal / sqrt(fan_in), token embeddings ~ truncated normal *
  // initializer_range, positions * initializer_range / 2, norms = 1 and biases = 0.
  static Gpt2LMHeadModel init(const hax::Axis& Vocab, const Gpt2Config& config, const hax::random::Key& key);

  // input_ids (..., position) -> final hidden states (..., position, embed).
  hax::NamedArray activations(const hax::NamedArray& input_ids, const ForwardOptions& opts = {}) const;
  // input_ids (..., position) -> logits (..., position, vocab).
  hax::NamedArray operator()(const hax::NamedArray& input_ids, const ForwardOptions& opts = {}) const;
  const hax::NamedArray& lm_head() const { return wte.weight; }
  // Levanter's compute_next_token_loss: the next-token loss of input_ids (f32), through the fused LM head +
  // cross-entropy unless config.cross_entropy_block_size is 0. `loss.block_size` is taken from the config.
  hax::NamedArray compute_next_token_loss(const hax::NamedArray& input_ids, const ForwardOptions& opts = {},
                                          LossOptions loss = {}) const;

  void visit(hax::nn::ParamVisitor& v) {
    hax::nn::ParamVisitor t = v.scope("transformer");
    t("wte", wte);
    t("wpe", wpe);
    t("h", h);
    t("ln_f", ln_f);
  }
};

}  // namespace levanter::models
