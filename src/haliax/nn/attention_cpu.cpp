#include "haliax/nn/attention_cpu.h"
#include "haliax/nn/sgemm_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#ifndef _OPENMP
#error \
    "attention_cpu.cpp needs -fopenmp (LEVANTER_OPENMP_KERNELS in src/CMakeLists.txt): at::parallel_for would run on one thread"
#endif

#if defined(__x86_64__) || defined(__i386__)
#define HALIAX_ATTENTION_X86 1
// Compiled for AVX2 + FMA whatever the project's flags; run only where the CPU has them (attention_f32_supported).
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#pragma GCC optimize("fp-contract=off")
#include <immintrin.h>

#include "haliax/nn/avx2_reduce.h"
#include "haliax/nn/bf16_bits.h"

// Sleef's 8-wide expf (1-ulp; what ATen's exp and softmax call with AVX2), declared here: sleef.h declares it only when
// __AVX__ was defined at its first inclusion, which the precompiled ATen header may have made without it.
extern "C" __m256 Sleef_expf8_u10(__m256);

namespace haliax::nn::kernels {

namespace {

// oneDNN's sgemm (sgemm_cpu.h); called inside at::parallel_for, it runs on the calling thread alone.
void sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
           int64_t ldb, float beta, float* C, int64_t ldc) {
  kernels::sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, "dot_product_attention");
}

using haliax::nn::avx2::hmax8;
using haliax::nn::avx2::hsum8;

constexpr int64_t kBlockRows = 32;

// Keeps oneDNN on the calling thread where at::parallel_for ran the loop inline (one problem, or one thread) rather
// than in an OpenMP region: there oneDNN would use every thread and split its sums by their count, so a problem's bits
// would depend on the number of threads.
class OneThread {
 public:
  OneThread() : previous_(omp_in_parallel() ? 0 : omp_get_max_threads()) {
    if (previous_ > 1) omp_set_num_threads(1);
  }
  ~OneThread() {
    if (previous_ > 1) omp_set_num_threads(previous_);
  }
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;

 private:
  int previous_;
};

// The shapes of one call and, per block of query rows, the key range [kbeg, kend) that its rows attend within.
struct Plan {
  int64_t N, Q, K, C, D, ldS;
  float scale;
  const uint8_t* mask;        // [Q, K] or null
  std::vector<uint8_t> none;  // per row: attends to no key (uniform weights)
  std::vector<int64_t> kbeg, kend;

  Plan(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& m, double s)
      : N(q.size(0)),
        Q(q.size(1)),
        K(k.size(1)),
        C(q.size(2)),
        D(v.size(2)),
        ldS((k.size(1) + 7) / 8 * 8),
        scale(static_cast<float>(s)),
        mask(m.defined() ? reinterpret_cast<const uint8_t*>(m.data_ptr<bool>()) : nullptr),
        none(size_t(Q), 0) {
    const int64_t blocks = (Q + kBlockRows - 1) / kBlockRows;
    kbeg.assign(size_t(blocks), K);
    kend.assign(size_t(blocks), 0);
    for (int64_t r = 0; r < Q; ++r) {
      int64_t first = 0, last = K;
      if (mask) {
        const uint8_t* row = mask + r * K;
        while (first < K && !row[first]) ++first;
        while (last > first && !row[last - 1]) --last;
      }
      const size_t b = size_t(r / kBlockRows);
      if (first == last) {
        none[size_t(r)] = 1;
        continue;
      }
      kbeg[b] = std::min(kbeg[b], first);
      kend[b] = std::max(kend[b], last);
    }
    for (size_t b = 0; b < kbeg.size(); ++b) {
      if (kbeg[b] >= kend[b]) kbeg[b] = kend[b] = 0;  // every row of the block attends to nothing
    }
  }
};

// Row i of a block: the logits s[0, kl) of keys kbeg + j; masked ones and the padding up to a multiple of 8 set to
// -inf, so that they add nothing to the max or to the sum of exponentials.
void mask_row(float* s, const uint8_t* mrow, int64_t kl) {
  if (mrow) {
    for (int64_t j = 0; j < kl; ++j) {
      if (!mrow[j]) s[j] = -INFINITY;
    }
  }
  for (int64_t j = kl; j < (kl + 7) / 8 * 8; ++j) s[j] = -INFINITY;
}

