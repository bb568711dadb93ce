// GPT-2 <-> Hugging Face transformers' GPT2LMHeadModel (Levanter's Gpt2Config.to_hf_config / from_hf_config
// and its state-dict mapping). Our parameter paths are HF's already; only three layouts differ, because our
// Linear weights keep their named axes:
//   attn.c_attn.weight  ours (embed, qkv, heads, head_size)  HF Conv1D (embed, 3 * embed)
//   attn.c_attn.bias    ours (qkv, heads, head_size)         HF (3 * embed)
//   attn.c_proj.weight  ours (heads, head_size, embed)       HF Conv1D (embed, embed)
// Each is a reshape of the same row-major bytes (qkv-major, then heads, then head_size: HF's split order).
// The LM head is tied to wte, as in HF's GPT-2 (which saves it once, under transformer.wte.weight).
#include <ATen/ATen.h>

#include <map>
#include <stdexcept>

#include "levanter/models/gpt2/gpt2.h"
#include "levanter/models/hf_adapter.h"

namespace levanter::models {

namespace {

namespace nn = haliax::nn;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// HF's shape of one of our tensors.
std::vector<int64_t> hf_shape(const std::string& key, at::IntArrayRef ours) {
  const int64_t numel = c10::multiply_integers(ours);
  if (ends_with(key, "attn.c_attn.weight")) return {ours.front(), numel / ours.front()};
  if (ends_with(key, "attn.c_attn.bias")) return {numel};
  if (ends_with(key, "attn.c_proj.weight")) return {numel / ours.back(), ours.back()};
  return ours.vec();
}

template <typename T>
T field(const nlohmann::json& hf, const char* key, T fallback, const std::string& source) {
  if (!hf.contains(key) || hf[key].is_null()) return fallback;
  try {
    return hf[key].get<T>();
  } catch (const std::exception&) {
    throw std::invalid_argument(source + ": \"" + key + "\" has the wrong type: " + hf[key].dump());
  }
}

class Gpt2HfAdapter : public HfAdapter {
 public:
  std::string hf_model_type() const override { return "gpt2"; }
  std::string hf_architecture() const override { return "GPT2LMHeadModel"; }

  nlohmann::ordered_json to_hf_config(const LmConfig& config) const override {
    const auto& c = dynamic_cast<const Gpt2Config&>(config);
    if (!c.use_bias) {
      throw std::invalid_argument(
          "model.use_bias: false has no equivalent in Hugging Face's GPT2LMHeadModel (it always "
          "has biases)");
    }
    nlohmann::ordered_json j;
    j["n_positions"] = c.seq_len;
    j["n_ctx"] = c.seq_len;
    j["n_embd"] = c.hidden_dim;
    j["n_layer"] = c.num_layers;
    j["n_head"] = c.num_heads;
    j["n_inner"] = c.hidden_dim * c.mlp_scale;
    j["activation_function"] = c.activation_function;
    j["resid_pdrop"] = c.resid_pdrop;
    j["embd_pdrop"] = c.embed_pdrop;
    j["attn_pdrop"] = c.attn_pdrop;
    j["layer_norm_epsilon"] = c.layer_norm_epsilon;
    j["initializer_range"] = c.initializer_range;
    j["scale_attn_weights"] = true;
    j["scale_attn_by_inverse_layer_idx"] = c.scale_attn_by_inverse_layer_idx;
    j["reorder_and_upcast_attn"] = c.upcast_attn;
    j["tie_word_embeddings"] = true;
    j["use_cache"] = true;
    return j;
  }

