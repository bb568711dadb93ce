#include "haliax/nn/activations.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <stdexcept>

#include "haliax/core.h"
#include "haliax/error.h"
#include "haliax/nn/gelu_cpu.h"

namespace haliax::nn {

namespace {

// GELU (tanh) on a bf16 or f32 CPU tensor in one pass each way (gelu_cpu.h): the f32 formula (with a 3.5-ulp tanhf),
// bf16 rounded once, saving the bf16 input rather than an f32 copy. A backward that is itself differentiated
// (Sophia-H's Hessian-vector products) takes libtorch's differentiable gelu_backward on f32 instead, the same formula.
struct GeluTanhCpu : public torch::autograd::Function<GeluTanhCpu> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x) {
    ctx->save_for_backward({x});
    return kernels::gelu_tanh(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    const at::Tensor& dy = grad_outputs[0];
    if (at::GradMode::is_enabled() || dy.scalar_type() != x.scalar_type() || !dy.device().is_cpu()) {
      return {at::gelu_backward(dy.to(at::kFloat), x.to(at::kFloat), "tanh").to(x.scalar_type())};
    }
    return {kernels::gelu_tanh_backward(dy, x)};
  }
};

}  // namespace

NamedArray relu(const NamedArray& x) { return NamedArray(at::relu(x.array()), x.axes()); }
NamedArray relu6(const NamedArray& x) { return NamedArray(at::hardtanh(x.array(), 0.0, 6.0), x.axes()); }
NamedArray sigmoid(const NamedArray& x) { return NamedArray(at::sigmoid(x.array()), x.axes()); }
NamedArray log_sigmoid(const NamedArray& x) { return NamedArray(at::log_sigmoid(x.array()), x.axes()); }
NamedArray silu(const NamedArray& x) { return NamedArray(at::silu(x.array()), x.axes()); }
NamedArray swish(const NamedArray& x) { return silu(x); }
NamedArray softplus(const NamedArray& x) { return NamedArray(at::softplus(x.array()), x.axes()); }
NamedArray elu(const NamedArray& x, double alpha) { return NamedArray(at::elu(x.array(), alpha), x.axes()); }
NamedArray leaky_relu(const NamedArray& x, double slope) {
  return NamedArray(at::leaky_relu(x.array(), slope), x.axes());
}
NamedArray gelu(const NamedArray& x, bool approximate) {
  const char* kind = approximate ? "tanh" : "none";
  if (approximate && kernels::gelu_tanh_supported(x.array())) {
    return NamedArray(GeluTanhCpu::apply(x.array()), x.axes());
  }
  if (x.dtype() == at::kBFloat16 || x.dtype() == at::kHalf) {
    // In f32, rounded once: libtorch 1.13's CPU kernels for bf16 round after every operation of the tanh formula
    // and run 2.5x slower than f32 (GPT-2 124M B=4 T=64: 68 ms a step against 31 ms for GELU forward + backward).
    return NamedArray(at::gelu(x.array().to(at::kFloat), kind).to(x.dtype()), x.axes());
  }
  return NamedArray(at::gelu(x.array(), kind), x.axes());
}
NamedArray quick_gelu(const NamedArray& x) { return x * sigmoid(x * 1.702); }
NamedArray soft_sign(const NamedArray& x) { return NamedArray(x.array() / (x.array().abs() + 1), x.axes()); }
NamedArray hard_sigmoid(const NamedArray& x) {
  return NamedArray(at::hardtanh(x.array() + 3.0, 0.0, 6.0) / 6.0, x.axes());
}
NamedArray hard_silu(const NamedArray& x) { return x * hard_sigmoid(x); }
NamedArray hard_swish(const NamedArray& x) { return hard_silu(x); }
NamedArray hard_tanh(const NamedArray& x) { return NamedArray(at::hardtanh(x.array(), -1.0, 1.0), x.axes()); }
NamedArray celu(const NamedArray& x, double alpha) { return NamedArray(at::celu(x.array(), alpha), x.axes()); }
NamedArray selu(const NamedArray& x) { return NamedArray(at::selu(x.array()), x.axes()); }
NamedArray relu_squared(const NamedArray& x) { return NamedArray(at::relu(x.array()).square(), x.axes()); }

NamedArray glu(const NamedArray& x, const AxisSelector& axis) {
  Axis ax = x.resolve_axis(axis);
  if (ax.size % 2 != 0) value_error("glu: axis " + to_string(ax) + " must have an even size");
  const int64_t d = static_cast<int64_t>(*x.axis_index(AxisSelector(ax.name)));
  std::vector<at::Tensor> halves = x.array().chunk(2, d);
  AxisSpec out = replace_axis(x.axes(), AxisSelector(ax.name), {ax.resize(ax.size / 2)});
  return NamedArray(halves[0] * at::sigmoid(halves[1]), out);
}

namespace {

// Softmax-like ops over several axes: move them last, flatten them, apply over the last dim, restore.
template <typename F>
NamedArray over_axes(const NamedArray& x, const AxisSelection& axis, F&& f) {
  AxisSpec axes = x.resolve_axes(axis);
  if (axes.size() == 1) {
    return NamedArray(f(x.array(), static_cast<int64_t>(*x.axis_index(axes[0]))), x.axes());
  }
  const std::string flat = "__softmax_flat";
  std::vector<AxisSelector> order{AxisSelector(kEllipsis)};
  for (const Axis& a : axes) order.emplace_back(a);
  NamedArray moved = rearrange(x, AxisSelection(order));
  NamedArray flattened = flatten_axes(moved, AxisSelection(axes), AxisSelector(flat));
  NamedArray out(f(flattened.array(), flattened.ndim() - 1), flattened.axes());
  return rearrange(unflatten_axis(out, AxisSelector(flat), axes), AxisSelection(x.axes()));
}

}  // namespace

