#include "levanter/models/lm_loss.h"

#include "levanter/models/lm_loss_kernel.h"

#include "haliax/nn/gemm_bf16.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <optional>
#include <stdexcept>

namespace levanter::models {

using hax::NamedArray;

std::pair<NamedArray, NamedArray> next_token_targets(const NamedArray& input_ids,
                                                     const std::optional<NamedArray>& loss_mask) {
  hax::Axis Pos = input_ids.resolve_axis("position");
  int64_t p = static_cast<int64_t>(*input_ids.axis_index("position"));
  NamedArray targets(at::roll(input_ids.array(), {-1}, {p}), input_ids.axes());
  NamedArray not_last = hax::arange(Pos) < (Pos.size - 1);
  NamedArray mask = loss_mask ? (hax::astype(*loss_mask, at::kBool) & not_last) : not_last;
  return {targets, hax::broadcast_to(mask, input_ids.axes())};
}

NamedArray next_token_loss(const NamedArray& logits, const NamedArray& input_ids,
                           const std::optional<NamedArray>& loss_mask, const LossOptions& options) {
  auto [targets, mask] = next_token_targets(input_ids, loss_mask);
  NamedArray lse = hax::logsumexp(logits, "vocab");
  NamedArray loss = lse - hax::take(logits, "vocab", targets);
  if (options.z_loss_weight != 0.0) loss = loss + options.z_loss_weight * hax::square(lse);
  return hax::nn::reduce_loss(loss, options.reduction, std::nullopt, mask);
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Positions per block: about 256 MB of f32 logits, at least 256 rows. Measured on GPT-2 nano (B=16, T=128,
// vocab 50257): blocks of 128 rows are 14% slower than one block of 2048, 512 rows 1% slower; the big GEMMs
// win over cache locality, while the memory saved against full logits stays large for long batches.
int64_t block_rows(int64_t requested, int64_t n, int64_t vocab) {
  int64_t rows =
      requested > 0 ? requested : std::max<int64_t>(256, (int64_t(256) << 20) / (4 * std::max<int64_t>(vocab, 1)));
  return std::max<int64_t>(1, std::min(rows, n));
}

}  // namespace

int64_t fused_loss_block_rows(int64_t block_size, int64_t positions, int64_t vocab) {
  return block_rows(block_size, positions, vocab);
}

bool fused_loss_in_place(at::ScalarType dtype) {
  return kernels::softmax_xent_rows_supported(at::empty({1, 1}, at::TensorOptions().dtype(dtype)));
}

namespace {

struct BlockedLoss {
  at::Tensor per_token;  // [N] f32 (f64 for f64 inputs): lse - logit[target] (+ z * lse^2)
  at::Tensor value;      // 0-d: sum(per_token * weights)
  at::Tensor d_hidden;   // [N, E] in h's dtype (with_grad)
  at::Tensor d_head;     // [V, E] in w's dtype (with_grad)
};

// One block's softmax, loss (into per_token [n]) and, with with_grad, d value / d logits (returned, in loss_t) with
// ATen ops: logits [n, V] in h's dtype, tb [n, 1] the targets, wn [n] the weights. The path for f64, for devices
// other than the CPU and for the vocabulary split over processes (`vb`, see blocked_loss).
at::Tensor softmax_xent_aten(at::Tensor logits, at::Tensor tb, const at::Tensor& wn, at::ScalarType loss_t,
                             double z_loss_weight, bool with_grad, const hax::ComputeBlock* vb,
                             const at::Tensor& per_token) {
  const int64_t n = logits.size(0), V = logits.size(1);
  if (logits.scalar_type() != loss_t) logits = logits.to(loss_t);  // a fresh tensor either way: modified in place
  at::Tensor picked, in_block;  // logit of the target (vb: 0 where another process holds it)
  if (vb) {
    at::Tensor local = tb - vb->begin;
    in_block = (local >= 0) & (local < V);
    tb = local.clamp(0, V - 1);
    picked = at::where(in_block, logits.gather(1, tb), at::zeros({}, logits.options())).squeeze(1);
  } else {
    picked = logits.gather(1, tb).squeeze(1);
  }
  at::Tensor m = std::get<0>(logits.max(1, /*keepdim=*/true));
  logits.sub_(m).exp_();  // exp(logit - max)
  at::Tensor s = logits.sum(1, /*keepdim=*/true);
  at::Tensor lse, scale;  // vb: softmax = exp(logit - m) * scale
  if (vb) {
    const int64_t P = vb->pieces;
    at::Tensor x = at::zeros({2 * P + 1, n}, logits.options());
    x[vb->index].copy_(m.squeeze(1));
    x[P + vb->index].copy_(s.squeeze(1));
    x[2 * P].copy_(picked);
    vb->tp->all_reduce(x);
    at::Tensor ms = x.narrow(0, 0, P), ss = x.narrow(0, P, P);
    at::Tensor M = std::get<0>(ms.max(0));
    at::Tensor S = (ss * (ms - M).exp()).sum(0);
    picked = x[2 * P];
    lse = M + S.log();
    scale = ((m.squeeze(1) - M).exp() / S).unsqueeze(1);
  } else {
    lse = (m + s.log()).squeeze(1);
  }
  at::Tensor loss = lse - picked;
  if (z_loss_weight != 0.0) loss = loss + z_loss_weight * lse.square();
  per_token.copy_(loss);
  if (!with_grad) return at::Tensor();
  // d value / d logits = weight * ((1 + 2 z lse) * softmax - onehot(target)).
  at::Tensor wb = wn.unsqueeze(1).to(loss_t);
  at::Tensor coef = vb ? wb * scale : wb / s;
  if (z_loss_weight != 0.0) coef = coef * (1.0 + 2.0 * z_loss_weight * lse.unsqueeze(1));
  logits.mul_(coef);
  logits.scatter_add_(1, tb, vb ? -(wb * in_block) : -wb);
  return logits;
}

// h [N, E], w [V, E] (same floating dtype), targets [N] int64, weights [N] (the reduction's factor per
// position; 0 = not counted). Gradients are of `value`.
//
// With `vb` (the vocabulary split in compute over tensor parallelism's processes), w is this process's block of
// rows [vb->begin, vb->end) of the head: per block of positions each process sends its rows' max and sum of
// exponentials and the target's logit where it holds it (one exchange of 2 pieces + 1 rows, the others adding
// zeros, so exact), and every process forms the same log-sum-exp from them. d_head is then the gradient of the
// block's rows, and d_hidden this process's share of the hidden gradient (the caller sums it over processes).
BlockedLoss blocked_loss(const at::Tensor& h, const at::Tensor& w, const at::Tensor& targets, const at::Tensor& weights,
                         double z_loss_weight, int64_t block, bool with_grad, const hax::ComputeBlock* vb = nullptr) {
  const int64_t N = h.size(0), V = w.size(0), E = h.size(1);
  // bf16 on a CPU whose bf16 GEMMs are widened to f32 (haliax/nn/gemm_bf16.h): the whole head in f32 on the operands
  // widened once (exactly), the logits never rounded, the gradients rounded once at the end. The bf16 path below
  // would widen the head twice and the logits' gradient twice more (its GEMMs on this route), and round the logits.
  if (!vb && h.scalar_type() == at::kBFloat16 && w.scalar_type() == at::kBFloat16 && h.device().is_cpu() &&
      w.device().is_cpu() && hax::nn::bf16_gemm_route() == hax::nn::Bf16Gemm::widened) {
    at::Tensor h32 = hax::nn::contiguous_f32(h), w32 = hax::nn::contiguous_f32(w);
    if (kernels::head_gemms_supported(h32, w32)) {
      BlockedLoss r = blocked_loss(h32, w32, targets, weights, z_loss_weight, block, with_grad);
      h32.reset();
      w32.reset();
      if (with_grad) {
        r.d_hidden = r.d_hidden.to(at::kBFloat16);
        r.d_head = r.d_head.to(at::kBFloat16);
      }
      return r;
    }
  }
  // The loss and its gradient in f32 (f64 for f64 inputs, as in tests); GEMMs in h's dtype.
  const at::ScalarType loss_t = h.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const bool same = h.scalar_type() == loss_t;
  BlockedLoss out;
  out.per_token = at::empty({N}, h.options().dtype(loss_t));
  // f32 on CPU: the three GEMMs through oneDNN (lm_loss_kernel.h), faster than at::mm's OpenBLAS on these shapes.
  const bool f32_gemms = !vb && h.scalar_type() == at::kFloat && kernels::head_gemms_supported(h, w);
  std::optional<kernels::HeadGradAccumulator> d_head_f32;  // f32_gemms: the head's gradient over blocks
  at::Tensor d_head_acc;                                   // otherwise: accumulator over blocks, in loss_t
  // In reduced precision with a single block the head's gradient is that block's GEMM itself: accumulating it into
  // f32 zeros and rounding back gives the same values (a -0 would become +0: the optimizer's moments and the
  // parameters come out the same), for three passes over a [V, E] f32 buffer.
  const bool one_block = N <= block;
  if (with_grad) {
    out.d_hidden = at::empty({N, E}, h.options());
    if (f32_gemms) {
      d_head_f32.emplace(V, E, std::min(block, N), w.options());
    } else if (same || !one_block) {
      d_head_acc = at::zeros({V, E}, w.options().dtype(loss_t));
    }
  }
  const at::Tensor wt = w.t();
  // bf16 on the CPU: this machine's route for bf16 GEMMs (haliax/nn/gemm_bf16.h).
  const bool bf16_cpu = h.scalar_type() == at::kBFloat16 && h.device().is_cpu() && w.device().is_cpu();
  auto mm = [bf16_cpu](const at::Tensor& a, const at::Tensor& b) {
    return bf16_cpu ? hax::nn::mm_bf16(a, b) : at::mm(a, b);
  };
  for (int64_t i0 = 0; i0 < N; i0 += block) {
    const int64_t n = std::min(block, N - i0);
    at::Tensor hb = h.narrow(0, i0, n), tb = targets.narrow(0, i0, n).unsqueeze(1);
    at::Tensor logits;  // [n, V], h's dtype
    if (f32_gemms) {
      logits = at::empty({n, V}, h.options());
      kernels::head_logits(hb, w, logits);
    } else {
      logits = mm(hb, wt);
    }
    at::Tensor g;  // d value / d logits, h's dtype
    if (!vb && kernels::softmax_xent_rows_supported(logits)) {
      // On CPU, each row's softmax, loss and gradient in one pass while the row is in cache, over the logits.
      at::Tensor tn = targets.narrow(0, i0, n).contiguous();
      at::Tensor wn = with_grad ? weights.narrow(0, i0, n).to(at::kFloat).contiguous() : at::Tensor();
      kernels::softmax_xent_rows(logits, tn, wn, z_loss_weight, with_grad, out.per_token.narrow(0, i0, n));
      if (!with_grad) continue;
      g = logits;
    } else {
      g = softmax_xent_aten(logits, tb, weights.narrow(0, i0, n), loss_t, z_loss_weight, with_grad, vb,
                            out.per_token.narrow(0, i0, n));
      if (!with_grad) continue;
      if (!same) g = g.to(h.scalar_type());
    }
    at::Tensor dh_rows = out.d_hidden.narrow(0, i0, n);
    if (f32_gemms) {
      kernels::head_hidden_grad(g, w, dh_rows);  // [n, E]
      d_head_f32->add(g, hb);                    // [V, E]
      continue;
    }
    if (bf16_cpu) {
      hax::nn::mm_bf16_out(dh_rows, g, w);  // [n, E]
    } else {
      at::mm_out(dh_rows, g, w);
    }
    if (same) {
      d_head_acc.addmm_(g.t(), hb);  // [V, E]
    } else if (one_block) {
      out.d_head = mm(g.t(), hb);
    } else {
      d_head_acc.add_(mm(g.t(), hb));
    }
  }
  out.value = (out.per_token * weights.to(loss_t)).sum();
  if (with_grad && d_head_f32) out.d_head = d_head_f32->result();
  if (with_grad && d_head_acc.defined()) out.d_head = d_head_acc.to(w.scalar_type());
  return out;
}

// The vocabulary block this process computes (none: the whole head).
struct VocabSplit : torch::CustomClassHolder {
  std::optional<hax::ComputeBlock> block;
  const hax::ComputeBlock* get() const { return block ? &*block : nullptr; }
};

// The head rows `vb` selects (all of w without it).
at::Tensor head_rows(const at::Tensor& w, const c10::intrusive_ptr<VocabSplit>& vb) {
  return vb->block ? w.narrow(0, vb->block->begin, vb->block->end - vb->block->begin) : w;
}

// The whole head's gradient [V, E] on every process from each process's block of rows: the blocks, padded to one
// length, gathered in process order.
at::Tensor join_blocks(const at::Tensor& rows, const hax::ComputeBlock& b, int64_t V) {
  at::Tensor piece = rows;
  if (rows.size(0) < b.stride) {
    piece = at::cat({rows, at::zeros({b.stride - rows.size(0), rows.size(1)}, rows.options())});
  }
  at::Tensor whole = at::empty({b.stride * b.pieces, rows.size(1)}, rows.options());
  b.tp->all_gather(piece.contiguous(), whole);
  return whole.narrow(0, 0, V);
}

struct FusedLmHeadLoss : public torch::autograd::Function<FusedLmHeadLoss> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& h, const at::Tensor& w, const at::Tensor& targets,
                            const at::Tensor& weights, double z_loss_weight, int64_t block,
                            c10::intrusive_ptr<VocabSplit> vb) {
    const hax::ComputeBlock* b = vb->get();
    BlockedLoss r = blocked_loss(h, head_rows(w, vb), targets, weights, z_loss_weight, block, /*with_grad=*/true, b);
    if (b) r.d_head = join_blocks(r.d_head, *b, w.size(0));
    ctx->save_for_backward({r.d_hidden, r.d_head});
    return r.value;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list saved = ctx->get_saved_variables();
    const at::Tensor& g = grad_outputs[0];  // 0-d
    // The loss is usually differentiated as it is (g = 1): the saved gradients are then the answer, bit for bit,
    // without two more passes over [N, E] and [V, E].
    if (g.device().is_cpu() && g.item<double>() == 1.0)
      return {saved[0], saved[1], at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    at::Tensor dh = saved[0] * g.to(saved[0].scalar_type());
    at::Tensor dw = saved[1] * g.to(saved[1].scalar_type());
    return {dh, dw, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

NamedArray fused_next_token_loss(const NamedArray& hidden, const NamedArray& lm_head, const NamedArray& input_ids,
                                 const std::optional<NamedArray>& loss_mask, const LossOptions& options) {
  using hax::nn::Reduction;
  auto [targets, mask] = next_token_targets(input_ids, loss_mask);
  const hax::Axis Embed = hidden.resolve_axis("embed");
  const hax::Axis Vocab = lm_head.resolve_axis("vocab");
  if (lm_head.axes().size() != 2 || !lm_head.has_axis("embed") || lm_head.axis_size("embed") != Embed.size) {
    throw std::invalid_argument("fused_next_token_loss: lm_head must be (vocab, embed) with embed " +
                                std::to_string(Embed.size) + ", got " + lm_head.str());
  }
  // Positions in input_ids' axis order, embed last.
  std::vector<hax::AxisSelector> order;
  for (const hax::Axis& a : input_ids.axes()) order.emplace_back(a.name);
  order.emplace_back(Embed.name);
  // Under tensor parallelism with the vocabulary split in compute, this process computes its block of the head's rows
  // (blocked_loss); the hidden gradient it finds is its share, summed over the processes by Megatron's f.
  auto vb = c10::make_intrusive<VocabSplit>();
  vb->block = hax::compute_block(Vocab.name, Vocab.size);
  if (vb->block) {
    // Each process sees only its rows: an id outside the vocabulary would be no process's target, not an error.
    at::Tensor ids = input_ids.array();
    if (ids.numel() > 0 && (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= Vocab.size)) {
      throw std::invalid_argument("fused_next_token_loss: token ids must lie in [0, " + std::to_string(Vocab.size) +
                                  "), got " + std::to_string(ids.min().item<int64_t>()) + " .. " +
                                  std::to_string(ids.max().item<int64_t>()));
    }
  }
  NamedArray h = hax::rearrange(vb->block ? hax::sum_gradient_partials(hidden) : hidden, hax::AxisSelection(order));
  if (h.axes().size() != input_ids.axes().size() + 1) {
    throw std::invalid_argument("fused_next_token_loss: hidden " + hidden.str() + " must have input_ids' axes " +
                                input_ids.str() + " plus embed");
  }
  const int64_t N = input_ids.array().numel();
  at::Tensor h2 = h.array().reshape({N, Embed.size});
  at::Tensor w2 = hax::rearrange(lm_head, hax::AxisSelection{Vocab.name, Embed.name}).array();
  if (w2.scalar_type() != h2.scalar_type()) w2 = w2.to(h2.scalar_type());
  at::Tensor t = targets.array().reshape({N}).to(at::kLong);
  at::Tensor m = mask.array().reshape({N}).to(h2.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
  const int64_t block = block_rows(options.block_size, N, Vocab.size);
  const bool want_grad = at::GradMode::is_enabled() && (h2.requires_grad() || w2.requires_grad());

  if (options.reduction == Reduction::kNone) {
    if (want_grad) {
      throw std::invalid_argument(
          "fused_next_token_loss: Reduction::kNone gives per-position losses without gradients; "
          "use kMean or kSum to train (or next_token_loss on materialised logits)");
    }
    at::NoGradGuard ng;
    BlockedLoss r = blocked_loss(h2, head_rows(w2, vb), t, m, options.z_loss_weight, block, false, vb->get());
    return NamedArray((r.per_token * m).reshape(input_ids.array().sizes()), input_ids.axes());
  }
  at::Tensor weights = options.reduction == Reduction::kMean ? m / m.sum() : m;
  if (!want_grad) {
    at::NoGradGuard ng;
    return NamedArray(
        blocked_loss(h2, head_rows(w2, vb), t, weights, options.z_loss_weight, block, false, vb->get()).value, {});
  }
  return NamedArray(FusedLmHeadLoss::apply(h2, w2, t, weights, options.z_loss_weight, block, vb), {});
}

}  // namespace levanter::models
