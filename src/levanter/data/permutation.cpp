#include "levanter/data/permutation.h"

#include <stdexcept>
#include <string>

namespace levanter::data {

uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t derive_key(uint64_t seed, std::initializer_list<uint64_t> path) {
  uint64_t k = mix64(seed ^ 0x6C65766E74657221ull);  // "levnter!": separates from other uses of the seed
  for (uint64_t p : path) k = mix64(k ^ mix64(p + 0x2545F4914F6CDD1Dull));
  return k;
}

FeistelPermutation::FeistelPermutation(int64_t length, uint64_t key) : length_(length) {
  if (length <= 0)
    throw std::invalid_argument("FeistelPermutation: length must be positive, got " + std::to_string(length));
  half_bits_ = 0;
  while ((uint64_t{1} << (2 * half_bits_)) < static_cast<uint64_t>(length)) ++half_bits_;
  half_mask_ = half_bits_ == 0 ? 0 : (uint64_t{1} << half_bits_) - 1;
  for (int r = 0; r < kRounds; ++r) round_keys_[r] = mix64(key + static_cast<uint64_t>(r) * 0xD1B54A32D192ED03ull);
}

uint64_t FeistelPermutation::network(uint64_t x) const {
  uint64_t left = x >> half_bits_, right = x & half_mask_;
  for (int r = 0; r < kRounds; ++r) {
    // Round function: the high bits of a keyed 64-bit mix of the right half.
    uint64_t f = mix64(right ^ round_keys_[r]) >> (64 - half_bits_);
    uint64_t new_right = left ^ f;
    left = right;
    right = new_right;
  }
  return (left << half_bits_) | right;
}

int64_t FeistelPermutation::operator()(int64_t i) const {
  if (i < 0 || i >= length_) {
    throw std::out_of_range("FeistelPermutation: index " + std::to_string(i) + " outside [0, " +
                            std::to_string(length_) + ")");
  }
  if (half_bits_ == 0) return 0;
  uint64_t x = network(static_cast<uint64_t>(i));
  while (x >= static_cast<uint64_t>(length_)) x = network(x);
  return static_cast<int64_t>(x);
}

}  // namespace levanter::data
