#include "haliax/named_array.h"

#include <ATen/ATen.h>
#include <ATen/ScalarOps.h>

#include <set>
#include <sstream>

#include "haliax/core.h"
#include "haliax/error.h"
#include "haliax/ops.h"

namespace haliax {

namespace {

std::string sizes_str(at::IntArrayRef sizes) {
  std::string out = "(";
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + (sizes.size() == 1 ? ",)" : ")");
}

bool is_subsequence(const AxisSpec& needle, const AxisSpec& haystack) {
  size_t i = 0;
  for (size_t j = 0; j < haystack.size() && i < needle.size(); ++j) {
    if (needle[i] == haystack[j]) ++i;
  }
  return i == needle.size();
}

bool is_subset(const AxisSpec& a, const AxisSpec& b) {
  for (const Axis& ax : a) {
    if (std::find(b.begin(), b.end(), ax) == b.end()) return false;
  }
  return true;
}

}  // namespace

NamedArray::NamedArray(at::Tensor array, AxisSpec axes) : array_(std::move(array)), axes_(std::move(axes)) {
  if (!array_.defined()) value_error("NamedArray needs a defined tensor (axes " + to_string(axes_) + ")");
  check_unique(axes_);
  bool ok = static_cast<int64_t>(axes_.size()) == array_.dim();
  for (size_t i = 0; ok && i < axes_.size(); ++i) ok = axes_[i].size == array_.size(static_cast<int64_t>(i));
  if (!ok) {
    value_error("Shape of underlying array " + sizes_str(array_.sizes()) + " does not match shape of axes " +
                to_string(axes_));
  }
}

std::map<std::string, int64_t> NamedArray::shape() const {
  std::map<std::string, int64_t> out;
  for (const Axis& a : axes_) out[a.name] = a.size;
  return out;
}

at::ScalarType NamedArray::dtype() const { return array_.scalar_type(); }
at::Device NamedArray::device() const { return array_.device(); }

bool NamedArray::has_axis(const AxisSelection& axes) const {
  for (const AxisSelector& s : axes) {
    if (!index_of(axes_, s)) return false;
  }
  return true;
}

Axis NamedArray::resolve_axis(const AxisSelector& axis) const { return haliax::resolve_axis(axes_, axis); }
AxisSpec NamedArray::resolve_axes(const AxisSelection& axes) const { return haliax::resolve_axes(axes_, axes); }

at::Tensor NamedArray::scalar() const {
  if (!axes_.empty()) value_error("Expected scalar, got " + std::to_string(axes_.size()) + "-dimensional array");
  return array_;
}

double NamedArray::item() const { return scalar().item<double>(); }

NamedArray NamedArray::grad() const {
  const at::Tensor& g = array_.grad();
  return g.defined() ? NamedArray(g, axes_) : NamedArray();
}

NamedArray NamedArray::astype(at::ScalarType dtype) const { return haliax::astype(*this, dtype); }
NamedArray NamedArray::rename(const std::vector<std::pair<AxisSelector, AxisSelector>>& renames) const {
  return haliax::rename(*this, renames);
}
NamedArray NamedArray::rearrange(const AxisSelection& axes) const { return haliax::rearrange(*this, axes); }
NamedArray NamedArray::broadcast_axis(const AxisSpec& axes) const { return haliax::broadcast_axis(*this, axes); }

std::string NamedArray::str() const {
  if (!defined()) return "NamedArray(undefined)";
  return "NamedArray(dtype=" + dtype_name(dtype()) + ", axes=" + to_string(axes_) + ")";
}

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return "float32";
    case at::kDouble:
      return "float64";
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "float16";
    case at::kLong:
      return "int64";
    case at::kInt:
      return "int32";
    case at::kShort:
      return "int16";
    case at::kChar:
      return "int8";
    case at::kByte:
      return "uint8";
    case at::kBool:
      return "bool";
    default:
      return c10::toString(t);
  }
}

std::ostream& operator<<(std::ostream& os, const NamedArray& a) { return os << a.str(); }

NamedArray named(const at::Tensor& array, const AxisSelection& axes) {
  if (static_cast<int64_t>(axes.size()) != array.dim()) {
    value_error("Shape mismatch: shape=" + sizes_str(array.sizes()) + " axes=" + axes.str());
  }
  AxisSpec out;
  out.reserve(axes.size());
  for (size_t i = 0; i < axes.size(); ++i) {
    int64_t size = array.size(static_cast<int64_t>(i));
    if (axes[i].size() && *axes[i].size() != size) {
      value_error("Shape mismatch: shape=" + sizes_str(array.sizes()) + " axes=" + axes.str());
    }
    out.emplace_back(axes[i].name(), size);
  }
  return NamedArray(array, std::move(out));
}

