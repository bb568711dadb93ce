// bf16 GEMMs widened to f32 (haliax/nn/gemm_bf16.h): each result is the f64 product of the same bf16 operands rounded
// once to bf16 (the nearest value, or its neighbour where the sum lies within f32's error of a tie), over the three
// ways the product is blocked (one operand widened whole and the other in column or row blocks; both large, the sum
// in blocks of K), with transposed operands read in place, a bias, and rows of a larger output. The route each CPU
// takes, checked against /proc/cpuinfo; the environment variable that overrides it.
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "../testing.h"
#include "haliax/nn/gemm_bf16.h"

using namespace haliax;
using haliax::testing::randn;

namespace {

at::Tensor bf16(const at::Tensor& t) { return t.to(at::kBFloat16); }

// The result against round_bf16 of the f64 product: every value within one bf16 step, and nearly all equal.
void expect_rounded_product(const at::Tensor& got, const at::Tensor& a, const at::Tensor& b, const at::Tensor* bias) {
  at::Tensor ref = at::mm(a.to(at::kDouble), b.to(at::kDouble));
  if (bias) ref = ref + bias->to(at::kDouble);
  const at::Tensor nearest = ref.to(at::kBFloat16).to(at::kDouble);
  const at::Tensor g = got.to(at::kDouble);
  // One bf16 step of the result, plus what summing K products in f32 may lose (K 2^-24 sum |a_k b_k|, a bound
  // that matters where the products cancel).
  const at::Tensor sum_abs = at::mm(a.to(at::kDouble).abs(), b.to(at::kDouble).abs());
  const at::Tensor step = ref.abs() * (1.0 / 128) + sum_abs * (static_cast<double>(a.size(1)) * std::ldexp(1.0, -24));
  EXPECT_TRUE(((g - nearest).abs() <= step).all().item<bool>())
      << "max |got - nearest| " << (g - nearest).abs().max().item<double>();
  EXPECT_GE(at::eq(g, nearest).to(at::kDouble).mean().item<double>(), 0.98);
}

}  // namespace

TEST(GemmBf16, WidenedProductsAreTheF64ProductsRoundedOnceInEveryBlocking) {
  struct Case {
    int64_t M, K, N;
    const char* what;
  };
  // The workspace is 2^22 f32 values (or a quarter of the operands): a small a is widened whole and b in column
  // blocks (3 here), a large a with a small b the other way round (3 row blocks); both large, rows in blocks (2)
  // and K in blocks summed in f32 (3, the LM head's hidden gradient).
  for (const Case& c :
       {Case{70, 24, 30, "tiny"}, Case{300, 768, 9000, "a whole, b in column blocks"},
        Case{9000, 768, 300, "b whole, a in row blocks"}, Case{2000, 3000, 2000, "both large: rows and K in blocks"}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        SCOPED_TRACE(std::string(c.what) + (ta ? ", a transposed" : "") + (tb ? ", b transposed" : ""));
        const at::Tensor a = ta ? bf16(randn({c.K, c.M}, 1)).t() : bf16(randn({c.M, c.K}, 1));
        const at::Tensor b = tb ? bf16(randn({c.N, c.K}, 2)).t() : bf16(randn({c.K, c.N}, 2));
        at::Tensor out = at::empty({c.M, c.N}, a.options());
        nn::kernels::gemm_bf16_widened(a, b, nullptr, out);
        expect_rounded_product(out, a, b, nullptr);
      }
    }
  }
}

TEST(GemmBf16, ABiasIsAddedBeforeTheOneRoundingAndOutputRowsMayBePartOfALargerTensor) {
  {
    // Across column blocks (each adds its columns of the bias) into the middle of a wider output.
    const at::Tensor a = bf16(randn({300, 768}, 21)), b = bf16(randn({768, 12000}, 22)).t().contiguous().t();
    const at::Tensor bias = bf16(randn({12000}, 23) * 4);
    at::Tensor wide = at::full({300, 12010}, 5.0, a.options());
    nn::kernels::gemm_bf16_widened(a, b, &bias, wide.narrow(1, 3, 12000));
    expect_rounded_product(wide.narrow(1, 3, 12000), a, b, &bias);
    EXPECT_TRUE((wide.narrow(1, 0, 3) == 5.0).all().item<bool>());
    EXPECT_TRUE((wide.narrow(1, 12003, 7) == 5.0).all().item<bool>());
  }
  const at::Tensor a = bf16(randn({90, 40}, 3)), b = bf16(randn({40, 50}, 4)), bias = bf16(randn({50}, 5) * 4);
  at::Tensor out = at::full({90, 50}, 7.0, a.options());
  nn::kernels::gemm_bf16_widened(a, b, &bias, out);
  expect_rounded_product(out, a, b, &bias);
  // Rows 10..99 of a wider tensor: the rest is left as it was.
  at::Tensor big = at::full({100, 64}, 3.0, a.options());
  nn::kernels::gemm_bf16_widened(a, b, nullptr, big.narrow(0, 10, 90).narrow(1, 0, 50));
  expect_rounded_product(big.narrow(0, 10, 90).narrow(1, 0, 50), a, b, nullptr);
  EXPECT_TRUE((big.narrow(0, 0, 10) == 3.0).all().item<bool>());
  EXPECT_TRUE((big.narrow(1, 50, 14) == 3.0).all().item<bool>());
  // An operand with no unit stride is copied first; K = 0 gives the bias (or zeros).
  const at::Tensor strided = bf16(randn({90, 80}, 6)).slice(1, 0, 80, 2);
  nn::kernels::gemm_bf16_widened(strided, b, nullptr, out);
  expect_rounded_product(out, strided, b, nullptr);
  at::Tensor empty_k = at::full({4, 50}, 9.0, a.options());
  nn::kernels::gemm_bf16_widened(at::empty({4, 0}, a.options()), at::empty({0, 50}, a.options()), &bias, empty_k);
  EXPECT_TRUE(at::equal(empty_k, bias.expand({4, 50})));
  nn::kernels::gemm_bf16_widened(at::empty({4, 0}, a.options()), at::empty({0, 50}, a.options()), nullptr, empty_k);
  EXPECT_TRUE((empty_k == 0).all().item<bool>());
}

