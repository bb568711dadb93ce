// A caching CPU allocator for libtorch: the same idea as PyTorch's CUDA caching allocator, for host memory.
//
// Why: a training step frees and re-allocates the same large activation and gradient buffers every step.
// Through glibc, each buffer above the mmap threshold is a fresh mmap: the kernel zeroes its pages on first
// touch and unmaps them on free, so a GPT-2 small step at B=4, T=64 spent about as much time in the kernel
// (page faults) as in GEMMs, with step times swinging by 2x. This allocator keeps freed blocks of 64 KiB and
// more in per-size free lists and hands them back on the next request of the same size class, so after the
// first step a training loop allocates nothing from the OS. Blocks of 2 MiB and more are 2 MiB-aligned and
// marked for transparent huge pages (fewer TLB misses in GEMMs over large matrices).
//
// Sizes are rounded up to 1/8 of their power of two (at most 12.5% waste). Free cached bytes are bounded: when
// they pass the limit (default: a quarter of physical memory), the cache is emptied, and an allocation that
// fails empties the cache and tries again before reporting out-of-memory. Allocation order never changes
// results: this only decides where tensors live, not what is computed.
//
// Environment: LEVANTER_CPU_ALLOCATOR=system keeps libtorch's default allocator (for memory debuggers);
// LEVANTER_CPU_CACHE_LIMIT_MB=N sets the bound on free cached memory.
#pragma once

#include <cstddef>
#include <cstdint>

namespace levanter::runtime {

struct CpuAllocatorStats {
  uint64_t allocations = 0;      // requests served
  uint64_t cache_hits = 0;       // requests served from the cache
  uint64_t os_allocations = 0;   // blocks obtained from the system
  size_t cached_free_bytes = 0;  // bytes in free lists now
  size_t in_use_bytes = 0;       // bytes handed out (rounded sizes) and not yet freed
  size_t peak_in_use_bytes = 0;
  size_t limit_bytes = 0;  // bound on cached_free_bytes
};

// Makes the caching allocator libtorch's CPU allocator (once; later calls do nothing). Returns false when
// LEVANTER_CPU_ALLOCATOR=system asked to keep the default. Call at the start of main, before big tensors exist;
// tensors allocated earlier keep their own deleters and are freed correctly either way.
bool install_caching_cpu_allocator();

// Whether the caching allocator is installed.
bool caching_cpu_allocator_installed();

CpuAllocatorStats cpu_allocator_stats();

// Returns every free cached block to the system.
void empty_cpu_allocator_cache();

// Sets the bound on free cached bytes (the cache is emptied whenever a free takes it past the bound).
void set_cpu_allocator_cache_limit(size_t bytes);

// The size class a request of n bytes is rounded to (exposed for tests).
size_t cpu_allocator_size_class(size_t n);

}  // namespace levanter::runtime