// --- broadcasting ------------------------------------------------------------------------------------------

static std::optional<AxisSpec> broadcast_axes(const AxisSpec& a, const AxisSpec& b, bool require_subset) {
  if (a == b) return a;
  if (a.empty()) return b;
  if (b.empty()) return a;
  if (require_subset) {
    if (is_subset(b, a)) return a;
    if (is_subset(a, b)) return b;
    return std::nullopt;
  }
  const AxisSpec* big = &a;
  const AxisSpec* small = &b;
  if (axis_size(a) < axis_size(b)) std::swap(big, small);
  // Keep the bigger operand's order and put the other's extra axes in front (row major: only one moves).
  AxisSpec out;
  for (const Axis& ax : *small) {
    if (std::find(big->begin(), big->end(), ax) == big->end()) out.push_back(ax);
  }
  out.insert(out.end(), big->begin(), big->end());
  check_unique(out);
  return out;
}

AxisSpec broadcast_order(const NamedArray& a, const NamedArray& b, bool require_subset) {
  auto axes = broadcast_axes(a.axes(), b.axes(), require_subset);
  if (!axes) {
    value_error("Cannot broadcast " + a.str() + " and " + b.str() +
                ": no subset relationship. If you want to broadcast anyway, use the broadcast_axis function to "
                "explicitly add axes");
  }
  return *axes;
}

NamedArray broadcast_to(const NamedArray& a, const AxisSpec& axes, bool ensure_order, bool enforce_no_extra_axes) {
  if (a.axes() == axes) return a;
  for (const Axis& ax : axes) {
    if (auto i = index_of(a.axes(), ax.name); i && a.axes()[*i].size != ax.size) {
      value_error("Axis " + ax.name + " has different sizes in " + to_string(axes) + " and " + to_string(a.axes()) +
                  ": " + std::to_string(ax.size) + " != " + std::to_string(a.axes()[*i].size));
    }
  }
  AxisSpec extra;
  for (const Axis& ax : a.axes()) {
    if (!index_of(axes, ax.name)) extra.push_back(ax);
  }
  if (enforce_no_extra_axes && !extra.empty()) {
    std::string names;
    for (const Axis& ax : extra) names += (names.empty() ? "'" : ", '") + ax.name + "'";
    value_error("Cannot broadcast " + to_string(a.axes()) + " to " + to_string(axes) + ": extra axes present [" +
                names + "]");
  }
  AxisSpec all_axes;
  at::Tensor t = a.array();
  for (const Axis& ax : axes) {
    if (!index_of(a.axes(), ax.name)) {
      all_axes.push_back(ax);
      t = t.unsqueeze(static_cast<int64_t>(all_axes.size()) - 1);
    }
  }
  if (all_axes.empty()) {
    all_axes = a.axes();
  } else {
    all_axes.insert(all_axes.end(), a.axes().begin(), a.axes().end());
    std::vector<int64_t> sizes;
    for (const Axis& ax : all_axes) sizes.push_back(ax.size);
    t = t.expand(sizes);
  }
  NamedArray out(t, all_axes);
  if (ensure_order && !is_subsequence(axes, all_axes)) {
    AxisSelection order(axes);
    std::vector<AxisSelector> items = order.items();
    for (const Axis& ax : extra) items.emplace_back(ax);
    out = rearrange(out, AxisSelection(items));
  }
  return out;
}

NamedArray broadcast_axis(const NamedArray& a, const AxisSpec& axes) {
  if (axes.size() == 1 && std::find(a.axes().begin(), a.axes().end(), axes[0]) != a.axes().end()) return a;
  return broadcast_to(a, axes, /*ensure_order=*/true, /*enforce_no_extra_axes=*/false);
}

std::pair<std::vector<NamedArray>, AxisSpec> broadcast_arrays(const std::vector<NamedArray>& arrays,
                                                              bool require_subset, bool ensure_order) {
  if (arrays.empty()) return {{}, {}};
  if (arrays.size() == 1) return {arrays, arrays[0].axes()};
  // Biggest first (stable, so ties keep argument order), then fold the axes together.
  std::vector<size_t> order(arrays.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t x, size_t y) { return arrays[x].numel() > arrays[y].numel(); });
  std::optional<AxisSpec> full = arrays[order[0]].axes();
  for (size_t k = 1; k < order.size() && full; ++k)
    full = broadcast_axes(*full, arrays[order[k]].axes(), require_subset);
  if (!full) {
    std::string all;
    for (const NamedArray& a : arrays) all += (all.empty() ? "" : ", ") + to_string(a.axes());
    value_error("Cannot broadcast arrays " + all + ": no subset relationship");
  }
  std::vector<NamedArray> out;
  out.reserve(arrays.size());
  for (const NamedArray& a : arrays) out.push_back(broadcast_to(a, *full, ensure_order));
  return {out, *full};
}

