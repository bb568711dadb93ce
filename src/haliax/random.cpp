#include "haliax/random.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "haliax/core.h"
#include "haliax/error.h"
#include "haliax/ops.h"
#include "haliax/partitioning.h"

#ifndef _OPENMP
#error \
    "random.cpp needs -fopenmp (LEVANTER_OPENMP_KERNELS in src/CMakeLists.txt): at::parallel_for would run on one thread"
#endif

namespace haliax::random {

namespace {

inline uint32_t rotl(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

inline std::array<uint32_t, 2> threefry(uint32_t k0, uint32_t k1, uint32_t x0, uint32_t x1) {
  const uint32_t ks[3] = {k0, k1, k0 ^ k1 ^ 0x1BD11BDAu};
  static constexpr int kRot[2][4] = {{13, 15, 26, 6}, {17, 29, 16, 24}};
  x0 += ks[0];
  x1 += ks[1];
  for (int i = 0; i < 5; ++i) {
    const int* r = kRot[i % 2];
    for (int j = 0; j < 4; ++j) {
      x0 += x1;
      x1 = rotl(x1, r[j]);
      x1 ^= x0;
    }
    x0 += ks[(i + 1) % 3];
    x1 += ks[(i + 2) % 3] + static_cast<uint32_t>(i + 1);
  }
  return {x0, x1};
}

// Which elements of the whole draw of `shape` to make, under the installed creation scopes (partitioning.h): all of
// them, this process's piece (each element keeps its counter in the whole array, so the piece holds the whole draw's
// bits), or none (the meta device: shapes alone; each draw then returns an empty meta array at once, since not every
// ATen op it uses has a meta kernel in 1.13).
struct Draw {
  Creation c;
  std::vector<int64_t> local, whole;  // sizes
  int64_t numel = 1;
  at::TensorOptions options(at::ScalarType dtype) const {
    return c.meta ? at::TensorOptions(dtype).device(at::kMeta) : at::TensorOptions(dtype);
  }
  // An uninitialised array of the draw's shape (under EvalShapeScope, what every draw returns).
  NamedArray empty(at::ScalarType dtype) const { return NamedArray(at::empty(local, options(dtype)), c.axes); }
  // Local element i's flat index in the whole array.
  int64_t counter(int64_t i) const {
    if (c.begin.empty()) return i;
    int64_t g = 0, stride = 1;
    for (size_t d = local.size(); d-- > 0;) {
      const int64_t at = i % local[d];
      i /= local[d];
      g += (at + c.begin[d]) * stride;
      stride *= whole[d];
    }
    return g;
  }
};

Draw draw_of(const AxisSpec& shape) {
  Draw d;
  d.c = creation_of(shape);
  for (size_t i = 0; i < shape.size(); ++i) {
    d.whole.push_back(shape[i].size);
    d.local.push_back(d.c.axes[i].size);
    d.numel *= d.c.axes[i].size;
  }
  return d;
}

// Every element of the draw of `shape`, whatever the scopes: draws shaped by an existing array (categorical's noise,
// bernoulli with an array of probabilities) and permutation's sort keys.
Draw whole_draw(const AxisSpec& shape) {
  Draw d;
  d.c.axes = shape;
  for (const Axis& a : shape) {
    d.local.push_back(a.size);
    d.numel *= a.size;
  }
  d.whole = d.local;
  return d;
}

// Calls f(i, hi, lo) for every element i of the draw with the Threefry output for its counter (g >> 32, g), g its
// flat index in the whole array.
template <typename F>
void for_each_block(const Key& key, const Draw& draw, F&& f) {
  const uint32_t k0 = key.data()[0], k1 = key.data()[1];
  at::parallel_for(0, draw.numel, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const uint64_t g = static_cast<uint64_t>(draw.counter(i));
      auto b = threefry(k0, k1, static_cast<uint32_t>(g >> 32), static_cast<uint32_t>(g));
      f(i, b[0], b[1]);
    }
  });
}

std::vector<uint32_t> bits32(const Key& key, const Draw& draw) {
  std::vector<uint32_t> out(static_cast<size_t>(draw.numel));
  for_each_block(key, draw, [&](int64_t i, uint32_t hi, uint32_t lo) { out[i] = hi ^ lo; });
  return out;
}

std::vector<uint64_t> bits64(const Key& key, const Draw& draw) {
  std::vector<uint64_t> out(static_cast<size_t>(draw.numel));
  for_each_block(key, draw, [&](int64_t i, uint32_t hi, uint32_t lo) { out[i] = (uint64_t(hi) << 32) | lo; });
  return out;
}

// JAX's uniform: random mantissa with exponent 0 gives [1, 2); minus one, scaled, clamped below at minval.
at::Tensor uniform_f32(const Key& key, const Draw& draw, float lo, float hi) {
  at::Tensor out = at::empty(draw.local, draw.options(at::kFloat));
  if (draw.c.meta) return out;
  float* p = out.data_ptr<float>();
  const float span = hi - lo;
  for_each_block(key, draw, [&](int64_t i, uint32_t a, uint32_t b) {
    uint32_t fb = ((a ^ b) >> 9) | 0x3F800000u;
    float f;
    std::memcpy(&f, &fb, 4);
    // XLA on CPU fuses the scale and shift into one FMA; doing the same keeps JAX's bits.
    float v = std::fma(f - 1.0f, span, lo);
    p[i] = v < lo ? lo : v;
  });
  return out;
}

at::Tensor uniform_f64(const Key& key, const Draw& draw, double lo, double hi) {
  at::Tensor out = at::empty(draw.local, draw.options(at::kDouble));
  if (draw.c.meta) return out;
  double* p = out.data_ptr<double>();
  const double span = hi - lo;
  for_each_block(key, draw, [&](int64_t i, uint32_t a, uint32_t b) {
    uint64_t db = ((((uint64_t)a << 32) | b) >> 12) | 0x3FF0000000000000ull;
    double f;
    std::memcpy(&f, &db, 8);
    double v = std::fma(f - 1.0, span, lo);
    p[i] = v < lo ? lo : v;
  });
  return out;
}

at::Tensor uniform_tensor(const Key& key, const Draw& draw, at::ScalarType dtype, double lo, double hi) {
  if (!at::isFloatingType(dtype)) value_error("uniform only accepts floating point dtypes, got " + dtype_name(dtype));
  if (dtype == at::kDouble) return uniform_f64(key, draw, lo, hi);
  at::Tensor t = uniform_f32(key, draw, static_cast<float>(lo), static_cast<float>(hi));
  return dtype == at::kFloat ? t : t.to(dtype);
}

at::ScalarType compute_dtype(at::ScalarType dtype) { return dtype == at::kDouble ? at::kDouble : at::kFloat; }

}  // namespace