  std::unique_ptr<LmConfig> from_hf_config(const nlohmann::json& hf, const std::string& src) const override {
    auto c = std::make_unique<Gpt2Config>();
    c->hidden_dim = field<int64_t>(hf, "n_embd", 768, src);
    c->num_layers = field<int64_t>(hf, "n_layer", 12, src);
    c->num_heads = field<int64_t>(hf, "n_head", 12, src);
    c->seq_len = field<int64_t>(hf, "n_positions", field<int64_t>(hf, "n_ctx", 1024, src), src);
    const int64_t inner = field<int64_t>(hf, "n_inner", 4 * c->hidden_dim, src);
    if (c->hidden_dim <= 0 || inner % c->hidden_dim != 0) {
      throw std::invalid_argument(src + ": \"n_inner\" (" + std::to_string(inner) +
                                  ") must be a multiple of \"n_embd\" (" + std::to_string(c->hidden_dim) +
                                  ") here (model.mlp_scale)");
    }
    c->mlp_scale = inner / c->hidden_dim;
    c->activation_function = field<std::string>(hf, "activation_function", "gelu_new", src);
    c->resid_pdrop = field<double>(hf, "resid_pdrop", 0.1, src);
    c->embed_pdrop = field<double>(hf, "embd_pdrop", 0.1, src);
    c->attn_pdrop = field<double>(hf, "attn_pdrop", 0.1, src);
    c->layer_norm_epsilon = field<double>(hf, "layer_norm_epsilon", 1e-5, src);
    c->initializer_range = field<double>(hf, "initializer_range", 0.02, src);
    c->scale_attn_by_inverse_layer_idx = field<bool>(hf, "scale_attn_by_inverse_layer_idx", false, src);
    c->upcast_attn = field<bool>(hf, "reorder_and_upcast_attn", false, src);
    if (!field<bool>(hf, "scale_attn_weights", true, src)) {
      throw std::invalid_argument(src + ": \"scale_attn_weights\": false (unscaled attention) is not supported");
    }
    if (!field<bool>(hf, "tie_word_embeddings", true, src)) {
      throw std::invalid_argument(src + ": \"tie_word_embeddings\": false: GPT-2 here has a tied LM head");
    }
    try {
      c->validate();
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(src + ": " + e.what());
    }
    return c;
  }

  std::vector<std::pair<std::string, std::string>> tied_parameters() const override {
    return {{"lm_head.weight", "transformer.wte.weight"}};
  }

  haliax::StateDict to_hf_state_dict(LmHeadModel& model) const override {
    haliax::StateDict out;
    for (auto& [key, t] : nn::to_state_dict(model)) {
      at::Tensor d = t.detach();
      out.emplace_back(key, d.reshape(hf_shape(key, d.sizes())));
    }
    return out;
  }

  void load_hf_state_dict(LmHeadModel& model, const haliax::StateDict& hf, const std::string& src) const override {
    std::map<std::string, at::Tensor> given;
    for (const auto& [k, t] : hf) given[k] = t;
    // Buffers of older transformers versions, and the tied head if a tool saved it separately.
    std::optional<at::Tensor> lm_head;
    for (auto it = given.begin(); it != given.end();) {
      if (ends_with(it->first, ".attn.bias") && it->second.dim() == 4)
        it = given.erase(it);  // causal mask buffer
      else if (ends_with(it->first, ".attn.masked_bias"))
        it = given.erase(it);
      else if (it->first == "lm_head.weight") {
        lm_head = it->second;
        it = given.erase(it);
      } else {
        ++it;
      }
    }
    haliax::StateDict ours = take_hf_parameters(model, given, hf_shape, src);
    if (!given.empty()) {
      throw std::invalid_argument(src + ": unexpected tensor " + given.begin()->first + " (" +
                                  std::to_string(given.size()) + " unexpected in all) for " + hf_architecture());
    }
    if (lm_head) {
      const at::Tensor& wte = ours.front().second;  // transformer.wte.weight comes first
      if (lm_head->sizes() != wte.sizes() || !at::equal(lm_head->to(wte.scalar_type()), wte)) {
        throw std::invalid_argument(src +
                                    ": lm_head.weight differs from transformer.wte.weight: an untied head, "
                                    "which GPT-2 here does not have");
      }
    }
    nn::from_state_dict(model, ours);
  }
};

}  // namespace

std::unique_ptr<HfAdapter> Gpt2Config::hf_adapter() const { return std::make_unique<Gpt2HfAdapter>(); }

}  // namespace levanter::models
