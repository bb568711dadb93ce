// The Backpack language model (Hewitt, Thickstun, Manning, Liang 2023, "Backpack Language Models"), as Levanter
// builds it (levanter/models/backpack.py): every token of the vocabulary has `num_senses` sense vectors, computed
// from its embedding by a feed-forward sense network; a GPT-2 transformer over the sequence (the contextualization
// network) gives, per sense, non-negative weights over the earlier positions (softmax attention weights without
// values); the output at a position is the weighted sum of the sense vectors of the positions it attends to, summed
// over senses and divided by num_senses, scored against the (tied) token embeddings. Because the output is linear in
// the sense vectors, each sense can be read on its own: sense_logits() gives, for a token, the vocabulary scores
// each of its senses contributes (what `levanter senses` prints).
//
// Keys: Levanter's BackpackConfig = Gpt2Config's keys + num_senses (16) + sense_intermediate_scale (4).
// Parameter paths are those of Levanter's Hugging Face export: backpack.gpt2_model.{wte,wpe,h.N.*,ln_f},
// backpack.sense_network.{ln,block.{ln_1,ln_2,mlp.c_fc,mlp.c_proj},final_mlp.{c_fc,c_proj}},
// backpack.sense_weight_net.c_attn.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "haliax/haliax.h"
#include "levanter/models/gpt2/gpt2.h"
#include "levanter/models/lm_model.h"

namespace levanter::models {

namespace hax = haliax;

struct BackpackConfig : LmConfigBase<BackpackConfig> {
  Gpt2Config gpt2;  // the contextualization network and the shared keys (hidden_dim, seq_len, dropouts, ...)
  int64_t num_senses = 16;
  int64_t sense_intermediate_scale = 4;

  template <typename V>
  void fields(V& v) {
    gpt2.fields(v);
    v("num_senses", num_senses, "Sense vectors per vocabulary item; must divide hidden_dim");
    v("sense_intermediate_scale", sense_intermediate_scale,
      "Width of the sense network's last MLP as a multiple of hidden_dim");
  }

  void validate() const override;
  std::string model_type() const override { return "backpack"; }
  int64_t max_seq_len() const override { return gpt2.seq_len; }
  bool uses_dropout() const override { return gpt2.uses_dropout(); }
  std::optional<int64_t> loss_block_size() const override { return gpt2.cross_entropy_block_size; }
  std::unique_ptr<LmHeadModel> build(const hax::Axis& Vocab, const hax::random::Key& key) const override;
  double flops_per_token(int64_t vocab_size) const override;
  std::optional<int64_t> parameter_count(int64_t vocab_size) const override;
  std::optional<double> activation_elements_per_token() const override;

  hax::Axis Senses() const { return {"senses", num_senses}; }
  hax::Axis SenseHeadDim() const { return {"head_dim", gpt2.hidden_dim / num_senses}; }
  hax::Axis SenseIntermediate() const { return {"concat_senses", sense_intermediate_scale * gpt2.hidden_dim}; }
};

// x (..., In) -> act(x . c_fc) . c_proj (..., Out).
struct BackpackMlp {
  hax::nn::Linear c_fc;
  hax::nn::Linear c_proj;
  hax::nn::ActivationFunction act = nullptr;
  hax::NamedArray operator()(const hax::NamedArray& x) const { return c_proj(act(c_fc(x))); }
  void visit(hax::nn::ParamVisitor& v) {
    v("c_fc", c_fc);
    v("c_proj", c_proj);
  }
};

// A post-LayerNorm residual MLP block without token mixing (the sense network's body).
struct NoMixBlock {
  hax::nn::LayerNorm ln_1;
  hax::nn::LayerNorm ln_2;
  BackpackMlp mlp;
  hax::nn::Dropout resid_dropout;
  hax::NamedArray operator()(const hax::NamedArray& hidden, const hax::NamedArray& residual,
                             const std::optional<hax::random::Key>& key) const;
  void visit(hax::nn::ParamVisitor& v) {
    v("ln_1", ln_1);
    v("ln_2", ln_2);
    v("mlp", mlp);
  }
};

// Token embeddings (..., embed) -> sense vectors (..., senses, embed).
struct BackpackSenses {
  NoMixBlock block;
  hax::nn::LayerNorm ln;
  BackpackMlp final_mlp;
  hax::NamedArray sense_embed(const hax::NamedArray& input_embeds, const std::optional<hax::random::Key>& key) const;
  void visit(hax::nn::ParamVisitor& v) {
    v("block", block);
    v("ln", ln);
    v("final_mlp", final_mlp);
  }
};

// Causal attention weights per sense, no values: x (..., position, embed) -> (..., senses, position, key_position).
struct WeightsOnlyAttention {
  hax::nn::Linear c_attn;  // embed -> (qk, senses, head_dim)
  double attn_pdrop = 0.0;
  std::optional<at::ScalarType> attention_dtype;
  hax::NamedArray operator()(const hax::NamedArray& x, const hax::NamedArray& mask,
                             const std::optional<hax::random::Key>& key) const;
  void visit(hax::nn::ParamVisitor& v) { v("c_attn", c_attn); }
};

class BackpackLMHeadModel : public LmHeadModel {
 public:
  BackpackConfig config_;
  hax::Axis vocab;
  Gpt2Embeddings embeddings;
  Gpt2Transformer transformer;
  BackpackSenses sense_net;
  WeightsOnlyAttention kq_selfattention;

  static BackpackLMHeadModel init(const hax::Axis& Vocab, const BackpackConfig& config, const hax::random::Key& key);

  const LmConfig& config() const override { return config_; }
  hax::Axis Vocab() const override { return vocab; }
  hax::Axis Pos() const override { return config_.gpt2.Pos(); }
  hax::Axis Embed() const override { return config_.gpt2.Embed(); }
  hax::NamedArray activations(const hax::NamedArray& input_ids, const ForwardOptions& opts = {}) const override;
  const hax::NamedArray& lm_head() const override { return embeddings.wte.weight; }
  std::unique_ptr<LmHeadModel> clone() const override { return std::make_unique<BackpackLMHeadModel>(*this); }
  // Sampling: the cache keeps the ids so far and each call recomputes the sequence (the contextualization weights of
  // every position change with the whole prefix's hidden states only causally, so this equals the full pass).
  std::unique_ptr<DecodeCache> start_decode(int64_t batch, int64_t max_len) const override;
  hax::NamedArray decode(const hax::NamedArray& input_ids, DecodeCache& cache) const override;

  // The sense vectors of `ids` (..., ) -> (..., senses, embed), and what each contributes to the next-token scores:
  // (..., senses, vocab) = sense vector . token embeddings. Inference (no dropout).
  hax::NamedArray sense_vectors(const hax::NamedArray& ids) const;
  hax::NamedArray sense_logits(const hax::NamedArray& ids) const;

  void visit(hax::nn::ParamVisitor& v) override {
    hax::nn::ParamVisitor b = v.scope("backpack");
    hax::nn::ParamVisitor g = b.scope("gpt2_model");
    embeddings.visit(g);
    transformer.visit(g);
    b("sense_network", sense_net);
    b("sense_weight_net", kq_selfattention);
  }
};

}  // namespace levanter::models
