#include "levanter/runtime/cpu_allocator.h"

#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>
#include <sanitizer/asan_interface.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>

namespace levanter::runtime {

namespace {

constexpr size_t kAlign = 64;            // libtorch's alignment, for the malloc'd small requests
constexpr size_t kMinPooled = 64 << 10;  // smaller requests go straight to malloc (glibc's bins do well there)
constexpr size_t kPage = 4 << 10;        // pooled sizes are whole pages, so every block starts on a page
constexpr size_t kHugePage = 2 << 20;    // the arena starts on one and is committed in steps of one
constexpr size_t kMinArena = 256 << 20;

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

// A block of the arena (or, when the arena is full, a mapping of its own). Blocks tile the arena from its start
// to its top in address order; prev/next are the neighbours (nullptr at the ends).
struct Block {
  char* ptr;
  size_t size;
  bool allocated = false;
  bool outside = false;  // its own mapping, unmapped when freed
  size_t dirty = 0;      // free blocks: bytes that may still hold pages (0 once given back)
  Block* prev = nullptr;
  Block* next = nullptr;
};

// Free blocks in best-fit order: the smallest block that fits, the lowest address among equals.
struct BySizeThenAddress {
  bool operator()(const Block* a, const Block* b) const {
    return a->size != b->size ? a->size < b->size : a->ptr < b->ptr;
  }
};

// Under AddressSanitizer (scripts/test --sanitize) all of the arena below its top that is not handed out (free
// blocks, the page rounding past the n bytes asked for) is poisoned, so an overflow or a use after free of pooled
// memory is reported as it would be for malloc's: ASan cannot see into the pool otherwise. Without ASan these are
// no-ops.
void poison(const void* p, size_t n) { ASAN_POISON_MEMORY_REGION(p, n); }
void unpoison(const void* p, size_t n) { ASAN_UNPOISON_MEMORY_REGION(p, n); }

size_t physical_memory() {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) : size_t(8) << 30;
}

size_t configured_limit() {
  if (const char* env = std::getenv("LEVANTER_CPU_CACHE_LIMIT_MB")) {
    char* end = nullptr;
    unsigned long long mb = std::strtoull(env, &end, 10);
    if (end != env && *end == '\0') return static_cast<size_t>(mb) << 20;
  }
  return physical_memory() / 4;
}

// Address space to reserve for the arena: LEVANTER_CPU_ARENA_MB, else four times physical memory, at most a
// quarter of an address-space limit (`ulimit -v`) so that the rest of the process keeps room. Reserving costs no
// memory: pages exist once touched.
size_t arena_reservation() {
  size_t want = 4 * physical_memory();
  if (const char* env = std::getenv("LEVANTER_CPU_ARENA_MB")) {
    char* end = nullptr;
    unsigned long long mb = std::strtoull(env, &end, 10);
    if (end != env && *end == '\0') want = static_cast<size_t>(mb) << 20;
  }
  rlimit as{};
  if (getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY) want = std::min<size_t>(want, as.rlim_cur / 4);
  return want / kHugePage * kHugePage;
}

class CachingCpuAllocator final : public c10::Allocator {
 public:
  explicit CachingCpuAllocator(size_t limit) {
    stats_.limit_bytes = limit;
    // Reserve the arena's address space without access (so no commit charge); it is opened as the top grows.
    for (size_t want = arena_reservation(); want >= kMinArena; want = want / 2 / kHugePage * kHugePage) {
      void* m = mmap(nullptr, want + kHugePage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (m == MAP_FAILED) continue;
      char* base = static_cast<char*>(m);
      base_ = reinterpret_cast<char*>(round_up(reinterpret_cast<uintptr_t>(base), kHugePage));
      if (base_ > base) munmap(base, static_cast<size_t>(base_ - base));
      char* map_end = base + want + kHugePage;
      end_ = base_ + want;
      if (map_end > end_) munmap(end_, static_cast<size_t>(map_end - end_));
      top_ = committed_ = base_;
      stats_.arena_bytes = want;
      break;
    }
  }

  // The data pointer is also the context (c10::Allocator::raw_allocate requires it); the deleter says which
  // kind of memory it is, so a small request's free never takes the lock.
  c10::DataPtr allocate(size_t n) const override {
    const c10::Device cpu(c10::DeviceType::CPU);
    if (n == 0) return {nullptr, nullptr, &FreeAny, cpu};
    if (n < kMinPooled) {
      void* p = nullptr;
      if (posix_memalign(&p, kAlign, round_up(n, kAlign)) != 0) {
        self().empty_cache();
        TORCH_CHECK(posix_memalign(&p, kAlign, round_up(n, kAlign)) == 0,
                    "levanter CPU allocator: out of memory allocating ", n, " bytes");
      }
      return {p, p, &FreeSmall, cpu};
    }
    void* p = self().obtain(n);
    return {p, p, &FreePooled, cpu};
  }
  // For raw_allocate's pointers, whose kind the caller does not keep.
  c10::DeleterFnPtr raw_deleter() const override { return &FreeAny; }

  static void FreeSmall(void* p) { std::free(p); }
  static void FreePooled(void* p) { instance()->release(p, /*must_be_pooled=*/true); }
  static void FreeAny(void* p) {
    if (p) instance()->release(p, /*must_be_pooled=*/false);
  }

  static CachingCpuAllocator*& instance() {
    static CachingCpuAllocator* a = nullptr;
    return a;
  }

  CpuAllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  void empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    give_back_locked();
  }

