#include "haliax/nn/gemm_bf16.h"

#ifndef _OPENMP
#error \
    "gemm_bf16.cpp needs -fopenmp (LEVANTER_OPENMP_KERNELS in src/CMakeLists.txt): at::parallel_for would run on one thread"
#endif

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "haliax/nn/bf16_bits.h"
#include "haliax/nn/sgemm_cpu.h"

namespace haliax::nn {

namespace {

bool cpu_is_amd() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_is("amd");
#else
  return false;
#endif
}

bool has_isa(dnnl_cpu_isa_t isa, dnnl_cpu_isa_t want) {
  return (static_cast<unsigned>(isa) & static_cast<unsigned>(want)) == static_cast<unsigned>(want);
}

std::optional<Bf16Gemm>& override_slot() {
  static std::optional<Bf16Gemm> o;
  return o;
}

// A bf16 matrix as a row-major base and whether the operand is its transpose: base has a unit column stride.
struct Operand {
  at::Tensor base;
  bool trans;
};

Operand operand_of(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.scalar_type() == at::kBFloat16 && t.device().is_cpu(), "gemm_bf16_widened: ", name,
              " must be a 2-D bf16 CPU tensor, got ", t.sizes(), " ", t.scalar_type(), " on ", t.device());
  if (t.stride(1) == 1 || t.size(1) <= 1) return {t, false};
  if (t.stride(0) == 1 || t.size(0) <= 1) return {t.t(), true};
  return {t.contiguous(), false};
}

// The operand's rows [r0, r0 + nr) and columns [c0, c0 + nc) (of the operand, not its base), widened into a
// row-major f32 buffer shaped as the base's block; sgemm reads it with the block's width as leading dimension.
at::Tensor widen_block(const Operand& op, int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
  return contiguous_f32(op.trans ? op.base.narrow(0, c0, nc).narrow(1, r0, nr)
                                 : op.base.narrow(0, r0, nr).narrow(1, c0, nc));
}
int64_t ld_of(const at::Tensor& buf) { return std::max<int64_t>(1, buf.size(1)); }

// out (bf16 bits, row stride ldo) [m, n] = round(c [m, n] (+ bias [n], added in f32)), c contiguous f32: one pass
// over c, rows spread over the threads.
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2"))) void round_row_avx2(const float* c, const float* bias, uint16_t* out, int64_t n) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256 v = _mm256_loadu_ps(c + j);
    if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + j));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), bf16_bits::round8(v));
  }
  for (; j < n; ++j) out[j] = bf16_bits::round1(bias ? c[j] + bias[j] : c[j]);
}
#endif

void round_rows(const float* c, int64_t m, int64_t n, const float* bias, uint16_t* out, int64_t ldo) {
#if defined(__x86_64__) || defined(__i386__)
  static const bool avx2 = __builtin_cpu_supports("avx2");
#else
  constexpr bool avx2 = false;
#endif
  at::parallel_for(0, m, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, n)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      if (avx2) {
#if defined(__x86_64__) || defined(__i386__)
        round_row_avx2(c + r * n, bias, out + r * ldo, n);
#endif
      } else {
        for (int64_t j = 0; j < n; ++j)
          out[r * ldo + j] = bf16_bits::round1(bias ? c[r * n + j] + bias[j] : c[r * n + j]);
      }
    }
  });
}

// The rounded result's tensor: bf16 [M, N] with unit column stride (rows of a larger tensor are fine); `who` names
// the caller in the error.
void check_out(const at::Tensor& out, int64_t M, int64_t N, const char* who) {
  TORCH_CHECK(out.dim() == 2 && out.size(0) == M && out.size(1) == N && out.scalar_type() == at::kBFloat16 &&
                  (out.stride(1) == 1 || N <= 1),
              who, ": out must be bf16 [", M, ", ", N, "] with unit column stride, got ", out.sizes(), " ",
              out.scalar_type(), " strides ", out.strides());
}

