#include "levanter/eval/token_probs.h"

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

namespace levanter::eval {

using haliax::Axis;
using haliax::NamedArray;

std::vector<TokenScores> score_tokens(const models::LmHeadModel& model, const std::vector<std::vector<int64_t>>& docs,
                                      int64_t top_k, at::ScalarType compute) {
  at::NoGradGuard no_grad;
  std::unique_ptr<models::LmHeadModel> cast;
  const models::LmHeadModel* m = &model;
  if (compute != model.lm_head().dtype()) {
    cast = models::cast_floating(model, compute);
    m = cast.get();
  }
  const int64_t V = m->Vocab().size;
  const int64_t k = std::max<int64_t>(0, std::min(top_k, V));
  std::vector<TokenScores> out;
  out.reserve(docs.size());
  for (size_t d = 0; d < docs.size(); ++d) {
    const auto& doc = docs[d];
    const auto n = static_cast<int64_t>(doc.size());
    if (n < 2 || n > m->Pos().size) {
      throw std::invalid_argument("document " + std::to_string(d) + " has " + std::to_string(n) +
                                  " tokens: scoring needs 2 to " + std::to_string(m->Pos().size) +
                                  " (the model's position axis)");
    }
    at::Tensor ids = at::tensor(doc, at::kLong);
    NamedArray x(ids.reshape({1, n}), {Axis("batch", 1), Axis("position", n)});
    NamedArray logits_named = haliax::rearrange(m->logits(x), haliax::AxisSelection{"batch", "position", "vocab"});
    // Position j's logits predict token j+1: rows 0..n-2 against targets 1..n-1.
    at::Tensor logits = logits_named.array()[0].narrow(0, 0, n - 1).to(at::kFloat);  // (n-1, V)
    at::Tensor targets = ids.narrow(0, 1, n - 1).unsqueeze(1);                       // (n-1, 1)
    at::Tensor logp = at::log_softmax(logits, 1);
    at::Tensor target_logp = logp.gather(1, targets).squeeze(1);
    at::Tensor target_logit = logits.gather(1, targets);
    at::Tensor rank = (logits > target_logit).sum(1) + 1;
    TokenScores s;
    s.loss = -target_logp.to(at::kDouble).mean().item<double>();
    at::Tensor p = target_logp.exp().contiguous();
    s.p.assign(p.data_ptr<float>(), p.data_ptr<float>() + (n - 1));
    rank = rank.to(at::kLong).contiguous();
    s.rank.assign(rank.data_ptr<int64_t>(), rank.data_ptr<int64_t>() + (n - 1));
    s.top.resize(static_cast<size_t>(n - 1));
    if (k > 0) {
      auto [values, indices] = logits.topk(k, 1, /*largest=*/true, /*sorted=*/true);
      at::Tensor top_p = logp.gather(1, indices).exp().contiguous();
      indices = indices.contiguous();
      const float* tp = top_p.data_ptr<float>();
      const int64_t* ti = indices.data_ptr<int64_t>();
      for (int64_t j = 0; j < n - 1; ++j) {
        auto& row = s.top[static_cast<size_t>(j)];
        row.reserve(static_cast<size_t>(k));
        for (int64_t i = 0; i < k; ++i) row.emplace_back(ti[j * k + i], tp[j * k + i]);
      }
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace levanter::eval
