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

// A pointwise activation resolved once, when a module is built, instead of by name on every call.
using ActivationFunction = NamedArray (*)(const NamedArray&);
// By Hugging Face's / Levanter's name: gelu_new and gelu_pytorch_tanh (tanh GELU), gelu (erf GELU), relu,
// silu, swish, quick_gelu. Throws std::invalid_argument "unknown activation 'x'; valid: ..." otherwise.
ActivationFunction activation_function(const std::string& name);
// The names activation_function accepts, in a fixed order.
const std::vector<std::string>& activation_function_names();

// Softmax over one or several axes (several are normalised jointly).
NamedArray softmax(const NamedArray& x, const AxisSelection& axis);
NamedArray log_softmax(const NamedArray& x, const AxisSelection& axis);
using haliax::logsumexp;
// (x - mean) / sqrt(var + eps) over `axis`; mean and variance may be given (e.g. running statistics).
NamedArray standardize(const NamedArray& x, const AxisSelection& axis, std::optional<NamedArray> mean = std::nullopt,
                       std::optional<NamedArray> variance = std::nullopt, double epsilon = 1e-5);
// One-hot encoding of integer class ids along `class_axis` (appended after the ids' axes).
NamedArray one_hot(const NamedArray& ids, const Axis& class_axis, at::ScalarType dtype = at::kFloat);
// One-hot vector of a single class id.
NamedArray one_hot(int64_t id, const Axis& class_axis, at::ScalarType dtype = at::kFloat);

}  // namespace haliax::nn