// The f32 workspace of a blocked product, in elements: 2^22 (16 MB), or a quarter of the two operands' elements where
// that is more, so that no operand is widened more than a few times over (a large head's GEMMs).
int64_t workspace_elements(int64_t a_elems, int64_t b_elems) {
  return std::max<int64_t>(int64_t{1} << 22, (a_elems + b_elems) / 4);
}

}  // namespace

Bf16Gemm bf16_gemm_route_of_cpu() {
  const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  if (has_isa(isa, dnnl_cpu_isa_avx512_core_amx)) return Bf16Gemm::native;
  if (has_isa(isa, dnnl_cpu_isa_avx512_core_bf16) && cpu_is_amd()) return Bf16Gemm::native;
  return Bf16Gemm::widened;
}

Bf16Gemm bf16_gemm_route_from(const char* value) {
  if (!value || !*value) return bf16_gemm_route_of_cpu();
  const std::string v(value);
  if (v == "native") return Bf16Gemm::native;
  if (v == "widened") return Bf16Gemm::widened;
  throw std::invalid_argument("HALIAX_BF16_GEMM=" + v + ": expected native or widened (or unset: chosen from the CPU)");
}

Bf16Gemm bf16_gemm_route() {
  if (override_slot()) return *override_slot();
  static const Bf16Gemm route = bf16_gemm_route_from(std::getenv("HALIAX_BF16_GEMM"));
  return route;
}

at::Tensor contiguous_f32(const at::Tensor& t) {
  return t.to(at::kFloat, false, false, at::MemoryFormat::Contiguous).contiguous();
}

const char* bf16_gemm_route_name(Bf16Gemm route) { return route == Bf16Gemm::native ? "native" : "widened"; }

Bf16GemmRouteOverride::Bf16GemmRouteOverride(Bf16Gemm route) : previous_(override_slot()) { override_slot() = route; }
Bf16GemmRouteOverride::~Bf16GemmRouteOverride() { override_slot() = previous_; }

