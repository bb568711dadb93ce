// Axes: the names and sizes that replace positions everywhere in haliax.
//
// An Axis is a (name, size) pair; two axes are equal when both agree. Operations take axis *selectors*
// (a name, or an Axis, which also pins the size) and *selections* (an ordered list of selectors), so a
// caller can write `sum(x, "embed")`, `sum(x, Embed)` or `sum(x, {Batch, "pos"})`.
// This header is free of libtorch so that configuration and data code can use axes cheaply.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace haliax {

struct Axis {
  std::string name;
  int64_t size = 0;

  Axis() = default;
  Axis(std::string name, int64_t size);

  // The same size under another name: `KPos = Pos.alias("key_position")`.
  Axis alias(std::string new_name) const { return Axis(std::move(new_name), size); }
  // The same name with another size.
  Axis resize(int64_t new_size) const { return Axis(name, new_size); }

  bool operator==(const Axis& o) const { return size == o.size && name == o.name; }
  bool operator!=(const Axis& o) const { return !(*this == o); }
};

// An ordered list of axes with unique names: the shape of a NamedArray.
using AxisSpec = std::vector<Axis>;

// The marker for "the remaining axes, in their current order" in partial orders (rearrange, dot's out_axes).
inline constexpr const char* kEllipsis = "...";

// A name, or an Axis (name and size). Implicitly constructible so every op accepts either.
class AxisSelector {
 public:
  AxisSelector(const char* name) : name_(name) {}
  AxisSelector(std::string name) : name_(std::move(name)) {}
  AxisSelector(const Axis& axis) : name_(axis.name), size_(axis.size) {}

  const std::string& name() const { return name_; }
  const std::optional<int64_t>& size() const { return size_; }
  bool is_ellipsis() const { return name_ == kEllipsis; }
  // "embed" for a name, "embed=768" for an Axis.
  std::string str() const;

 private:
  std::string name_;
  std::optional<int64_t> size_;
};

// An ordered selection of axes. Constructible from one selector or a braced list of them.
class AxisSelection {
 public:
  AxisSelection() = default;
  AxisSelection(const char* name) : items_{AxisSelector(name)} {}
  AxisSelection(std::string name) : items_{AxisSelector(std::move(name))} {}
  AxisSelection(const Axis& axis) : items_{AxisSelector(axis)} {}
  AxisSelection(AxisSelector sel) : items_{std::move(sel)} {}
  AxisSelection(std::initializer_list<AxisSelector> items) : items_(items) {}
  AxisSelection(const AxisSpec& axes);
  AxisSelection(const std::vector<std::string>& names);
  AxisSelection(std::vector<AxisSelector> items) : items_(std::move(items)) {}

  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  const AxisSelector& operator[](size_t i) const { return items_[i]; }
  std::vector<AxisSelector>::const_iterator begin() const { return items_.begin(); }
  std::vector<AxisSelector>::const_iterator end() const { return items_.end(); }
  const std::vector<AxisSelector>& items() const { return items_; }
  bool has_ellipsis() const;
  std::string str() const;  // "(batch, embed=768)"

 private:
  std::vector<AxisSelector> items_;
};

// Printing, in Haliax's shape-dict style: {'batch': 4, 'embed': 768}.
std::string to_string(const AxisSpec& axes);
std::string to_string(const Axis& axis);  // Axis(name='embed', size=768)
// Haliax's str(Axis), "embed(768)": how its error messages print an axis.
std::string axis_str(const Axis& axis);
std::ostream& operator<<(std::ostream& os, const Axis& axis);
std::ostream& operator<<(std::ostream& os, const AxisSpec& axes);

// --- axis-spec algebra (all by name; sizes are checked where both sides have one) -------------------------

// Index of the axis named `name`, or nullopt.
std::optional<size_t> index_of(const AxisSpec& axes, const std::string& name);
inline std::optional<size_t> index_of(const AxisSpec& axes, const char* name) {
  return index_of(axes, std::string(name));
}
// Index of the selected axis; throws if a selector's size disagrees with the axis of that name.
std::optional<size_t> index_of(const AxisSpec& axes, const AxisSelector& sel);
bool selects_axis(const AxisSpec& axes, const AxisSelector& sel);
// The Axis in `axes` that `sel` selects; throws "Axis x not found in {...}" if absent.
Axis resolve_axis(const AxisSpec& axes, const AxisSelector& sel);
AxisSpec resolve_axes(const AxisSpec& axes, const AxisSelection& sel);
// Product of sizes (1 for no axes).
int64_t axis_size(const AxisSpec& axes);
// `axes` without the selected ones; throws if one is not present.
AxisSpec eliminate_axes(const AxisSpec& axes, const AxisSelection& to_remove);
// `axes` without the selected ones; absent ones are ignored.
AxisSpec without_axes(const AxisSpec& axes, const AxisSelection& to_remove);
// a followed by the axes of b not in a; throws if a name has two sizes.
AxisSpec union_axes(const AxisSpec& a, const AxisSpec& b);
// The axes of a that are also in b (by name), in a's order.
AxisSpec intersect_axes(const AxisSpec& a, const AxisSpec& b);
// a followed by b; throws "Axis x specified twice" on overlap.
AxisSpec concat_axes(const AxisSpec& a, const AxisSpec& b);
// Replace the axis `old` by the axes `replacement`, in place.
AxisSpec replace_axis(const AxisSpec& axes, const AxisSelector& old, const AxisSpec& replacement);
// Throws "Axes must be unique, but {...} are not" on duplicate names.
void check_unique(const AxisSpec& axes);

// Rearrange `axes` to fit `partial_order`, which names axes and may hold "..." for the rest (Haliax's
// greedy rule: unnamed axes keep their order and go to the first "..." after the last named axis seen).
AxisSpec rearrange_for_partial_order(const AxisSelection& partial_order, const AxisSpec& axes);

}  // namespace haliax
