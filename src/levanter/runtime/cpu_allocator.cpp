#include "levanter/runtime/cpu_allocator.h"

#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>
#include <sanitizer/asan_interface.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace levanter::runtime {

namespace {

// Every block starts with this header; the caller's pointer is 64 bytes after it (libtorch's alignment).
constexpr size_t kHeader = 64;
constexpr size_t kMinCached = 64 << 10;  // smaller requests go straight to malloc (glibc's bins do well there)
constexpr size_t kHugeFrom = 4 << 20;    // blocks from here on are mmapped, 2 MiB-aligned, MADV_HUGEPAGE
constexpr size_t kHugePage = 2 << 20;
constexpr uint32_t kMagic = 0x4c564341;  // "LVCA"

enum class Kind : uint32_t { kSmall = 1, kCached = 2, kMapped = 3 };

struct Header {
  uint32_t magic;
  Kind kind;
  size_t size_class;  // rounded request size (what a cache hit must match)
  size_t map_bytes;   // kMapped: length of the mapping that starts at the header
};
static_assert(sizeof(Header) <= kHeader, "header must fit in the alignment gap");

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

Header* header_of(void* user) { return reinterpret_cast<Header*>(static_cast<char*>(user) - kHeader); }
void* user_of(Header* h) { return reinterpret_cast<char*>(h) + kHeader; }

// Under AddressSanitizer (scripts/test --sanitize) a block's header, its rounding slack past the n bytes asked
// for, and all of a block waiting in the cache are poisoned, so that an overflow or a use after free of pooled
// memory is reported as it would be for malloc's: ASan cannot see into the pool otherwise, and knows nothing of
// mapped blocks. The allocator unpoisons a header before it reads it. Without ASan the macros are no-ops.
void poison_block(Header* h, size_t cls) { ASAN_POISON_MEMORY_REGION(h, kHeader + cls); }
void unpoison_header(Header* h) { ASAN_UNPOISON_MEMORY_REGION(h, kHeader); }

// Hands a block of size class cls out for n bytes: only [user, user + n) is addressable.
void* hand_out(Header* h, size_t cls, size_t n) {
  poison_block(h, cls);
  ASAN_UNPOISON_MEMORY_REGION(user_of(h), n);
  return user_of(h);
}

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

class CachingCpuAllocator final : public c10::Allocator {
 public:
  explicit CachingCpuAllocator(size_t limit) { stats_.limit_bytes = limit; }

  c10::DataPtr allocate(size_t n) const override {
    if (n == 0) return {nullptr, nullptr, &Delete, c10::Device(c10::DeviceType::CPU)};
    void* p = self().obtain(n);
    return {p, p, &Delete, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &Delete; }

  static void Delete(void* p) {
    if (p) instance()->release(p);
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
    empty_locked();
  }

  void set_limit(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.limit_bytes = bytes;
    if (stats_.cached_free_bytes > bytes) empty_locked();
  }

 private:
  CachingCpuAllocator& self() const { return const_cast<CachingCpuAllocator&>(*this); }

  void* obtain(size_t n) {
    const size_t cls = cpu_allocator_size_class(n);
    const bool cached = cls >= kMinCached;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.allocations;
      auto it = cached ? free_.find(cls) : free_.end();
      if (it != free_.end() && !it->second.empty()) {
        Header* h = it->second.back();
        it->second.pop_back();
        ++stats_.cache_hits;
        stats_.cached_free_bytes -= cls;
        note_in_use_locked(cls);
        return hand_out(h, cls, n);
      }
    }
    Header* h = from_system(cls);
    if (!h) {
      empty_cache();
      h = from_system(cls);
      TORCH_CHECK(h, "levanter CPU allocator: out of memory allocating ", n, " bytes (", cls,
                  " with rounding); the cache was emptied and the request retried");
    }
    if (cached) {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.os_allocations;
      note_in_use_locked(cls);
    }
    return hand_out(h, cls, n);
  }

  void release(void* p) {
    Header* h = header_of(p);
    unpoison_header(h);
    TORCH_CHECK(h->magic == kMagic, "levanter CPU allocator: freeing a pointer it did not allocate");
    if (h->kind == Kind::kSmall) {
      ASAN_UNPOISON_MEMORY_REGION(h, kHeader + h->size_class);
      std::free(h);
      return;
    }
    const size_t cls = h->size_class;
    poison_block(h, cls);
    std::lock_guard<std::mutex> lock(mu_);
    stats_.in_use_bytes -= cls;
    free_[cls].push_back(h);
    stats_.cached_free_bytes += cls;
    if (stats_.cached_free_bytes > stats_.limit_bytes) empty_locked();
  }

  // A new block: malloc'd below kHugeFrom (kSmall ones are freed, not cached), mapped from there on.
  static Header* from_system(size_t cls) {
    if (cls + kHeader < kHugeFrom) {
      void* raw = nullptr;
      if (posix_memalign(&raw, kHeader, kHeader + cls) != 0) return nullptr;
      auto* h = static_cast<Header*>(raw);
      *h = Header{kMagic, cls < kMinCached ? Kind::kSmall : Kind::kCached, cls, 0};
      return h;
    }
    // Map with room to align the start to a huge page, then trim the ends.
    const size_t bytes = round_up(kHeader + cls, kHugePage);
    void* m = mmap(nullptr, bytes + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    char* base = static_cast<char*>(m);
    char* aligned = reinterpret_cast<char*>(round_up(reinterpret_cast<uintptr_t>(base), kHugePage));
    if (aligned > base) munmap(base, static_cast<size_t>(aligned - base));
    char* end = aligned + bytes;
    char* map_end = base + bytes + kHugePage;
    if (map_end > end) munmap(end, static_cast<size_t>(map_end - end));
#ifdef MADV_HUGEPAGE
    madvise(aligned, bytes, MADV_HUGEPAGE);  // advisory: ignored where THP is off
#endif
    auto* h = reinterpret_cast<Header*>(aligned);
    *h = Header{kMagic, Kind::kMapped, cls, bytes};
    return h;
  }

  static void to_system(Header* h) {
    unpoison_header(h);
    ASAN_UNPOISON_MEMORY_REGION(h, kHeader + h->size_class);
    if (h->kind == Kind::kMapped) {
      munmap(h, h->map_bytes);
    } else {
      std::free(h);
    }
  }

  void note_in_use_locked(size_t cls) {
    stats_.in_use_bytes += cls;
    if (stats_.in_use_bytes > stats_.peak_in_use_bytes) stats_.peak_in_use_bytes = stats_.in_use_bytes;
  }

  void empty_locked() {
    for (auto& [cls, blocks] : free_) {
      for (Header* h : blocks) to_system(h);
      blocks.clear();
    }
    free_.clear();
    stats_.cached_free_bytes = 0;
  }

  std::mutex mu_;
  std::map<size_t, std::vector<Header*>> free_;
  CpuAllocatorStats stats_;
};

std::once_flag g_once;
std::atomic<bool> g_installed{false};

}  // namespace

size_t cpu_allocator_size_class(size_t n) {
  if (n < kMinCached) return round_up(n, 64);
  size_t p = size_t(1) << (63 - __builtin_clzll(static_cast<unsigned long long>(n)));
  return round_up(n, p / 8);
}

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

void set_cpu_allocator_cache_limit(size_t bytes) {
  if (g_installed) CachingCpuAllocator::instance()->set_limit(bytes);
}

}  // namespace levanter::runtime