  void reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_in_use_bytes = stats_.in_use_bytes;
    stats_.peak_reserved_bytes = stats_.reserved_bytes;
  }

  void set_limit(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.limit_bytes = bytes;
    if (stats_.cached_free_bytes > bytes) give_back_locked();
  }

 private:
  CachingCpuAllocator& self() const { return const_cast<CachingCpuAllocator&>(*this); }

  void* obtain(size_t n) {
    TORCH_CHECK(n <= (size_t(1) << 62), "levanter CPU allocator: out of memory allocating ", n, " bytes");
    const size_t size = cpu_allocator_size_class(n);
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.allocations;
    Block* b = take_free_locked(size);
    if (b) {
      ++stats_.cache_hits;
    } else {
      b = grow_locked(size);
      if (!b) {
        give_back_locked();
        b = grow_locked(size);
        TORCH_CHECK(b, "levanter CPU allocator: out of memory allocating ", n, " bytes (", size,
                    " rounded); the free memory was given back and the request retried");
      }
    }
    b->allocated = true;
    live_.emplace(b->ptr, b);
    stats_.in_use_bytes += b->size;
    stats_.peak_in_use_bytes = std::max(stats_.peak_in_use_bytes, stats_.in_use_bytes);
    unpoison(b->ptr, n);
    return b->ptr;
  }

  // The smallest free block that fits, split so that the rest stays free; nullptr when none fits.
  Block* take_free_locked(size_t size) {
    Block key{nullptr, size};
    auto it = free_.lower_bound(&key);
    if (it == free_.end()) return nullptr;
    Block* b = *it;
    free_.erase(it);
    stats_.cached_free_bytes -= b->dirty;
    if (b->size > size) {
      // Where in the block its resident pages lie is not known (a merge may have put them anywhere), so the rest keeps
      // as many as it can hold: an over-count only gives back pages that are already gone.
      auto* rest =
          new Block{b->ptr + size, b->size - size, false, false, std::min(b->dirty, b->size - size), b, b->next};
      if (b->next) b->next->prev = rest;
      if (last_ == b) last_ = rest;
      b->next = rest;
      b->size = size;
      free_.insert(rest);
      stats_.cached_free_bytes += rest->dirty;
    }
    return b;
  }

  // Room for `size` bytes at the arena's top (taking in the last block when it is free), or, when the arena is
  // full, a mapping of its own; nullptr when the system has no memory.
  Block* grow_locked(size_t size) {
    Block* tail = last_ && !last_->allocated ? last_ : nullptr;
    const size_t have = tail ? tail->size : 0;
    char* start = tail ? tail->ptr : top_;
    if (base_ && static_cast<size_t>(end_ - start) >= size) {
      char* new_top = start + size;
      if (new_top > committed_) {
        char* new_committed =
            std::min(end_, reinterpret_cast<char*>(round_up(reinterpret_cast<uintptr_t>(new_top), kHugePage)));
        const size_t bytes = static_cast<size_t>(new_committed - committed_);
        if (mprotect(committed_, bytes, PROT_READ | PROT_WRITE) != 0) return nullptr;
#ifdef MADV_HUGEPAGE
        madvise(committed_, bytes, MADV_HUGEPAGE);  // advisory: ignored where THP is off
#endif
        poison(committed_, bytes);
        committed_ = new_committed;
      }
      ++stats_.os_allocations;
      stats_.reserved_bytes += size - have;
      stats_.peak_reserved_bytes = std::max(stats_.peak_reserved_bytes, stats_.reserved_bytes);
      top_ = new_top;
      if (tail) {
        free_.erase(tail);
        stats_.cached_free_bytes -= tail->dirty;
        tail->size = size;
        tail->dirty = 0;
        return tail;
      }
      auto* b = new Block{start, size, false, false, 0, last_, nullptr};
      if (last_) last_->next = b;
      last_ = b;
      return b;
    }
    void* m = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    ++stats_.os_allocations;
    stats_.reserved_bytes += size;
    stats_.peak_reserved_bytes = std::max(stats_.peak_reserved_bytes, stats_.reserved_bytes);
    return new Block{static_cast<char*>(m), size, false, true};
  }

