#include <gtest/gtest.h>

#include <vector>

#include "levanter/data/permutation.h"

using namespace levanter::data;

TEST(FeistelPermutation, IsABijectionForManyLengths) {
  for (int64_t n : {1, 2, 3, 4, 5, 7, 16, 17, 100, 255, 256, 257, 1000, 4095, 4096, 4097, 65537}) {
    FeistelPermutation p(n, derive_key(42, {static_cast<uint64_t>(n)}));
    std::vector<char> seen(static_cast<size_t>(n), 0);
    for (int64_t i = 0; i < n; ++i) {
      int64_t j = p(i);
      ASSERT_GE(j, 0) << "n=" << n;
      ASSERT_LT(j, n) << "n=" << n;
      ASSERT_FALSE(seen[static_cast<size_t>(j)]) << "n=" << n << " i=" << i << " hits " << j << " twice";
      seen[static_cast<size_t>(j)] = 1;
    }
  }
}

TEST(FeistelPermutation, IsDeterministicAndKeyed) {
  const int64_t n = 10007;
  FeistelPermutation a(n, 7), b(n, 7), c(n, 8);
  int64_t fixed = 0, differ = 0;
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(a(i), b(i));
    differ += a(i) != c(i);
    fixed += a(i) == i;
  }
  EXPECT_GT(differ, n * 9 / 10);  // another key, another order
  EXPECT_LT(fixed, 20);           // about one fixed point expected for a random permutation
  EXPECT_THROW(a(n), std::out_of_range);
  EXPECT_THROW(a(-1), std::out_of_range);
  EXPECT_THROW(FeistelPermutation(0, 1), std::invalid_argument);
}

TEST(FeistelPermutation, LooksShuffled) {
  // Neighbours should land far apart: the mean gap between images of consecutive indices of a random
  // permutation of n is about n/3.
  const int64_t n = 1 << 16;
  FeistelPermutation p(n, derive_key(1, {2}));
  double gap = 0;
  for (int64_t i = 0; i + 1 < n; ++i) gap += std::abs(static_cast<double>(p(i + 1) - p(i)));
  gap /= (n - 1);
  EXPECT_GT(gap, n / 3.0 * 0.9);
  EXPECT_LT(gap, n / 3.0 * 1.1);
}

TEST(FeistelPermutation, HugeDomainsNeedNoMemory) {
  const int64_t n = (int64_t{1} << 40) + 12345;
  FeistelPermutation p(n, 99);
  for (int64_t i : {int64_t{0}, int64_t{1}, n / 2, n - 1}) {
    int64_t j = p(i);
    EXPECT_GE(j, 0);
    EXPECT_LT(j, n);
  }
}

TEST(DeriveKey, DependsOnEveryPart) {
  EXPECT_EQ(derive_key(1, {2, 3}), derive_key(1, {2, 3}));
  EXPECT_NE(derive_key(1, {2, 3}), derive_key(1, {3, 2}));
  EXPECT_NE(derive_key(1, {2, 3}), derive_key(2, {2, 3}));
  EXPECT_NE(derive_key(1, {2}), derive_key(1, {2, 0}));
}
