// Fused AdamW, Lion and sum-of-squares loops. See kernels.h for the contract.
//
// Bits: every operation below is a single IEEE float32 (or double) operation, written out in optax's order. No
// multiply-add is ever contracted (the pragma below, and the AVX2 paths are compiled without FMA), and the AVX2
// paths process partial vectors through a zero-padded buffer instead of a scalar tail, so an element's result
// depends only on its inputs: not on where a thread's range starts, nor on the thread count.
#pragma GCC optimize("fp-contract=off")

#include "levanter/optim/kernels.h"

#include "haliax/nn/bf16_bits.h"

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LEVANTER_OPTIM_X86 1
#endif

namespace levanter::optim::kernels {

namespace {

std::atomic<bool> g_force_scalar{false};

inline float load_grad(const float* g, int64_t i) { return g[i]; }
inline float load_grad(const uint16_t* g, int64_t i) { return haliax::nn::bf16_bits::widen1(g[i]); }

// One element, in optax's order of operations.
inline void adam_element(float& p, float& m, float& v, float g, const AdamScalars& s) {
  g = g * s.grad_scale;
  m = s.one_minus_b1 * g + s.b1 * m;
  v = s.one_minus_b2 * (g * g) + s.b2 * v;
  float m_hat = s.nesterov ? s.b1 * (m * s.inv_bc1_next) + s.one_minus_b1 * (g * s.inv_bc1) : m * s.inv_bc1;
  float u = m_hat / (std::sqrt(v * s.inv_bc2) + s.eps) + s.wd * p;
  p = p - s.lr * u;
}

template <typename G>
void adamw_scalar(float* p, float* m, float* v, const G* g, int64_t n, const AdamScalars& s) {
  for (int64_t i = 0; i < n; ++i) adam_element(p[i], m[i], v[i], load_grad(g, i), s);
}

// Lion, one element, in optax's order (scale_by_lion, add_decayed_weights, scale(-lr)). sign keeps 0, -0 and NaN
// as they are (jnp.sign).
inline void lion_element(float& p, float& m, float g, const LionScalars& s) {
  g = g * s.grad_scale;
  float c = s.one_minus_b1 * g + s.b1 * m;
  float u = c > 0.0f ? 1.0f : (c < 0.0f ? -1.0f : c);
  m = s.one_minus_b2 * g + s.b2 * m;
  u = u + s.wd * p;
  p = p - s.lr * u;
}

template <typename G>
void lion_scalar(float* p, float* m, const G* g, int64_t n, const LionScalars& s) {
  for (int64_t i = 0; i < n; ++i) lion_element(p[i], m[i], load_grad(g, i), s);
}

// Sophia-H, one element. max and clip written as the AVX instructions compute them (maxps(a, b) = a > b ? a : b;
// minps(a, b) = a < b ? a : b), so both paths give the same bits, NaN included.
inline void sophia_element(float& p, float& m, float h, float g, const SophiaScalars& s) {
  g = g * s.grad_scale;
  m = s.one_minus_b1 * g + s.b1 * m;
  float gh = s.gamma * h;
  float d = gh > s.eps ? gh : s.eps;
  float u = (m * s.inv_bc1) / d;
  u = u < s.clip ? u : s.clip;
  float neg = -s.clip;
  u = u > neg ? u : neg;
  u = u + s.wd * p;
  p = p - s.lr * u;
}

template <typename G>
void sophia_scalar(float* p, float* m, const float* h, const G* g, int64_t n, const SophiaScalars& s) {
  for (int64_t i = 0; i < n; ++i) sophia_element(p[i], m[i], h[i], load_grad(g, i), s);
}

template <typename G>
double sum_squares_scalar(const G* x, int64_t n) {
  double lanes[16] = {0};
  for (int64_t i = 0; i < n; ++i) {
    double d = static_cast<double>(load_grad(x, i));
    lanes[i & 15] += d * d;
  }
  double total = 0;
  for (double l : lanes) total += l;
  return total;
}

#ifdef LEVANTER_OPTIM_X86

__attribute__((target("avx2"))) inline __m256 load8(const float* g) { return _mm256_loadu_ps(g); }
__attribute__((target("avx2"))) inline __m256 load8(const uint16_t* g) { return haliax::nn::bf16_bits::widen8(g); }

// A software prefetch `bytes` ahead of a stream. These loops are memory-bound, and each core's hardware prefetcher
// keeps too few cache-line fills in flight for them on its own: bench_optimizer's clipped AdamW step over GPT-2
// small's 124M parameters (the gradients' sum of squares, then the update) took 109-125 ms without, 87-91 ms with,
// on 2 cores of an Emerald Rapids VM. A prefetch is a hint: past the end of a range it loads nothing and never
// faults, and it changes no result.
__attribute__((target("avx2"))) inline void prefetch_ahead(const void* q, uintptr_t bytes) {
  _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(q) + bytes), _MM_HINT_T0);
}
constexpr uintptr_t kUpdateAhead = 2048;  // per stream of an update (3 to 4 streams)
constexpr uintptr_t kNormAhead = 4096;    // the sum of squares' single stream

