#include "levanter/models/gpt2/gpt2.h"

#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>

namespace levanter::models {

using hax::Axis;
using hax::NamedArray;
namespace nn = haliax::nn;
using Key = haliax::random::Key;
using OptKey = std::optional<Key>;

namespace {

[[noreturn]] void bad(const std::string& key, const std::string& why) {
  throw std::invalid_argument("model." + key + ": " + why);
}

// Split an optional key into n optional keys (absent stays absent: inference).
std::vector<OptKey> split_opt(const OptKey& key, int64_t n) {
  std::vector<OptKey> out(static_cast<size_t>(n));
  if (key) {
    auto keys = key->split(n);
    for (int64_t i = 0; i < n; ++i) out[i] = keys[i];
  }
  return out;
}

// Dropout in training (with a key); the identity in inference (no key).
NamedArray apply_dropout(const nn::Dropout& d, const NamedArray& x, const OptKey& key) { return key ? d(x, key) : x; }

// GPT-2 stores Linear weights (In, Out), as HF's Conv1D does.
nn::LinearOptions conv1d(const Gpt2Config& c) {
  return nn::LinearOptions().set_use_bias(c.use_bias).set_out_first(false);
}
nn::LayerNormOptions layer_norm(const Gpt2Config& c) {
  return nn::LayerNormOptions().set_eps(c.layer_norm_epsilon).set_use_bias(c.use_bias);
}

}  // namespace

void Gpt2Config::validate() const {
  if (hidden_dim <= 0) bad("hidden_dim", "must be positive, got " + std::to_string(hidden_dim));
  if (num_heads <= 0) bad("num_heads", "must be positive, got " + std::to_string(num_heads));
  if (hidden_dim % num_heads != 0) {
    bad("num_heads", "hidden_dim (" + std::to_string(hidden_dim) + ") must be divisible by num_heads (" +
                         std::to_string(num_heads) + ")");
  }
  if (num_layers <= 0) bad("num_layers", "must be positive, got " + std::to_string(num_layers));
  if (seq_len <= 0) bad("seq_len", "must be positive, got " + std::to_string(seq_len));
  if (mlp_scale <= 0) bad("mlp_scale", "must be positive, got " + std::to_string(mlp_scale));
  for (auto [name, p] : {std::pair<const char*, double>{"embed_pdrop", embed_pdrop},
                         {"resid_pdrop", resid_pdrop},
                         {"attn_pdrop", attn_pdrop}}) {
    if (p < 0 || p >= 1) bad(name, "must be in [0, 1), got " + std::to_string(p));
  }
  try {
    nn::activation_function(activation_function);
  } catch (const std::invalid_argument& e) {
    bad("activation_function", e.what());
  }
  if (cross_entropy_block_size && *cross_entropy_block_size < 0) {
    bad("cross_entropy_block_size", "must be >= 0 (0: full logits), got " + std::to_string(*cross_entropy_block_size));
  }
  if (attn_backend) {
    static const char* backends[] = {"default", "jax_flash", "splash", "vanilla", "te", "nvte", "jax", "flash"};
    bool ok = false;
    for (const char* b : backends) ok = ok || *attn_backend == b;
    if (!ok)
      bad("attn_backend",
          "unknown backend '" + *attn_backend + "' (Levanter's: default, jax_flash, splash, vanilla, te)");
  }
}

double Gpt2Config::flops_per_token(int64_t vocab_size) const {
  // Levanter's lm_flops_per_token (utils/flop_utils.py) with glu = false and num_kv_heads = num_heads.
  const double hidden = static_cast<double>(hidden_dim), inter = hidden * static_cast<double>(mlp_scale);
  const double heads = static_cast<double>(num_heads), head_dim = hidden / heads, T = static_cast<double>(seq_len);
  const double mlp = 2.0 * 2.0 * hidden * inter;
  const double qkv_proj = 2.0 * hidden * (heads * head_dim + 2.0 * heads * head_dim);
  const double dense_proj = 2.0 * hidden * hidden;
  const double key_query_logits = 2.0 * T * T * heads * head_dim;
  const double mask = 3.0 * T * T * heads;
  const double mask_value = 2.0 * T * T * head_dim * heads;
  const double attn = (key_query_logits + mask + mask_value) / T;
  const double lm_head = 2.0 * hidden * static_cast<double>(vocab_size);
  return static_cast<double>(num_layers) * (mlp + qkv_proj + dense_proj + attn) + lm_head;
}

std::optional<int64_t> Gpt2Config::parameter_count(int64_t vocab_size) const {
  const double d = static_cast<double>(hidden_dim), M = d * static_cast<double>(mlp_scale), b = use_bias ? 1.0 : 0.0;
  const double layer_norm = d + b * d;
  const double block =
      2.0 * layer_norm + (d * 3.0 * d + b * 3.0 * d) + (d * d + b * d) + (d * M + b * M) + (M * d + b * d);
  // Token and position embeddings (the LM head is the token embedding), the blocks, the final LayerNorm.
  return saturating_count(static_cast<double>(vocab_size) * d + static_cast<double>(seq_len) * d +
                          static_cast<double>(num_layers) * block + layer_norm);
}

double Gpt2Config::block_activation_elements_per_token() const {
  // What a block's backward reads: LayerNorm inputs and outputs (4d), q k v (3d), the attention scores and their
  // softmax (2 x heads x positions), the attention output and its projection (2d), the MLP's hidden layer before
  // and after the activation (2M) and its output (d).
  const double d = static_cast<double>(hidden_dim), M = d * static_cast<double>(mlp_scale);
  return 10.0 * d + 2.0 * M + 2.0 * static_cast<double>(num_heads) * static_cast<double>(seq_len);
}

std::optional<double> Gpt2Config::activation_elements_per_token() const {
  const double d = static_cast<double>(hidden_dim), L = static_cast<double>(num_layers);
  const double block = block_activation_elements_per_token();
  // Embeddings and the final LayerNorm (3d) around the blocks; checkpointing keeps each block's input only and
  // recomputes one block at a time.
  return 3.0 * d + (gradient_checkpointing ? L * d + block : L * block);
}

std::unique_ptr<LmHeadModel> Gpt2Config::build(const Axis& Vocab, const Key& key) const {
  return std::make_unique<Gpt2LMHeadModel>(Gpt2LMHeadModel::init(Vocab, *this, key));
}

// --- attention -----------------------------------------------------------------------------------------------

Gpt2Attention Gpt2Attention::init(const Gpt2Config& c, const Key& key) {
  auto [k_c, k_proj] = key.split2();
  Gpt2Attention a{nn::Linear::init({c.Embed()}, {Axis("qkv", 3), c.Heads(), c.HeadSize()}, k_c, conv1d(c)),
                  nn::Linear::init({c.Heads(), c.HeadSize()}, {c.Embed()}, k_proj, conv1d(c))};
  a.attn_pdrop = c.attn_pdrop;
  a.scale_attn_by_inverse_layer_idx = c.scale_attn_by_inverse_layer_idx;
  if (c.upcast_attn) a.attention_dtype = at::kFloat;
  return a;
}

NamedArray Gpt2Attention::operator()(const NamedArray& x, const NamedArray& mask, int64_t layer_idx,
                                     const OptKey& key) const {
  auto keys = split_opt(key, 3);  // k_drop, k_attn, k_out (as Levanter)
  // (..., position, embed) -> (..., qkv, heads, position, head_size)
  NamedArray qkv = hax::rearrange(c_attn(x), {hax::kEllipsis, "qkv", "heads", "position", "head_size"});
  std::vector<NamedArray> parts = hax::unbind(qkv, "qkv");
  NamedArray q = parts[0];
  NamedArray k = hax::rename(parts[1], {{"position", "key_position"}});
  NamedArray v = hax::rename(parts[2], {{"position", "key_position"}});
  if (scale_attn_by_inverse_layer_idx) q = q / (static_cast<double>(layer_idx) + 1.0);
  nn::AttentionOptions o;
  o.mask = mask;
  o.attention_dtype = attention_dtype;
  o.dropout = attn_pdrop;
  o.key = keys[0];
  // (..., heads, position, head_size)
  NamedArray out = nn::dot_product_attention(nn::Contract("head_size"), nn::AttendOver("key_position"), q, k, v, o);
  return c_proj(hax::astype(out, x.dtype()));
}

// --- MLP and block -------------------------------------------------------------------------------------------

Gpt2Mlp Gpt2Mlp::init(const Gpt2Config& c, const Key& key) {
  auto [k_fc, k_proj] = key.split2();
  return Gpt2Mlp{nn::Linear::init({c.Embed()}, {c.Mlp()}, k_fc, conv1d(c)),
                 nn::Linear::init({c.Mlp()}, {c.Embed()}, k_proj, conv1d(c)),
                 nn::activation_function(c.activation_function)};
}

Gpt2Block Gpt2Block::init(const Gpt2Config& c, const Key& key) {
  auto [k_attn, k_mlp] = key.split2();  // as Levanter
  return Gpt2Block{nn::LayerNorm::init({c.Embed()}, layer_norm(c)), Gpt2Attention::init(c, k_attn),
                   nn::LayerNorm::init({c.Embed()}, layer_norm(c)), Gpt2Mlp::init(c, k_mlp),
                   nn::Dropout{c.resid_pdrop}};
}

NamedArray Gpt2Block::operator()(const NamedArray& x, const NamedArray& mask, int64_t layer_idx,
                                 const OptKey& key) const {
  auto k = split_opt(key, 4);  // k[2] is unused (Levanter's MLP takes a key it does not need)
  NamedArray attn_output = attn(ln_1(x), mask, layer_idx, k[0]);       // 1. attention on the normalised input
  NamedArray h = x + apply_dropout(resid_dropout, attn_output, k[1]);  // 2. residual
  NamedArray ff_output = mlp(ln_2(h));                                 // 3. MLP on the normalised sum
  return h + apply_dropout(resid_dropout, ff_output, k[3]);            // 4. residual
}

// --- embeddings, transformer, model ----------------------------------------------------------------------------

Gpt2Embeddings Gpt2Embeddings::init(const Axis& Vocab, const Gpt2Config& c, const Key& key) {
  auto k = key.split(3);  // wte, wpe, (dropout)
  return Gpt2Embeddings{nn::Embedding::init(Vocab, {c.Embed()}, k[0], c.initializer_range),
                        nn::Embedding::init(c.Pos(), {c.Embed()}, k[1], c.initializer_range / 2),
                        nn::Dropout{c.embed_pdrop}};
}

NamedArray Gpt2Embeddings::embed(const NamedArray& input_ids, const OptKey& key, int64_t start) const {
  Axis Pos = input_ids.resolve_axis("position");
  if (start + Pos.size > wpe.Vocab.size) {
    throw std::invalid_argument("input has " + std::to_string(start + Pos.size) +
                                " positions but the model has seq_len " + std::to_string(wpe.Vocab.size));
  }
  // wte is also the LM head, whose dense gradient takes the looked-up rows in place (EmbedGradient::kRows).
  return apply_dropout(dropout, wte.embed(input_ids, nn::EmbedGradient::kRows) + wpe.embed(hax::arange(Pos, start)),
                       key);
}

Gpt2Transformer Gpt2Transformer::init(const Gpt2Config& c, const Key& key) {
  auto blocks = nn::Stacked<Gpt2Block>::init(c.Layers(), key, [&](const Key& k) { return Gpt2Block::init(c, k); });
  blocks.gradient_checkpointing = c.gradient_checkpointing;
  return Gpt2Transformer{std::move(blocks), nn::LayerNorm::init({c.Embed()}, layer_norm(c))};
}

NamedArray Gpt2Transformer::operator()(const NamedArray& x, const NamedArray& mask, const OptKey& key) const {
  std::vector<OptKey> layer_keys = split_opt(key, h.Layers.size);
  // Captures by value: with gradient checkpointing the function runs again during backward.
  NamedArray out = h.fold(x, [mask, layer_keys](const Gpt2Block& block, const NamedArray& xi, int64_t i) {
    return block(xi, mask, i, layer_keys[static_cast<size_t>(i)]);
  });
  return ln_f(out);
}

Gpt2LMHeadModel::Gpt2LMHeadModel(Gpt2Config config, Axis Vocab, Gpt2Embeddings embeddings, Gpt2Transformer transformer)
    : config_(std::move(config)),
      vocab(std::move(Vocab)),
      embeddings(std::move(embeddings)),
      transformer(std::move(transformer)) {}

Gpt2LMHeadModel Gpt2LMHeadModel::init(const Axis& Vocab, const Gpt2Config& config, const Key& key) {
  config.validate();
  auto [k_t, k_embeddings] = key.split2();
  Gpt2Transformer transformer = Gpt2Transformer::init(config, k_t);
  return Gpt2LMHeadModel(config, Vocab, Gpt2Embeddings::init(Vocab, config, k_embeddings), std::move(transformer));
}

NamedArray Gpt2LMHeadModel::activations(const NamedArray& input_ids, const ForwardOptions& opts) const {
  OptKey k_embed, k_transformer;
  if (opts.key) std::tie(k_embed, k_transformer) = opts.key->split2();
  NamedArray x = embeddings.embed(input_ids, k_embed);  // (..., position, embed)
  Axis Pos = input_ids.resolve_axis("position");
  return transformer(x, nn::causal_mask(Pos, Pos.alias("key_position")), k_transformer);
}

// --- incremental decoding ------------------------------------------------------------------------------------
// The same arithmetic as the training forward pass, restricted to the new positions: their queries attend to
// the cached keys and values of every earlier position and to their own (causally).

namespace {

struct Gpt2DecodeCache : DecodeCache {
  std::vector<at::Tensor> k, v;  // per layer: (batch, heads, capacity, head_size)
};

}  // namespace

NamedArray Gpt2Attention::decode(const NamedArray& x, at::Tensor& k_cache, at::Tensor& v_cache, int64_t start,
                                 int64_t layer_idx) const {
  // (batch, position, embed) -> (batch, qkv, heads, position, head_size)
  NamedArray qkv = hax::rearrange(c_attn(x), {"batch", "qkv", "heads", "position", "head_size"});
  std::vector<NamedArray> parts = hax::unbind(qkv, "qkv");
  const Axis Pos = x.resolve_axis("position");
  const int64_t n = Pos.size, total = start + n;
  k_cache.narrow(2, start, n).copy_(parts[1].array());
  v_cache.narrow(2, start, n).copy_(parts[2].array());
  const Axis Batch = x.resolve_axis("batch"), Heads = parts[0].resolve_axis("heads"),
             HeadSize = parts[0].resolve_axis("head_size"), KPos("key_position", total);
  NamedArray k(k_cache.narrow(2, 0, total), {Batch, Heads, KPos, HeadSize});
  NamedArray v(v_cache.narrow(2, 0, total), {Batch, Heads, KPos, HeadSize});
  NamedArray q = parts[0];
  if (scale_attn_by_inverse_layer_idx) q = q / (static_cast<double>(layer_idx) + 1.0);
  nn::AttentionOptions o;
  o.mask = nn::causal_mask(Pos, KPos, /*q_start=*/start);
  o.attention_dtype = attention_dtype;
  NamedArray out = nn::dot_product_attention(nn::Contract("head_size"), nn::AttendOver("key_position"), q, k, v, o);
  return c_proj(hax::astype(out, x.dtype()));
}

NamedArray Gpt2Block::decode(const NamedArray& x, at::Tensor& k_cache, at::Tensor& v_cache, int64_t start,
                             int64_t layer_idx) const {
  NamedArray h = x + attn.decode(ln_1(x), k_cache, v_cache, start, layer_idx);
  return h + mlp(ln_2(h));
}

std::unique_ptr<DecodeCache> Gpt2LMHeadModel::start_decode(int64_t batch, int64_t max_len) const {
  if (max_len > config_.seq_len) {
    throw std::invalid_argument("decoding " + std::to_string(max_len) + " positions, but the model has seq_len " +
                                std::to_string(config_.seq_len));
  }
  auto cache = std::make_unique<Gpt2DecodeCache>();
  cache->capacity = max_len;
  const at::ScalarType dtype = embeddings.wte.weight.dtype();
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    cache->k.push_back(at::zeros({batch, config_.num_heads, max_len, config_.HeadSize().size}, dtype));
    cache->v.push_back(at::zeros({batch, config_.num_heads, max_len, config_.HeadSize().size}, dtype));
  }
  return cache;
}

NamedArray Gpt2LMHeadModel::decode(const NamedArray& input_ids, DecodeCache& base) const {
  auto& cache = dynamic_cast<Gpt2DecodeCache&>(base);
  const int64_t n = input_ids.resolve_axis("position").size, start = cache.length;
  if (start + n > cache.capacity) {
    throw std::invalid_argument("decode: " + std::to_string(start + n) + " positions exceed the cache's " +
                                std::to_string(cache.capacity));
  }
  NamedArray x = embeddings.embed(input_ids, std::nullopt, start);  // (batch, position, embed)
  std::vector<Gpt2Block> layers = transformer.h.unstacked();
  for (size_t i = 0; i < layers.size(); ++i) {
    x = layers[i].decode(x, cache.k[i], cache.v[i], start, static_cast<int64_t>(i));
  }
  cache.length = start + n;
  return transformer.ln_f(x);
}

}  // namespace levanter::models