std::array<uint32_t, 2> threefry2x32(const std::array<uint32_t, 2>& key, const std::array<uint32_t, 2>& counter) {
  return threefry(key[0], key[1], counter[0], counter[1]);
}

std::vector<Key> Key::split(int64_t n) const {
  std::vector<Key> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out.push_back(fold_in(static_cast<uint64_t>(i)));
  return out;
}

std::pair<Key, Key> Key::split2() const { return {fold_in(0), fold_in(1)}; }

Key Key::fold_in(uint64_t data) const {
  auto b = threefry(data_[0], data_[1], static_cast<uint32_t>(data >> 32), static_cast<uint32_t>(data));
  return Key(b[0], b[1]);
}

std::string Key::str() const { return "Key(" + std::to_string(data_[0]) + ", " + std::to_string(data_[1]) + ")"; }

NamedArray bits(const Key& key, const AxisSpec& shape, int bit_width) {
  if (bit_width != 32 && bit_width != 64)
    value_error("bits: bit_width must be 32 or 64, got " + std::to_string(bit_width));
  const Draw w = draw_of(shape);
  at::Tensor out = at::empty(w.local, w.options(at::kLong));
  if (w.c.meta) return NamedArray(out, w.c.axes);
  int64_t* p = out.data_ptr<int64_t>();
  if (bit_width == 32) {
    for_each_block(key, w, [&](int64_t i, uint32_t a, uint32_t b) { p[i] = static_cast<int64_t>(a ^ b); });
  } else {
    for_each_block(key, w,
                   [&](int64_t i, uint32_t a, uint32_t b) { p[i] = static_cast<int64_t>((uint64_t(a) << 32) | b); });
  }
  return NamedArray(out, w.c.axes);
}