namespace kernels {

void gemm_bf16_widened(const at::Tensor& a_in, const at::Tensor& b_in, const at::Tensor* bias, const at::Tensor& out) {
  RECORD_FUNCTION("haliax::gemm_bf16_widened", std::vector<c10::IValue>());
  const Operand a = operand_of(a_in, "a"), b = operand_of(b_in, "b");
  const int64_t M = a_in.size(0), K = a_in.size(1), N = b_in.size(1);
  TORCH_CHECK(b_in.size(0) == K, "gemm_bf16_widened: a is ", a_in.sizes(), " but b is ", b_in.sizes());
  check_out(out, M, N, "gemm_bf16_widened");
  TORCH_CHECK(!bias || (bias->dim() == 1 && bias->size(0) == N), "gemm_bf16_widened: bias must be [", N, "]");
  if (M == 0 || N == 0) return;
  const at::Tensor bias32 = bias ? bias->to(at::kFloat).contiguous() : at::Tensor();
  const char ta = a.trans ? 'T' : 'N', tb = b.trans ? 'T' : 'N';
  auto* out_bits = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  const int64_t a_elems = M * K, b_elems = K * N, W = workspace_elements(a_elems, b_elems);
  const int64_t ldo = std::max<int64_t>(1, out.stride(0));
  // out[rows, cols] = round(a[rows] b[:, cols] (+ bias)): the f32 sum over all of K from whole blocks of a and b,
  // or (ab, bb null: both operands large) over K in blocks, each block's widened pieces summed into c32 in order.
  auto product = [&](int64_t r0, int64_t m, int64_t c0, int64_t n, const at::Tensor* ab, const at::Tensor* bb) {
    at::Tensor c32 = at::empty({m, n}, a_in.options().dtype(at::kFloat));
    if (ab && bb) {
      kernels::sgemm(ta, tb, m, n, K, 1.0f, ab->data_ptr<float>(), ld_of(*ab), bb->data_ptr<float>(), ld_of(*bb), 0.0f,
                     c32.data_ptr<float>(), n, "gemm_bf16_widened");
    } else {
      const int64_t kb = std::max<int64_t>(256, W / std::max<int64_t>(1, m + n));
      float beta = 0.0f;
      for (int64_t k0 = 0; k0 < K; k0 += kb) {
        const int64_t k = std::min(kb, K - k0);
        const at::Tensor ak = widen_block(a, r0, m, k0, k), bk = widen_block(b, k0, k, c0, n);
        kernels::sgemm(ta, tb, m, n, k, 1.0f, ak.data_ptr<float>(), ld_of(ak), bk.data_ptr<float>(), ld_of(bk), beta,
                       c32.data_ptr<float>(), n, "gemm_bf16_widened");
        beta = 1.0f;
      }
      if (K == 0) c32.zero_();
    }
    round_rows(c32.data_ptr<float>(), m, n, bias ? bias32.data_ptr<float>() + c0 : nullptr, out_bits + r0 * ldo + c0,
               ldo);
  };
  if (a_elems <= W / 2 && a_elems <= b_elems) {
    // a widened once; b and the result in blocks of columns.
    const at::Tensor ab = widen_block(a, 0, M, 0, K);
    const int64_t nb = std::max<int64_t>(256, (W - a_elems) / std::max<int64_t>(1, K + M));
    for (int64_t c0 = 0; c0 < N; c0 += nb) {
      const int64_t n = std::min(nb, N - c0);
      const at::Tensor bb = widen_block(b, 0, K, c0, n);
      product(0, M, c0, n, &ab, &bb);
    }
  } else if (b_elems <= W / 2) {
    // b widened once; a and the result in blocks of rows.
    const at::Tensor bb = widen_block(b, 0, K, 0, N);
    const int64_t mb = std::max<int64_t>(256, (W - b_elems) / std::max<int64_t>(1, K + N));
    for (int64_t r0 = 0; r0 < M; r0 += mb) {
      const int64_t m = std::min(mb, M - r0);
      const at::Tensor ab = widen_block(a, r0, m, 0, K);
      product(r0, m, 0, N, &ab, &bb);
    }
  } else {
    // Both large (the LM head's hidden gradient: K is the vocabulary): blocks of rows, each over K in blocks.
    const int64_t mb = std::max<int64_t>(256, W / 2 / std::max<int64_t>(1, N));
    for (int64_t r0 = 0; r0 < M; r0 += mb) product(r0, std::min(mb, M - r0), 0, N, nullptr, nullptr);
  }
}

void round_bf16_rows(const at::Tensor& c32, const at::Tensor* bias32, const at::Tensor& out) {
  TORCH_CHECK(c32.dim() == 2 && c32.scalar_type() == at::kFloat && c32.is_contiguous(),
              "round_bf16_rows: c32 must be a contiguous 2-D f32 tensor, got ", c32.sizes(), " ", c32.scalar_type());
  const int64_t M = c32.size(0), N = c32.size(1);
  check_out(out, M, N, "round_bf16_rows");
  TORCH_CHECK(!bias32 || (bias32->dim() == 1 && bias32->size(0) == N && bias32->scalar_type() == at::kFloat &&
                          bias32->is_contiguous()),
              "round_bf16_rows: bias32 must be contiguous f32 [", N, "]");
  if (M == 0 || N == 0) return;
  round_rows(c32.data_ptr<float>(), M, N, bias32 ? bias32->data_ptr<float>() : nullptr,
             reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>()), std::max<int64_t>(1, out.stride(0)));
}

}  // namespace kernels

void mm_bf16_out(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  if (bf16_gemm_route() == Bf16Gemm::widened) return kernels::gemm_bf16_widened(a, b, nullptr, out);
  at::Tensor o = out;
  at::mm_out(o, a, b);
}

at::Tensor mm_bf16(const at::Tensor& a, const at::Tensor& b) {
  if (bf16_gemm_route() == Bf16Gemm::native) return at::mm(a, b);
  at::Tensor out = at::empty({a.size(0), b.size(1)}, a.options());
  kernels::gemm_bf16_widened(a, b, nullptr, out);
  return out;
}

}  // namespace haliax::nn
