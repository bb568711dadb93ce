// The caching CPU allocator: reuse, splitting and merging of freed blocks in its arena, the cache bound, and that
// tensors on it compute exactly what they compute on libtorch's default allocator. The allocator is installed when this
// test binary loads, so every test of levanter_tests runs on it (as the CLI does). Tests that check where a block lands
// assume the free blocks of one test's own making: ctest runs each test in a process of its own.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
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

TEST(CpuAllocator, RequestsAreRoundedToWholePages) {
  EXPECT_EQ(rt::cpu_allocator_size_class(1), 64u);                      // malloc's
  EXPECT_EQ(rt::cpu_allocator_size_class(64 << 10), size_t(64) << 10);  // the arena's from here
  EXPECT_EQ(rt::cpu_allocator_size_class((64 << 10) + 1), size_t(68) << 10);
  EXPECT_EQ(rt::cpu_allocator_size_class((100 << 20) + 5), (size_t(100) << 20) + 4096);
}

namespace {
char* ptr(const at::Tensor& t) { return static_cast<char*>(t.data_ptr()); }
at::Tensor mib(int64_t n) { return at::empty({n << 18}, at::kFloat); }  // n MiB, whole pages

// Pages of [p, p + n) resident in memory (mincore).
size_t resident_bytes(const void* p, size_t n) {
  const size_t page = 4096;
  std::vector<unsigned char> v(n / page);
  EXPECT_EQ(mincore(const_cast<void*>(p), n, v.data()), 0);
  size_t r = 0;
  for (unsigned char c : v) r += (c & 1) ? page : 0;
  return r;
}
}  // namespace

TEST(CpuAllocator, FreedBlocksAreReused) {
  char* first = nullptr;
  {
    at::Tensor t = mib(4);
    first = ptr(t);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % 4096, 0u);
  }
  rt::CpuAllocatorStats before = rt::cpu_allocator_stats();
  at::Tensor again = mib(4);
  rt::CpuAllocatorStats after = rt::cpu_allocator_stats();
  EXPECT_EQ(ptr(again), first);
  EXPECT_EQ(after.cache_hits, before.cache_hits + 1);
  EXPECT_EQ(after.os_allocations, before.os_allocations);
}

TEST(CpuAllocator, AFreedBlockServesSmallerRequestsOfOtherSizes) {
  // The forward pass frees an activation; the backward pass asks for gradients of other sizes.
  at::Tensor guard_below = mib(1);
  at::Tensor big = mib(8);
  at::Tensor guard_above = mib(1);  // so that the block cannot simply be the arena's top
  char* at = ptr(big);
  big = at::Tensor();
  rt::CpuAllocatorStats before = rt::cpu_allocator_stats();
  at::Tensor a = mib(3), b = mib(5);
  rt::CpuAllocatorStats after = rt::cpu_allocator_stats();
  EXPECT_EQ(after.os_allocations, before.os_allocations);
  EXPECT_EQ(after.reserved_bytes, before.reserved_bytes);
  EXPECT_EQ(ptr(a), at);  // best fit: the 8 MiB hole is the smallest that holds 3 MiB, split at its start
  EXPECT_EQ(ptr(b), at + (3 << 20));
}

TEST(CpuAllocator, FreedNeighboursMergeIntoOneBlock) {
  at::Tensor guard_below = mib(1);
  at::Tensor a = mib(2), b = mib(3), c = mib(4);
  at::Tensor guard_above = mib(1);
  ASSERT_EQ(ptr(b), ptr(a) + (2 << 20));
  ASSERT_EQ(ptr(c), ptr(b) + (3 << 20));
  char* start = ptr(a);
  a = at::Tensor();
  c = at::Tensor();
  b = at::Tensor();  // joins both free neighbours
  rt::CpuAllocatorStats before = rt::cpu_allocator_stats();
  at::Tensor whole = mib(9);
  EXPECT_EQ(ptr(whole), start);
  EXPECT_EQ(rt::cpu_allocator_stats().os_allocations, before.os_allocations);
}