// softmax over the row in place (padded to 8); returns its log-sum-exp m + log(sum exp(s - m)).
float softmax_row(float* s, int64_t kl8) {
  __m256 mv = _mm256_set1_ps(-INFINITY);
  for (int64_t j = 0; j < kl8; j += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(s + j));
  const float m = hmax8(mv);
  const __m256 M = _mm256_set1_ps(m);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t j = 0; j < kl8; j += 8) {
    __m256 e = Sleef_expf8_u10(_mm256_sub_ps(_mm256_loadu_ps(s + j), M));
    _mm256_storeu_ps(s + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  const float sum = hsum8(acc);
  const __m256 inv = _mm256_set1_ps(1.0f / sum);
  for (int64_t j = 0; j < kl8; j += 8) _mm256_storeu_ps(s + j, _mm256_mul_ps(_mm256_loadu_ps(s + j), inv));
  return m + std::log(sum);
}

// The weights again from the logits and the row's log-sum-exp: p = exp(s - lse), in place.
void weights_row(float* s, int64_t kl8, float lse) {
  const __m256 L = _mm256_set1_ps(lse);
  for (int64_t j = 0; j < kl8; j += 8) {
    _mm256_storeu_ps(s + j, Sleef_expf8_u10(_mm256_sub_ps(_mm256_loadu_ps(s + j), L)));
  }
}

// dp <- p * (dp - sum_j p_j dp_j), the softmax's backward, in place.
void softmax_backward_row(const float* p, float* dp, int64_t kl8) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t j = 0; j < kl8; j += 8) {
    acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(p + j), _mm256_loadu_ps(dp + j)));
  }
  const __m256 dot = _mm256_set1_ps(hsum8(acc));
  for (int64_t j = 0; j < kl8; j += 8) {
    _mm256_storeu_ps(dp + j, _mm256_mul_ps(_mm256_loadu_ps(p + j), _mm256_sub_ps(_mm256_loadu_ps(dp + j), dot)));
  }
}

// The logits of block rows [r0, r0 + bq) of problem n against keys [kb, kb + kl): S = scale q k^T, masked and padded.
void block_logits(const Plan& P, const float* q, const float* k, int64_t r0, int64_t bq, int64_t kb, int64_t kl,
                  float* S) {
  sgemm('N', 'T', bq, kl, P.C, P.scale, q + r0 * P.C, P.C, k + kb * P.C, P.C, 0.0f, S, P.ldS);
  for (int64_t i = 0; i < bq; ++i) mask_row(S + i * P.ldS, P.mask ? P.mask + (r0 + i) * P.K + kb : nullptr, kl);
}

void check(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
  auto ok3 = [](const at::Tensor& t) {
    return t.defined() && t.dim() == 3 && t.scalar_type() == at::kFloat && t.device().is_cpu() && t.is_contiguous();
  };
  if (!ok3(q) || !ok3(k) || !ok3(v) || k.size(0) != q.size(0) || v.size(0) != q.size(0) || k.size(2) != q.size(2) ||
      v.size(1) != k.size(1)) {
    throw std::invalid_argument(
        "dot_product_attention (fused f32): needs contiguous f32 CPU q [N, Q, C], k [N, K, C], v [N, K, D]");
  }
  if (mask.defined() && (mask.scalar_type() != at::kBool || !mask.is_contiguous() || mask.dim() != 2 ||
                         mask.size(0) != q.size(1) || mask.size(1) != k.size(1))) {
    throw std::invalid_argument("dot_product_attention (fused f32): the mask must be a contiguous bool [Q, K]");
  }
}

}  // namespace

