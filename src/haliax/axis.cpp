#include "haliax/axis.h"

#include <algorithm>
#include <set>
#include <sstream>

#include "haliax/error.h"

namespace haliax {

Axis::Axis(std::string n, int64_t s) : name(std::move(n)), size(s) {
  if (name.empty()) value_error("Axis names must not be empty");
  if (s < 0) value_error("Axis " + name + " has negative size " + std::to_string(s));
}

std::string AxisSelector::str() const { return size_ ? name_ + "=" + std::to_string(*size_) : name_; }

AxisSelection::AxisSelection(const AxisSpec& axes) {
  items_.reserve(axes.size());
  for (const Axis& a : axes) items_.emplace_back(a);
}

AxisSelection::AxisSelection(const std::vector<std::string>& names) {
  items_.reserve(names.size());
  for (const std::string& n : names) items_.emplace_back(n);
}

bool AxisSelection::has_ellipsis() const {
  return std::any_of(items_.begin(), items_.end(), [](const AxisSelector& s) { return s.is_ellipsis(); });
}

std::string AxisSelection::str() const {
  std::string out = "(";
  for (size_t i = 0; i < items_.size(); ++i) out += (i ? ", " : "") + items_[i].str();
  return out + ")";
}

std::string to_string(const AxisSpec& axes) {
  std::string out = "{";
  for (size_t i = 0; i < axes.size(); ++i) {
    out += (i ? ", '" : "'") + axes[i].name + "': " + std::to_string(axes[i].size);
  }
  return out + "}";
}

std::string to_string(const Axis& axis) {
  return "Axis(name='" + axis.name + "', size=" + std::to_string(axis.size) + ")";
}

std::string axis_str(const Axis& axis) { return axis.name + "(" + std::to_string(axis.size) + ")"; }

std::ostream& operator<<(std::ostream& os, const Axis& axis) { return os << to_string(axis); }
std::ostream& operator<<(std::ostream& os, const AxisSpec& axes) { return os << to_string(axes); }

std::optional<size_t> index_of(const AxisSpec& axes, const std::string& name) {
  for (size_t i = 0; i < axes.size(); ++i) {
    if (axes[i].name == name) return i;
  }
  return std::nullopt;
}

std::optional<size_t> index_of(const AxisSpec& axes, const AxisSelector& sel) {
  auto i = index_of(axes, sel.name());
  if (i && sel.size() && *sel.size() != axes[*i].size) {
    // Haliax raises here rather than treating a size mismatch as absence: it is almost always a bug.
    value_error("Found axis with same name but different size: " + to_string(Axis(sel.name(), *sel.size())) + " vs " +
                to_string(axes[*i]));
  }
  return i;
}

bool selects_axis(const AxisSpec& axes, const AxisSelector& sel) { return index_of(axes, sel).has_value(); }

Axis resolve_axis(const AxisSpec& axes, const AxisSelector& sel) {
  auto i = index_of(axes, sel);
  if (!i) value_error("Axis " + sel.str() + " not found in " + to_string(axes));
  return axes[*i];
}

AxisSpec resolve_axes(const AxisSpec& axes, const AxisSelection& sel) {
  AxisSpec out;
  out.reserve(sel.size());
  for (const AxisSelector& s : sel) out.push_back(resolve_axis(axes, s));
  return out;
}

int64_t axis_size(const AxisSpec& axes) {
  int64_t n = 1;
  for (const Axis& a : axes) n *= a.size;
  return n;
}

AxisSpec eliminate_axes(const AxisSpec& axes, const AxisSelection& to_remove) {
  for (const AxisSelector& s : to_remove) {
    if (!index_of(axes, s)) value_error("Axis " + s.name() + " not present in axis spec " + to_string(axes));
  }
  return without_axes(axes, to_remove);
}

AxisSpec without_axes(const AxisSpec& axes, const AxisSelection& to_remove) {
  AxisSpec out;
  for (const Axis& a : axes) {
    bool removed = false;
    for (const AxisSelector& s : to_remove) {
      if (s.name() == a.name) {
        if (s.size() && *s.size() != a.size) {
          value_error("Axis " + a.name + " present in both specs with different sizes: " + to_string(axes) + " - " +
                      to_remove.str());
        }
        removed = true;
      }
    }
    if (!removed) out.push_back(a);
  }
  return out;
}

AxisSpec union_axes(const AxisSpec& a, const AxisSpec& b) {
  AxisSpec out = a;
  for (const Axis& ax : b) {
    auto i = index_of(a, ax.name);
    if (!i) {
      out.push_back(ax);
    } else if (a[*i].size != ax.size) {
      value_error("Axis " + ax.name + " present in both specs with different sizes: " + to_string(a) + " and " +
                  to_string(b));
    }
  }
  return out;
}

AxisSpec intersect_axes(const AxisSpec& a, const AxisSpec& b) {
  AxisSpec out;
  for (const Axis& ax : a) {
    if (index_of(b, ax.name)) out.push_back(ax);
  }
  return out;
}

AxisSpec concat_axes(const AxisSpec& a, const AxisSpec& b) {
  AxisSpec out = a;
  for (const Axis& ax : b) {
    if (index_of(out, ax.name)) value_error("Axis " + ax.name + " specified twice");
    out.push_back(ax);
  }
  return out;
}

AxisSpec replace_axis(const AxisSpec& axes, const AxisSelector& old, const AxisSpec& replacement) {
  auto i = index_of(axes, old);
  if (!i) value_error("Axis " + old.str() + " not found in axis spec " + to_string(axes));
  AxisSpec out(axes.begin(), axes.begin() + *i);
  out.insert(out.end(), replacement.begin(), replacement.end());
  out.insert(out.end(), axes.begin() + *i + 1, axes.end());
  check_unique(out);
  return out;
}

void check_unique(const AxisSpec& axes) {
  std::set<std::string> seen;
  for (const Axis& a : axes) {
    if (!seen.insert(a.name).second) value_error("Axes must be unique, but " + to_string(axes) + " are not");
  }
}

AxisSpec rearrange_for_partial_order(const AxisSelection& partial_order, const AxisSpec& axes) {
  if (partial_order.size() == 1 && partial_order[0].is_ellipsis()) return axes;
  if (!partial_order.has_ellipsis()) {
    // A full order must be a permutation of the axes.
    std::set<std::string> want, have;
    for (const AxisSelector& s : partial_order) want.insert(s.name());
    for (const Axis& a : axes) have.insert(a.name);
    if (want != have || partial_order.size() != axes.size()) {
      value_error("Partial order must be a permutation of the axes if no ellipsis is provided. However " +
                  partial_order.str() + " is not a permutation of " + to_string(axes));
    }
    return resolve_axes(axes, partial_order);
  }
  std::vector<std::string> named;
  for (const AxisSelector& s : partial_order) {
    if (!s.is_ellipsis()) named.push_back(s.name());
  }
  std::set<std::string> uncovered(named.begin(), named.end());
  if (uncovered.size() != named.size()) value_error("Partial order must not contain duplicate elements");

  // Slots: one per named axis (holding it) and one empty list per "..." that collects the rest.
  std::vector<std::vector<std::string>> slots;
  for (const AxisSelector& s : partial_order) {
    slots.push_back(s.is_ellipsis() ? std::vector<std::string>{} : std::vector<std::string>{s.name()});
  }
  // Haliax's rule: the first still-empty "..." slot at or after `start`.
  auto first_empty_from = [&](size_t start) -> std::optional<size_t> {
    for (size_t i = start; i < slots.size(); ++i) {
      if (slots[i].empty()) return i;
    }
    return std::nullopt;
  };
  size_t target = *first_empty_from(0);
  for (const Axis& ax : axes) {
    if (uncovered.count(ax.name)) {
      uncovered.erase(ax.name);
      size_t this_pos = 0;
      for (size_t i = 0; i < slots.size(); ++i) {
        if (!partial_order[i].is_ellipsis() && partial_order[i].name() == ax.name) this_pos = i;
      }
      // Prefer the first "..." after this axis; never move backwards.
      if (auto next = first_empty_from(std::max(this_pos + 1, target))) target = *next;
    } else if (std::find(named.begin(), named.end(), ax.name) != named.end()) {
      value_error("Axis " + ax.name + " appears multiple times in the partial order");
    } else {
      slots[target].push_back(ax.name);
    }
  }
  if (!uncovered.empty()) {
    std::string missing;
    for (const std::string& n : named) {
      if (uncovered.count(n)) missing += (missing.empty() ? "" : " ") + n;
    }
    value_error("The following axes are not present in output: " + missing);
  }
  AxisSpec out;
  for (const auto& slot : slots) {
    for (const std::string& n : slot) out.push_back(axes[*index_of(axes, n)]);
  }
  return out;
}

}  // namespace haliax
