// Keyed pseudo-random permutations over [0, n): the data order is a pure function of (seed, index).
//
// FeistelPermutation: a balanced Feistel network on 2h bits (4^h >= n, so the domain is less than 4n) with a
// keyed mixing round function, restricted to [0, n) by cycle walking: apply the network until the value lands
// below n. A Feistel network is a bijection for any round function, and cycle walking restricts a bijection
// of [0, 4^h) to a bijection of [0, n); the expected number of walks is below 4. Nothing is materialised, so
// it costs O(1) memory for any n and O(rounds) per index.
//
// (Levanter's FeistelPermutation splits an odd bit count unevenly, which is not a bijection of its domain in
// general; we round the bit count up to even instead. The orders differ from Levanter's, which uses JAX keys.)
#pragma once

#include <cstdint>
#include <initializer_list>

namespace levanter::data {

// splitmix64's finaliser: a bijective 64-bit mixer.
uint64_t mix64(uint64_t x);

// A key for one use of randomness: the seed folded with a path of integers, e.g. (seed, {kShuffle, epoch}).
uint64_t derive_key(uint64_t seed, std::initializer_list<uint64_t> path);

class FeistelPermutation {
 public:
  static constexpr int kRounds = 6;
  FeistelPermutation(int64_t length, uint64_t key);
  // The image of i, for 0 <= i < length (std::out_of_range otherwise).
  int64_t operator()(int64_t i) const;
  int64_t length() const { return length_; }

 private:
  uint64_t network(uint64_t x) const;
  int64_t length_;
  unsigned half_bits_;
  uint64_t half_mask_;
  uint64_t round_keys_[kRounds];
};

}  // namespace levanter::data
