#include "haliax/nn/linear.h"

#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>

#include "haliax/core.h"
#include "haliax/nn/gemm_bf16.h"
#include "haliax/nn/layer_grads.h"
#include "haliax/nn/sgemm_cpu.h"
#include "haliax/ops.h"
#include "haliax/ops/contract.h"
#include "haliax/partitioning.h"

namespace haliax::nn {

namespace {

// The Linear layer's GEMMs on the CPU: f32 through oneDNN's sgemm (sgemm_cpu.h) rather than at::mm's OpenBLAS, and
// bf16 where this machine widens bf16 GEMMs to f32 (gemm_bf16.h; elsewhere bf16 takes at::addmm, oneDNN's bf16
// kernels). y [M, N] = x [M, K] op(w) (+ b), dx = dy op(w)^T, dw = the weight's layout of x^T dy. w is the weight as
// stored: [N, K] when out_first (torch's nn.Linear), else [K, N]. A backward that is itself differentiated (Sophia-H's
// Hessian-vector products) takes at::mm, which autograd can differentiate again. The two structs differ only in
// whether a bias is an input (libtorch 1.13 takes no undefined tensor as a custom function's input).
//
// Widened bf16: the bf16 layer is the f32 layer on its operands widened (exactly, each once per pass: the output
// gradient serves dx, dW and db), every result rounded to bf16 once, so its bits are the f32 layer's rounded. Where a
// whole widened operand or result would exceed kWholeF32Elements (a large vocabulary's head as an nn::Linear), the
// blocked widened product (gemm_bf16.h) bounds the f32 memory instead: the same sums, rounded once, in another order.
//
// Forwards of fewer than kDnnlMinRows rows (decoding's few rows a step) stay at::mm's: in f32 OpenBLAS gives a row the
// same bits whatever the other rows computed with it, up to 14 rows, so a batch decodes as its rows would alone; oneDNN
// does not (its one-row path and its kernels for a block's last rows round differently). bf16 keeps at::addmm there
// too (oneDNN's bf16 kernels), as it decoded before bf16 GEMMs could be widened.
constexpr int64_t kDnnlMinRows = 64;
constexpr int64_t kWholeF32Elements = int64_t{1} << 24;  // 64 MB of f32

// Whether the widened bf16 layer widens its operands whole: [M, K] x [K, N].
bool widen_whole(int64_t M, int64_t K, int64_t N) {
  return M * K <= kWholeF32Elements && K * N <= kWholeF32Elements && M * N <= kWholeF32Elements;
}

// y = x op(w) in f32: x, w contiguous f32.
at::Tensor product_f32(const at::Tensor& x, const at::Tensor& w, bool out_first) {
  const int64_t M = x.size(0), K = x.size(1), N = out_first ? w.size(0) : w.size(1);
  at::Tensor y = at::empty({M, N}, x.options());
  kernels::sgemm('N', out_first ? 'T' : 'N', M, N, K, 1.0f, x.data_ptr<float>(), K, w.data_ptr<float>(),
                 out_first ? K : N, 0.0f, y.data_ptr<float>(), N, "Linear");
  return y;
}

// The layer forward. From kDnnlMinRows rows the bias is added to the finished sum (each element fl(sum + b)), in f32 a
// pass over the product while it is still in cache, in widened bf16 within the pass that rounds it: so the widened
// layer's bits stay the f32 layer's, rounded. (Starting the GEMM from the bias broadcast, beta = 1 as addmm does, sums
// the bias in at a point that depends on the library's K blocking, and in widened bf16 writes and reads one more f32
// output.) Fewer rows take at::addmm (above).
at::Tensor linear_cpu(const at::Tensor& x, const at::Tensor& w, const at::Tensor* b, bool out_first) {
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  RECORD_FUNCTION(bf16 ? "haliax::linear_bf16" : "haliax::linear_f32", std::vector<c10::IValue>());
  if (x.size(0) < kDnnlMinRows) {
    const at::Tensor w2 = out_first ? w.t() : w;  // [K, N]
    return b ? at::addmm(*b, x, w2) : at::mm(x, w2);
  }
  if (!bf16) {
    at::Tensor y = product_f32(x, w, out_first);
    if (b) y.add_(*b);
    return y;
  }
  const int64_t M = x.size(0), K = x.size(1), N = out_first ? w.size(0) : w.size(1);
  if (!widen_whole(M, K, N)) {
    at::Tensor y = at::empty({M, N}, x.options());
    kernels::gemm_bf16_widened(x, out_first ? w.t() : w, b, y);
    return y;
  }
  const at::Tensor b32 = b ? contiguous_f32(*b) : at::Tensor();
  const at::Tensor y32 = product_f32(contiguous_f32(x), contiguous_f32(w), out_first);
  at::Tensor y = at::empty({M, N}, x.options());
  kernels::round_bf16_rows(y32, b ? &b32 : nullptr, y);
  return y;
}

// (dx, dw, db) for dy, each only where asked; dw computed in its place in the stacked layers' gradient where the
// weight is one layer's view (slot, layer_grads.h).
std::vector<at::Tensor> linear_cpu_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w,
                                            bool out_first, bool want_x, bool want_w, bool want_b,
                                            const LayerGradSlot* slot) {
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  RECORD_FUNCTION(bf16 ? "haliax::linear_bf16_backward" : "haliax::linear_f32_backward", std::vector<c10::IValue>());
  at::Tensor dx, dw, db;
  if (at::GradMode::is_enabled()) {
    const at::Tensor wt = out_first ? w.t() : w;  // [K, N]
    if (want_x) dx = dy.mm(wt.t());
    if (want_w) dw = out_first ? dy.t().mm(x) : x.t().mm(dy);
    if (want_b) db = dy.sum(0);
    return {dx, dw, db};
  }
  const int64_t M = x.size(0), K = x.size(1), N = dy.size(1);
  // dw goes to its place in the stacked gradient where the weight has one.
  auto dw_buffer = [&] {
    at::Tensor buf = slot ? slot->claim(w.sizes()) : at::Tensor();
    return buf.defined() ? buf : at::empty_like(w);
  };
  if (bf16 && !widen_whole(M, K, N)) {
    if (want_x) {
      dx = at::empty_like(x);
      kernels::gemm_bf16_widened(dy, out_first ? w : w.t(), nullptr, dx);
    }
    if (want_w) {
      dw = dw_buffer();
      kernels::gemm_bf16_widened(out_first ? dy.t() : x.t(), out_first ? x : dy, nullptr, dw);
    }
    if (want_b) db = dy.sum(0);
    return {dx, dw, db};
  }
  // bf16: the f32 layer's products on the operands widened (dy once for all three), each result rounded once.
  const at::Tensor g = contiguous_f32(dy);
  if (want_x) {
    const at::Tensor w32 = contiguous_f32(w);
    at::Tensor dx32 = at::empty({M, K}, g.options());
    kernels::sgemm('N', out_first ? 'N' : 'T', M, K, N, 1.0f, g.data_ptr<float>(), N, w32.data_ptr<float>(),
                   out_first ? K : N, 0.0f, dx32.data_ptr<float>(), K, "Linear");
    dx = bf16 ? dx32.to(at::kBFloat16) : dx32;
  }
  if (want_w) {
    dw = dw_buffer();
    const at::Tensor x32 = contiguous_f32(x);
    const at::Tensor dw32 = bf16 ? at::empty(w.sizes(), g.options()) : dw;
    if (out_first) {
      kernels::sgemm('T', 'N', N, K, M, 1.0f, g.data_ptr<float>(), N, x32.data_ptr<float>(), K, 0.0f,
                     dw32.data_ptr<float>(), K, "Linear");
    } else {
      kernels::sgemm('T', 'N', K, N, M, 1.0f, x32.data_ptr<float>(), K, g.data_ptr<float>(), N, 0.0f,
                     dw32.data_ptr<float>(), N, "Linear");
    }
    if (bf16) dw.copy_(dw32);
  }
  if (want_b) db = bf16 ? g.sum(0).to(at::kBFloat16) : dy.sum(0);
  return {dx, dw, db};
}

// The weight's place in the stacked layers' gradient, if it has one, kept with the backward.
void save_slot(torch::autograd::AutogradContext* ctx, const at::Tensor& w) {
  if (auto slot = LayerGradSlot::find(w)) ctx->saved_data["slot"] = c10::IValue::make_capsule(std::move(slot));
}
c10::intrusive_ptr<LayerGradSlot> slot_of(torch::autograd::AutogradContext* ctx) {
  auto it = ctx->saved_data.find("slot");
  if (it == ctx->saved_data.end()) return {};
  return c10::static_intrusive_pointer_cast<LayerGradSlot>(it->second.toCapsule());
}

struct LinearCpu : public torch::autograd::Function<LinearCpu> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            bool out_first) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["out_first"] = out_first;
    save_slot(ctx, w);
    return linear_cpu(x, w, nullptr, out_first);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list g) {
    const auto s = ctx->get_saved_variables();
    auto d = linear_cpu_backward(g[0], s[0], s[1], ctx->saved_data["out_first"].toBool(), ctx->needs_input_grad(0),
                                 ctx->needs_input_grad(1), false, slot_of(ctx).get());
    return {d[0], d[1], at::Tensor()};
  }
};