TEST(CpuAllocator, ATrainingLikePatternHoldsLittleMoreThanItsPeak) {
  // Each "step": forward keeps 24 activations of 1.5 MiB, backward frees them one by one while it creates 6
  // gradients of 5 MiB (kept until the update) and a 9 MiB temporary. Free lists per size would hold the
  // activations' and the gradients' memory side by side (36 + 30 + 9 MiB); one arena holds about the peak.
  rt::empty_cpu_allocator_cache();
  const size_t live_before = rt::cpu_allocator_stats().in_use_bytes;
  const size_t reserved_before = rt::cpu_allocator_stats().reserved_bytes;
  size_t peak_live = 0, peak_reserved = 0;
  auto sample = [&] {
    const rt::CpuAllocatorStats st = rt::cpu_allocator_stats();
    peak_live = std::max(peak_live, st.in_use_bytes - live_before);
    peak_reserved = std::max(peak_reserved, st.reserved_bytes);
  };
  for (int step = 0; step < 4; ++step) {
    std::vector<at::Tensor> acts, grads;
    for (int i = 0; i < 24; ++i) acts.push_back(at::empty({3 << 17}, at::kFloat));
    sample();
    for (int i = 0; i < 24; ++i) {
      acts[23 - i] = at::Tensor();
      if (i % 4 == 3) grads.push_back(mib(5));
      if (i == 12) {
        at::Tensor temporary = mib(9);
        sample();
      }
      sample();
    }
  }
  const size_t grew = peak_reserved - reserved_before;
  EXPECT_GE(peak_live, size_t(36) << 20);
  EXPECT_LE(grew, peak_live + (size_t(10) << 20)) << "peak live " << peak_live;
}

TEST(CpuAllocator, EmptyCacheGivesThePagesBack) {
  at::Tensor guard_below = mib(1);
  at::Tensor t = at::full({4 << 18}, 3.0f);  // 4 MiB, written, so resident
  at::Tensor guard_above = mib(1);
  char* p = ptr(t);
  EXPECT_EQ(resident_bytes(p, 4 << 20), size_t(4) << 20);
  t = at::Tensor();
  EXPECT_GE(rt::cpu_allocator_stats().cached_free_bytes, size_t(4) << 20);
  EXPECT_EQ(resident_bytes(p, 4 << 20), size_t(4) << 20);  // kept for the next request
  rt::empty_cpu_allocator_cache();
  EXPECT_EQ(rt::cpu_allocator_stats().cached_free_bytes, 0u);
  EXPECT_EQ(resident_bytes(p, 4 << 20), 0u);
  // The block is still there, and reads as zeros.
  at::Tensor again = at::empty({4 << 18}, at::kFloat);
  EXPECT_EQ(ptr(again), p);
  EXPECT_EQ(again.abs().sum().item<float>(), 0.0f);
}

TEST(CpuAllocator, EmptyCacheLowersTheTop) {
  rt::empty_cpu_allocator_cache();  // the last block is now in use, so the next request raises the top
  const size_t reserved = rt::cpu_allocator_stats().reserved_bytes;
  {
    at::Tensor t = mib(1024);  // larger than any free block: the top rises (untouched, so no memory)
    EXPECT_EQ(rt::cpu_allocator_stats().reserved_bytes, reserved + (size_t(1) << 30));
  }
  rt::empty_cpu_allocator_cache();
  EXPECT_EQ(rt::cpu_allocator_stats().reserved_bytes, reserved);
}

TEST(CpuAllocator, PagesOfABlockMergedOntoAGivenBackOneAreGivenBackToo) {
  // b (written) is freed next to a, whose pages were given back; the merged block is split again for a's size, and
  // the rest (b's pages) must still count as resident, so that the next give-back returns them.
  at::Tensor guard_below = mib(1), a = mib(4), b = at::full({4 << 18}, 1.0f), guard_above = mib(1);
  char* pb = ptr(b);
  ASSERT_EQ(pb, ptr(a) + (4 << 20));
  a = at::Tensor();
  rt::empty_cpu_allocator_cache();
  b = at::Tensor();  // merges onto a
  EXPECT_EQ(resident_bytes(pb, 4 << 20), size_t(4) << 20);
  at::Tensor again = mib(4);  // the merged 8 MiB block, split: a's half handed out, b's half left free
  EXPECT_GE(rt::cpu_allocator_stats().cached_free_bytes, size_t(4) << 20);
  rt::empty_cpu_allocator_cache();
  EXPECT_EQ(resident_bytes(pb, 4 << 20), 0u);
}

