// Evaluation of a language model on validation sets (Levanter's eval loss, perplexity and bits per byte).
//
// Every validation set of the data config is read in order, unshuffled, in batches (at most max_batches of
// them); every predicted token counts once. Bits per byte divide the summed loss (in bits) by the UTF-8 bytes of
// the predicted tokens (special tokens have none), as Levanter's byte_length_of_token does.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "levanter/models/lm_model.h"
#include "levanter/tracker/tracker.h"

namespace levanter::data {
class TextData;
class Tokenizer;
class EvalBatches;
}  // namespace levanter::data

namespace levanter::eval {

struct EvalMetrics {
  double loss = 0;        // mean next-token loss (nats) over counted positions
  double perplexity = 0;  // exp(loss)
  double bpb = 0;         // bits per UTF-8 byte of the predicted tokens (special tokens have no bytes)
  int64_t tokens = 0;
  int64_t bytes = 0;
};

// By validation set name ("" = the single unnamed set).
using EvalResults = std::map<std::string, EvalMetrics>;

// Bytes of text each token id stands for (special tokens: 0).
std::vector<int64_t> token_byte_lengths(const data::Tokenizer& tokenizer, int64_t vocab_size);

class Evaluator {
 public:
  // seq_len: positions per sequence; batch_size: sequences per forward pass; max_batches: per set (absent: all).
  Evaluator(data::TextData& data, int64_t seq_len, int64_t batch_size, std::optional<int64_t> max_batches);
  ~Evaluator();
  bool empty() const { return sets_.empty(); }
  // Evaluates `model` with its parameters cast to `compute` (no gradients).
  EvalResults run(const models::LmHeadModel& model, at::ScalarType compute);

  // Evaluation split over the processes of a job (each holding the whole model): process `rank` of `processes`
  // evaluates batches rank, rank + processes, ...; `sum` (the processes' vectors summed, the same on every process)
  // brings every batch's sums to every process, which adds them in batch order, so the metrics are the bits one
  // process computes alone. Every process must call run at the same points.
  struct Split {
    int rank = 0;
    int processes = 1;
    std::function<void(std::vector<double>&)> sum;
  };
  void set_split(Split split) { split_ = std::move(split); }

 private:
  EvalMetrics run_set(const models::LmHeadModel& model, data::EvalBatches& batches);
  at::Tensor byte_lengths_;
  Split split_;
  std::vector<std::pair<std::string, std::unique_ptr<data::EvalBatches>>> sets_;
};

// "eval/loss", "eval/perplexity", "eval/bpb", "eval/tokens" (or eval/<set>/...), per set in name order.
tracker::Metrics to_metrics(const EvalResults& results);

}  // namespace levanter::eval
