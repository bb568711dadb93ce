#include "levanter/models/llama/llama.h"

#include <ATen/ATen.h>

#include <stdexcept>

namespace levanter::models {

using hax::Axis;
using hax::NamedArray;
namespace nn = haliax::nn;
using Key = haliax::random::Key;

namespace {

[[noreturn]] void bad(const std::string& key, const std::string& why) {
  throw std::invalid_argument("model." + key + ": " + why);
}

nn::LinearOptions linear(const LlamaConfig& c) {
  return nn::LinearOptions().set_use_bias(c.use_bias).set_out_first(true);
}

nn::RmsNorm rms_norm(const LlamaConfig& c) {
  return nn::RmsNorm::init({c.Embed()}, nn::RmsNormOptions()
                                            .set_eps(c.layer_norm_epsilon)
                                            .set_use_weight(c.use_layer_norm_weight)
                                            .set_use_bias(c.use_bias));
}

}  // namespace

void LlamaConfig::validate() const {
  for (auto [name, value] : {std::pair<const char*, int64_t>{"seq_len", seq_len},
                             {"hidden_dim", hidden_dim},
                             {"intermediate_dim", intermediate_dim},
                             {"num_layers", num_layers},
                             {"num_heads", num_heads},
                             {"num_kv_heads", num_kv_heads}}) {
    if (value <= 0) bad(name, "must be positive, got " + std::to_string(value));
  }
  if (num_heads % num_kv_heads != 0) {
    bad("num_kv_heads", "num_heads (" + std::to_string(num_heads) + ") must be divisible by num_kv_heads (" +
                            std::to_string(num_kv_heads) + ")");
  }
  if (head_dim) {
    if (*head_dim <= 0) bad("head_dim", "must be positive, got " + std::to_string(*head_dim));
  } else if (hidden_dim % num_heads != 0) {
    bad("num_heads", "hidden_dim (" + std::to_string(hidden_dim) + ") must be divisible by num_heads (" +
                         std::to_string(num_heads) + "), or give head_dim");
  }
  if (HeadSize().size % 2 != 0) {
    bad("head_dim", "rotary embeddings need an even head size, got " + std::to_string(HeadSize().size));
  }
  try {
    nn::activation_function(activation_function);
  } catch (const std::invalid_argument& e) {
    bad("activation_function", e.what());
  }
  rope.validate("model.rope");
  if (cross_entropy_block_size && *cross_entropy_block_size < 0) {
    bad("cross_entropy_block_size", "must be >= 0 (0: full logits), got " + std::to_string(*cross_entropy_block_size));
  }
}

double LlamaConfig::flops_per_token(int64_t vocab_size) const {
  // Levanter's lm_flops_per_token (utils/flop_utils.py) with glu = true and an explicit head_dim.
  const double hidden = static_cast<double>(hidden_dim), inter = static_cast<double>(intermediate_dim);
  const double heads = static_cast<double>(num_heads), kv_heads = static_cast<double>(num_kv_heads);
  const double hd = static_cast<double>(HeadSize().size), T = static_cast<double>(seq_len);
  const double attn_dim = heads * hd;
  const double mlp = 2.0 * 3.0 * hidden * inter;
  const double qkv_proj = 2.0 * hidden * (attn_dim + 2.0 * kv_heads * hd);
  const double dense_proj = 2.0 * attn_dim * hidden;
  const double key_query_logits = 2.0 * T * T * heads * hd;
  const double mask = 3.0 * T * T * heads;
  const double mask_value = 2.0 * T * T * hd * heads;
  const double attn = (key_query_logits + mask + mask_value) / T;
  const double lm_head = 2.0 * hidden * static_cast<double>(vocab_size);
  return static_cast<double>(num_layers) * (mlp + qkv_proj + dense_proj + attn) + lm_head;
}

std::optional<int64_t> LlamaConfig::parameter_count(int64_t vocab_size) const {
  const double d = static_cast<double>(hidden_dim), I = static_cast<double>(intermediate_dim);
  const double H = static_cast<double>(num_heads), KV = static_cast<double>(num_kv_heads);
  const double hd = static_cast<double>(HeadSize().size), b = use_bias ? 1.0 : 0.0;
  const double norm = (use_layer_norm_weight ? d : 0.0) + b * d;
  const double attn = (d * H * hd + b * H * hd) + 2.0 * (d * KV * hd + b * KV * hd) + (H * hd * d + b * d);
  const double mlp = 2.0 * (d * I + b * I) + (I * d + b * d);
  const double V = static_cast<double>(vocab_size);
  return saturating_count(V * d + (tie_word_embeddings ? 0.0 : V * d) +
                          static_cast<double>(num_layers) * (attn + mlp + 2.0 * norm) + norm);
}

std::optional<double> LlamaConfig::activation_elements_per_token() const {
  // A decoder layer's backward reads: the RMSNorm inputs and outputs (4d), q k v before and after the rotary
  // embedding (2 x (heads + 2 kv_heads) x head_dim), the scores and their softmax (2 x heads x positions), the
  // attention output and its projection (heads x head_dim + d), the gate, up and gated MLP values (3 I), the MLP
  // output.
  const double d = static_cast<double>(hidden_dim), I = static_cast<double>(intermediate_dim);
  const double H = static_cast<double>(num_heads), KV = static_cast<double>(num_kv_heads);
  const double hd = static_cast<double>(HeadSize().size), L = static_cast<double>(num_layers);
  const double layer =
      4.0 * d + 2.0 * (H + 2.0 * KV) * hd + 2.0 * H * static_cast<double>(seq_len) + H * hd + d + 3.0 * I + d;
  return 3.0 * d + (gradient_checkpointing ? L * d + layer : L * layer);
}

std::unique_ptr<LmHeadModel> LlamaConfig::build(const Axis& Vocab, const Key& key) const {
  return std::make_unique<LlamaLMHeadModel>(LlamaLMHeadModel::init(Vocab, *this, key));
}

// --- attention -----------------------------------------------------------------------------------------------

LlamaAttention LlamaAttention::init(const LlamaConfig& c, const Key& key) {
  auto k = key.split(4);  // q, k, v, o (as Levanter)
  LlamaAttention a{nn::Linear::init({c.Embed()}, {c.KVHeads(), c.QHeadsPerGroup(), c.HeadSize()}, k[0], linear(c)),
                   nn::Linear::init({c.Embed()}, {c.KVHeads(), c.HeadSize()}, k[1], linear(c)),
                   nn::Linear::init({c.Embed()}, {c.KVHeads(), c.HeadSize()}, k[2], linear(c)),
                   nn::Linear::init({c.Heads(), c.HeadSize()}, {c.Embed()}, k[3], linear(c)),
                   RotaryEmbedding(c.rope, c.HeadSize()),
                   c.Heads()};
  if (c.upcast_attn) a.attention_dtype = at::kFloat;
  return a;
}

std::tuple<NamedArray, NamedArray, NamedArray> LlamaAttention::qkv(const NamedArray& x, const RopeTables& rope) const {
  NamedArray q = hax::rearrange(q_proj(x), {hax::kEllipsis, "kv_heads", "q_heads_per_group", "position", "head_size"});
  NamedArray k = hax::rearrange(k_proj(x), {hax::kEllipsis, "kv_heads", "position", "head_size"});
  NamedArray v = hax::rearrange(v_proj(x), {hax::kEllipsis, "kv_heads", "position", "head_size"});
  return {rotary.apply(q, rope), rotary.apply(k, rope), v};
}

NamedArray LlamaAttention::attend(const NamedArray& q, const NamedArray& k, const NamedArray& v, const NamedArray& mask,
                                  at::ScalarType dtype) const {
  nn::AttentionOptions o;
  o.mask = mask;
  o.attention_dtype = attention_dtype;
  // (..., kv_heads, q_heads_per_group, position, head_size) -> heads = kv_heads x q_heads_per_group (HF's order).
  NamedArray out = nn::dot_product_attention(nn::Contract("head_size"), nn::AttendOver("key_position"), q, k, v, o);
  out = hax::flatten_axes(out, hax::AxisSelection(std::vector<hax::AxisSelector>{"kv_heads", "q_heads_per_group"}),
                          Heads.name);  // (by name: under tensor parallelism, kv_heads may be this process's piece)
  return o_proj(hax::astype(out, dtype));
}

NamedArray LlamaAttention::operator()(const NamedArray& x, const NamedArray& mask, const RopeTables& rope) const {
  auto [q, k, v] = qkv(x, rope);
  k = hax::rename(k, {{"position", "key_position"}});
  v = hax::rename(v, {{"position", "key_position"}});
  return attend(q, k, v, mask, x.dtype());
}

NamedArray LlamaAttention::decode(const NamedArray& x, const RopeTables& rope, at::Tensor& k_cache, at::Tensor& v_cache,
                                  int64_t start) const {
  auto [q, k_new, v_new] = qkv(x, rope);  // k, v: (batch, kv_heads, position, head_size)
  const Axis Pos = x.resolve_axis("position");
  const int64_t n = Pos.size, total = start + n;
  k_cache.narrow(2, start, n).copy_(hax::rearrange(k_new, {"batch", "kv_heads", "position", "head_size"}).array());
  v_cache.narrow(2, start, n).copy_(hax::rearrange(v_new, {"batch", "kv_heads", "position", "head_size"}).array());
  const Axis Batch = x.resolve_axis("batch"), KV = k_new.resolve_axis("kv_heads"),
             HeadSize = k_new.resolve_axis("head_size"), KPos("key_position", total);
  NamedArray k(k_cache.narrow(2, 0, total), {Batch, KV, KPos, HeadSize});
  NamedArray v(v_cache.narrow(2, 0, total), {Batch, KV, KPos, HeadSize});
  return attend(q, k, v, nn::causal_mask(Pos, KPos, /*q_start=*/start), x.dtype());
}

// --- MLP, layer, model ---------------------------------------------------------------------------------------

LlamaMlp LlamaMlp::init(const LlamaConfig& c, const Key& key) {
  auto k = key.split(3);  // gate, up, down (as Levanter)
  return LlamaMlp{nn::Linear::init({c.Embed()}, {c.Mlp()}, k[0], linear(c)),
                  nn::Linear::init({c.Embed()}, {c.Mlp()}, k[1], linear(c)),
                  nn::Linear::init({c.Mlp()}, {c.Embed()}, k[2], linear(c)),
                  nn::activation_function(c.activation_function)};
}

LlamaDecoderLayer LlamaDecoderLayer::init(const LlamaConfig& c, const Key& key) {
  auto [k_attn, k_mlp] = key.split2();
  return LlamaDecoderLayer{LlamaAttention::init(c, k_attn), LlamaMlp::init(c, k_mlp), rms_norm(c), rms_norm(c)};
}

LlamaLMHeadModel::LlamaLMHeadModel(LlamaConfig config, Axis Vocab, nn::Embedding embed_tokens,
                                   nn::Stacked<LlamaDecoderLayer> layers, nn::RmsNorm norm,
                                   std::optional<nn::Linear> lm_head)
    : config_(std::move(config)),
      vocab(std::move(Vocab)),
      embed_tokens(std::move(embed_tokens)),
      layers(std::move(layers)),
      norm(std::move(norm)),
      lm_head_(std::move(lm_head)),
      rotary(config_.rope, config_.HeadSize()) {}

LlamaLMHeadModel LlamaLMHeadModel::init(const Axis& Vocab, const LlamaConfig& c, const Key& key) {
  c.validate();
  auto [k_t, k_emb] = key.split2();  // transformer, embeddings (as Levanter; the untied head from the latter)
  auto [k_tokens, k_head] = k_emb.split2();
  auto layers = nn::Stacked<LlamaDecoderLayer>::init(c.Layers(), k_t,
                                                     [&](const Key& k) { return LlamaDecoderLayer::init(c, k); });
  layers.gradient_checkpointing = c.gradient_checkpointing;
  std::optional<nn::Linear> head;
  if (!c.tie_word_embeddings)
    head = nn::Linear::init({c.Embed()}, {Vocab}, k_head, nn::LinearOptions().set_use_bias(false));
  return LlamaLMHeadModel(c, Vocab, nn::Embedding::init(Vocab, {c.Embed()}, k_tokens), std::move(layers), rms_norm(c),
                          std::move(head));
}

NamedArray LlamaLMHeadModel::activations(const NamedArray& input_ids, const ForwardOptions&) const {
  // Tied, the table is also the LM head, whose dense gradient takes the looked-up rows in place.
  NamedArray x = embed_tokens.embed(
      input_ids, lm_head_ ? nn::EmbedGradient::kDense : nn::EmbedGradient::kRows);  // (..., position, embed)
  const Axis Pos = input_ids.resolve_axis("position");
  if (Pos.size > config_.seq_len) {
    throw std::invalid_argument("input has " + std::to_string(Pos.size) + " positions but the model has seq_len " +
                                std::to_string(config_.seq_len));
  }
  const NamedArray mask = nn::causal_mask(Pos, Pos.alias("key_position"));
  const RopeTables rope = rotary.tables(Pos, 0, x.dtype());
  // Captures by value: with gradient checkpointing the function runs again during backward.
  NamedArray out = layers.fold(
      x, [mask, rope](const LlamaDecoderLayer& layer, const NamedArray& xi, int64_t) { return layer(xi, mask, rope); });
  return norm(out);
}

// --- incremental decoding ------------------------------------------------------------------------------------

namespace {

struct LlamaDecodeCache : DecodeCache {
  std::vector<at::Tensor> k, v;  // per layer: (batch, kv_heads, capacity, head_size)
};

}  // namespace

std::unique_ptr<DecodeCache> LlamaLMHeadModel::start_decode(int64_t batch, int64_t max_len) const {
  if (max_len > config_.seq_len) {
    throw std::invalid_argument("decoding " + std::to_string(max_len) + " positions, but the model has seq_len " +
                                std::to_string(config_.seq_len));
  }
  auto cache = std::make_unique<LlamaDecodeCache>();
  cache->capacity = max_len;
  const at::ScalarType dtype = embed_tokens.weight.dtype();
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    cache->k.push_back(at::zeros({batch, config_.num_kv_heads, max_len, config_.HeadSize().size}, dtype));
    cache->v.push_back(at::zeros({batch, config_.num_kv_heads, max_len, config_.HeadSize().size}, dtype));
  }
  return cache;
}

NamedArray LlamaLMHeadModel::decode(const NamedArray& input_ids, DecodeCache& base) const {
  auto& cache = dynamic_cast<LlamaDecodeCache&>(base);
  const Axis Pos = input_ids.resolve_axis("position");
  const int64_t start = cache.length;
  if (start + Pos.size > cache.capacity) {
    throw std::invalid_argument("decode: " + std::to_string(start + Pos.size) + " positions exceed the cache's " +
                                std::to_string(cache.capacity));
  }
  NamedArray x = embed_tokens.embed(input_ids);  // (batch, position, embed)
  std::vector<LlamaDecoderLayer> ls = layers.unstacked();
  const RopeTables rope = rotary.tables(Pos, start, x.dtype());
  for (size_t i = 0; i < ls.size(); ++i) x = ls[i].decode(x, rope, cache.k[i], cache.v[i], start);
  cache.length = start + Pos.size;
  return norm(x);
}

}  // namespace levanter::models