NamedArray softmax(const NamedArray& x, const AxisSelection& axis) {
  return over_axes(x, axis, [](const at::Tensor& t, int64_t d) { return at::softmax(t, d); });
}

NamedArray log_softmax(const NamedArray& x, const AxisSelection& axis) {
  return over_axes(x, axis, [](const at::Tensor& t, int64_t d) { return at::log_softmax(t, d); });
}

NamedArray softmax(const NamedArray& x) { return softmax(x, AxisSelection(x.axes())); }
NamedArray log_softmax(const NamedArray& x) { return log_softmax(x, AxisSelection(x.axes())); }

NamedArray standardize(const NamedArray& x, const AxisSelection& axis, const StandardizeOptions& o) {
  auto mean_of = [&](const NamedArray& v) { return o.where ? haliax::mean(v, axis, *o.where) : haliax::mean(v, axis); };
  NamedArray m = o.mean ? *o.mean : mean_of(x);
  NamedArray v;
  if (o.variance) {
    v = *o.variance;
  } else {
    NamedArray raw = mean_of(x * x) - m * m;
    v = NamedArray(at::clamp_min(raw.array(), 0.0), raw.axes());
  }
  return (x - m) * rsqrt(v + o.epsilon);
}

NamedArray standardize(const NamedArray& x, const AxisSelection& axis, std::optional<NamedArray> mean_,
                       std::optional<NamedArray> variance, double epsilon) {
  StandardizeOptions o;
  o.mean = std::move(mean_);
  o.variance = std::move(variance);
  o.epsilon = epsilon;
  return standardize(x, axis, o);
}

NamedArray one_hot(const NamedArray& ids, const Axis& class_axis, at::ScalarType dtype) {
  if (!at::isIntegralType(ids.dtype(), false)) value_error("one_hot needs integer ids, got " + ids.str());
  if (ids.has_axis(AxisSelection(AxisSelector(class_axis.name)))) {
    value_error("one_hot: the ids already have axis " + class_axis.name + ": " + ids.str());
  }
  at::Tensor classes = at::arange(class_axis.size, at::TensorOptions().dtype(ids.dtype()).device(ids.device()));
  AxisSpec out = concat_axes(ids.axes(), {class_axis});
  return NamedArray(at::eq(ids.array().unsqueeze(-1), classes).to(dtype), out);
}

NamedArray one_hot(int64_t id, const Axis& class_axis, at::ScalarType dtype) {
  if (id < -class_axis.size || id >= class_axis.size) {
    value_error("one_hot: class id " + std::to_string(id) + " is out of range for " + to_string(class_axis) +
                " (need -" + std::to_string(class_axis.size) + " <= id < " + std::to_string(class_axis.size) + ")");
  }
  return one_hot(at::scalar_tensor(id, at::kLong), class_axis, dtype);
}

NamedArray one_hot(const at::Tensor& id, const Axis& class_axis, at::ScalarType dtype) {
  if (id.dim() != 0) {
    std::string shape = "(";
    for (int64_t i = 0; i < id.dim(); ++i) shape += (i ? ", " : "") + std::to_string(id.size(i));
    shape += id.dim() == 1 ? ",)" : ")";
    value_error("one_hot expects a scalar integer or NamedArray, but got array with shape " + shape);
  }
  if (!at::isIntegralType(id.scalar_type(), /*includeBool=*/true)) {
    value_error(std::string("one_hot expects an integer scalar or NamedArray, but got value with dtype ") +
                dtype_name(id.scalar_type()));
  }
  // Haliax sets position `id` of a zero vector (`.at[id].set(1)`). A bool id is a mask index there: true sets
  // every position, false none.
  if (id.scalar_type() == at::kBool) {
    return NamedArray(id.to(dtype).expand({class_axis.size}).contiguous(), {class_axis});
  }
  // Negative ids wrap once; anything still out of range is dropped.
  at::Tensor wrapped = id.to(at::kLong);
  wrapped = at::where(wrapped < 0, wrapped + class_axis.size, wrapped);
  at::Tensor classes = at::arange(class_axis.size, at::TensorOptions().dtype(at::kLong).device(id.device()));
  return NamedArray(at::eq(classes, wrapped).to(dtype), {class_axis});
}

namespace {
NamedArray gelu_tanh(const NamedArray& x) { return gelu(x, true); }
NamedArray gelu_erf(const NamedArray& x) { return gelu(x, false); }
const std::vector<std::pair<std::string, ActivationFunction>>& activation_table() {
  static const std::vector<std::pair<std::string, ActivationFunction>> table{
      {"gelu_new", gelu_tanh}, {"gelu", gelu_erf}, {"gelu_pytorch_tanh", gelu_tanh}, {"relu", relu},
      {"silu", silu},          {"swish", swish},   {"quick_gelu", quick_gelu}};
  return table;
}
}  // namespace

ActivationFunction activation_function(const std::string& name) {
  for (const auto& [n, f] : activation_table()) {
    if (n == name) return f;
  }
  std::string list;
  for (const std::string& n : activation_function_names()) list += (list.empty() ? "" : ", ") + n;
  throw std::invalid_argument("unknown activation '" + name + "'; valid: " + list);
}

const std::vector<std::string>& activation_function_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& [n, f] : activation_table()) out.push_back(n);
    return out;
  }();
  return names;
}

}  // namespace haliax::nn