NamedArray uniform(const Key& key, const AxisSpec& shape, at::ScalarType dtype, double minval, double maxval) {
  check_unique(shape);
  if (!at::isFloatingType(dtype)) value_error("uniform only accepts floating point dtypes, got " + dtype_name(dtype));
  const Draw w = draw_of(shape);
  if (w.c.meta) return w.empty(dtype);
  return NamedArray(uniform_tensor(key, w, dtype, minval, maxval), w.c.axes);
}

NamedArray normal(const Key& key, const AxisSpec& shape, at::ScalarType dtype) {
  check_unique(shape);
  const Draw w = draw_of(shape);
  if (w.c.meta) return w.empty(dtype);
  at::ScalarType ct = compute_dtype(dtype);
  double lo = ct == at::kDouble ? std::nextafter(-1.0, 0.0) : std::nextafter(-1.0f, 0.0f);
  at::Tensor u = uniform_tensor(key, w, ct, lo, 1.0);
  at::Tensor out =
      at::erfinv(u).mul_(ct == at::kDouble ? std::sqrt(2.0) : static_cast<double>(static_cast<float>(std::sqrt(2.0))));
  return NamedArray(out.to(dtype), w.c.axes);
}

namespace {

// A uniform draw in JAX's compute dtype for `dtype` (f64 for f64, else f32) and its finfo constants.
struct UniformDraw {
  at::ScalarType ct;
  double eps, tiny;
};
UniformDraw draw_type(at::ScalarType dtype) {
  if (!at::isFloatingType(dtype))
    value_error("this distribution only accepts floating point dtypes, got " + dtype_name(dtype));
  at::ScalarType ct = compute_dtype(dtype);
  if (ct == at::kDouble) return {ct, std::numeric_limits<double>::epsilon(), std::numeric_limits<double>::min()};
  return {ct, std::numeric_limits<float>::epsilon(), std::numeric_limits<float>::min()};
}

}  // namespace

NamedArray exponential(const Key& key, const AxisSpec& shape, at::ScalarType dtype) {
  check_unique(shape);
  const Draw w = draw_of(shape);
  UniformDraw d = draw_type(dtype);
  if (w.c.meta) return w.empty(dtype);
  at::Tensor u = uniform_tensor(key, w, d.ct, 0.0, 1.0);
  return NamedArray(at::log1p(-u).neg().to(dtype), w.c.axes);
}

NamedArray laplace(const Key& key, const AxisSpec& shape, at::ScalarType dtype) {
  check_unique(shape);
  const Draw w = draw_of(shape);
  UniformDraw d = draw_type(dtype);
  if (w.c.meta) return w.empty(dtype);
  // -1 + epsneg is the float just above -1.
  double lo = d.ct == at::kDouble ? std::nextafter(-1.0, 0.0) : std::nextafter(-1.0f, 0.0f);
  at::Tensor u = uniform_tensor(key, w, d.ct, lo, 1.0);
  return NamedArray((at::sign(u) * at::log1p(-u.abs())).to(dtype), w.c.axes);
}

NamedArray logistic(const Key& key, const AxisSpec& shape, at::ScalarType dtype) {
  check_unique(shape);
  const Draw w = draw_of(shape);
  UniformDraw d = draw_type(dtype);
  if (w.c.meta) return w.empty(dtype);
  at::Tensor u = uniform_tensor(key, w, d.ct, d.tiny, 1.0);
  return NamedArray((at::log(u) - at::log1p(-u)).to(dtype), w.c.axes);
}

