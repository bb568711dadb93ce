// What every causal language model offers the trainer, the evaluator, the exporter and the sampler (Levanter's
// LmConfig and LmHeadModel). Nothing outside models/ names a model family: the trainer builds a model from its
// config through the registry (model_config.h) and talks to it only through these two interfaces.
//
// A family is two classes:
//   struct MyConfig : LmConfigBase<MyConfig> { ...fields(V&)...; build(), flops_per_token(), ... };
//   struct MyModel  : LmHeadModel { static MyModel init(Vocab, config, key); activations(); lm_head(); visit(); };
// and one line in the registry (model_config.cpp: register_builtin_models), or register_model_type() from
// anywhere (tests register their own). A model is a plain struct of haliax modules; its parameters are
// reached through visit(), whose dotted paths are the key space of checkpoints, optimizer state, weight-decay
// masks and Hugging Face export.
#pragma once

#include <limits>
#include <memory>
#include <optional>
#include <string>

#include "haliax/haliax.h"
#include "levanter/config/config.h"
#include "levanter/models/lm_loss.h"

namespace levanter::models {

namespace hax = haliax;

// The vocabulary's axis name in every model's lm_head() (vocab, embed) and logits. Under tensor parallelism it is split
// in compute only (haliax::TensorParallel::split_compute): the parameters hold it whole and the fused LM head and loss
// (lm_loss.h) compute each process's block of rows.
inline constexpr const char* kVocabAxis = "vocab";

// Per-call options of a forward pass.
struct ForwardOptions {
  std::optional<hax::random::Key> key;  // dropout key; absent = inference (no dropout)
};

class LmHeadModel;
class HfAdapter;

// A family's cache of attention keys and values for incremental decoding (sampling), opaque to callers.
struct DecodeCache {
  virtual ~DecodeCache() = default;
  int64_t length = 0;    // positions decoded so far (the next input's first position)
  int64_t capacity = 0;  // positions the cache holds
};

// A model family's configuration: the keys under `model:` besides `type`.
class LmConfig {
 public:
  virtual ~LmConfig() = default;

  // The `model.type` that selects this family ("gpt2").
  virtual std::string model_type() const = 0;
  // The longest sequence the model takes (its position axis); also the training sequence length.
  virtual int64_t max_seq_len() const = 0;
  // Forward matmul FLOPs per token (Levanter's flops_per_token); training costs three times this.
  virtual double flops_per_token(int64_t vocab_size) const = 0;
  // For the memory estimate made before a model is built (trainer/memory.h); nullopt: the family does not say, and
  // the trainer skips the check. The exact number of parameters the model will have with `vocab_size` tokens:
  virtual std::optional<int64_t> parameter_count(int64_t vocab_size) const { return std::nullopt; }
  // The activations one token of a training microbatch keeps for the backward pass, in elements of the compute
  // dtype (all layers, or with gradient checkpointing each layer's input plus one layer recomputed). An estimate from
  // the layer structure, not a measurement: docs/reliability.md compares it with measured peak memory.
  virtual std::optional<double> activation_elements_per_token() const { return std::nullopt; }
  // True when a training forward pass needs a dropout key (some dropout probability is non-zero).
  virtual bool uses_dropout() const { return false; }
  // The axes that trainer.tensor_parallel_axes may split (haliax/partitioning.h): those whose pieces the family's
  // code handles through dot and nn::Linear alone, and kVocabAxis where the loss is the fused one (none: the family
  // has not been checked under tensor parallelism).
  virtual std::vector<std::string> tensor_parallel_axes() const { return {}; }
  // Positions per block of the fused LM head + loss (absent: automatic; 0: materialise the full logits).
  virtual std::optional<int64_t> loss_block_size() const { return std::nullopt; }
  // Throws std::invalid_argument naming the key: "model.num_heads: ...".
  virtual void validate() const = 0;
  // The mapping to and from Hugging Face transformers (hf_adapter.h), or null if the family has none.
  virtual std::unique_ptr<HfAdapter> hf_adapter() const;
  // A freshly initialised model (Levanter's init) with vocabulary Vocab.
  virtual std::unique_ptr<LmHeadModel> build(const hax::Axis& Vocab, const hax::random::Key& key) const = 0;
  virtual std::unique_ptr<LmConfig> clone() const = 0;