struct AdamVec {
  __m256 b1, omb1, b2, omb2, r1, r1n, r2, eps, lr, wd, gs;
};

__attribute__((target("avx2"))) inline void adam_vec8(float* p, float* m, float* v, __m256 G, const AdamVec& c,
                                                      bool nesterov) {
  __m256 P = _mm256_loadu_ps(p), M = _mm256_loadu_ps(m), V = _mm256_loadu_ps(v);
  G = _mm256_mul_ps(G, c.gs);
  M = _mm256_add_ps(_mm256_mul_ps(c.omb1, G), _mm256_mul_ps(c.b1, M));
  V = _mm256_add_ps(_mm256_mul_ps(c.omb2, _mm256_mul_ps(G, G)), _mm256_mul_ps(c.b2, V));
  __m256 MH = nesterov ? _mm256_add_ps(_mm256_mul_ps(c.b1, _mm256_mul_ps(M, c.r1n)),
                                       _mm256_mul_ps(c.omb1, _mm256_mul_ps(G, c.r1)))
                       : _mm256_mul_ps(M, c.r1);
  __m256 denom = _mm256_add_ps(_mm256_sqrt_ps(_mm256_mul_ps(V, c.r2)), c.eps);
  __m256 U = _mm256_add_ps(_mm256_div_ps(MH, denom), _mm256_mul_ps(c.wd, P));
  P = _mm256_sub_ps(P, _mm256_mul_ps(c.lr, U));
  _mm256_storeu_ps(p, P);
  _mm256_storeu_ps(m, M);
  _mm256_storeu_ps(v, V);
}

// The whole 16-element groups of an update: one cache line of each float stream per iteration, each stream prefetched
// ahead. Returns the number of elements done.
template <bool kNesterov, typename G>
__attribute__((target("avx2"))) int64_t adam_lines(float* p, float* m, float* v, const G* g, int64_t n,
                                                   const AdamVec& c) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    prefetch_ahead(p + i, kUpdateAhead), prefetch_ahead(m + i, kUpdateAhead), prefetch_ahead(v + i, kUpdateAhead);
    prefetch_ahead(g + i, kUpdateAhead);
    adam_vec8(p + i, m + i, v + i, load8(g + i), c, kNesterov);
    adam_vec8(p + i + 8, m + i + 8, v + i + 8, load8(g + i + 8), c, kNesterov);
  }
  return i;
}

template <typename G>
__attribute__((target("avx2"))) void adamw_avx2(float* p, float* m, float* v, const G* g, int64_t n,
                                                const AdamScalars& s) {
  AdamVec c{_mm256_set1_ps(s.b1),           _mm256_set1_ps(s.one_minus_b1), _mm256_set1_ps(s.b2),
            _mm256_set1_ps(s.one_minus_b2), _mm256_set1_ps(s.inv_bc1),      _mm256_set1_ps(s.inv_bc1_next),
            _mm256_set1_ps(s.inv_bc2),      _mm256_set1_ps(s.eps),          _mm256_set1_ps(s.lr),
            _mm256_set1_ps(s.wd),           _mm256_set1_ps(s.grad_scale)};
  int64_t i = s.nesterov ? adam_lines<true>(p, m, v, g, n, c) : adam_lines<false>(p, m, v, g, n, c);
  for (; i + 8 <= n; i += 8) adam_vec8(p + i, m + i, v + i, load8(g + i), c, s.nesterov);
  if (i < n) {  // the last partial vector, through a padded buffer (same instructions as full vectors)
    int64_t r = n - i;
    alignas(32) float pp[8] = {0}, mm[8] = {0}, vv[8] = {0};
    alignas(32) G gg[8] = {};
    std::memcpy(pp, p + i, r * sizeof(float));
    std::memcpy(mm, m + i, r * sizeof(float));
    std::memcpy(vv, v + i, r * sizeof(float));
    std::memcpy(gg, g + i, r * sizeof(G));
    adam_vec8(pp, mm, vv, load8(gg), c, s.nesterov);
    std::memcpy(p + i, pp, r * sizeof(float));
    std::memcpy(m + i, mm, r * sizeof(float));
    std::memcpy(v + i, vv, r * sizeof(float));
  }
}