NamedArray cauchy(const Key& key, const AxisSpec& shape, at::ScalarType dtype) {
  check_unique(shape);
  const Draw w = draw_of(shape);
  UniformDraw d = draw_type(dtype);
  if (w.c.meta) return w.empty(dtype);
  at::Tensor u = uniform_tensor(key, w, d.ct, d.eps, 1.0);
  const double pi = d.ct == at::kDouble ? M_PI : static_cast<double>(static_cast<float>(M_PI));
  return NamedArray(at::tan((u - 0.5) * pi).to(dtype), w.c.axes);
}

NamedArray rademacher(const Key& key, const AxisSpec& shape, at::ScalarType dtype) {
  NamedArray b = bernoulli(key, shape, 0.5);
  return NamedArray((b.array().to(at::kLong) * 2 - 1).to(dtype), b.axes());
}

NamedArray truncated_normal(const Key& key, const AxisSpec& shape, double lower, double upper, at::ScalarType dtype) {
  check_unique(shape);
  const Draw w = draw_of(shape);
  if (w.c.meta) return w.empty(dtype);
  at::ScalarType ct = compute_dtype(dtype);
  at::Tensor out;
  if (ct == at::kDouble) {
    const double s2 = std::sqrt(2.0);
    at::Tensor u = uniform_f64(key, w, std::erf(lower / s2), std::erf(upper / s2));
    out = at::erfinv(u).mul_(s2).clamp_(std::nextafter(lower, INFINITY), std::nextafter(upper, -INFINITY));
  } else {
    const float s2 = static_cast<float>(std::sqrt(2.0));
    const float lo = static_cast<float>(lower), hi = static_cast<float>(upper);
    at::Tensor u = uniform_f32(key, w, std::erf(lo / s2), std::erf(hi / s2));
    out = at::erfinv(u).mul_(s2).clamp_(std::nextafter(lo, INFINITY), std::nextafter(hi, -INFINITY));
  }
  return NamedArray(out.to(dtype), w.c.axes);
}

NamedArray bernoulli(const Key& key, const AxisSpec& shape, double p) {
  const Draw w = draw_of(shape);
  if (w.c.meta) return w.empty(at::kBool);
  return NamedArray(at::lt(uniform_tensor(key, w, at::kFloat, 0.0, 1.0), static_cast<float>(p)), w.c.axes);
}

NamedArray bernoulli(const Key& key, const AxisSpec& shape, const NamedArray& p) {
  const Draw w = whole_draw(shape);  // shaped with an existing array: not affected by the creation scopes
  NamedArray u(uniform_tensor(key, w, compute_dtype(p.dtype()), 0.0, 1.0), w.c.axes);
  return broadcast_to(u < p, w.c.axes);
}

NamedArray randint(const Key& key, const AxisSpec& shape, int64_t minval, int64_t maxval, at::ScalarType dtype) {
  check_unique(shape);
  auto [k1, k2] = key.split2();
  const Draw w = draw_of(shape);
  const int64_t n = w.numel;
  if (w.c.meta) return w.empty(dtype);
  if (dtype == at::kInt) {
    constexpr int64_t lo_lim = std::numeric_limits<int32_t>::min(), hi_lim = std::numeric_limits<int32_t>::max();
    bool max_out_of_range = maxval > hi_lim;
    int32_t lo = static_cast<int32_t>(std::clamp(minval, lo_lim, hi_lim));
    int32_t hi = static_cast<int32_t>(std::clamp(maxval, lo_lim, hi_lim));
    uint32_t span = static_cast<uint32_t>(static_cast<int64_t>(hi) - lo);
    if (hi <= lo) span = 1;
    if (max_out_of_range && hi > lo) span += 1;
    std::vector<uint32_t> h = bits32(k1, w), l = bits32(k2, w);
    at::Tensor out = at::empty(w.local, at::kInt);
    int32_t* p = out.data_ptr<int32_t>();
    if (span == 0) {  // the full 2^32 range: the remainders are no-ops
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<int32_t>(static_cast<uint32_t>(lo) + l[i]);
    } else {
      uint32_t mult = (uint32_t(1) << 16) % span;
      mult = (mult * mult) % span;
      for (int64_t i = 0; i < n; ++i) {
        uint32_t off = ((h[i] % span) * mult + (l[i] % span)) % span;
        p[i] = static_cast<int32_t>(static_cast<uint32_t>(lo) + off);
      }
    }
    return NamedArray(out, w.c.axes);
  }
  if (dtype != at::kLong) {
    return astype(randint(key, shape, minval, maxval, at::kLong), dtype);
  }
  uint64_t span = static_cast<uint64_t>(maxval) - static_cast<uint64_t>(minval);
  if (maxval <= minval) span = 1;
  std::vector<uint64_t> h = bits64(k1, w), l = bits64(k2, w);
  at::Tensor out = at::empty(w.local, at::kLong);
  int64_t* p = out.data_ptr<int64_t>();
  uint64_t mult = (uint64_t(1) << 32) % span;
  mult = (mult * mult) % span;
  for (int64_t i = 0; i < n; ++i) {
    uint64_t off = ((h[i] % span) * mult + (l[i] % span)) % span;
    p[i] = static_cast<int64_t>(static_cast<uint64_t>(minval) + off);
  }
  return NamedArray(out, w.c.axes);
}

