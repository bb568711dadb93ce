// The caching CPU allocator: reuse of freed blocks, size classes, the cache bound, and that tensors on it
// compute exactly what they compute on libtorch's default allocator. The allocator is installed when this
// test binary loads, so every test of levanter_tests runs on it (as the CLI does).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "levanter/runtime/cpu_allocator.h"

namespace rt = levanter::runtime;

namespace {
const bool kInstalled = rt::install_caching_cpu_allocator();
}

TEST(CpuAllocator, InstalledAndIdempotent) {
  ASSERT_TRUE(kInstalled);
  EXPECT_TRUE(rt::install_caching_cpu_allocator());
  EXPECT_TRUE(rt::caching_cpu_allocator_installed());
}

TEST(CpuAllocator, SizeClassesWasteAtMostAnEighth) {
  EXPECT_EQ(rt::cpu_allocator_size_class(1), 64u);
  EXPECT_EQ(rt::cpu_allocator_size_class(64 << 10), size_t(64) << 10);
  EXPECT_EQ(rt::cpu_allocator_size_class((64 << 10) + 1), size_t(72) << 10);  // granule 8 KiB
  EXPECT_EQ(rt::cpu_allocator_size_class(100 << 20), size_t(104) << 20);      // granule 8 MiB
  for (size_t n = 64 << 10; n < (size_t(1) << 32); n = n * 3 / 2 + 12345) {
    size_t c = rt::cpu_allocator_size_class(n);
    EXPECT_GE(c, n);
    EXPECT_LE(static_cast<double>(c - n), n / 8.0) << n;
  }
}

TEST(CpuAllocator, FreedBlocksAreReused) {
  void* first = nullptr;
  {
    at::Tensor t = at::empty({1 << 20}, at::kFloat);  // 4 MiB: a mapped, huge-page block
    first = t.data_ptr();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % 64, 0u);
  }
  rt::CpuAllocatorStats before = rt::cpu_allocator_stats();
  at::Tensor again = at::empty({1 << 20}, at::kFloat);
  rt::CpuAllocatorStats after = rt::cpu_allocator_stats();
  EXPECT_EQ(again.data_ptr(), first);
  EXPECT_EQ(after.cache_hits, before.cache_hits + 1);
  EXPECT_EQ(after.os_allocations, before.os_allocations);
  // A different size class does not take the cached block.
  at::Tensor other = at::empty({3 << 20}, at::kFloat);
  EXPECT_NE(other.data_ptr(), first);
}

TEST(CpuAllocator, EmptyCacheReturnsFreeBlocks) {
  { at::Tensor t = at::empty({300000}, at::kDouble); }
  EXPECT_GT(rt::cpu_allocator_stats().cached_free_bytes, 0u);
  rt::empty_cpu_allocator_cache();
  EXPECT_EQ(rt::cpu_allocator_stats().cached_free_bytes, 0u);
}

TEST(CpuAllocator, CacheStaysUnderItsLimit) {
  rt::empty_cpu_allocator_cache();
  rt::set_cpu_allocator_cache_limit(size_t(6) << 20);
  EXPECT_EQ(rt::cpu_allocator_stats().limit_bytes, size_t(6) << 20);
  { at::Tensor a = at::empty({1 << 20}, at::kFloat); }  // 4 MiB free: under the limit, kept
  EXPECT_EQ(rt::cpu_allocator_stats().cached_free_bytes, size_t(4) << 20);
  { at::Tensor b = at::empty({3 << 19}, at::kFloat); }  // +6 MiB: over, so the cache is emptied
  EXPECT_EQ(rt::cpu_allocator_stats().cached_free_bytes, 0u);
  rt::set_cpu_allocator_cache_limit(size_t(1) << 30);
}

TEST(CpuAllocator, InUseBytesTrackLiveTensors) {
  rt::empty_cpu_allocator_cache();
  size_t base = rt::cpu_allocator_stats().in_use_bytes;
  {
    at::Tensor a = at::empty({1 << 18}, at::kFloat);  // 1 MiB, exactly a size class
    EXPECT_EQ(rt::cpu_allocator_stats().in_use_bytes, base + (size_t(1) << 20));
  }
  EXPECT_EQ(rt::cpu_allocator_stats().in_use_bytes, base);
  EXPECT_GE(rt::cpu_allocator_stats().cached_free_bytes, size_t(1) << 20);
}

TEST(CpuAllocator, ReusedMemoryComputesTheSameBits) {
  // A training-like loop: the same shapes every iteration, results compared with a fresh computation.
  at::Tensor w = at::arange(512 * 512, at::kFloat).reshape({512, 512}).mul(0.37).sin().set_requires_grad(true);
  at::Tensor x = at::arange(256 * 512, at::kFloat).reshape({256, 512}).mul(0.11).cos();
  at::Tensor ref_grad;
  for (int i = 0; i < 4; ++i) {
    at::Tensor y = at::gelu(at::mm(x, w), "tanh").sum();
    y.backward();
    if (i == 0)
      ref_grad = w.grad().clone();
    else
      EXPECT_TRUE(at::equal(w.grad(), ref_grad)) << "iteration " << i;
    w.mutable_grad() = at::Tensor();
  }
  EXPECT_GT(rt::cpu_allocator_stats().cache_hits, 0u);
}

TEST(CpuAllocator, ThreadsAllocateAndFreeConcurrently) {
  std::vector<std::thread> threads;
  std::vector<double> sums(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t, &sums] {
      double s = 0;
      for (int i = 0; i < 200; ++i) {
        at::Tensor a = at::full({(i % 7 + 1) * 40000}, static_cast<float>(t + 1));
        s += a.sum().item<double>();
      }
      sums[t] = s;
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) {
    double expected = 0;
    for (int i = 0; i < 200; ++i) expected += (i % 7 + 1) * 40000.0 * (t + 1);
    EXPECT_DOUBLE_EQ(sums[t], expected);
  }
}

TEST(CpuAllocator, ZeroSizedTensors) {
  at::Tensor e = at::empty({0}, at::kFloat);
  EXPECT_EQ(e.numel(), 0);
  at::Tensor c = at::cat({e, at::ones({3})});
  EXPECT_EQ(c.sum().item<float>(), 3.0f);
}