struct LionVec {
  __m256 b1, omb1, b2, omb2, lr, wd, gs, one, minus_one, zero;
};

__attribute__((target("avx2"))) inline void lion_vec8(float* p, float* m, __m256 G, const LionVec& c) {
  __m256 P = _mm256_loadu_ps(p), M = _mm256_loadu_ps(m);
  G = _mm256_mul_ps(G, c.gs);
  __m256 C = _mm256_add_ps(_mm256_mul_ps(c.omb1, G), _mm256_mul_ps(c.b1, M));
  __m256 U = _mm256_blendv_ps(C, c.one, _mm256_cmp_ps(C, c.zero, _CMP_GT_OQ));
  U = _mm256_blendv_ps(U, c.minus_one, _mm256_cmp_ps(C, c.zero, _CMP_LT_OQ));
  M = _mm256_add_ps(_mm256_mul_ps(c.omb2, G), _mm256_mul_ps(c.b2, M));
  U = _mm256_add_ps(U, _mm256_mul_ps(c.wd, P));
  P = _mm256_sub_ps(P, _mm256_mul_ps(c.lr, U));
  _mm256_storeu_ps(p, P);
  _mm256_storeu_ps(m, M);
}

template <typename G>
__attribute__((target("avx2"))) void lion_avx2(float* p, float* m, const G* g, int64_t n, const LionScalars& s) {
  LionVec c{_mm256_set1_ps(s.b1),         _mm256_set1_ps(s.one_minus_b1),
            _mm256_set1_ps(s.b2),         _mm256_set1_ps(s.one_minus_b2),
            _mm256_set1_ps(s.lr),         _mm256_set1_ps(s.wd),
            _mm256_set1_ps(s.grad_scale), _mm256_set1_ps(1.0f),
            _mm256_set1_ps(-1.0f),        _mm256_setzero_ps()};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    prefetch_ahead(p + i, kUpdateAhead), prefetch_ahead(m + i, kUpdateAhead), prefetch_ahead(g + i, kUpdateAhead);
    lion_vec8(p + i, m + i, load8(g + i), c);
    lion_vec8(p + i + 8, m + i + 8, load8(g + i + 8), c);
  }
  for (; i + 8 <= n; i += 8) lion_vec8(p + i, m + i, load8(g + i), c);
  if (i < n) {  // the last partial vector, through a padded buffer
    int64_t r = n - i;
    alignas(32) float pp[8] = {0}, mm[8] = {0};
    alignas(32) G gg[8] = {};
    std::memcpy(pp, p + i, r * sizeof(float));
    std::memcpy(mm, m + i, r * sizeof(float));
    std::memcpy(gg, g + i, r * sizeof(G));
    lion_vec8(pp, mm, load8(gg), c);
    std::memcpy(p + i, pp, r * sizeof(float));
    std::memcpy(m + i, mm, r * sizeof(float));
  }
}

struct SophiaVec {
  __m256 b1, omb1, r1, gamma, eps, clip, neg_clip, lr, wd, gs;
};

__attribute__((target("avx2"))) inline void sophia_vec8(float* p, float* m, const float* h, __m256 G,
                                                        const SophiaVec& c) {
  __m256 P = _mm256_loadu_ps(p), M = _mm256_loadu_ps(m), H = _mm256_loadu_ps(h);
  G = _mm256_mul_ps(G, c.gs);
  M = _mm256_add_ps(_mm256_mul_ps(c.omb1, G), _mm256_mul_ps(c.b1, M));
  __m256 D = _mm256_max_ps(_mm256_mul_ps(c.gamma, H), c.eps);
  __m256 U = _mm256_div_ps(_mm256_mul_ps(M, c.r1), D);
  U = _mm256_max_ps(_mm256_min_ps(U, c.clip), c.neg_clip);
  U = _mm256_add_ps(U, _mm256_mul_ps(c.wd, P));
  P = _mm256_sub_ps(P, _mm256_mul_ps(c.lr, U));
  _mm256_storeu_ps(p, P);
  _mm256_storeu_ps(m, M);
}