  void release(void* p, bool must_be_pooled) {
    std::unique_lock<std::mutex> lock(mu_);
    auto found = live_.find(static_cast<char*>(p));
    if (found == live_.end()) {
      TORCH_CHECK(!must_be_pooled, "levanter CPU allocator: freeing a pointer it did not allocate");
      lock.unlock();
      std::free(p);  // a small request handed out by raw_allocate
      return;
    }
    Block* b = found->second;
    live_.erase(found);
    stats_.in_use_bytes -= b->size;
    if (b->outside) {
      stats_.reserved_bytes -= b->size;
      munmap(b->ptr, b->size);
      delete b;
      return;
    }
    b->allocated = false;
    b->dirty = b->size;
    poison(b->ptr, b->size);
    // Merge with free neighbours, so that the arena's free memory stays one block for any later size.
    if (b->prev && !b->prev->allocated) b = merge_locked(b->prev, b);
    if (b->next && !b->next->allocated) b = merge_locked(b, b->next);
    free_.insert(b);
    stats_.cached_free_bytes += b->dirty;
    if (stats_.cached_free_bytes > stats_.limit_bytes) give_back_locked();
  }

  // Joins b into a (its free or just-freed neighbour below it); a is kept, b deleted; b is not in free_.
  Block* merge_locked(Block* a, Block* b) {
    for (Block* x : {a, b})
      if (!x->allocated && free_.erase(x)) stats_.cached_free_bytes -= x->dirty;
    a->allocated = b->allocated = false;
    a->size += b->size;
    a->dirty += b->dirty;
    a->next = b->next;
    if (b->next) b->next->prev = a;
    if (last_ == b) last_ = a;
    delete b;
    return a;
  }

  // Gives every free block's pages back to the system (they read as zeros when next touched) and lowers the top
  // past a free last block. The blocks stay, so the arena's layout does not change.
  void give_back_locked() {
    for (Block* b : free_) {
      if (b->dirty == 0) continue;
      madvise(b->ptr, b->size, MADV_DONTNEED);
      b->dirty = 0;
    }
    stats_.cached_free_bytes = 0;
    if (last_ && !last_->allocated) {
      Block* tail = last_;
      free_.erase(tail);
      stats_.reserved_bytes -= tail->size;
      top_ = tail->ptr;
      last_ = tail->prev;
      if (last_) last_->next = nullptr;
      delete tail;
    }
    // Above the top, the address space goes back to no access, which also returns its commit charge (what strict
    // overcommit, vm.overcommit_memory=2, counts; madvise does not).
    char* keep = reinterpret_cast<char*>(round_up(reinterpret_cast<uintptr_t>(top_), kHugePage));
    if (base_ && committed_ > keep &&
        mmap(keep, static_cast<size_t>(committed_ - keep), PROT_NONE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) != MAP_FAILED) {
      committed_ = keep;
    }
  }

  std::mutex mu_;
  char* base_ = nullptr;  // the arena: [base_, top_) is tiled by blocks, [top_, committed_) is open for growth,
  char* top_ = nullptr;   // [committed_, end_) is reserved without access
  char* committed_ = nullptr;
  char* end_ = nullptr;
  Block* last_ = nullptr;  // the block that ends at top_
  std::set<Block*, BySizeThenAddress> free_;
  std::unordered_map<char*, Block*> live_;
  CpuAllocatorStats stats_;
};

std::once_flag g_once;
std::atomic<bool> g_installed{false};

}  // namespace

size_t cpu_allocator_size_class(size_t n) { return n < kMinPooled ? round_up(n, kAlign) : round_up(n, kPage); }

bool install_caching_cpu_allocator() {
  std::call_once(g_once, [] {
    const char* mode = std::getenv("LEVANTER_CPU_ALLOCATOR");
    if (mode && std::string(mode) == "system") return;
    // Never destroyed: tensors may be freed during static destruction, after main returns.
    auto* a = new CachingCpuAllocator(configured_limit());
    CachingCpuAllocator::instance() = a;
    c10::SetCPUAllocator(a, /*priority=*/10);
    g_installed = true;
  });
  return g_installed;
}

bool caching_cpu_allocator_installed() { return g_installed; }

CpuAllocatorStats cpu_allocator_stats() {
  if (!g_installed) return {};
  return CachingCpuAllocator::instance()->stats();
}

void empty_cpu_allocator_cache() {
  if (g_installed) CachingCpuAllocator::instance()->empty_cache();
}

void reset_cpu_allocator_peak() {
  if (g_installed) CachingCpuAllocator::instance()->reset_peak();
}

void set_cpu_allocator_cache_limit(size_t bytes) {
  if (g_installed) CachingCpuAllocator::instance()->set_limit(bytes);
}

}  // namespace levanter::runtime
