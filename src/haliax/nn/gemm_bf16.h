// bf16 GEMMs on the CPU: which kernel computes them on this machine (internal to haliax/nn and the fused LM head).
//
// A bf16 GEMM multiplies bf16 operands, sums the products in f32 and rounds the sum to bf16. oneDNN's bf16 kernels
// (what at::mm runs on bf16 tensors) do that with AMX tiles or AVX-512 BF16 dot products. Where neither is fast, the
// same GEMM is faster as an f32 one: a bf16 value widens to f32 exactly and a product of two is exact in f32, so an f32
// GEMM over the widened operands, rounded to bf16, computes the same sums in another order. Measured on a 2-core Xeon
// (Emerald Rapids) whose hypervisor hides AMX: one core issues a 512-bit VDPBF16PS every second cycle (87 GFLOP/s) and
// two VFMADD231PS a cycle (175 GFLOP/s); at::mm on bf16 ran 150-166 GFLOP/s, oneDNN's sgemm 290-320.
//
// The route is chosen once per process from the CPU, never from a timing, so a machine always computes the same bits:
//   native   oneDNN's bf16 kernels (at::mm): where oneDNN uses AMX, and on AMD CPUs with AVX-512 BF16 (Zen 4 and
//            later run a 512-bit VDPBF16PS at the rate of an f32 FMA: twice the flops);
//   widened  operands widened to f32, oneDNN's sgemm (sgemm_cpu.h), the result rounded to nearest even: every other
//            CPU (Intel without usable AMX, CPUs without AVX-512 BF16, where at::mm's bf16 is slower still).
// On the widened route the Linear layer, the fused LM head and the fused attention compute what their f32 kernels
// compute on the operands widened, rounding the results once (linear.cpp, lm_loss.cpp, attention.cpp); the blocked
// product below serves the rest (the LM head split over tensor-parallel processes, Linear layers too large to widen
// whole, the trainer's MFU probe).
// HALIAX_BF16_GEMM=native or =widened overrides the choice (any other value is refused, naming the variable).
// ONEDNN_MAX_CPU_ISA, which caps what oneDNN uses, is seen through dnnl_get_effective_cpu_isa.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace haliax::nn {

enum class Bf16Gemm { native, widened };

// This process's route (decided on first use; a scoped override below takes precedence).
Bf16Gemm bf16_gemm_route();
const char* bf16_gemm_route_name(Bf16Gemm route);
// What this machine's CPU chooses, ignoring HALIAX_BF16_GEMM and overrides.
Bf16Gemm bf16_gemm_route_of_cpu();
// The route for a value of HALIAX_BF16_GEMM (null or empty: the CPU's); any other value throws
// std::invalid_argument naming the variable.
Bf16Gemm bf16_gemm_route_from(const char* value);

// Tests and benchmarks: the route within a scope (not thread-safe against GEMMs running meanwhile).
class Bf16GemmRouteOverride {
 public:
  explicit Bf16GemmRouteOverride(Bf16Gemm route);
  ~Bf16GemmRouteOverride();
  Bf16GemmRouteOverride(const Bf16GemmRouteOverride&) = delete;
  Bf16GemmRouteOverride& operator=(const Bf16GemmRouteOverride&) = delete;

 private:
  std::optional<Bf16Gemm> previous_;
};

namespace kernels {

// The widened route: out [M, N] = round_bf16(a [M, K] b [K, N] (+ bias [N], added in f32 before rounding)).
// a, b: bf16 CPU matrices, each read along a unit stride where it has one (a transposed view is not copied); bias:
// bf16 [N] or nullptr; out: bf16 [M, N] with unit column stride (rows of a larger tensor are fine). The product is
// blocked: the smaller operand widened whole and the other in blocks, or both in blocks of K where both are large,
// with an f32 workspace of 16 MB or a quarter of the operands' elements, whichever is more; the sums are rounded
// (with the bias) in one pass, 8 lanes at a time with AVX2. The blocking depends on the sizes alone.
void gemm_bf16_widened(const at::Tensor& a, const at::Tensor& b, const at::Tensor* bias, const at::Tensor& out);

// out [M, N] (bf16, unit column stride) = round_bf16(c32 (+ bias32, added in f32)): c32 contiguous f32 [M, N], bias32
// contiguous f32 [N] or nullptr. One pass, rows spread over the threads; each element is what rounding the f32 sum
// computed alone gives.
void round_bf16_rows(const at::Tensor& c32, const at::Tensor* bias32, const at::Tensor& out);

}  // namespace kernels

// t as a contiguous f32 tensor: bf16 widened (exactly) in one copy, f32 itself where already contiguous, else one
// contiguous copy. (Tensor::to(kFloat, ..., MemoryFormat::Contiguous) alone returns a non-contiguous f32 tensor as it
// is: it suggests Contiguous for any layout that is not channels-last.)
at::Tensor contiguous_f32(const at::Tensor& t);

// out [M, N] = a b in bf16 by this process's route; out as for gemm_bf16_widened. The native route is at::mm_out and
// at::mm.
void mm_bf16_out(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b);
at::Tensor mm_bf16(const at::Tensor& a, const at::Tensor& b);

}  // namespace haliax::nn