// --- elementwise operators ---------------------------------------------------------------------------------

namespace {

// A C++ number as ATen treats a Python number: it does not promote the tensor's dtype within its category.
at::Tensor wrap(const at::Scalar& s, const NamedArray& like) {
  return at::native::wrapped_scalar_tensor(s, like.device());
}

}  // namespace

NamedArray operator+(const NamedArray& a, const NamedArray& b) {
  return elementwise_binary(a, b, [](auto& x, auto& y) { return at::add(x, y); });
}
NamedArray operator-(const NamedArray& a, const NamedArray& b) {
  return elementwise_binary(a, b, [](auto& x, auto& y) { return at::sub(x, y); });
}
NamedArray operator*(const NamedArray& a, const NamedArray& b) {
  return elementwise_binary(a, b, [](auto& x, auto& y) { return at::mul(x, y); });
}
NamedArray operator/(const NamedArray& a, const NamedArray& b) {
  return elementwise_binary(a, b, [](auto& x, auto& y) { return at::div(x, y); });
}
NamedArray operator+(const NamedArray& a, const at::Scalar& b) { return NamedArray(at::add(a.array(), b), a.axes()); }
NamedArray operator-(const NamedArray& a, const at::Scalar& b) { return NamedArray(at::sub(a.array(), b), a.axes()); }
NamedArray operator*(const NamedArray& a, const at::Scalar& b) { return NamedArray(at::mul(a.array(), b), a.axes()); }
NamedArray operator/(const NamedArray& a, const at::Scalar& b) { return NamedArray(at::div(a.array(), b), a.axes()); }
NamedArray operator+(const at::Scalar& a, const NamedArray& b) { return NamedArray(at::add(b.array(), a), b.axes()); }
NamedArray operator-(const at::Scalar& a, const NamedArray& b) { return NamedArray(at::rsub(b.array(), a), b.axes()); }
NamedArray operator*(const at::Scalar& a, const NamedArray& b) { return NamedArray(at::mul(b.array(), a), b.axes()); }
NamedArray operator/(const at::Scalar& a, const NamedArray& b) {
  return NamedArray(at::div(wrap(a, b), b.array()), b.axes());
}
NamedArray operator-(const NamedArray& a) { return NamedArray(at::neg(a.array()), a.axes()); }

NamedArray operator<(const NamedArray& a, const NamedArray& b) {
  return elementwise_binary(a, b, [](auto& x, auto& y) { return at::lt(x, y); });
}
NamedArray operator<=(const NamedArray& a, const NamedArray& b) {
  return elementwise_binary(a, b, [](auto& x, auto& y) { return at::le(x, y); });
}
NamedArray operator>(const NamedArray& a, const NamedArray& b) {
  return elementwise_binary(a, b, [](auto& x, auto& y) { return at::gt(x, y); });
}
NamedArray operator>=(const NamedArray& a, const NamedArray& b) {
  return elementwise_binary(a, b, [](auto& x, auto& y) { return at::ge(x, y); });
}
NamedArray operator<(const NamedArray& a, const at::Scalar& b) { return NamedArray(at::lt(a.array(), b), a.axes()); }
NamedArray operator<=(const NamedArray& a, const at::Scalar& b) { return NamedArray(at::le(a.array(), b), a.axes()); }
NamedArray operator>(const NamedArray& a, const at::Scalar& b) { return NamedArray(at::gt(a.array(), b), a.axes()); }
NamedArray operator>=(const NamedArray& a, const at::Scalar& b) { return NamedArray(at::ge(a.array(), b), a.axes()); }

NamedArray operator&(const NamedArray& a, const NamedArray& b) {
  return elementwise_binary(a, b, [](auto& x, auto& y) { return at::bitwise_and(x, y); });
}
NamedArray operator|(const NamedArray& a, const NamedArray& b) {
  return elementwise_binary(a, b, [](auto& x, auto& y) { return at::bitwise_or(x, y); });
}
NamedArray operator^(const NamedArray& a, const NamedArray& b) {
  return elementwise_binary(a, b, [](auto& x, auto& y) { return at::bitwise_xor(x, y); });
}
NamedArray operator~(const NamedArray& a) { return NamedArray(at::bitwise_not(a.array()), a.axes()); }

}  // namespace haliax
