// A caching CPU allocator for libtorch: the same idea as PyTorch's CUDA caching allocator, for host memory.
//
// Why: a training step frees and re-allocates the same large activation and gradient buffers every step.
// Through glibc, each buffer above the mmap threshold is a fresh mmap: the kernel zeroes its pages on first
// touch and unmaps them on free, so a GPT-2 small step at B=4, T=64 spent about as much time in the kernel
// (page faults) as in GEMMs, with step times swinging by 2x. This allocator keeps freed memory and hands it to
// the next requests, so after the first step a training loop allocates nothing from the OS.
//
// Requests of 64 KiB and more are served from one arena: a range of address space reserved at start (four times
// physical memory; no memory until touched), 2 MiB-aligned and marked for transparent huge pages (fewer TLB misses
// in GEMMs). Blocks tile the arena from its start to its top. A request, rounded up to whole 4 KiB pages, takes the
// smallest free block that fits and leaves the rest free; a freed block merges with its free neighbours; when no
// free block fits, the top rises (taking in a free last block). So the buffers freed after the forward pass serve
// the backward pass's gradients of other sizes, and the memory held stays close to the step's peak of live tensors
// (docs/benchmarks.md has the measurements: one arena beat both free lists per size and PyTorch's CUDA scheme of
// segments per size range, whose free memory cannot merge across segments). Smaller requests go to malloc.
//
// Free memory is bounded: when the free blocks' pages pass the limit (default: a quarter of physical memory),
// every free block's pages go back to the system (madvise(MADV_DONTNEED); the blocks stay, and read as zeros when
// next used) and a free last block lowers the top (the address space above it returns to no access, which also
// returns its commit charge under strict overcommit; free blocks below the top keep theirs). An allocation that fails
// does the same and tries again before reporting out-of-memory; a request the arena has no room for gets a mapping of
// its own. Allocation order never changes results: this only decides where tensors live, not what is computed.
//
// Environment: LEVANTER_CPU_ALLOCATOR=system keeps libtorch's default allocator (for memory debuggers);
// LEVANTER_CPU_CACHE_LIMIT_MB=N sets the bound on free cached memory; LEVANTER_CPU_ARENA_MB=N the address space
// reserved for the arena (at most a quarter of `ulimit -v`, which it then holds; below 256 MiB there is no arena, and
// every request is a mapping of its own, unmapped when freed).
#pragma once

#include <cstddef>
#include <cstdint>

namespace levanter::runtime {

// Counts of the pooled requests (64 KiB and more); malloc's small ones are not counted.
struct CpuAllocatorStats {
  uint64_t allocations = 0;     // requests served
  uint64_t cache_hits = 0;      // requests served from a free block
  uint64_t os_allocations = 0;  // times the arena's top rose, or a request got a mapping of its own
  size_t arena_bytes = 0;       // address space reserved for the arena (0: none, every request is mapped)
  size_t reserved_bytes = 0;    // the arena up to its top, and the mappings of their own
  size_t peak_reserved_bytes = 0;
  size_t cached_free_bytes = 0;  // bytes of free blocks that may hold pages (given-back ones do not count)
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

// Gives the pages of every free block back to the system.
void empty_cpu_allocator_cache();

// The peaks start again from the current counts (PyTorch's torch.cuda.reset_peak_memory_stats).
void reset_cpu_allocator_peak();

// Sets the bound on free cached bytes (the free blocks' pages go back whenever a free takes them past it).
void set_cpu_allocator_cache_limit(size_t bytes);

// The size a request of n bytes is rounded to (exposed for tests).
size_t cpu_allocator_size_class(size_t n);

}  // namespace levanter::runtime
