// Haliax's named einsum (a port of _src/einsum.py). All three forms reduce to "which axes survive, in which
// order"; the contraction itself is detail::contract, shared with dot.
#include <set>

#include "haliax/error.h"
#include "haliax/ops.h"
#include "haliax/ops/contract.h"
#include "haliax/ops/parsing.h"
#include "haliax/partitioning.h"

namespace haliax {

using detail::AliasTable;
using detail::Capture;
using detail::Expression;
using detail::raise_parse_error;

namespace {

AxisSpec all_input_axes(const std::vector<NamedArray>& arrays) {
  AxisSpec all;
  for (const NamedArray& a : arrays) all = union_axes(all, a.axes());
  return all;
}

struct AliasMap {
  std::map<std::string, AxisSelector> map;
  std::vector<std::string> order;  // as the caller listed them (Haliax's kwargs order)
  std::set<std::string> used;
  explicit AliasMap(const Bindings& b) {
    for (const auto& [name, v] : b) {
      const auto& x = v.value();
      if (const Axis* ax = std::get_if<Axis>(&x))
        map.emplace(name, AxisSelector(*ax));
      else if (const std::string* s = std::get_if<std::string>(&x))
        map.emplace(name, AxisSelector(*s));
      else
        value_error("einsum: alias " + name + " must be an Axis or an axis name, not a size");
      order.push_back(name);
    }
  }
  // The axis name a name in the equation stands for.
  std::string resolve(const std::string& name) {
    auto it = map.find(name);
    if (it == map.end()) return name;
    used.insert(name);
    return it->second.name();
  }
  // Haliax words this differently per form: the unordered form names the first unused alias, the positional and
  // output-only forms list them all ("Unused aliases from kwargs: Q").
  void check_all_used(const std::string& expr, bool unordered_form) {
    std::string unused;
    for (const std::string& name : order) {
      if (used.count(name)) continue;
      if (unordered_form) raise_parse_error("Axis alias " + name + " not used in the einsum", expr, std::nullopt);
      unused += (unused.empty() ? "" : ", ") + name;
    }
    if (!unused.empty()) raise_parse_error("Unused aliases from kwargs: " + unused, expr, std::nullopt);
  }
};

// An alias bound to a full Axis must agree in size with every operand that has that axis (Haliax's text).
void check_sizes(const std::vector<NamedArray>& arrays, const AliasMap& aliases) {
  for (const std::string& name : aliases.order) {
    const AxisSelector& sel = aliases.map.at(name);
    if (!sel.size()) continue;
    const Axis expected(sel.name(), *sel.size());
    for (size_t i = 0; i < arrays.size(); ++i) {
      auto k = index_of(arrays[i].axes(), sel.name());
      if (k && arrays[i].axes()[*k].size != expected.size) {
        value_error("Size mismatch for axis " + sel.name() + ". In array " + std::to_string(i) + ", " +
                    axis_str(expected) + " has size " + std::to_string(arrays[i].axes()[*k].size) + " but expected " +
                    std::to_string(expected.size) + ",because of the alias " + name + "=" + axis_str(expected));
      }
    }
  }
}

const Capture& simple(const Capture& c, const std::string& expr, const char* where) {
  if (!c.binding || c.axes.size() > 1) {
    raise_parse_error(std::string("Parenthesized axes are not currently supported") + where, expr, c.range);
  }
  return c;
}

// The three forms of einsum differ only in which axes survive, in which order.

// "-> H W": keep exactly the rhs axes (and, with "...", every unmentioned one); contract the rest.
AxisSpec output_axes_keep_only(const std::string& expr, const std::vector<Expression>& lhses, const Expression& rhs,
                               const std::vector<NamedArray>& arrays, const AxisSpec& all, AliasMap& aliases) {
  AxisSpec out;
  std::vector<std::string> names;
  bool has_ellipsis = false;
  std::set<std::string> mentioned;
  for (const Capture& c : rhs.captures) {
    if (c.ellipsis) {
      has_ellipsis = true;
      names.push_back(kEllipsis);
      continue;
    }
    std::string n = aliases.resolve(*simple(c, expr, " in the output of an einsum").binding);
    if (!mentioned.insert(n).second)
      raise_parse_error("Axis capture " + n + " occurs multiple times on the rhs", expr, c.range);
    if (!index_of(all, n)) raise_parse_error("Axis " + n + " not found in any of the input arrays", expr, c.range);
    names.push_back(n);
  }
  for (const std::string& n : names) {
    if (n != kEllipsis) {
      out.push_back(*std::find_if(all.begin(), all.end(), [&](const Axis& a) { return a.name == n; }));
    } else if (has_ellipsis) {
      for (const Axis& ax : all) {
        if (!mentioned.count(ax.name)) out.push_back(ax);
      }
    }
  }
  return out;
}

// "{H W D} -> H W": names on the lhs but not the rhs are contracted; everything else is kept.
AxisSpec output_axes_unordered(const std::string& expr, const std::vector<Expression>& lhses, const Expression& rhs,
                               const std::vector<NamedArray>& arrays, const AxisSpec& all, AliasMap& aliases) {
  AxisSpec out;
  std::vector<std::string> lhs_names, rhs_names;
  bool lhs_ellipsis = false, rhs_ellipsis = false;
  for (const Capture& c : lhses[0].captures) {
    if (c.ellipsis)
      lhs_ellipsis = true;
    else
      lhs_names.push_back(aliases.resolve(*simple(c, expr, "").binding));
  }
  std::vector<AxisSelector> rhs_order;
  for (const Capture& c : rhs.captures) {
    if (c.ellipsis) {
      rhs_ellipsis = true;
      rhs_order.emplace_back(kEllipsis);
    } else {
      rhs_names.push_back(aliases.resolve(*simple(c, expr, "").binding));
      rhs_order.emplace_back(rhs_names.back());
    }
  }
  if (rhs_ellipsis) {
    // As in Haliax: with "..." on the rhs every input axis is kept, in the rhs's partial order.
    out = rearrange_for_partial_order(AxisSelection(rhs_order), all);
  } else if (lhs_ellipsis) {
    for (const std::string& n : rhs_names) {
      auto i = index_of(all, n);
      if (!i) raise_parse_error("Axis " + n + " not found in any of the input arrays", expr, std::nullopt);
      out.push_back(all[*i]);
    }
  } else {
    std::vector<AxisSelector> drop;
    for (const std::string& n : lhs_names) {
      if (std::find(rhs_names.begin(), rhs_names.end(), n) == rhs_names.end()) drop.emplace_back(n);
    }
    AxisSpec almost = eliminate_axes(all, AxisSelection(drop));
    rhs_order.insert(rhs_order.begin(), AxisSelector(kEllipsis));
    out = rearrange_for_partial_order(AxisSelection(rhs_order), almost);
  }
  return out;
}

// "h w d, d w h -> h w": one lhs per operand, names bound to axes by position.
AxisSpec output_axes_positional(const std::string& expr, const std::vector<Expression>& lhses, const Expression& rhs,
                                const std::vector<NamedArray>& arrays, const AxisSpec& all, AliasMap& aliases) {
  AxisSpec out;
  for (const Expression& e : lhses) {
    if (!e.ordered) raise_parse_error("Cannot have multiple unordered axes in an einsum", expr, std::nullopt);
  }
  if (lhses.size() != arrays.size()) {
    value_error("Number of lhses (" + std::to_string(lhses.size()) + ") does not match number of arrays (" +
                std::to_string(arrays.size()) + ")");
  }
  AliasTable table;
  for (const auto& [name, sel] : aliases.map) {
    table.set(name, {sel.size() ? std::optional<Axis>(Axis(sel.name(), *sel.size())) : std::nullopt, sel.name()});
  }
  std::vector<std::string> bound_order;
  for (size_t k = 0; k < arrays.size(); ++k) {
    const auto& caps = lhses[k].captures;
    const AxisSpec& axes = arrays[k].axes();
    size_t ell = caps.size();
    for (size_t j = 0; j < caps.size(); ++j) {
      if (caps[j].ellipsis) {
        if (ell != caps.size()) raise_parse_error("Can't have two ellipses in an einsum", expr, caps[j].range);
        ell = j;
      }
    }
    size_t n_named = caps.size() - (ell != caps.size() ? 1 : 0);
    if ((ell == caps.size() && n_named != axes.size()) || n_named > axes.size()) {
      value_error("Mismatched number of axes in einsum: operand " + std::to_string(k) + " has axes " + to_string(axes) +
                  " but the equation names " + std::to_string(n_named));
    }
    for (size_t j = 0; j < caps.size(); ++j) {
      if (caps[j].ellipsis) continue;
      const Capture& c = simple(caps[j], expr, "");
      size_t pos = j < ell ? j : axes.size() - (caps.size() - j);
      auto entry = table.get(*c.binding);
      if (entry && !entry->axis && entry->name != axes[pos].name) {
        raise_parse_error("Alias " + *c.binding + " is assigned to more than one axis", expr, c.range);
      }
      if (aliases.map.count(*c.binding)) aliases.used.insert(*c.binding);
      table.bind(*c.binding, axes[pos], expr, c.range);
      if (std::find(bound_order.begin(), bound_order.end(), *c.binding) == bound_order.end()) {
        bound_order.push_back(*c.binding);
      }
    }
  }
  // The rhs in order; "..." is a placeholder (nullopt) filled once every named output axis is known.
  std::vector<std::optional<Axis>> rhs_order;
  bool rhs_ellipsis = false;
  std::set<std::string> kept_names;
  for (const Capture& c : rhs.captures) {
    if (c.ellipsis) {
      if (rhs_ellipsis) raise_parse_error("Can't have two ellipses in an ordered einsum", expr, c.range);
      rhs_ellipsis = true;
      rhs_order.emplace_back(std::nullopt);
      continue;
    }
    const Capture& s = simple(c, expr, " in the output of an einsum");
    auto e = table.get(*s.binding);
    if (!e || !e->axis)
      raise_parse_error("Axis name " + *s.binding + " does not occur on the left hand side", expr, c.range);
    kept_names.insert(*s.binding);
    rhs_order.emplace_back(*e->axis);
  }
  // "..." stands for every input axis neither named on the rhs nor contracted (named on the lhs only), in input
  // order, at the position of the "..." ("b ... d -> d ... b" puts d first and b last).
  AxisSpec ellipsis_axes;
  if (rhs_ellipsis) {
    std::set<std::string> excluded;
    for (const auto& ax : rhs_order) {
      if (ax) excluded.insert(ax->name);
    }
    for (const std::string& n : bound_order) {
      if (!kept_names.count(n)) excluded.insert(table.get(n)->axis->name);
    }
    for (const Axis& ax : all) {
      if (!excluded.count(ax.name)) ellipsis_axes.push_back(ax);
    }
  }
  for (const auto& ax : rhs_order) {
    if (ax)
      out.push_back(*ax);
    else
      out.insert(out.end(), ellipsis_axes.begin(), ellipsis_axes.end());
  }
  return out;
}

}  // namespace

NamedArray einsum(const std::string& expr, const std::vector<NamedArray>& arrays, const Bindings& alias_bindings) {
  auto [lhses, rhs] = detail::parse_einsum(expr);
  detail::ensure_no_mismatched_axes(arrays);
  AliasMap aliases(alias_bindings);
  check_sizes(arrays, aliases);
  const AxisSpec all = all_input_axes(arrays);
  AxisSpec out;
  if (lhses.size() == 1 && lhses[0].captures.empty() && lhses[0].ordered) {
    out = output_axes_keep_only(expr, lhses, rhs, arrays, all, aliases);
  } else if (lhses.size() == 1 && !lhses[0].ordered) {
    out = output_axes_unordered(expr, lhses, rhs, arrays, all, aliases);
  } else {
    out = output_axes_positional(expr, lhses, rhs, arrays, all, aliases);
  }
  aliases.check_all_used(expr, lhses.size() == 1 && !lhses[0].ordered);
  if (TensorParallelScope::current()) {
    for (const NamedArray& a : arrays) {
      for (const Axis& ax : a.axes()) {
        if (is_split(ax.name))
          value_error("einsum: axis '" + ax.name + "' is split for tensor parallelism; use dot, which sums the pieces");
      }
    }
  }
  return detail::contract(arrays, out);
}

}  // namespace haliax