TEST(CpuAllocator, CacheStaysUnderItsLimit) {
  rt::empty_cpu_allocator_cache();
  const size_t limit = rt::cpu_allocator_stats().limit_bytes;
  rt::set_cpu_allocator_cache_limit(size_t(6) << 20);
  EXPECT_EQ(rt::cpu_allocator_stats().limit_bytes, size_t(6) << 20);
  at::Tensor guard = mib(1), a = mib(4), guard2 = mib(1), b = mib(5), guard3 = mib(1);
  a = at::Tensor();  // 4 MiB free: under the limit, kept
  EXPECT_EQ(rt::cpu_allocator_stats().cached_free_bytes, size_t(4) << 20);
  b = at::Tensor();  // +5 MiB: over, so the pages go back
  EXPECT_EQ(rt::cpu_allocator_stats().cached_free_bytes, 0u);
  rt::set_cpu_allocator_cache_limit(limit);
}

TEST(CpuAllocator, InUseBytesTrackLiveTensors) {
  size_t base = rt::cpu_allocator_stats().in_use_bytes;
  {
    at::Tensor a = at::empty({1 << 18}, at::kFloat);  // 1 MiB, whole pages
    EXPECT_EQ(rt::cpu_allocator_stats().in_use_bytes, base + (size_t(1) << 20));
  }
  EXPECT_EQ(rt::cpu_allocator_stats().in_use_bytes, base);
  EXPECT_GE(rt::cpu_allocator_stats().cached_free_bytes, size_t(1) << 20);
}

TEST(CpuAllocator, ThePeakStartsAgainFromWhatIsInUse) {
  at::Tensor held = at::empty({1 << 18}, at::kFloat);     // 1 MiB
  { at::Tensor big = at::empty({1 << 20}, at::kFloat); }  // 4 MiB, freed
  const rt::CpuAllocatorStats before = rt::cpu_allocator_stats();
  EXPECT_GE(before.peak_in_use_bytes, before.in_use_bytes + (size_t(4) << 20));
  rt::reset_cpu_allocator_peak();
  rt::CpuAllocatorStats now = rt::cpu_allocator_stats();
  EXPECT_EQ(now.peak_in_use_bytes, now.in_use_bytes);
  EXPECT_EQ(now.peak_reserved_bytes, now.reserved_bytes);
  { at::Tensor two = at::empty({1 << 19}, at::kFloat); }  // 2 MiB
  now = rt::cpu_allocator_stats();
  EXPECT_EQ(now.peak_in_use_bytes, now.in_use_bytes + (size_t(2) << 20));
}

TEST(CpuAllocator, AFullArenaGivesRequestsMappingsOfTheirOwn) {
  // Runs in a child process with a 256 MiB arena (the test binary again, this test only).
  if (std::getenv("LEVANTER_CPU_ARENA_MB")) {
    ASSERT_EQ(rt::cpu_allocator_stats().arena_bytes, size_t(256) << 20);
    at::Tensor in_arena = at::full({200 << 18}, 1.0f);  // 200 MiB
    at::Tensor outside = at::full({400 << 18}, 2.0f);   // 400 MiB: no room left
    const size_t reserved = rt::cpu_allocator_stats().reserved_bytes;
    EXPECT_GE(reserved, size_t(600) << 20);
    EXPECT_EQ(outside.sum().item<double>(), 2.0 * (400 << 18));
    outside = at::Tensor();  // unmapped at once
    EXPECT_EQ(rt::cpu_allocator_stats().reserved_bytes, reserved - (size_t(400) << 20));
    EXPECT_EQ(in_arena.sum().item<double>(), 1.0 * (200 << 18));
    return;
  }
  const std::string cmd = "LEVANTER_CPU_ARENA_MB=256 /proc/" + std::to_string(getpid()) +
                          "/exe --gtest_filter=CpuAllocator.AFullArenaGivesRequestsMappingsOfTheirOwn 2>&1";
  FILE* child = popen(cmd.c_str(), "r");
  ASSERT_NE(child, nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, child)) > 0;) out.append(buf, n);
  EXPECT_EQ(pclose(child), 0) << out;
  EXPECT_NE(out.find("[  PASSED  ] 1 test"), std::string::npos) << out;
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