TEST(GemmBf16, BadOperandsAreRefusedByName) {
  const at::Tensor a = bf16(randn({8, 4}, 7)), b = bf16(randn({4, 6}, 8));
  at::Tensor out = at::empty({8, 6}, a.options());
  EXPECT_THROW(nn::kernels::gemm_bf16_widened(a.to(at::kFloat), b, nullptr, out), c10::Error);
  EXPECT_THROW(nn::kernels::gemm_bf16_widened(a, b.t(), nullptr, out), c10::Error);  // [8, 4] x [6, 4]
  at::Tensor wrong = at::empty({8, 5}, a.options());
  EXPECT_THROW(nn::kernels::gemm_bf16_widened(a, b, nullptr, wrong), c10::Error);
  try {
    nn::kernels::gemm_bf16_widened(a, b, nullptr, out.t().contiguous().t());
    FAIL() << "an output with columns apart was taken";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unit column stride"), std::string::npos) << e.what();
  }
}

TEST(GemmBf16, TheNativeRouteIsAtMmAndTheOverrideIsScoped) {
  const at::Tensor a = bf16(randn({70, 33}, 9)), b = bf16(randn({33, 21}, 10));
  const nn::Bf16Gemm before = nn::bf16_gemm_route();
  {
    nn::Bf16GemmRouteOverride native(nn::Bf16Gemm::native);
    EXPECT_TRUE(at::equal(nn::mm_bf16(a, b), at::mm(a, b)));
    {
      nn::Bf16GemmRouteOverride widened(nn::Bf16Gemm::widened);
      at::Tensor w = at::empty({70, 21}, a.options());
      nn::kernels::gemm_bf16_widened(a, b, nullptr, w);
      EXPECT_TRUE(at::equal(nn::mm_bf16(a, b), w));
      at::Tensor o = at::empty({70, 21}, a.options());
      nn::mm_bf16_out(o, a, b);
      EXPECT_TRUE(at::equal(o, w));
    }
    EXPECT_EQ(nn::bf16_gemm_route(), nn::Bf16Gemm::native);
  }
  EXPECT_EQ(nn::bf16_gemm_route(), before);
}

namespace {

// Whether Linux lets this process use AMX tile data (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA, what
// oneDNN requests before it uses AMX; refused on kernels before 5.16 and where the host withholds it).
bool amx_permitted() {
#if defined(__x86_64__) && defined(SYS_arch_prctl)
  constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

}  // namespace

TEST(GemmBf16, TheRouteFollowsTheCpuAndTheVariableOverridesIt) {
  // The CPU's flags as the kernel reports them: AMX-BF16 (where the kernel lets the process use AMX tiles, as oneDNN
  // asks it to), or an AMD CPU with AVX-512 BF16, runs oneDNN's bf16 kernels; anything else widens (unless
  // ONEDNN_MAX_CPU_ISA caps oneDNN below them).
  std::ifstream in("/proc/cpuinfo");
  std::string line, flags, vendor;
  while (std::getline(in, line)) {
    if (flags.empty() && line.rfind("flags", 0) == 0) flags = line + " ";
    if (vendor.empty() && line.rfind("vendor_id", 0) == 0) vendor = line;
  }
  if (!flags.empty() && !std::getenv("ONEDNN_MAX_CPU_ISA") && !std::getenv("DNNL_MAX_CPU_ISA")) {
    const bool amx = flags.find(" amx_bf16 ") != std::string::npos && amx_permitted();
    const bool bf16_dot = flags.find(" avx512_bf16 ") != std::string::npos;
    const bool amd = vendor.find("AuthenticAMD") != std::string::npos;
    EXPECT_EQ(nn::bf16_gemm_route_of_cpu(), amx || (amd && bf16_dot) ? nn::Bf16Gemm::native : nn::Bf16Gemm::widened)
        << vendor << (amx ? ", AMX" : "") << (bf16_dot ? ", AVX-512 BF16" : "");
  }
  EXPECT_EQ(nn::bf16_gemm_route_from(nullptr), nn::bf16_gemm_route_of_cpu());
  EXPECT_EQ(nn::bf16_gemm_route_from(""), nn::bf16_gemm_route_of_cpu());
  EXPECT_EQ(nn::bf16_gemm_route_from("native"), nn::Bf16Gemm::native);
  EXPECT_EQ(nn::bf16_gemm_route_from("widened"), nn::Bf16Gemm::widened);
  try {
    nn::bf16_gemm_route_from("fast");
    FAIL() << "HALIAX_BF16_GEMM=fast was taken";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("HALIAX_BF16_GEMM=fast"), std::string::npos) << e.what();
  }
}
