// Activation and normalisation functions over named axes (haliax.nn).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "haliax/named_array.h"
#include "haliax/ops.h"

namespace haliax::nn {

NamedArray relu(const NamedArray& x);
NamedArray relu6(const NamedArray& x);
NamedArray sigmoid(const NamedArray& x);
NamedArray log_sigmoid(const NamedArray& x);
NamedArray silu(const NamedArray& x);
NamedArray swish(const NamedArray& x);  // = silu
NamedArray softplus(const NamedArray& x);
NamedArray elu(const NamedArray& x, double alpha = 1.0);
NamedArray leaky_relu(const NamedArray& x, double negative_slope = 0.01);
// GELU; approximate = true is the tanh form used by GPT-2 ("gelu_new"), false the exact erf form.
NamedArray gelu(const NamedArray& x, bool approximate = true);
NamedArray quick_gelu(const NamedArray& x);
// jax.nn's remaining pointwise activations, as Haliax re-exports them.
NamedArray soft_sign(const NamedArray& x);     // x / (|x| + 1)
NamedArray hard_sigmoid(const NamedArray& x);  // relu6(x + 3) / 6
NamedArray hard_silu(const NamedArray& x);     // x * hard_sigmoid(x)
NamedArray hard_swish(const NamedArray& x);    // = hard_silu
NamedArray hard_tanh(const NamedArray& x);     // clip(x, -1, 1)
NamedArray celu(const NamedArray& x, double alpha = 1.0);
NamedArray selu(const NamedArray& x);
NamedArray relu_squared(const NamedArray& x);  // relu(x)^2
// Gated linear unit: split `axis` into halves a, b and return a * sigmoid(b); the axis keeps its name with half
// the size. Differs: Haliax keeps the full-size axis in the result's axes (a mismatch with its own array); its
// size must be even (Haliax asserts, we throw ValueError).
NamedArray glu(const NamedArray& x, const AxisSelector& axis);

// A pointwise activation resolved once, when a module is built, instead of by name on every call.
using ActivationFunction = NamedArray (*)(const NamedArray&);
// By Hugging Face's / Levanter's name: gelu_new and gelu_pytorch_tanh (tanh GELU), gelu (erf GELU), relu,
// silu, swish, quick_gelu. Throws std::invalid_argument "unknown activation 'x'; valid: ..." otherwise.
ActivationFunction activation_function(const std::string& name);
// The names activation_function accepts, in a fixed order.
const std::vector<std::string>& activation_function_names();

// Softmax over one or several axes (several are normalised jointly); without `axis`, over all axes (Haliax's
// axis=None; differs: Haliax returns a bare array there, we keep the axes).
NamedArray softmax(const NamedArray& x, const AxisSelection& axis);
NamedArray log_softmax(const NamedArray& x, const AxisSelection& axis);
NamedArray softmax(const NamedArray& x);
NamedArray log_softmax(const NamedArray& x);
using haliax::logsumexp;

// standardize's keyword arguments, by name: nn::StandardizeOptions().set_where(mask).set_epsilon(1e-6).
struct StandardizeOptions {
  std::optional<NamedArray> mean;  // given statistics (e.g. running ones) instead of computed ones
  std::optional<NamedArray> variance;
  double epsilon = 1e-5;
  std::optional<NamedArray> where;  // bool: only these elements count towards the computed mean/variance
  StandardizeOptions& set_mean(NamedArray v) {
    mean = std::move(v);
    return *this;
  }
  StandardizeOptions& set_variance(NamedArray v) {
    variance = std::move(v);
    return *this;
  }
  StandardizeOptions& set_epsilon(double v) {
    epsilon = v;
    return *this;
  }
  StandardizeOptions& set_where(NamedArray v) {
    where = std::move(v);
    return *this;
  }
};
// (x - mean) * rsqrt(var + eps) over `axis`, as jax.nn.standardize (its default "fast" variance:
// mean(x^2) - mean(x)^2, clipped at 0). Every element is standardized; `where` only limits the statistics.
NamedArray standardize(const NamedArray& x, const AxisSelection& axis, const StandardizeOptions& options);
// The positional form kept for existing callers.
NamedArray standardize(const NamedArray& x, const AxisSelection& axis, std::optional<NamedArray> mean = std::nullopt,
                       std::optional<NamedArray> variance = std::nullopt, double epsilon = 1e-5);
// One-hot encoding of integer class ids along `class_axis` (appended after the ids' axes). As Haliax (it is
// jax.nn.one_hot): an id outside [0, C), negative ones included, gives an all-zero row. Differs: default dtype
// f32 where JAX's is its default float.
NamedArray one_hot(const NamedArray& ids, const Axis& class_axis, at::ScalarType dtype = at::kFloat);
// One-hot vector of a single class id, Haliax's plain-int form: -C <= id < C, negative ids count from the end
// (-1 is the last class). Differs: an id outside that range is a ValueError (Haliax: a bare AssertionError).
NamedArray one_hot(int64_t id, const Axis& class_axis, at::ScalarType dtype = at::kFloat);
// One-hot vector of a 0-d integer (or bool) tensor, Haliax's scalar-array form: negative ids in [-C, 0) count
// from the end; an id < -C or >= C gives all zeros; a bool true gives all ones (Haliax indexes with it as a mask).
// Throws Haliax's TypeError text (as a ValueError) for a tensor with dimensions or a non-integer dtype.
NamedArray one_hot(const at::Tensor& id, const Axis& class_axis, at::ScalarType dtype = at::kFloat);

}  // namespace haliax::nn