std::pair<at::Tensor, at::Tensor> attention_f32_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                        const at::Tensor& mask, double scale) {
  RECORD_FUNCTION("haliax::attention_f32", std::vector<c10::IValue>());
  check(q, k, v, mask);
  const Plan P(q, k, v, mask, scale);
  at::Tensor out = at::empty({P.N, P.Q, P.D}, q.options());
  at::Tensor lse = at::empty({P.N, P.Q}, q.options());
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  float* op = out.data_ptr<float>();
  float* lp = lse.data_ptr<float>();
  at::parallel_for(0, P.N, 1, [&](int64_t n0, int64_t n1) {
    const OneThread one_thread;
    std::vector<float> S(size_t(kBlockRows * P.ldS));
    for (int64_t n = n0; n < n1; ++n) {
      const float* qn = qp + n * P.Q * P.C;
      const float* kn = kp + n * P.K * P.C;
      const float* vn = vp + n * P.K * P.D;
      float* on = op + n * P.Q * P.D;
      float* ln = lp + n * P.Q;
      for (int64_t r0 = 0, b = 0; r0 < P.Q; r0 += kBlockRows, ++b) {
        const int64_t bq = std::min(kBlockRows, P.Q - r0);
        const int64_t kb = P.kbeg[size_t(b)], kl = P.kend[size_t(b)] - kb, kl8 = (kl + 7) / 8 * 8;
        if (kl > 0) {
          block_logits(P, qn, kn, r0, bq, kb, kl, S.data());
          for (int64_t i = 0; i < bq; ++i) {
            float* s = S.data() + i * P.ldS;
            if (P.none[size_t(r0 + i)]) {
              std::fill(s, s + kl8, 0.0f);  // set below; adds nothing through the product
            } else {
              ln[r0 + i] = softmax_row(s, kl8);
            }
          }
          sgemm('N', 'N', bq, P.D, kl, 1.0f, S.data(), P.ldS, vn + kb * P.D, P.D, 0.0f, on + r0 * P.D, P.D);
        }
        for (int64_t i = 0; i < bq; ++i) {
          if (!P.none[size_t(r0 + i)]) continue;
          // No attended key: uniform weights 1/K over every key, as softmax over K equal logits.
          ln[r0 + i] = -INFINITY;
          float* o = on + (r0 + i) * P.D;
          const float w = 1.0f / static_cast<float>(P.K);
          std::fill(o, o + P.D, 0.0f);
          for (int64_t j = 0; j < P.K; ++j) {
            for (int64_t d = 0; d < P.D; ++d) o[d] += w * vn[j * P.D + d];
          }
        }
      }
    }
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_f32_backward(const at::Tensor& dout, const at::Tensor& q,
                                                                      const at::Tensor& k, const at::Tensor& v,
                                                                      const at::Tensor& mask, const at::Tensor& lse,
                                                                      double scale) {
  RECORD_FUNCTION("haliax::attention_f32_backward", std::vector<c10::IValue>());
  check(q, k, v, mask);
  const at::Tensor g = dout.to(at::kFloat).contiguous();
  if (!g.sizes().equals({q.size(0), q.size(1), v.size(2)}) || !lse.is_contiguous() ||
      !lse.sizes().equals({q.size(0), q.size(1)})) {
    throw std::invalid_argument("dot_product_attention (fused f32): dout must be [N, Q, D] and lse [N, Q]");
  }
  const Plan P(q, k, v, mask, scale);
  at::Tensor dq = at::empty_like(q);
  at::Tensor dk = at::zeros_like(k);
  at::Tensor dv = at::zeros_like(v);
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  const float* lp = lse.data_ptr<float>();
  float* dqp = dq.data_ptr<float>();
  float* dkp = dk.data_ptr<float>();
  float* dvp = dv.data_ptr<float>();
  at::parallel_for(0, P.N, 1, [&](int64_t n0, int64_t n1) {
    const OneThread one_thread;
    std::vector<float> S(size_t(kBlockRows * P.ldS)), dS(size_t(kBlockRows * P.ldS));
    for (int64_t n = n0; n < n1; ++n) {
      const float* qn = qp + n * P.Q * P.C;
      const float* kn = kp + n * P.K * P.C;
      const float* vn = vp + n * P.K * P.D;
      const float* gn = gp + n * P.Q * P.D;
      const float* ln = lp + n * P.Q;
      float* dqn = dqp + n * P.Q * P.C;
      float* dkn = dkp + n * P.K * P.C;
      float* dvn = dvp + n * P.K * P.D;
      for (int64_t r0 = 0, b = 0; r0 < P.Q; r0 += kBlockRows, ++b) {
        const int64_t bq = std::min(kBlockRows, P.Q - r0);
        const int64_t kb = P.kbeg[size_t(b)], kl = P.kend[size_t(b)] - kb, kl8 = (kl + 7) / 8 * 8;
        if (kl == 0) {
          std::fill(dqn + r0 * P.C, dqn + (r0 + bq) * P.C, 0.0f);
        } else {
          block_logits(P, qn, kn, r0, bq, kb, kl, S.data());
          // dP = dout v^T over the block's keys.
          sgemm('N', 'T', bq, kl, P.D, 1.0f, gn + r0 * P.D, P.D, vn + kb * P.D, P.D, 0.0f, dS.data(), P.ldS);
          for (int64_t i = 0; i < bq; ++i) {
            float* s = S.data() + i * P.ldS;
            float* ds = dS.data() + i * P.ldS;
            if (P.none[size_t(r0 + i)]) {
              std::fill(s, s + kl8, 0.0f);  // handled below; adds nothing through the products
            } else {
              weights_row(s, kl8, ln[r0 + i]);
            }
            // The padding's dP is whatever the buffer held; its p is 0, but 0 * NaN is not 0.
            std::fill(ds + kl, ds + kl8, 0.0f);
            softmax_backward_row(s, ds, kl8);
          }
          // dq = scale dS k; dk += scale dS^T q; dv += P^T dout.
          sgemm('N', 'N', bq, P.C, kl, P.scale, dS.data(), P.ldS, kn + kb * P.C, P.C, 0.0f, dqn + r0 * P.C, P.C);
          sgemm('T', 'N', kl, P.C, bq, P.scale, dS.data(), P.ldS, qn + r0 * P.C, P.C, 1.0f, dkn + kb * P.C, P.C);
          sgemm('T', 'N', kl, P.D, bq, 1.0f, S.data(), P.ldS, gn + r0 * P.D, P.D, 1.0f, dvn + kb * P.D, P.D);
        }
        for (int64_t i = 0; i < bq; ++i) {
          if (!P.none[size_t(r0 + i)]) continue;
          // Uniform weights: no gradient reaches q or k (their logits were replaced), dv gets dout / K at every key.
          std::fill(dqn + (r0 + i) * P.C, dqn + (r0 + i + 1) * P.C, 0.0f);
          const float w = 1.0f / static_cast<float>(P.K);
          const float* gr = gn + (r0 + i) * P.D;
          for (int64_t j = 0; j < P.K; ++j) {
            for (int64_t d = 0; d < P.D; ++d) dvn[j * P.D + d] += w * gr[d];
          }
        }
      }
    }
  });
  return {dq, dk, dv};
}

bool attention_f32_supported() {
  static const bool cpu_has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return cpu_has;
}

namespace {

// Row r's mask: entry j at row(r)[j * stride] (true: attend), no mask at all when data is null.
struct RowMask {
  const uint8_t* data = nullptr;
  const int64_t* offsets = nullptr;
  int64_t stride = 1;
  explicit RowMask(const MaskRows& m) {
    if (!m.mask.defined()) return;
    data = reinterpret_cast<const uint8_t*>(m.mask.data_ptr<bool>());
    offsets = m.row_offsets.data_ptr<int64_t>();
    stride = m.key_stride;
  }
};

// The part of row r that attends: keys [lo, hi), within which mrow (when not null) marks the attended ones (mrow[j]
// for key lo + j); lo == hi for a row that attends to nothing. Keys outside the range take no exponential.
struct RowRange {
  int64_t lo = 0, hi = 0;
  const uint8_t* mrow = nullptr;
  RowRange(const RowMask& mask, int64_t r, int64_t K) : hi(K) {
    if (!mask.data) return;
    const uint8_t* m = mask.data + mask.offsets[r];
    if (mask.stride == 0) {
      if (!m[0]) hi = 0;  // the row attends everywhere or nowhere
      return;
    }
    while (lo < K && !m[lo]) ++lo;
    while (hi > lo && !m[hi - 1]) --hi;
    mrow = m + lo;
  }
};

void check_rows(const at::Tensor& x, const MaskRows& m, const char* what) {
  if (!masked_softmax_supported(x) || x.dim() != 2) {
    throw std::invalid_argument(std::string(what) + ": needs contiguous f32 or bf16 CPU scores [R, K]");
  }
  if (!m.mask.defined()) return;
  if (m.mask.scalar_type() != at::kBool || !m.mask.is_contiguous() || m.row_offsets.scalar_type() != at::kLong ||
      m.row_offsets.dim() != 1 || m.row_offsets.size(0) != x.size(0) || !m.row_offsets.is_contiguous() ||
      (m.key_stride != 0 && m.key_stride != 1)) {
    throw std::invalid_argument(std::string(what) + ": needs a contiguous bool mask and int64 row offsets [R]");
  }
  const int64_t span = x.size(1) == 0 ? 0 : (x.size(1) - 1) * m.key_stride;
  if (x.size(0) > 0) {
    const auto [lo, hi] = at::aminmax(m.row_offsets);
    if (lo.item<int64_t>() < 0 || hi.item<int64_t>() + span >= std::max<int64_t>(m.mask.numel(), 1)) {
      throw std::invalid_argument(std::string(what) + ": a row offset reaches outside the mask");
    }
  }
}

// Row i of x (f32 or bf16 bits) into f32 s[0, K), padded with `pad` up to a multiple of 8.
template <class T>
void load_row(const T* x, float* s, int64_t K, float pad) {
  if constexpr (std::is_same_v<T, float>) {
    std::memcpy(s, x, size_t(K) * sizeof(float));
  } else {
    int64_t j = 0;
    for (; j + 8 <= K; j += 8) _mm256_storeu_ps(s + j, bf16_bits::widen8(x + j));
    for (; j < K; ++j) s[j] = bf16_bits::widen1(x[j]);
  }
  for (int64_t j = K; j < (K + 7) / 8 * 8; ++j) s[j] = pad;
}

template <class T>
void store_row(const float* s, T* out, int64_t K) {
  if constexpr (std::is_same_v<T, float>) {
    std::memcpy(out, s, size_t(K) * sizeof(float));
  } else {
    int64_t j = 0;
    for (; j + 8 <= K; j += 8) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), bf16_bits::round8(_mm256_loadu_ps(s + j)));
    }
    for (; j < K; ++j) out[j] = bf16_bits::round1(s[j]);
  }
}

template <class T>
void softmax_rows(const T* x, T* out, int64_t R, int64_t K, const RowMask& mask) {
  at::parallel_for(0, R, 64, [&](int64_t r0, int64_t r1) {
    std::vector<float> buf(size_t((K + 7) / 8 * 8 + 8));
    float* s = buf.data();
    for (int64_t r = r0; r < r1; ++r) {
      const RowRange rr(mask, r, K);
      T* o = out + r * K;
      if (rr.lo == rr.hi) {
        std::fill(s, s + K, 1.0f / static_cast<float>(K));  // softmax over K equal logits
        store_row(s, o, K);
        continue;
      }
      const int64_t n = rr.hi - rr.lo;
      load_row(x + r * K + rr.lo, s, n, -INFINITY);
      int64_t attended = n;
      if (rr.mrow) {
        attended = 0;
        for (int64_t j = 0; j < n; ++j) {
          attended += rr.mrow[j] ? 1 : 0;
          s[j] = rr.mrow[j] ? s[j] : -INFINITY;
        }
      }
      if (mask.data && attended < K && *std::max_element(s, s + n) == -INFINITY) {
        // Every attended logit is -inf (a -inf bias): where()'s -1e9 is then the largest logit, and softmax spreads
        // the row over the masked keys.
        const float w = 1.0f / static_cast<float>(K - attended);
        for (int64_t j = 0; j < K; ++j) {
          const bool attend = j >= rr.lo && j < rr.hi && (!rr.mrow || rr.mrow[j - rr.lo]);
          s[j] = attend ? 0.0f : w;
        }
        store_row(s, o, K);
        continue;
      }
      softmax_row(s, (n + 7) / 8 * 8);
      std::fill(o, o + rr.lo, T(0));
      store_row(s, o + rr.lo, n);
      std::fill(o + rr.hi, o + K, T(0));
    }
  });
}

template <class T>
void softmax_backward_rows(const T* dy, const T* p, T* dx, int64_t R, int64_t K, const RowMask& mask) {
  at::parallel_for(0, R, 64, [&](int64_t r0, int64_t r1) {
    const int64_t K8 = (K + 7) / 8 * 8 + 8;
    std::vector<float> buf(size_t(2 * K8));
    float* ps = buf.data();
    float* ds = buf.data() + K8;
    for (int64_t r = r0; r < r1; ++r) {
      const RowRange rr(mask, r, K);
      T* o = dx + r * K;
      // Outside the range, and everywhere in a row that attends to nothing (whose logits where() replaced), the
      // weights pass no gradient. Inside, a masked key's weight is exactly 0.
      const int64_t n = rr.hi - rr.lo;
      std::fill(o, o + rr.lo, T(0));
      std::fill(o + rr.hi, o + K, T(0));
      if (n == 0) continue;
      load_row(p + r * K + rr.lo, ps, n, 0.0f);
      load_row(dy + r * K + rr.lo, ds, n, 0.0f);
      softmax_backward_row(ps, ds, (n + 7) / 8 * 8);
      if (rr.mrow) {
        for (int64_t j = 0; j < n; ++j) ds[j] = rr.mrow[j] ? ds[j] : 0.0f;
      }
      store_row(ds, o + rr.lo, n);
    }
  });
}

template <class F>
void with_bits(const at::Tensor& t, F&& f) {
  if (t.scalar_type() == at::kFloat) {
    f(static_cast<float*>(t.data_ptr()));
  } else {
    f(static_cast<uint16_t*>(t.data_ptr()));
  }
}

}  // namespace

