#include "levanter/models/backpack/backpack.h"

#include <ATen/ATen.h>

#include <stdexcept>

namespace levanter::models {

using hax::Axis;
using hax::NamedArray;
namespace nn = haliax::nn;
using Key = haliax::random::Key;
using OptKey = std::optional<Key>;

namespace {

std::vector<OptKey> split_opt(const OptKey& key, int64_t n) {
  std::vector<OptKey> out(static_cast<size_t>(n));
  if (key) {
    auto keys = key->split(n);
    for (int64_t i = 0; i < n; ++i) out[i] = keys[i];
  }
  return out;
}

NamedArray apply_dropout(const nn::Dropout& d, const NamedArray& x, const OptKey& key) { return key ? d(x, key) : x; }

nn::LayerNormOptions layer_norm(const Gpt2Config& c) {
  // Levanter's sense network always has LayerNorm biases.
  return nn::LayerNormOptions().set_eps(c.layer_norm_epsilon).set_use_bias(true);
}

BackpackMlp mlp_init(const Gpt2Config& c, const hax::AxisSpec& In, const hax::AxisSpec& Mid, const hax::AxisSpec& Out,
                     const Key& key) {
  auto [k_fc, k_proj] = key.split2();
  auto o = nn::LinearOptions().set_use_bias(c.use_bias).set_out_first(false);
  return BackpackMlp{nn::Linear::init(In, Mid, k_fc, o), nn::Linear::init(Mid, Out, k_proj, o),
                     nn::activation_function(c.activation_function)};
}

// The ids of every position decoded so far (each decode call recomputes the whole sequence).
struct BackpackDecodeCache : DecodeCache {
  at::Tensor ids;  // (batch, capacity), int64
};

}  // namespace

void BackpackConfig::validate() const {
  gpt2.validate();
  if (num_senses <= 0) {
    throw std::invalid_argument("model.num_senses: must be positive, got " + std::to_string(num_senses));
  }
  if (gpt2.hidden_dim % num_senses != 0) {
    throw std::invalid_argument("model.num_senses: hidden_dim (" + std::to_string(gpt2.hidden_dim) +
                                ") must be divisible by num_senses (" + std::to_string(num_senses) + ")");
  }
  if (sense_intermediate_scale <= 0) {
    throw std::invalid_argument("model.sense_intermediate_scale: must be positive, got " +
                                std::to_string(sense_intermediate_scale));
  }
}

double BackpackConfig::flops_per_token(int64_t vocab_size) const {
  // The contextualization network and the LM head as GPT-2 (Levanter's BackpackConfig inherits exactly this), plus
  // what GPT-2 does not have: the sense network, the sense-weight projection and the weighted sum.
  const double E = static_cast<double>(gpt2.hidden_dim), T = static_cast<double>(gpt2.seq_len);
  const double S = static_cast<double>(num_senses), M = E * static_cast<double>(gpt2.mlp_scale);
  const double SI = E * static_cast<double>(sense_intermediate_scale);
  const double sense_block = 2.0 * 2.0 * E * M;
  const double final_mlp = 2.0 * E * SI + 2.0 * SI * S * E;
  const double kq = 2.0 * E * 2.0 * E;
  const double weights = 2.0 * T * E + 3.0 * T * S;  // q . k over head_dim per sense, softmax (as Levanter counts)
  const double weighted_sum = 2.0 * T * S * E;
  return gpt2.flops_per_token(vocab_size) + sense_block + final_mlp + kq + weights + weighted_sum;
}

std::optional<int64_t> BackpackConfig::parameter_count(int64_t vocab_size) const {
  const Gpt2Config& c = gpt2;
  const double d = static_cast<double>(c.hidden_dim), M = d * static_cast<double>(c.mlp_scale);
  const double S = static_cast<double>(num_senses), SI = d * static_cast<double>(sense_intermediate_scale);
  const double b = c.use_bias ? 1.0 : 0.0;
  // The sense network (its LayerNorms always have biases): a block without attention, a LayerNorm, an MLP to the
  // senses; and the sense-weight projection (query and key per sense).
  const double sense_net =
      2.0 * (2.0 * d) + (d * M + b * M) + (M * d + b * d) + 2.0 * d + (d * SI + b * SI) + (SI * S * d + b * S * d);
  const double kq = d * 2.0 * d + b * 2.0 * d;
  return saturating_count(static_cast<double>(*c.parameter_count(vocab_size)) + sense_net + kq);
}

std::optional<double> BackpackConfig::activation_elements_per_token() const {
  // GPT-2's, plus the sense network per token (a block without attention, the MLP to the senses: S x d outputs),
  // the sense weights and their softmax (2 x senses x positions) and the weighted sum.
  const Gpt2Config& c = gpt2;
  const double d = static_cast<double>(c.hidden_dim), M = d * static_cast<double>(c.mlp_scale);
  const double S = static_cast<double>(num_senses), SI = d * static_cast<double>(sense_intermediate_scale);
  return *c.activation_elements_per_token() + 6.0 * d + 2.0 * M + 2.0 * SI + S * d + 2.0 * d +
         2.0 * S * static_cast<double>(c.seq_len) + d;
}

std::unique_ptr<LmHeadModel> BackpackConfig::build(const Axis& Vocab, const Key& key) const {
  return std::make_unique<BackpackLMHeadModel>(BackpackLMHeadModel::init(Vocab, *this, key));
}

NamedArray NoMixBlock::operator()(const NamedArray& hidden, const NamedArray& residual, const OptKey& key) const {
  auto k = split_opt(key, 2);
  NamedArray r = apply_dropout(resid_dropout, hidden, k[0]) + residual;
  NamedArray h = ln_1(r);
  r = apply_dropout(resid_dropout, mlp(h), k[1]) + r;
  return ln_2(r);
}

NamedArray BackpackSenses::sense_embed(const NamedArray& input_embeds, const OptKey& key) const {
  NamedArray h = ln(input_embeds);
  h = block(h, input_embeds, key);
  return final_mlp(h);  // (..., senses, embed)
}

NamedArray WeightsOnlyAttention::operator()(const NamedArray& x, const NamedArray& mask, const OptKey& key) const {
  std::vector<NamedArray> qk = hax::unbind(c_attn(x), "qk");
  NamedArray q = qk[0];
  NamedArray k = hax::rename(qk[1], {{"position", "key_position"}});
  nn::AttentionOptions o;
  o.mask = mask;
  o.attention_dtype = attention_dtype;
  o.dropout = attn_pdrop;
  o.key = key;
  return nn::dot_product_attention_weights(nn::Contract("head_dim"), nn::AttendOver("key_position"), q, k, o);
}

BackpackLMHeadModel BackpackLMHeadModel::init(const Axis& Vocab, const BackpackConfig& config, const Key& key) {
  config.validate();
  const Gpt2Config& c = config.gpt2;
  std::vector<Key> k = key.split(3);  // transformer, embeddings (also the sense network, as Levanter), attention
  BackpackLMHeadModel m;
  m.config_ = config;
  m.vocab = Vocab;
  m.transformer = Gpt2Transformer::init(c, k[0]);
  m.embeddings = Gpt2Embeddings::init(Vocab, c, k[1]);
  auto [k_block, k_mlp] = k[1].split2();
  m.sense_net = BackpackSenses{
      NoMixBlock{nn::LayerNorm::init({c.Embed()}, layer_norm(c)), nn::LayerNorm::init({c.Embed()}, layer_norm(c)),
                 mlp_init(c, {c.Embed()}, {c.Mlp()}, {c.Embed()}, k_block.split(1)[0]), nn::Dropout{c.resid_pdrop}},
      nn::LayerNorm::init({c.Embed()}, layer_norm(c)),
      mlp_init(c, {c.Embed()}, {config.SenseIntermediate()}, {config.Senses(), c.Embed()}, k_mlp)};
  m.kq_selfattention.c_attn =
      nn::Linear::init({c.Embed()}, {Axis("qk", 2), config.Senses(), config.SenseHeadDim()}, k[2].split2().first,
                       nn::LinearOptions().set_use_bias(c.use_bias).set_out_first(true));
  m.kq_selfattention.attn_pdrop = c.attn_pdrop;
  if (c.upcast_attn) m.kq_selfattention.attention_dtype = at::kFloat;
  return m;
}

NamedArray BackpackLMHeadModel::activations(const NamedArray& input_ids, const ForwardOptions& opts) const {
  auto k = split_opt(opts.key, 4);  // embed, transformer, senses, weights (as Levanter)
  const Axis Pos = input_ids.resolve_axis("position");
  const NamedArray mask = nn::causal_mask(Pos, Pos.alias("key_position"));
  // Contextualization: GPT-2 over the sequence, then per-sense weights over the earlier positions.
  NamedArray hidden = transformer(embeddings.embed(input_ids, k[0]), mask, k[1]);
  NamedArray weights = kq_selfattention(hidden, mask, k[3]);  // (..., senses, position, key_position)
  // Sense vectors of each token (no positions: a function of the token alone).
  NamedArray senses = sense_net.sense_embed(embeddings.wte.embed(input_ids), k[2]);  // (..., position, senses, embed)
  senses = hax::rename(senses, {{"position", "key_position"}});
  NamedArray out = hax::dot(weights, hax::astype(senses, weights.dtype()), hax::AxisSelection("key_position"));
  out = hax::sum(out, hax::AxisSelection("senses"));  // (..., position, embed)
  return hax::astype(out / static_cast<double>(config_.num_senses), hidden.dtype());
}

std::unique_ptr<DecodeCache> BackpackLMHeadModel::start_decode(int64_t batch, int64_t max_len) const {
  if (max_len > config_.gpt2.seq_len) {
    throw std::invalid_argument("decoding " + std::to_string(max_len) + " positions but the model has seq_len " +
                                std::to_string(config_.gpt2.seq_len));
  }
  auto c = std::make_unique<BackpackDecodeCache>();
  c->capacity = max_len;
  c->ids = at::zeros({batch, max_len}, at::kLong);
  return c;
}

NamedArray BackpackLMHeadModel::decode(const NamedArray& input_ids, DecodeCache& cache) const {
  auto& c = dynamic_cast<BackpackDecodeCache&>(cache);
  const int64_t n = input_ids.resolve_axis("position").size, start = c.length;
  if (start + n > c.capacity) {
    throw std::invalid_argument("decode: " + std::to_string(start + n) + " positions exceed the cache's " +
                                std::to_string(c.capacity));
  }
  at::Tensor ids = hax::rearrange(input_ids, {"batch", "position"}).array();
  c.ids.narrow(1, start, n).copy_(ids);
  c.length = start + n;
  const Axis B = input_ids.resolve_axis("batch");
  NamedArray all(c.ids.narrow(1, 0, c.length), {B, Axis("position", c.length)});
  NamedArray h = activations(all);
  return NamedArray(hax::rearrange(h, {"batch", "position", "embed"}).array().narrow(1, start, n),
                    {B, Axis("position", n), Embed()});
}

NamedArray BackpackLMHeadModel::sense_vectors(const NamedArray& ids) const {
  return sense_net.sense_embed(embeddings.wte.embed(ids), std::nullopt);
}

NamedArray BackpackLMHeadModel::sense_logits(const NamedArray& ids) const {
  return hax::dot(sense_vectors(ids), lm_head(), hax::AxisSelection(Embed()));
}

}  // namespace levanter::models
