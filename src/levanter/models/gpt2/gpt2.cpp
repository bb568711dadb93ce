#include "levanter/models/gpt2/gpt2.h"

#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>

namespace levanter::models {

using hax::Axis;
using hax::NamedArray;
namespace nn = haliax::nn;
using Key = haliax::random::Key;

namespace {

const char* kActivations[] = {"gelu_new", "gelu", "gelu_pytorch_tanh", "relu", "silu", "swish", "quick_gelu"};

[[noreturn]] void bad(const std::string& key, const std::string& why) {
  throw std::invalid_argument("model." + key + ": " + why);
}

// Split an optional key into n optional keys (absent stays absent: inference).
std::vector<std::optional<Key>> split_opt(const std::optional<Key>& key, int64_t n) {
  std::vector<std::optional<Key>> out(static_cast<size_t>(n));
  if (key) {
    auto keys = key->split(n);
    for (int64_t i = 0; i < n; ++i) out[i] = keys[i];
  }
  return out;
}

NamedArray dropout(double p, const NamedArray& x, const std::optional<Key>& key) {
  if (p == 0.0 || !key) return x;
  return nn::Dropout{p}(x, key);
}

// x: (..., position, embed) -> (..., position, embed). Levanter's Gpt2Attention.
NamedArray attention(const Gpt2Config& c, const Gpt2Attention& a, const NamedArray& x, const NamedArray& mask,
                     int64_t layer_idx, const std::optional<Key>& key) {
  auto keys = split_opt(key, 3);  // k_drop, k_attn, k_out (as Levanter)
  NamedArray qkv = a.c_attn(x);   // (..., position, qkv, heads, head_size)
  qkv = hax::rearrange(qkv, {hax::kEllipsis, "qkv", "heads", "position", "head_size"});
  std::vector<NamedArray> parts = hax::unbind(qkv, "qkv");
  NamedArray q = parts[0];
  NamedArray k = hax::rename(parts[1], {{"position", "key_position"}});
  NamedArray v = hax::rename(parts[2], {{"position", "key_position"}});
  if (c.scale_attn_by_inverse_layer_idx) q = q / (static_cast<double>(layer_idx) + 1.0);
  std::optional<at::ScalarType> attn_dtype;
  if (c.upcast_attn) attn_dtype = at::kFloat;
  NamedArray weights = nn::dot_product_attention_weights("head_size", "key_position", q, k, mask, std::nullopt, attn_dtype);
  weights = dropout(c.attn_pdrop, weights, keys[0]);
  NamedArray out = hax::astype(hax::dot(weights, v, "key_position"), x.dtype());  // (..., heads, position, head_size)
  return a.c_proj(out);
}

NamedArray block_forward(const Gpt2Config& c, const Gpt2Block& b, const NamedArray& x, const NamedArray& mask,
                         int64_t layer_idx, const std::optional<Key>& key) {
  auto keys = split_opt(key, 4);
  NamedArray attn_out = dropout(c.resid_pdrop, attention(c, b.attn, b.ln_1(x), mask, layer_idx, keys[0]), keys[1]);
  NamedArray h = x + attn_out;
  NamedArray m = b.mlp.c_proj(gpt2_activation(c.activation_function, b.mlp.c_fc(b.ln_2(h))));
  return h + dropout(c.resid_pdrop, m, keys[3]);
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
  for (auto [name, p] : {std::pair<const char*, double>{"embed_pdrop", embed_pdrop}, {"resid_pdrop", resid_pdrop},
                         {"attn_pdrop", attn_pdrop}}) {
    if (p < 0 || p >= 1) bad(name, "must be in [0, 1), got " + std::to_string(p));
  }
  bool known = false;
  std::string list;
  for (const char* a : kActivations) {
    known = known || activation_function == a;
    list += (list.empty() ? "" : ", ") + std::string(a);
  }
  if (!known) bad("activation_function", "unknown activation '" + activation_function + "'; valid: " + list);
  if (cross_entropy_block_size && *cross_entropy_block_size < 0) {
    bad("cross_entropy_block_size", "must be >= 0 (0: full logits), got " + std::to_string(*cross_entropy_block_size));
  }
  if (attn_backend) {
    static const char* backends[] = {"default", "jax_flash", "splash", "vanilla", "te", "nvte", "jax", "flash"};
    bool ok = false;
    for (const char* b : backends) ok = ok || *attn_backend == b;
    if (!ok) bad("attn_backend", "unknown backend '" + *attn_backend + "' (Levanter's: default, jax_flash, splash, vanilla, te)");
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

NamedArray gpt2_activation(const std::string& name, const NamedArray& x) {
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") return nn::gelu(x, /*approximate=*/true);
  if (name == "gelu") return nn::gelu(x, /*approximate=*/false);
  if (name == "relu") return nn::relu(x);
  if (name == "silu" || name == "swish") return nn::silu(x);
  if (name == "quick_gelu") return nn::quick_gelu(x);
  bad("activation_function", "unknown activation '" + name + "'");
}

Gpt2Block Gpt2Block::init(const Gpt2Config& c, const Key& key) {
  // Levanter: k_attn, k_mlp = split(key); each Linear pair splits its key again.
  auto [k_attn, k_mlp] = key.split2();
  auto [k_c, k_proj] = k_attn.split2();
  auto [k_fc, k_mproj] = k_mlp.split2();
  Axis Qkv("qkv", 3);
  Gpt2Block b{
      nn::LayerNorm::init({c.Embed()}, c.layer_norm_epsilon, true, c.use_bias),
      Gpt2Attention{nn::Linear::init({c.Embed()}, {Qkv, c.Heads(), c.HeadSize()}, k_c, c.use_bias, 1.0, /*out_first=*/false),
                    nn::Linear::init({c.Heads(), c.HeadSize()}, {c.Embed()}, k_proj, c.use_bias, 1.0, false)},
      nn::LayerNorm::init({c.Embed()}, c.layer_norm_epsilon, true, c.use_bias),
      Gpt2Mlp{nn::Linear::init({c.Embed()}, {c.Mlp()}, k_fc, c.use_bias, 1.0, false),
              nn::Linear::init({c.Mlp()}, {c.Embed()}, k_mproj, c.use_bias, 1.0, false)}};
  return b;
}

Gpt2LMHeadModel Gpt2LMHeadModel::init(const Axis& Vocab, const Gpt2Config& config, const Key& key) {
  config.validate();
  auto [k_t, k_embeddings] = key.split2();
  auto k_emb = k_embeddings.split(3);  // wte, wpe, (dropout)
  auto blocks = nn::Stacked<Gpt2Block>::init(config.Layers(), k_t, [&](const Key& k) { return Gpt2Block::init(config, k); });
  blocks.gradient_checkpointing = config.gradient_checkpointing;
  return Gpt2LMHeadModel{config,
                         Vocab,
                         nn::Embedding::init(Vocab, {config.Embed()}, k_emb[0], config.initializer_range),
                         nn::Embedding::init(config.Pos(), {config.Embed()}, k_emb[1], config.initializer_range / 2),
                         std::move(blocks),
                         nn::LayerNorm::init({config.Embed()}, config.layer_norm_epsilon, true, config.use_bias)};
}

NamedArray Gpt2LMHeadModel::activations(const NamedArray& input_ids, const ForwardOptions& opts) const {
  Axis Pos = input_ids.resolve_axis("position");
  if (Pos.size > config.seq_len) {
    throw std::invalid_argument("input has " + std::to_string(Pos.size) + " positions but the model has seq_len " +
                                std::to_string(config.seq_len));
  }
  std::optional<Key> k_embed, k_transformer;
  if (opts.key) std::tie(k_embed, k_transformer) = opts.key->split2();
  NamedArray x = wte.embed(input_ids) + wpe.embed(hax::arange(Pos));
  x = dropout(config.embed_pdrop, x, k_embed);
  NamedArray mask = nn::causal_mask(Pos, Pos.alias("key_position"));
  std::vector<std::optional<Key>> layer_keys = split_opt(k_transformer, config.num_layers);
  // Captures by value: with gradient checkpointing the function runs again during backward.
  Gpt2Config c = config;
  x = h.fold(x, [c, mask, layer_keys](const Gpt2Block& b, const NamedArray& xi, int64_t i) {
    return block_forward(c, b, xi, mask, i, layer_keys[static_cast<size_t>(i)]);
  });
  return ln_f(x);
}

NamedArray Gpt2LMHeadModel::operator()(const NamedArray& input_ids, const ForwardOptions& opts) const {
  return hax::dot(activations(input_ids, opts), wte.weight, "embed");
}

NamedArray Gpt2LMHeadModel::compute_next_token_loss(const NamedArray& input_ids, const ForwardOptions& opts,
                                                    LossOptions loss) const {
  if (config.cross_entropy_block_size && *config.cross_entropy_block_size == 0) {
    return next_token_loss(hax::astype((*this)(input_ids, opts), at::kFloat), input_ids, std::nullopt, loss);
  }
  loss.block_size = config.cross_entropy_block_size.value_or(0);
  return fused_next_token_loss(activations(input_ids, opts), lm_head(), input_ids, std::nullopt, loss);
}

}  // namespace levanter::models
