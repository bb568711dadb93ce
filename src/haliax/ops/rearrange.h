// rearrange: permute, split and merge axes by name (Haliax's rearrange, and its einops-style expressions).
// Defined in ops/rearrange.cpp. core.h includes this header, so haliax/core.h users have it too.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "haliax/named_array.h"

namespace haliax {

// Sequence form: permute to `axes`, which may hold one or more "..." for the remaining axes in their order:
// rearrange(x, {"batch", "...", "embed"}).
NamedArray rearrange(const NamedArray& a, const AxisSelection& axes);

// A value for a name in an einops-style expression: a size, an Axis, or the name of an axis of the array.
class Binding {
 public:
  Binding(int64_t size) : v_(size) {}
  Binding(int size) : v_(static_cast<int64_t>(size)) {}
  Binding(const char* name) : v_(std::string(name)) {}
  Binding(std::string name) : v_(std::move(name)) {}
  Binding(Axis axis) : v_(std::move(axis)) {}
  const std::variant<int64_t, std::string, Axis>& value() const { return v_; }

 private:
  std::variant<int64_t, std::string, Axis> v_;
};
using Bindings = std::vector<std::pair<std::string, Binding>>;

// Einops form, as in Haliax: ordered ("b (h w) c -> b h w c", {{"h", 2}}) binds lhs names by position;
// unordered ("{H W C} -> ... C H W") binds them by axis name. Groups split an axis on the lhs
// ("(H: h1 H)") and merge axes under a new name on the rhs ("(E: H W C)"). Errors point at the position.
NamedArray rearrange_expression(const NamedArray& a, const std::string& expression, const Bindings& bindings = {});
// (A template so that a braced list of names never converts to std::string's iterator-pair constructor.)
template <typename S, typename = std::enable_if_t<std::is_same_v<S, std::string>>>
NamedArray rearrange(const NamedArray& a, const S& expression, const Bindings& bindings = {}) {
  return rearrange_expression(a, expression, bindings);
}
// A string literal is an expression if it contains "->", else a one-axis selection.
NamedArray rearrange(const NamedArray& a, const char* expression_or_axis, const Bindings& bindings = {});

}  // namespace haliax