template <typename G>
__attribute__((target("avx2"))) void sophia_avx2(float* p, float* m, const float* h, const G* g, int64_t n,
                                                 const SophiaScalars& s) {
  SophiaVec c{_mm256_set1_ps(s.b1),  _mm256_set1_ps(s.one_minus_b1), _mm256_set1_ps(s.inv_bc1), _mm256_set1_ps(s.gamma),
              _mm256_set1_ps(s.eps), _mm256_set1_ps(s.clip),         _mm256_set1_ps(-s.clip),   _mm256_set1_ps(s.lr),
              _mm256_set1_ps(s.wd),  _mm256_set1_ps(s.grad_scale)};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    prefetch_ahead(p + i, kUpdateAhead), prefetch_ahead(m + i, kUpdateAhead), prefetch_ahead(h + i, kUpdateAhead);
    prefetch_ahead(g + i, kUpdateAhead);
    sophia_vec8(p + i, m + i, h + i, load8(g + i), c);
    sophia_vec8(p + i + 8, m + i + 8, h + i + 8, load8(g + i + 8), c);
  }
  for (; i + 8 <= n; i += 8) sophia_vec8(p + i, m + i, h + i, load8(g + i), c);
  if (i < n) {  // the last partial vector, through a padded buffer
    int64_t r = n - i;
    alignas(32) float pp[8] = {0}, mm[8] = {0}, hh[8] = {0};
    alignas(32) G gg[8] = {};
    std::memcpy(pp, p + i, r * sizeof(float));
    std::memcpy(mm, m + i, r * sizeof(float));
    std::memcpy(hh, h + i, r * sizeof(float));
    std::memcpy(gg, g + i, r * sizeof(G));
    sophia_vec8(pp, mm, hh, load8(gg), c);
    std::memcpy(p + i, pp, r * sizeof(float));
    std::memcpy(m + i, mm, r * sizeof(float));
  }
}

// Four accumulators of four lanes: element i of a 16-element group goes to lane i (acc[i / 4], slot i % 4).
struct SqAcc {
  __m256d a0, a1, a2, a3;
};

__attribute__((target("avx2"))) inline void sq_accumulate16(const float* x, SqAcc& acc) {
  __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8);
  __m256d d0 = _mm256_cvtps_pd(_mm256_castps256_ps128(x0)), d1 = _mm256_cvtps_pd(_mm256_extractf128_ps(x0, 1));
  __m256d d2 = _mm256_cvtps_pd(_mm256_castps256_ps128(x1)), d3 = _mm256_cvtps_pd(_mm256_extractf128_ps(x1, 1));
  acc.a0 = _mm256_add_pd(acc.a0, _mm256_mul_pd(d0, d0));
  acc.a1 = _mm256_add_pd(acc.a1, _mm256_mul_pd(d1, d1));
  acc.a2 = _mm256_add_pd(acc.a2, _mm256_mul_pd(d2, d2));
  acc.a3 = _mm256_add_pd(acc.a3, _mm256_mul_pd(d3, d3));
}

__attribute__((target("avx2"))) inline void sq_accumulate16(const uint16_t* x, SqAcc& acc) {
  __m256 x0 = load8(x), x1 = load8(x + 8);
  __m256d d0 = _mm256_cvtps_pd(_mm256_castps256_ps128(x0)), d1 = _mm256_cvtps_pd(_mm256_extractf128_ps(x0, 1));
  __m256d d2 = _mm256_cvtps_pd(_mm256_castps256_ps128(x1)), d3 = _mm256_cvtps_pd(_mm256_extractf128_ps(x1, 1));
  acc.a0 = _mm256_add_pd(acc.a0, _mm256_mul_pd(d0, d0));
  acc.a1 = _mm256_add_pd(acc.a1, _mm256_mul_pd(d1, d1));
  acc.a2 = _mm256_add_pd(acc.a2, _mm256_mul_pd(d2, d2));
  acc.a3 = _mm256_add_pd(acc.a3, _mm256_mul_pd(d3, d3));
}

template <typename G>
__attribute__((target("avx2"))) double sum_squares_avx2(const G* x, int64_t n) {
  SqAcc acc{_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    prefetch_ahead(x + i, kNormAhead);
    sq_accumulate16(x + i, acc);
  }
  if (i < n) {  // zero padding adds +0.0 to the unused lanes: no change
    alignas(32) G buf[16] = {};
    std::memcpy(buf, x + i, (n - i) * sizeof(G));
    sq_accumulate16(buf, acc);
  }
  alignas(32) double lanes[16];
  _mm256_store_pd(lanes, acc.a0);
  _mm256_store_pd(lanes + 4, acc.a1);
  _mm256_store_pd(lanes + 8, acc.a2);
  _mm256_store_pd(lanes + 12, acc.a3);
  double total = 0;
  for (double l : lanes) total += l;
  return total;
}

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}

