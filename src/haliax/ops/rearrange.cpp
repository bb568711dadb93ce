// Einops-style rearrange with named axes (a port of Haliax's _src/rearrange.py).
//
// Every rearrangement is reshape (split lhs groups) -> permute -> reshape (merge rhs groups). The plan is
// computed on names only; the tensor sees at most two reshapes and one permute.
#include "haliax/ops/rearrange.h"

#include <ATen/ATen.h>

#include <set>

#include "haliax/core.h"
#include "haliax/error.h"
#include "haliax/ops/parsing.h"

namespace haliax {

using detail::AliasTable;
using detail::Capture;
using detail::Expression;
using detail::raise_parse_error;

namespace {

AliasTable resolve_bindings(const NamedArray& a, const Bindings& bindings) {
  AliasTable t;
  for (const auto& [name, b] : bindings) {
    const auto& v = b.value();
    if (const int64_t* size = std::get_if<int64_t>(&v)) {
      t.set(name, {Axis(name, *size), name});
    } else if (const Axis* ax = std::get_if<Axis>(&v)) {
      t.set(name, {*ax, ax->name});
    } else {
      const std::string& target = std::get<std::string>(v);
      auto i = index_of(a.axes(), target);
      if (i)
        t.set(name, {a.axes()[*i], target});
      else
        t.set(name, {std::nullopt, target});
    }
  }
  return t;
}

// Given the axis a lhs capture matched, solve the axes it splits into: "(h w)" with h bound to a size.
std::vector<Axis> solve_split_axes(const Axis& axis, const Capture& c, AliasTable& aliases, std::set<std::string>& used,
                                   const std::string& expr) {
  if (c.axes.size() == 1) {
    const std::string& n = c.axes[0];
    if (!used.insert(n).second) raise_parse_error("Capture " + n + " is assigned more than once", expr, c.range);
    aliases.bind(n, axis, expr, c.range);
    return {axis};
  }
  std::vector<std::optional<Axis>> parts;
  std::optional<size_t> unsolved;
  int64_t remaining = axis.size;
  for (const std::string& n : c.axes) {
    if (!used.insert(n).second) raise_parse_error("Capture " + n + " is assigned more than once in lhs", expr, c.range);
    auto e = aliases.get(n);
    if (e && e->axis) {
      if (e->axis->size == 0 || remaining % e->axis->size) {
        raise_parse_error("Axes do not divide evenly into axis " + to_string(axis), expr, c.range);
      }
      remaining /= e->axis->size;
      parts.push_back(e->axis);
    } else {
      if (unsolved) {
        raise_parse_error("Sizes for this split axis are ambiguous. You must provide a size as a binding.", expr,
                          c.range);
      }
      unsolved = parts.size();
      parts.push_back(std::nullopt);
    }
  }
  if (unsolved) {
    const std::string& n = c.axes[*unsolved];
    auto e = aliases.get(n);
    Axis solved(e ? e->name : n, remaining);
    parts[*unsolved] = solved;
    aliases.bind(n, solved, expr, c.range);
  } else if (remaining != 1) {
    raise_parse_error("Axes do not multiply to the size of axis " + to_string(axis), expr, c.range);
  }
  std::vector<Axis> out;
  for (auto& p : parts) out.push_back(*p);
  return out;
}

std::vector<std::vector<Axis>> initial_reshape(const std::string& expr, const Expression& lhs, const NamedArray& a,
                                               AliasTable& aliases) {
  const size_t n = a.axes().size();
  std::vector<std::optional<std::vector<Axis>>> shapes(n);
  std::set<std::string> used;
  if (lhs.ordered) {
    // Bind from the left up to an ellipsis, then from the right.
    std::vector<std::optional<size_t>> axis_for(lhs.captures.size());
    std::set<size_t> covered;
    std::optional<size_t> ellipsis;
    size_t pos = 0;
    for (size_t k = 0; k < lhs.captures.size(); ++k) {
      if (lhs.captures[k].ellipsis) {
        ellipsis = k;
        break;
      }
      if (pos >= n) raise_parse_error("Too many axes in lhs", expr, lhs.captures[k].range);
      axis_for[k] = pos;
      covered.insert(pos++);
    }
    if (ellipsis) {
      int64_t p = static_cast<int64_t>(n) - 1;
      for (size_t k = lhs.captures.size() - 1; k > *ellipsis; --k) {
        if (lhs.captures[k].ellipsis) raise_parse_error("Only one ellipsis allowed", expr, std::nullopt);
        if (p < 0 || covered.count(static_cast<size_t>(p))) {
          raise_parse_error("Axis is bound more than once", expr, lhs.captures[k].range);
        }
        axis_for[k] = static_cast<size_t>(p);
        covered.insert(static_cast<size_t>(p--));
      }
    } else if (covered.size() < n) {
      raise_parse_error("Not all axes are bound, use ... to skip missing axes", expr,
                        std::make_pair(expr.size() - 1, expr.size()));
    }
    for (size_t k = 0; k < lhs.captures.size(); ++k) {
      const Capture& c = lhs.captures[k];
      if (c.ellipsis) continue;
      size_t i = *axis_for[k];
      shapes[i] = solve_split_axes(a.axes()[i], c, aliases, used, expr);
    }
  } else {
    for (const Capture& c : lhs.captures) {
      if (c.ellipsis) continue;
      if (!c.binding) raise_parse_error("Unordered axes must be bound by name, e.g. (a: b) or just a", expr, c.range);
      auto e = aliases.get(*c.binding);
      std::string name = e ? e->name : *c.binding;
      auto i = index_of(a.axes(), name);
      if (!i) raise_parse_error("Could not resolve axis " + name, expr, c.range);
      if (shapes[*i]) raise_parse_error("Axis " + to_string(a.axes()[*i]) + " is bound more than once", expr, c.range);
      shapes[*i] = solve_split_axes(a.axes()[*i], c, aliases, used, expr);
    }
  }
  std::vector<std::vector<Axis>> out;
  for (size_t i = 0; i < n; ++i) out.push_back(shapes[i] ? *shapes[i] : std::vector<Axis>{a.axes()[i]});
  return out;
}

}  // namespace

NamedArray rearrange_expression(const NamedArray& a, const std::string& expr, const Bindings& bindings) {
  auto [lhs, rhs] = detail::parse_rearrangement(expr);
  AliasTable aliases = resolve_bindings(a, bindings);
  AxisSpec intermediate;
  for (const auto& group : initial_reshape(expr, lhs, a, aliases)) {
    intermediate.insert(intermediate.end(), group.begin(), group.end());
  }
  check_unique(intermediate);

  // The rhs: each capture names a final axis made of one or more intermediate axes.
  std::vector<AxisSelector> order;                            // partial order of intermediate axes, with "..."
  std::vector<std::pair<std::string, Axis>> first_for_final;  // first intermediate axis name -> final axis
  std::set<std::string> used;
  bool has_ellipsis = false;
  for (const Capture& c : rhs.captures) {
    if (c.ellipsis) {
      has_ellipsis = true;
      order.emplace_back(kEllipsis);
      continue;
    }
    if (!c.binding) raise_parse_error("All rhs axes must have a name. Use (name: bindings)", expr, c.range);
    int64_t size = 1;
    std::optional<std::string> first;
    for (const std::string& n : c.axes) {
      auto e = aliases.get(n);
      if (!e || !e->axis) raise_parse_error("Axis " + n + " is not bound on the lhs", expr, c.range);
      if (!index_of(intermediate, e->axis->name))
        raise_parse_error("Axis " + n + " is not bound on the lhs", expr, c.range);
      if (!used.insert(e->axis->name).second) {
        raise_parse_error("Axis " + to_string(*e->axis) + " is used more than once", expr, c.range);
      }
      if (!first) first = e->axis->name;
      order.emplace_back(*e->axis);
      size *= e->axis->size;
    }
    auto e = aliases.get(*c.binding);
    Axis final_axis(e ? e->name : *c.binding, size);
    if (first) first_for_final.emplace_back(*first, final_axis);
  }
  if (!has_ellipsis && used.size() < intermediate.size()) {
    value_error("Not all intermediate axes are used. Use ... to insert unused axes");
  }
  AxisSpec reordered = rearrange_for_partial_order(AxisSelection(order), intermediate);
  AxisSpec final_axes;
  std::vector<int64_t> perm;
  for (const Axis& ax : reordered) {
    perm.push_back(static_cast<int64_t>(*index_of(intermediate, ax.name)));
    if (!used.count(ax.name)) {
      final_axes.push_back(ax);
    } else {
      for (const auto& [first, fin] : first_for_final) {
        if (first == ax.name) final_axes.push_back(fin);
      }
    }
  }
  check_unique(final_axes);

  at::Tensor t = a.array();
  if (intermediate != a.axes()) {
    std::vector<int64_t> sizes;
    for (const Axis& ax : intermediate) sizes.push_back(ax.size);
    t = t.reshape(sizes);
  }
  bool identity = true;
  for (size_t i = 0; i < perm.size(); ++i) identity = identity && perm[i] == static_cast<int64_t>(i);
  if (!identity) t = t.permute(perm);
  if (reordered != final_axes) {
    std::vector<int64_t> sizes;
    for (const Axis& ax : final_axes) sizes.push_back(ax.size);
    t = t.reshape(sizes);
  }
  return NamedArray(t, final_axes);
}

NamedArray rearrange(const NamedArray& a, const AxisSelection& axes) {
  if (axes.empty() && a.ndim() != 0) value_error("No axes specified");
  if (axes.size() == 1 && axes[0].is_ellipsis()) return a;
  AxisSpec out = rearrange_for_partial_order(axes, a.axes());
  if (out == a.axes()) return a;
  std::vector<int64_t> perm;
  perm.reserve(out.size());
  for (const Axis& ax : out) perm.push_back(static_cast<int64_t>(*index_of(a.axes(), ax.name)));
  return NamedArray(a.array().permute(perm), out);
}

NamedArray rearrange(const NamedArray& a, const char* expression_or_axis, const Bindings& bindings) {
  std::string s(expression_or_axis);
  // A bare identifier is one axis name; anything with spaces or expression syntax is an expression.
  if (s.find_first_of(" \t(){}-<>=,.:") != std::string::npos) return rearrange_expression(a, s, bindings);
  if (!bindings.empty()) value_error("rearrange: bindings need an expression with '->', got '" + s + "'");
  return rearrange(a, AxisSelection(AxisSelector(s)));
}

}  // namespace haliax
