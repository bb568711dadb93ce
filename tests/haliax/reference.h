// Expected values from the original Python Haliax (marin-haliax), committed as generated headers
// (tests/haliax/reference/*_expected.inc, written by tests/haliax/reference/gen_*.py through emit.py; regenerate
// with `scripts/haliax_ref_env --regenerate`). Inputs are recorded too, so a test runs our haliax on exactly the
// arrays the original saw and compares names, axis order, sizes, dtype kind and values.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "haliax/haliax.h"

namespace haliax::testing {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
inline constexpr double kInf = std::numeric_limits<double>::infinity();

// A NamedArray as Python Haliax produced it: axis names and sizes in order, "float" (held as f64), "int" or
// "bool", and the values in row-major order.
struct RefArray {
  std::vector<std::string> axes;
  std::vector<int64_t> shape;
  std::string kind;
  std::vector<double> values;
};

// The type name and message of an exception Python Haliax raised.
struct RefError {
  std::string type;
  std::string message;
};

// The recorded array as a NamedArray: f64, int64 or bool.
inline NamedArray ref_to_named(const RefArray& r) {
  at::Tensor t = at::tensor(r.values, at::kDouble).reshape(r.shape);
  if (r.kind == "int") t = t.to(at::kLong);
  if (r.kind == "bool") t = t.to(at::kBool);
  std::vector<AxisSelector> sel;
  for (size_t i = 0; i < r.axes.size(); ++i) sel.emplace_back(Axis{r.axes[i], r.shape[i]});
  return named(t, AxisSelection(sel));
}

inline std::string describe_axes(const std::vector<std::string>& names, const std::vector<int64_t>& sizes) {
  std::ostringstream os;
  os << "{";
  for (size_t i = 0; i < names.size(); ++i) os << (i ? ", " : "") << names[i] << ": " << sizes[i];
  os << "}";
  return os.str();
}

// Same axis names in the same order with the same sizes, the same dtype kind, and values within `tol`
// (absolute and relative; NaN matches NaN, infinities must match exactly).
inline void expect_matches_ref(const NamedArray& actual, const RefArray& expected, double tol = 1e-12) {
  std::vector<std::string> names;
  std::vector<int64_t> sizes;
  for (const Axis& a : actual.axes()) {
    names.push_back(a.name);
    sizes.push_back(a.size);
  }
  ASSERT_EQ(describe_axes(names, sizes), describe_axes(expected.axes, expected.shape)) << "axes differ";
  const at::ScalarType dt = actual.dtype();
  const std::string kind = dt == at::kBool ? "bool" : at::isIntegralType(dt, false) ? "int" : "float";
  EXPECT_EQ(kind, expected.kind) << "dtype kind differs (ours " << dtype_name(dt) << ")";
  at::Tensor got = actual.array().detach().to(at::kDouble).contiguous().reshape(-1);
  ASSERT_EQ(got.numel(), static_cast<int64_t>(expected.values.size()));
  const double* g = got.data_ptr<double>();
  std::ostringstream diffs;
  int wrong = 0;
  for (size_t i = 0; i < expected.values.size(); ++i) {
    const double e = expected.values[i];
    const bool ok = std::isnan(e)   ? std::isnan(g[i])
                    : std::isinf(e) ? g[i] == e
                                    : std::abs(g[i] - e) <= tol * (1.0 + std::abs(e));
    if (!ok && wrong++ < 5) diffs << "\n  value " << i << ": ours " << g[i] << ", Haliax's " << e;
  }
  if (wrong > 0) ADD_FAILURE() << wrong << " of " << expected.values.size() << " values differ" << diffs.str();
}

}  // namespace haliax::testing