#endif  // LEVANTER_OPTIM_X86

}  // namespace

bool using_avx2() {
#ifdef LEVANTER_OPTIM_X86
  return cpu_has_avx2() && !g_force_scalar.load(std::memory_order_relaxed);
#else
  return false;
#endif
}

void force_scalar(bool on) { g_force_scalar.store(on); }

namespace {

void round_to_bf16_scalar(const float* x, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = haliax::nn::bf16_bits::round1(x[i]);
}

#ifdef LEVANTER_OPTIM_X86
// The same bits, 16 at a time.
__attribute__((target("avx2"))) void round_to_bf16_avx2(const float* x, uint16_t* out, int64_t n) {
  int64_t i = 0;
  // Up to 32-byte alignment of the output, then streaming stores: the copy is read back from memory by the next
  // forward pass anyway, and a plain store would first read each line it writes.
  for (; i < n && reinterpret_cast<uintptr_t>(out + i) % 32 != 0; ++i) round_to_bf16_scalar(x + i, out + i, 1);
  for (; i + 16 <= n; i += 16) {
    const __m128i lo = haliax::nn::bf16_bits::round8(_mm256_loadu_ps(x + i));
    const __m128i hi = haliax::nn::bf16_bits::round8(_mm256_loadu_ps(x + i + 8));
    _mm256_stream_si256(reinterpret_cast<__m256i*>(out + i), _mm256_set_m128i(hi, lo));
  }
  _mm_sfence();
  round_to_bf16_scalar(x + i, out + i, n - i);
}
#endif

}  // namespace

void round_to_bf16(const float* x, uint16_t* out, int64_t n) {
#ifdef LEVANTER_OPTIM_X86
  if (using_avx2()) return round_to_bf16_avx2(x, out, n);
#endif
  round_to_bf16_scalar(x, out, n);
}

void adamw_update(float* p, float* m, float* v, const float* g, int64_t n, const AdamScalars& s) {
#ifdef LEVANTER_OPTIM_X86
  if (using_avx2()) return adamw_avx2(p, m, v, g, n, s);
#endif
  adamw_scalar(p, m, v, g, n, s);
}

void adamw_update(float* p, float* m, float* v, const uint16_t* g, int64_t n, const AdamScalars& s) {
#ifdef LEVANTER_OPTIM_X86
  if (using_avx2()) return adamw_avx2(p, m, v, g, n, s);
#endif
  adamw_scalar(p, m, v, g, n, s);
}

void lion_update(float* p, float* m, const float* g, int64_t n, const LionScalars& s) {
#ifdef LEVANTER_OPTIM_X86
  if (using_avx2()) return lion_avx2(p, m, g, n, s);
#endif
  lion_scalar(p, m, g, n, s);
}

void lion_update(float* p, float* m, const uint16_t* g, int64_t n, const LionScalars& s) {
#ifdef LEVANTER_OPTIM_X86
  if (using_avx2()) return lion_avx2(p, m, g, n, s);
#endif
  lion_scalar(p, m, g, n, s);
}

void sophia_update(float* p, float* m, const float* h, const float* g, int64_t n, const SophiaScalars& s) {
#ifdef LEVANTER_OPTIM_X86
  if (using_avx2()) return sophia_avx2(p, m, h, g, n, s);
#endif
  sophia_scalar(p, m, h, g, n, s);
}

void sophia_update(float* p, float* m, const float* h, const uint16_t* g, int64_t n, const SophiaScalars& s) {
#ifdef LEVANTER_OPTIM_X86
  if (using_avx2()) return sophia_avx2(p, m, h, g, n, s);
#endif
  sophia_scalar(p, m, h, g, n, s);
}

void hessian_ema(float* h, const float* est, int64_t n, float b2, float one_minus_b2) {
  for (int64_t i = 0; i < n; ++i) h[i] = one_minus_b2 * est[i] + b2 * h[i];
}

double sum_squares(const float* x, int64_t n) {
#ifdef LEVANTER_OPTIM_X86
  if (using_avx2()) return sum_squares_avx2(x, n);
#endif
  return sum_squares_scalar(x, n);
}

double sum_squares(const uint16_t* x, int64_t n) {
#ifdef LEVANTER_OPTIM_X86
  if (using_avx2()) return sum_squares_avx2(x, n);
#endif
  return sum_squares_scalar(x, n);
}

}  // namespace levanter::optim::kernels
