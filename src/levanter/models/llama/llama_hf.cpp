// Llama <-> Hugging Face transformers' LlamaForCausalLM (Levanter's LlamaConfig.to_hf_config / from_hf_config
// and its state-dict mapping). Our parameter paths are HF's; only the attention projections' layouts differ,
// because our Linear weights keep their named axes (torch.nn.Linear's (Out, In) order):
//   self_attn.q_proj.weight  ours (kv_heads, q_heads_per_group, head_size, embed)  HF (num_heads * head_dim, hidden)
//   self_attn.k_proj.weight  ours (kv_heads, head_size, embed)                     HF (num_kv_heads * head_dim, hidden)
//   self_attn.o_proj.weight  ours (embed, heads, head_size)                        HF (hidden, num_heads * head_dim)
// Each is a reshape of the same row-major bytes: HF's query head h = kv_head * group + j uses key/value head
// h / group (transformers' repeat_kv), which is our (kv_heads, q_heads_per_group) order.
#include <ATen/ATen.h>

#include <map>
#include <stdexcept>

#include "levanter/models/hf_adapter.h"
#include "levanter/models/llama/llama.h"

namespace levanter::models {

namespace {

namespace nn = haliax::nn;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// HF's shape of one of our tensors: every Linear weight is 2-D (Out, In), every bias 1-D.
std::vector<int64_t> hf_shape(const std::string& key, at::IntArrayRef ours) {
  const int64_t numel = c10::multiply_integers(ours);
  if (ours.size() <= 1 || !(ends_with(key, "_proj.weight") || ends_with(key, "_proj.bias"))) return ours.vec();
  if (ends_with(key, ".bias")) return {numel};
  if (ends_with(key, "o_proj.weight")) return {ours.front(), numel / ours.front()};
  return {numel / ours.back(), ours.back()};
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

class LlamaHfAdapter : public HfAdapter {
 public:
  explicit LlamaHfAdapter(bool tied) : tied_(tied) {}
  std::string hf_model_type() const override { return "llama"; }
  std::string hf_architecture() const override { return "LlamaForCausalLM"; }

  nlohmann::ordered_json to_hf_config(const LmConfig& config) const override {
    const auto& c = dynamic_cast<const LlamaConfig&>(config);
    if (c.use_bias) {
      throw std::invalid_argument(
          "model.use_bias: true has no equivalent in Hugging Face's LlamaForCausalLM (its RMSNorm has no bias)");
    }
    if (!c.use_layer_norm_weight) {
      throw std::invalid_argument(
          "model.use_layer_norm_weight: false has no equivalent in Hugging Face's LlamaForCausalLM (its RMSNorm "
          "always has a weight)");
    }
    nlohmann::ordered_json j;
    j["hidden_size"] = c.hidden_dim;
    j["intermediate_size"] = c.intermediate_dim;
    j["num_hidden_layers"] = c.num_layers;
    j["num_attention_heads"] = c.num_heads;
    j["num_key_value_heads"] = c.num_kv_heads;
    j["head_dim"] = c.HeadSize().size;
    j["hidden_act"] = c.activation_function;
    j["max_position_embeddings"] = c.seq_len;
    j["initializer_range"] = c.initializer_range;
    j["rms_norm_eps"] = c.layer_norm_epsilon;
    j["tie_word_embeddings"] = c.tie_word_embeddings;
    j["rope_theta"] = c.rope.hf_theta();
    j["rope_scaling"] = c.rope.hf_scaling();
    j["attention_bias"] = false;
    j["mlp_bias"] = false;
    j["attention_dropout"] = 0.0;
    j["pretraining_tp"] = 1;
    j["use_cache"] = true;
    return j;
  }

  std::unique_ptr<LmConfig> from_hf_config(const nlohmann::json& hf, const std::string& src) const override {
    auto c = std::make_unique<LlamaConfig>();
    c->hidden_dim = field<int64_t>(hf, "hidden_size", 4096, src);
    c->intermediate_dim = field<int64_t>(hf, "intermediate_size", 11008, src);
    c->num_layers = field<int64_t>(hf, "num_hidden_layers", 32, src);
    c->num_heads = field<int64_t>(hf, "num_attention_heads", 32, src);
    c->num_kv_heads = field<int64_t>(hf, "num_key_value_heads", c->num_heads, src);
    c->seq_len = field<int64_t>(hf, "max_position_embeddings", 2048, src);
    if (c->num_heads > 0) {
      const int64_t head_dim = field<int64_t>(hf, "head_dim", c->hidden_dim / c->num_heads, src);
      if (head_dim != c->hidden_dim / c->num_heads || c->hidden_dim % c->num_heads != 0) c->head_dim = head_dim;
    }
    c->activation_function = field<std::string>(hf, "hidden_act", "silu", src);
    c->initializer_range = field<double>(hf, "initializer_range", 0.02, src);
    c->layer_norm_epsilon = field<double>(hf, "rms_norm_eps", 1e-6, src);
    c->tie_word_embeddings = field<bool>(hf, "tie_word_embeddings", false, src);
    c->rope = RopeConfig::from_hf(field<double>(hf, "rope_theta", 10000.0, src),
                                  hf.contains("rope_scaling") ? hf["rope_scaling"] : nlohmann::json(), src);
    for (const char* key : {"attention_bias", "mlp_bias"}) {
      if (field<bool>(hf, key, false, src)) {
        throw std::invalid_argument(src + ": \"" + key +
                                    "\": true is not supported (Llama here has biases everywhere or nowhere: "
                                    "model.use_bias, which also adds RMSNorm biases)");
      }
    }
    if (field<double>(hf, "attention_dropout", 0.0, src) != 0.0) {
      throw std::invalid_argument(src + ": \"attention_dropout\" is not 0: Llama here has no dropout");
    }
    try {
      c->validate();
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(src + ": " + e.what());
    }
    return c;
  }

  std::vector<std::pair<std::string, std::string>> tied_parameters() const override {
    if (!tied_) return {};
    return {{"lm_head.weight", "model.embed_tokens.weight"}};
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
    std::optional<at::Tensor> tied_head;
    for (auto it = given.begin(); it != given.end();) {
      if (ends_with(it->first, ".rotary_emb.inv_freq")) {
        it = given.erase(it);  // a buffer older transformers versions saved
      } else if (tied_ && it->first == "lm_head.weight") {
        tied_head = it->second;
        it = given.erase(it);
      } else {
        ++it;
      }
    }
    haliax::StateDict ours = take_hf_parameters(model, given, hf_shape, src);
    if (!given.empty()) {
      throw std::invalid_argument(src + ": unexpected tensor " + given.begin()->first + " (" +
                                  std::to_string(given.size()) + " unexpected in all) for " + hf_architecture() +
                                  (given.begin()->first == "lm_head.weight" ? " with tie_word_embeddings: true" : ""));
    }
    if (tied_head) {
      const at::Tensor& embed = ours.front().second;  // model.embed_tokens.weight comes first
      if (tied_head->sizes() != embed.sizes() || !at::equal(tied_head->to(embed.scalar_type()), embed)) {
        throw std::invalid_argument(src +
                                    ": lm_head.weight differs from model.embed_tokens.weight, but config.json says "
                                    "tie_word_embeddings: true");
      }
    }
    nn::from_state_dict(model, ours);
  }

 private:
  bool tied_;
};

}  // namespace

std::unique_ptr<HfAdapter> LlamaConfig::hf_adapter() const {
  return std::make_unique<LlamaHfAdapter>(tie_word_embeddings);
}

}  // namespace levanter::models
