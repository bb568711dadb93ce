// Parser for Haliax's einops-style expressions, shared by rearrange and einsum (a port of _src/parsing.py).
//
// One side of an expression is a list of captures: a name ("b"), a group ("(h w)" or "(E: h w)") or "...".
// A side in braces ("{H W C}") is unordered: captures match axes by name instead of by position.
// Errors show the expression with a caret under the offending position.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "haliax/axis.h"
#include "haliax/core.h"

namespace haliax::detail {

struct Capture {
  bool ellipsis = false;
  std::optional<std::string> binding;  // the name of the capture ("E" in "(E: h w)", "b" in "b")
  std::vector<std::string> axes;       // the names inside ("h", "w"); a plain name is its own single axis
  std::pair<size_t, size_t> range{0, 0};
};

struct Expression {
  std::vector<Capture> captures;
  bool ordered = true;
};

[[noreturn]] void raise_parse_error(const std::string& message, const std::string& expression,
                                    std::optional<std::pair<size_t, size_t>> range);

std::pair<Expression, Expression> parse_rearrangement(const std::string& expression);
// Returns the lhs expressions (one per operand, or one unordered/empty) and the rhs.
std::pair<std::vector<Expression>, Expression> parse_einsum(const std::string& expression);

// Names in an expression -> axes (or axis names) of the array, filled as the lhs is matched.
class AliasTable {
 public:
  // A binding is either a full Axis or just a name (size unknown yet).
  struct Entry {
    std::optional<Axis> axis;
    std::string name;
  };
  std::optional<Entry> get(const std::string& alias) const;
  void bind(const std::string& alias, const Axis& axis, const std::string& expr, std::pair<size_t, size_t> range);
  void set(const std::string& alias, Entry e) { table_[alias] = std::move(e); }
  const std::map<std::string, Entry>& entries() const { return table_; }

 private:
  std::map<std::string, Entry> table_;
};

}  // namespace haliax::detail