struct LinearBiasCpu : public torch::autograd::Function<LinearBiasCpu> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const at::Tensor& b, bool out_first) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["out_first"] = out_first;
    save_slot(ctx, w);
    return linear_cpu(x, w, &b, out_first);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list g) {
    const auto s = ctx->get_saved_variables();
    auto d = linear_cpu_backward(g[0], s[0], s[1], ctx->saved_data["out_first"].toBool(), ctx->needs_input_grad(0),
                                 ctx->needs_input_grad(1), ctx->needs_input_grad(2), slot_of(ctx).get());
    return {d[0], d[1], d[2], at::Tensor()};
  }
};

// Whether the product takes LinearCpu: f32 CPU operands (the bias too, if any), or bf16 ones on a machine that
// widens bf16 GEMMs.
bool linear_cpu_applies(const at::Tensor& x, const at::Tensor& w, const at::Tensor* b) {
  const at::ScalarType t = x.scalar_type();
  if (t != at::kFloat && !(t == at::kBFloat16 && bf16_gemm_route() == Bf16Gemm::widened)) return false;
  auto cpu_of_type = [t](const at::Tensor& u) { return u.scalar_type() == t && u.device().is_cpu(); };
  return cpu_of_type(x) && cpu_of_type(w) && (!b || cpu_of_type(*b));
}

}  // namespace