bool masked_softmax_supported(const at::Tensor& x) {
  return attention_f32_supported() && x.device().is_cpu() && x.is_contiguous() &&
         (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16);
}

at::Tensor masked_softmax_forward(const at::Tensor& x, const MaskRows& m) {
  check_rows(x, m, "masked_softmax");
  RECORD_FUNCTION("haliax::masked_softmax", std::vector<c10::IValue>());
  at::Tensor out = at::empty_like(x);
  const RowMask mask(m);
  with_bits(x, [&](auto* xp) {
    using T = std::remove_pointer_t<decltype(xp)>;
    softmax_rows<T>(xp, static_cast<T*>(out.data_ptr()), x.size(0), x.size(1), mask);
  });
  return out;
}

at::Tensor masked_softmax_backward(const at::Tensor& dy_in, const at::Tensor& p, const MaskRows& m) {
  check_rows(p, m, "masked_softmax_backward");
  if (dy_in.scalar_type() != p.scalar_type() || !dy_in.sizes().equals(p.sizes())) {
    throw std::invalid_argument("masked_softmax_backward: dy must have the weights' dtype and shape");
  }
  RECORD_FUNCTION("haliax::masked_softmax_backward", std::vector<c10::IValue>());
  const at::Tensor dy = dy_in.contiguous();
  at::Tensor dx = at::empty_like(p);
  const RowMask mask(m);
  with_bits(p, [&](auto* pp) {
    using T = std::remove_pointer_t<decltype(pp)>;
    softmax_backward_rows<T>(static_cast<const T*>(dy.data_ptr()), pp, static_cast<T*>(dx.data_ptr()), p.size(0),
                             p.size(1), mask);
  });
  return dx;
}

}  // namespace haliax::nn::kernels

#pragma GCC pop_options

#else

namespace haliax::nn::kernels {
bool attention_f32_supported() { return false; }
bool masked_softmax_supported(const at::Tensor&) { return false; }
at::Tensor masked_softmax_forward(const at::Tensor&, const MaskRows&) {
  throw std::invalid_argument("masked_softmax: x86 only");
}
at::Tensor masked_softmax_backward(const at::Tensor&, const at::Tensor&, const MaskRows&) {
  throw std::invalid_argument("masked_softmax_backward: x86 only");
}
std::pair<at::Tensor, at::Tensor> attention_f32_forward(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                        const at::Tensor&, double) {
  throw std::invalid_argument("attention_f32_forward: x86 only");
}
std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_f32_backward(const at::Tensor&, const at::Tensor&,
                                                                      const at::Tensor&, const at::Tensor&,
                                                                      const at::Tensor&, const at::Tensor&, double) {
  throw std::invalid_argument("attention_f32_backward: x86 only");
}
}  // namespace haliax::nn::kernels

#endif