namespace {

NamedArray gumbel_of(const Key& key, const Draw& w, at::ScalarType dtype) {
  if (w.c.meta) return w.empty(dtype);
  at::ScalarType ct = compute_dtype(dtype);
  double tiny = ct == at::kDouble ? std::numeric_limits<double>::min() : std::numeric_limits<float>::min();
  at::Tensor u = uniform_tensor(key, w, ct, tiny, 1.0);
  return NamedArray(at::neg(at::log(at::neg(at::log(u)))).to(dtype), w.c.axes);
}

}  // namespace

NamedArray gumbel(const Key& key, const AxisSpec& shape, at::ScalarType dtype) {
  return gumbel_of(key, draw_of(shape), dtype);
}

NamedArray permutation(const Key& key, const Axis& axis) {
  const int64_t n = axis.size;
  std::vector<int64_t> x(static_cast<size_t>(n));
  std::iota(x.begin(), x.end(), 0);
  // JAX's shuffle: a few rounds of stable sorts by fresh 32-bit keys.
  const double uint32max = 4294967295.0;
  int rounds = static_cast<int>(std::ceil(3.0 * std::log(std::max<int64_t>(1, n)) / std::log(uint32max)));
  Key k = key;
  for (int r = 0; r < rounds; ++r) {
    auto [next, sub] = k.split2();
    k = next;
    std::vector<uint32_t> sort_keys = bits32(sub, whole_draw({Axis("n", n)}));
    std::vector<size_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return sort_keys[a] < sort_keys[b]; });
    std::vector<int64_t> nx(static_cast<size_t>(n));
    for (size_t i = 0; i < order.size(); ++i) nx[i] = x[order[i]];
    x.swap(nx);
  }
  at::Tensor t = at::empty({n}, at::kLong);
  std::memcpy(t.data_ptr<int64_t>(), x.data(), sizeof(int64_t) * x.size());
  return NamedArray(t, {axis});
}

NamedArray permutation(const Key& key, const NamedArray& x, const AxisSelector& axis) {
  Axis ax = x.resolve_axis(axis);
  NamedArray perm = permutation(key, ax);
  if (x.ndim() == 1) return NamedArray(at::index_select(x.array(), 0, perm.array()), x.axes());
  size_t i = *x.axis_index(axis);
  return NamedArray(at::index_select(x.array(), static_cast<int64_t>(i), perm.array()), x.axes());
}

NamedArray categorical(const Key& key, const NamedArray& logits, const AxisSelector& axis) {
  Axis ax = logits.resolve_axis(axis);
  NamedArray g = gumbel_of(key, whole_draw(logits.axes()), logits.dtype());  // not affected by the creation scopes
  return argmax(g + logits, ax);
}

}  // namespace haliax::random