Linear Linear::init(const AxisSpec& In, const AxisSpec& Out, const random::Key& key, const LinearOptions& o) {
  AxisSpec joint = o.out_first ? concat_axes(Out, In) : concat_axes(In, Out);
  NamedArray w = random::truncated_normal(key, joint, -3.0, 3.0) * (o.init_scale / std::sqrt(double(axis_size(In))));
  Linear l{In, Out, astype(w, o.dtype), std::nullopt};
  if (o.use_bias) l.bias = zeros(Out, o.dtype);
  return l;
}

NamedArray Linear::operator()(const NamedArray& x_in) const {
  // The axes as the weight has them: under tensor parallelism (partitioning.h) a split axis is this process's piece
  // of the axis the layer was built with.
  AxisSpec In = this->In, Out = this->Out;
  for (AxisSpec* spec : {&In, &Out}) {
    for (Axis& a : *spec) {
      if (auto i = index_of(weight.axes(), a.name)) a = weight.axes()[*i];
    }
  }
  // Tensor parallelism: x's gradient is summed over the processes when the weight's output is split, the product
  // when its input is (the bias added once, after the sum).
  // dot's output axes: x's, then the weight's others, without In (by name: x may hold a split axis whole).
  AxisSpec out_axes;
  for (const AxisSpec* spec : {&x_in.axes(), &weight.axes()}) {
    for (const Axis& a : *spec) {
      if (!index_of(In, a.name) && !index_of(out_axes, a.name)) out_axes.push_back(a);
    }
  }
  bool sum_result = false;
  const NamedArray x = prepare_contraction({x_in, weight}, out_axes, &sum_result)[0];
  NamedArray out;
  // Fast path, the common case: the weight is laid out (Out, In) or (In, Out). Then the layer is one GEMM with
  // the bias in the same custom function (LinearBiasCpu: from 64 rows added to the finished sum; elsewhere addmm, as
  // torch's nn.Linear does), and the bias gradient comes out of the same backward. If x's In axes are not already its
  // trailing axes, they are moved there first (one copy, the same one a positional implementation makes with
  // transpose().contiguous()).
  const size_t k = In.size();
  bool out_first = weight.axes() == concat_axes(Out, In);
  bool in_first = !out_first && weight.axes() == concat_axes(In, Out);
  bool same_dtype = x.dtype() == weight.dtype() && (!bias || bias->dtype() == x.dtype());
  if ((out_first || in_first) && same_dtype && (!bias || bias->axes() == Out) && x.has_axis(AxisSelection(In))) {
    NamedArray xt = x;
    const AxisSpec& xa = x.axes();
    bool trailing = xa.size() >= k && std::equal(xa.end() - static_cast<long>(k), xa.end(), In.begin());
    if (!trailing) {
      std::vector<AxisSelector> order{AxisSelector(kEllipsis)};
      for (const Axis& a : In) order.emplace_back(a);
      xt = rearrange(x, AxisSelection(order));
    }
    const int64_t n_in = axis_size(In), n_out = axis_size(Out);
    at::Tensor x2 = xt.array().reshape({-1, n_in});
    const bool with_bias = bias && !sum_result;
    const at::Tensor b = with_bias ? bias->array().reshape({n_out}) : at::Tensor();
    at::Tensor y;
    if (linear_cpu_applies(x2, weight.array(), with_bias ? &b : nullptr)) {
      // oneDNN's GEMMs (LinearCpu above).
      const at::Tensor x2c = x2.contiguous();
      const std::vector<int64_t> w_shape =
          out_first ? std::vector<int64_t>{n_out, n_in} : std::vector<int64_t>{n_in, n_out};
      const at::Tensor w2 = weight.array().reshape(w_shape).contiguous();
      y = with_bias ? LinearBiasCpu::apply(x2c, w2, b.contiguous(), out_first) : LinearCpu::apply(x2c, w2, out_first);
    } else {
      at::Tensor w2 = out_first ? weight.array().reshape({n_out, n_in}).t() : weight.array().reshape({n_in, n_out});
      y = with_bias ? at::addmm(b, x2, w2) : at::mm(x2, w2);
    }
    AxisSpec axes(xt.axes().begin(), xt.axes().end() - static_cast<long>(k));
    axes.insert(axes.end(), Out.begin(), Out.end());
    std::vector<int64_t> sizes;
    for (const Axis& a : axes) sizes.push_back(a.size);
    out = NamedArray(y.reshape(sizes), axes);
    if (bias && !sum_result) return out;
  } else {
    out = detail::contract({x, weight}, out_axes);
  }
  if (sum_result) out = sum_partial_results(out);
  if (bias) out = out + *bias;
  return out;
}

bool Linear::bias_axes_are_out() const { return !bias || bias->axes() == Out; }

}  // namespace haliax::nn
