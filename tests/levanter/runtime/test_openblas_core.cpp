// OpenBLAS runs an optimised core on every CPU with AVX2 (runtime/openblas_core.h): where Debian's OpenBLAS does not
// know the CPU it would take its generic Prescott kernels, and this binary (tests/openblas_core_init.cpp), like
// `levanter`, sets OPENBLAS_CORETYPE and executes itself again. f32 at::mm runs on OpenBLAS: its rows then keep
// their bits whatever rows are computed with them, which the generic kernels do not.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "levanter/runtime/openblas_core.h"

TEST(OpenBlasCore, AnOptimisedCoreRunsOnEveryCpuWithAvx2) {
  const std::string core = levanter::runtime::openblas_core();
  ASSERT_FALSE(core.empty()) << "OpenBLAS is not loaded (libtorch's BLAS should be OpenBLAS: scripts/setup)";
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) {
    EXPECT_NE(core, "Prescott");
    EXPECT_NE(core, "Core2");
  }
  // Nothing is left to set: the core is right, or OPENBLAS_CORETYPE is already set (by the user or at start).
  EXPECT_EQ(levanter::runtime::openblas_core_to_set(), "");
  EXPECT_FALSE(levanter::runtime::choose_openblas_core());
}

TEST(OpenBlasCore, FewRowsOfAnF32ProductKeepTheirBitsAlone) {
  const at::Tensor w = at::randn({96, 160}, at::make_generator<at::CPUGeneratorImpl>(3), at::kFloat);
  const at::Tensor x = at::randn({14, 96}, at::make_generator<at::CPUGeneratorImpl>(4), at::kFloat);
  for (int64_t rows : {2, 5, 14}) {
    const at::Tensor few = at::mm(x.narrow(0, 0, rows), w);
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_TRUE(at::equal(at::mm(x.narrow(0, r, 1), w)[0], few[r])) << "row " << r << " of " << rows;
    }
  }
}