  // The family's keys, through its fields(V&) (see config/config.h): parsing, the resolved dump, the docs.
  virtual void read_fields(config::Reader& reader) = 0;
  virtual void write_fields(config::Writer& writer) const = 0;
  virtual void describe_fields(config::Describer& describer) const = 0;
};

// A parameter count computed in double (exact below 2^53) as int64_t, saturating for absurd configs.
inline int64_t saturating_count(double n) {
  return n < 9.0e18 ? static_cast<int64_t>(n) : std::numeric_limits<int64_t>::max();
}

// Implements clone and the field plumbing of LmConfig from Self's fields(V&).
template <typename Self>
class LmConfigBase : public LmConfig {
 public:
  std::unique_ptr<LmConfig> clone() const override { return std::make_unique<Self>(self()); }
  void read_fields(config::Reader& r) override { static_cast<Self*>(this)->fields(r); }
  void write_fields(config::Writer& w) const override { const_cast<Self&>(self()).fields(w); }
  void describe_fields(config::Describer& d) const override { const_cast<Self&>(self()).fields(d); }

 private:
  const Self& self() const { return static_cast<const Self&>(*this); }
};

// A causal language model: token ids in, hidden states out, and an LM head over the vocabulary.
class LmHeadModel {
 public:
  virtual ~LmHeadModel() = default;

  virtual const LmConfig& config() const = 0;
  virtual hax::Axis Vocab() const = 0;
  virtual hax::Axis Pos() const = 0;    // "position", config().max_seq_len()
  virtual hax::Axis Embed() const = 0;  // the width of the hidden states

  // input_ids (..., position) -> final hidden states (..., position, embed).
  virtual hax::NamedArray activations(const hax::NamedArray& input_ids, const ForwardOptions& options = {}) const = 0;
  // (vocab, embed): logits = dot(activations, lm_head, Embed).
  virtual const hax::NamedArray& lm_head() const = 0;
  // Every parameter, with its dotted path (Hugging Face's names where the family has them).
  virtual void visit(hax::nn::ParamVisitor& v) = 0;

  // Incremental decoding: start_decode gives an empty cache for `batch` rows of up to `max_len` positions;
  // decode(input_ids, cache) takes the ids of the next positions, (batch, position), and returns their final
  // hidden states (batch, position, embed), appending their keys and values to the cache. The result equals
  // activations() on the whole sequence, up to floating-point rounding. Inference only (no dropout). A family
  // without it throws std::logic_error naming itself.
  virtual std::unique_ptr<DecodeCache> start_decode(int64_t batch, int64_t max_len) const;
  virtual hax::NamedArray decode(const hax::NamedArray& input_ids, DecodeCache& cache) const;
  // A copy that shares the parameter tensors (replacing a parameter in the copy leaves this model alone).
  virtual std::unique_ptr<LmHeadModel> clone() const = 0;

  // input_ids (..., position) -> logits (..., position, vocab).
  hax::NamedArray logits(const hax::NamedArray& input_ids, const ForwardOptions& options = {}) const;
  hax::NamedArray operator()(const hax::NamedArray& input_ids, const ForwardOptions& options = {}) const {
    return logits(input_ids, options);
  }
  // Levanter's compute_next_token_loss: the next-token loss of input_ids (f32), through the fused LM head +
  // cross-entropy (never the full logits) unless config().loss_block_size() is 0.
  hax::NamedArray compute_next_token_loss(const hax::NamedArray& input_ids, const ForwardOptions& options = {},
                                          LossOptions loss = {}) const;
  double flops_per_token() const { return config().flops_per_token(Vocab().size); }
};

// A copy of `model` whose floating-point parameters are `dtype` (bf16 compute copies of f32 master weights).
// Differentiable: gradients of the copy flow back to the original's parameters.
std::unique_ptr<LmHeadModel> cast_floating(const LmHeadModel& model, at::ScalarType dtype);

}  // namespace levanter::models
