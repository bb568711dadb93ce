// Explicit, splittable randomness (JAX style). Nothing in haliax reads a global generator.
//
// A Key is two 32-bit words. Bits come from Threefry-2x32 (20 rounds) applied to the key and each element's
// flat index, exactly as JAX does with `jax_threefry_partitionable` (its default): `split`, `fold_in`,
// `bits`, `uniform`, `bernoulli`, `randint`, `permutation` reproduce JAX's bits for the same key and shape.
// `normal` and `truncated_normal` use the same uniform bits and ATen's erfinv (JAX's differ by ~1 ulp).
// Every element depends only on (key, index), so results are identical whatever the thread count.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "haliax/named_array.h"

namespace haliax::random {

class Key {
 public:
  // jax.random.PRNGKey(seed) (with 64-bit seeds: high word, low word).
  explicit Key(uint64_t seed = 0) : data_{static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(seed)} {}
  Key(uint32_t k0, uint32_t k1) : data_{k0, k1} {}

  // n new independent keys (jax.random.split).
  std::vector<Key> split(int64_t n) const;
  // Two keys, for the common `auto [k1, k2] = key.split2();`.
  std::pair<Key, Key> split2() const;
  // A key derived from this one and `data` (jax.random.fold_in); fold_in(i) == split(n)[i].
  Key fold_in(uint64_t data) const;
  const std::array<uint32_t, 2>& data() const { return data_; }
  std::string str() const;  // "Key(0, 42)"
  bool operator==(const Key& o) const { return data_ == o.data_; }
  bool operator!=(const Key& o) const { return !(*this == o); }

 private:
  std::array<uint32_t, 2> data_;
};

// The Threefry-2x32 block function (exposed for tests against published vectors).
std::array<uint32_t, 2> threefry2x32(const std::array<uint32_t, 2>& key, const std::array<uint32_t, 2>& counter);

// 32 random bits per element (held in an int64 array: ATen 1.13 has no uint32); 64 with bit_width = 64
// (two's-complement int64).
NamedArray bits(const Key& key, const AxisSpec& shape, int bit_width = 32);
// Uniform in [minval, maxval). f32 and f64 follow JAX bit for bit; f16/bf16 are drawn in f32 and rounded.
NamedArray uniform(const Key& key, const AxisSpec& shape, at::ScalarType dtype = at::kFloat, double minval = 0.0,
                   double maxval = 1.0);
// Standard normal.
NamedArray normal(const Key& key, const AxisSpec& shape, at::ScalarType dtype = at::kFloat);
// Normal truncated to (lower, upper).
NamedArray truncated_normal(const Key& key, const AxisSpec& shape, double lower, double upper,
                            at::ScalarType dtype = at::kFloat);
// True with probability p.
NamedArray bernoulli(const Key& key, const AxisSpec& shape, double p);
// p as an array (broadcast to `shape`).
NamedArray bernoulli(const Key& key, const AxisSpec& shape, const NamedArray& p);
// Integers in [minval, maxval) (JAX's two-draw modulus method; int32 as JAX, int64 as JAX with x64).
NamedArray randint(const Key& key, const AxisSpec& shape, int64_t minval, int64_t maxval,
                   at::ScalarType dtype = at::kLong);
// JAX's one-uniform transforms (same key and shape: JAX's uniform bits, then its formula; values agree to an ulp
// or two, as with normal): exponential -log1p(-u); laplace sign(u) log1p(-|u|), u in (-1, 1); logistic
// log(u) - log1p(-u); cauchy tan(pi (u - 1/2)).
NamedArray exponential(const Key& key, const AxisSpec& shape, at::ScalarType dtype = at::kFloat);
NamedArray laplace(const Key& key, const AxisSpec& shape, at::ScalarType dtype = at::kFloat);
NamedArray logistic(const Key& key, const AxisSpec& shape, at::ScalarType dtype = at::kFloat);
NamedArray cauchy(const Key& key, const AxisSpec& shape, at::ScalarType dtype = at::kFloat);
// -1 or +1 with equal probability, as 2 * bernoulli(key, shape, 0.5) - 1 (JAX's bits exactly).
NamedArray rademacher(const Key& key, const AxisSpec& shape, at::ScalarType dtype = at::kFloat);
// Standard Gumbel (JAX's default "low" mode).
NamedArray gumbel(const Key& key, const AxisSpec& shape, at::ScalarType dtype = at::kFloat);
// A random permutation of `x` along `axis` (JAX's sort-based shuffle).
NamedArray permutation(const Key& key, const NamedArray& x, const AxisSelector& axis);
// A random permutation of 0..axis.size-1.
NamedArray permutation(const Key& key, const Axis& axis);
// Draw an index along `axis` with probabilities softmax(logits): argmax(logits + gumbel) (Gumbel-max).
NamedArray categorical(const Key& key, const NamedArray& logits, const AxisSelector& axis);

}  // namespace haliax::random
