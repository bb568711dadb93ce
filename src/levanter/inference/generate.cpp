#include "levanter/inference/generate.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

namespace levanter::inference {

using haliax::Axis;
using haliax::NamedArray;

int64_t choose_token(const at::Tensor& logits_in, const GenerateOptions& o, double u) {
  const at::Tensor logits = logits_in.to(at::kDouble).contiguous();
  const double* l = logits.data_ptr<double>();
  const int64_t n = logits.numel();
  if (o.temperature <= 0.0) return std::max_element(l, l + n) - l;  // the first maximum
  // Candidates by decreasing logit (ties: lower id first), cut by top-k.
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  const int64_t k = o.top_k > 0 ? std::min(o.top_k, n) : n;
  auto by_logit = [l](int64_t a, int64_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); };
  std::partial_sort(order.begin(), order.begin() + k, order.end(), by_logit);
  order.resize(static_cast<size_t>(k));
  // Softmax of logits / temperature over the candidates, then the top-p cut (at least one token stays).
  std::vector<double> p(order.size());
  const double top = l[order[0]] / o.temperature;
  double z = 0;
  for (size_t i = 0; i < order.size(); ++i) z += (p[i] = std::exp(l[order[i]] / o.temperature - top));
  size_t keep = order.size();
  if (o.top_p < 1.0) {
    double cum = 0;
    for (size_t i = 0; i < order.size(); ++i) {
      cum += p[i] / z;
      if (cum >= o.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double mass = 0;
  for (size_t i = 0; i < keep; ++i) mass += p[i];
  double target = u * mass, acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += p[i];
    if (target < acc) return order[i];
  }
  return order[keep - 1];
}

namespace {

// One uniform double in [0, 1) per (step, row), from the key alone.
double uniform_for(const haliax::random::Key& key, int64_t step, size_t row) {
  haliax::random::Key k = key.fold_in(static_cast<uint64_t>(step)).fold_in(static_cast<uint64_t>(row));
  return haliax::random::uniform(k, {}, at::kDouble).array().item<double>();
}

}  // namespace

std::vector<std::vector<int64_t>> generate(const models::LmHeadModel& model,
                                           const std::vector<std::vector<int64_t>>& prompts, const GenerateOptions& o,
                                           const haliax::random::Key& key, const TokenCallback& on_token) {
  at::NoGradGuard no_grad;
  if (prompts.empty()) return {};
  size_t min_len = SIZE_MAX, max_len = 0;
  for (const auto& p : prompts) {
    if (p.empty()) throw std::invalid_argument("generate: an empty prompt (give at least one token, e.g. BOS)");
    min_len = std::min(min_len, p.size());
    max_len = std::max(max_len, p.size());
  }
  const int64_t positions = static_cast<int64_t>(max_len) + o.max_new_tokens;
  if (positions > model.Pos().size) {
    throw std::invalid_argument("generate: the longest prompt (" + std::to_string(max_len) + " tokens) plus " +
                                std::to_string(o.max_new_tokens) + " new tokens exceeds the model's " +
                                std::to_string(model.Pos().size) + " positions");
  }
  const int64_t B = static_cast<int64_t>(prompts.size());
  std::unique_ptr<models::DecodeCache> cache = model.start_decode(B, positions);
  std::vector<std::vector<int64_t>> out(prompts.size());
  std::vector<bool> done(prompts.size(), false);
  // Step 0 feeds the common prefix; each later step one position per row.
  std::vector<int64_t> feed;
  for (const auto& p : prompts) feed.insert(feed.end(), p.begin(), p.begin() + static_cast<long>(min_len));
  int64_t width = static_cast<int64_t>(min_len), pos = 0;
  for (int64_t step = 0;; ++step) {
    NamedArray ids(at::tensor(feed, at::kLong).reshape({B, width}), {Axis("batch", B), Axis("position", width)});
    NamedArray hidden = model.decode(ids, *cache);  // (batch, position, embed)
    pos += width;
    NamedArray last = haliax::take(hidden, "position", width - 1);  // (batch, embed)
    at::Tensor logits = haliax::dot(last, model.lm_head(), haliax::AxisSelection(model.Embed())).array().to(at::kFloat);
    feed.assign(static_cast<size_t>(B), 0);
    bool all_done = true;
    for (size_t r = 0; r < prompts.size(); ++r) {
      const size_t next = static_cast<size_t>(pos);  // the position this row feeds next
      if (next < prompts[r].size()) {
        feed[r] = prompts[r][next];  // still inside its prompt
        all_done = false;
        continue;
      }
      if (done[r] || static_cast<int64_t>(out[r].size()) >= o.max_new_tokens) {
        done[r] = true;
        feed[r] = out[r].empty() ? prompts[r].back() : out[r].back();  // any token: its output is ignored
        continue;
      }
      const double u = o.temperature > 0 ? uniform_for(key, step, r) : 0.0;
      const int64_t t = choose_token(logits[static_cast<int64_t>(r)], o, u);
      out[r].push_back(t);
      if (on_token) on_token(r, t);
      done[r] = (o.eos_id && t == *o.eos_id) || static_cast<int64_t>(out[r].size()) >= o.max_new_tokens;
      feed[r] = t;
      all_done = all_done && done[r];
    }
    if (all_done || pos >= positions) break;
    width = 1;
  }
  return out;
}

}  // namespace levanter::inference
