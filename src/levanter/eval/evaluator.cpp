#include "levanter/eval/evaluator.h"

#include <ATen/ATen.h>

#include <cmath>

#include "levanter/data/loader.h"
#include "levanter/data/text.h"
#include "levanter/data/tokenizer/tokenizer.h"
#include "levanter/models/lm_loss.h"

namespace levanter::eval {

using haliax::Axis;
using haliax::NamedArray;

namespace {

at::Tensor batch_tensor(const data::TokenBatch& b) {
  return at::from_blob(const_cast<int32_t*>(b.tokens.data()), {b.batch_size, b.seq_len}, at::kInt).to(at::kLong);
}

std::string prefix(const std::string& set) { return set.empty() ? "eval/" : "eval/" + set + "/"; }

}  // namespace

std::vector<int64_t> token_byte_lengths(const data::Tokenizer& tok, int64_t vocab) {
  std::vector<int64_t> out(static_cast<size_t>(vocab), 0);
  for (int64_t id = 0; id < vocab; ++id) {
    auto tid = static_cast<data::TokenId>(id);
    if (tok.is_special(tid)) continue;
    std::string text = tok.decode(&tid, 1);
    if (text.find("\xEF\xBF\xBD") == std::string::npos) {
      out[id] = static_cast<int64_t>(text.size());
    } else if (auto t = tok.id_to_token(tid)) {
      // A piece of a multi-byte character: in byte-level BPE each code point of the token is one byte.
      int64_t n = 0;
      for (unsigned char c : *t) n += (c & 0xC0) != 0x80;
      out[id] = n;
    }
  }
  return out;
}

Evaluator::Evaluator(data::TextData& data, int64_t seq_len, int64_t batch_size, std::optional<int64_t> max_batches) {
  if (!data.tokenizer()) throw std::runtime_error("the data config has no tokenizer to size the vocabulary");
  const auto vocab = static_cast<int64_t>(data.tokenizer()->vocab_size());
  byte_lengths_ = at::tensor(token_byte_lengths(*data.tokenizer(), vocab), at::kLong);
  for (auto& [name, ds] : data.validation_sets(seq_len)) {
    auto batches = std::make_unique<data::EvalBatches>(ds, batch_size, max_batches.value_or(0));
    // A loss over zero tokens would read as 0.0000 (perplexity 1): refuse it, naming the set.
    if (batches->num_sequences() == 0) {
      throw std::runtime_error("validation set" + (name.empty() ? std::string() : " '" + name + "'") +
                               " holds no complete sequence of " + std::to_string(seq_len) +
                               " tokens (the model's seq_len): give more validation text, a shorter seq_len, or "
                               "no validation_urls");
    }
    sets_.emplace_back(name, std::move(batches));
  }
}

Evaluator::~Evaluator() = default;

EvalResults Evaluator::run(const models::LmHeadModel& model, at::ScalarType compute) {
  at::NoGradGuard no_grad;
  std::unique_ptr<models::LmHeadModel> cast;
  const models::LmHeadModel* m = &model;
  if (compute != at::kFloat) {
    cast = models::cast_floating(model, compute);
    m = cast.get();
  }
  EvalResults out;
  for (auto& [name, batches] : sets_) out[name] = run_set(*m, *batches);
  return out;
}

EvalMetrics Evaluator::run_set(const models::LmHeadModel& model, data::EvalBatches& batches) {
  // Per batch: the summed loss, the counted positions and their bytes (this process's batches; see Split).
  const int64_t n = batches.num_batches();
  std::vector<double> sums(static_cast<size_t>(3 * n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    if (split_.processes > 1 && i % split_.processes != split_.rank) continue;
    data::TokenBatch b = batches.batch(i);
    NamedArray ids(batch_tensor(b), {Axis("batch", b.batch_size), Axis("position", b.seq_len)});
    models::LossOptions lo;
    lo.reduction = haliax::nn::Reduction::kNone;
    NamedArray per = model.compute_next_token_loss(ids, {}, lo);  // (batch, position); masked positions are 0
    auto [targets, mask] = models::next_token_targets(ids, std::nullopt);
    at::Tensor b_pos = byte_lengths_.index_select(0, targets.array().reshape({-1})).reshape(targets.array().sizes());
    sums[3 * i] = per.array().to(at::kDouble).sum().item<double>();
    sums[3 * i + 1] = static_cast<double>(mask.array().sum().item<int64_t>());
    sums[3 * i + 2] = static_cast<double>((b_pos * mask.array()).sum().item<int64_t>());
  }
  // Each batch's sums come from one process (the others add zeros: exact), then add up in batch order.
  if (split_.processes > 1) split_.sum(sums);
  double loss_sum = 0;
  int64_t tokens = 0, bytes = 0;
  for (int64_t i = 0; i < n; ++i) {
    loss_sum += sums[3 * i];
    tokens += static_cast<int64_t>(sums[3 * i + 1]);
    bytes += static_cast<int64_t>(sums[3 * i + 2]);
  }
  EvalMetrics em;
  em.tokens = tokens;
  em.bytes = bytes;
  em.loss = tokens ? loss_sum / static_cast<double>(tokens) : 0.0;
  em.perplexity = std::exp(em.loss);
  em.bpb = bytes ? loss_sum / std::log(2.0) / static_cast<double>(bytes) : 0.0;
  return em;
}

tracker::Metrics to_metrics(const EvalResults& results) {
  tracker::Metrics m;
  for (const auto& [name, em] : results) {
    std::string p = prefix(name);
    m.emplace_back(p + "loss", em.loss);
    m.emplace_back(p + "perplexity", em.perplexity);
    m.emplace_back(p + "bpb", em.bpb);
    m.emplace_back(p + "tokens", em.tokens);
  }
  return m;
}

}  // namespace levanter::eval
